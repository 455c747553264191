// Guest inspection: what a disk holds — its partition table, the volumes
// and their file systems, the operating system — and what stands in the way
// of running it as a virtual machine. Read straight from the disk's bytes
// (partition tables and superblocks parsed here, ext2/3/4 through
// libext2fs), in process: no helper appliance is booted, nothing is mounted,
// nothing is written.
//
// The result is an Inventory, given to users as JSON (info.json in the
// mount, the Inspect call over D-Bus) and as a text report (report.txt)
// that lists incompatibilities by name.
#pragma once

#include "block/block_device.h"
#include "guest/filesystems.h"
#include "guest/initramfs.h"
#include "guest/partitions.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace p2vfs::guest {

// One volume: a partition, or the whole disk when it has no table.
struct Volume {
    unsigned partition = 0; // 0: the whole disk
    uint64_t offset = 0;
    uint64_t length = 0;
    std::optional<FileSystemInfo> fs;
    std::string mounted_at; // where the guest's fstab mounts it ("/", "/boot", "swap")
};

struct FstabEntry {
    std::string spec;        // "/dev/cciss/c0d0p1", "UUID=...", "LABEL=..."
    std::string mount_point;
    std::string type;
    std::string options;
    unsigned line = 0;       // 1-based line in /etc/fstab
};

struct Kernel {
    std::string version;           // "6.1.0-28-amd64"
    std::string image;             // "/boot/vmlinuz-6.1.0-28-amd64"
    std::string initramfs;         // "" when there is none
    InitramfsContents initramfs_contents;
    std::vector<std::string> storage_modules; // of the initramfs, that drive disk controllers
    std::vector<std::string> network_modules; // of the initramfs, that drive network adapters
    bool modules_dir = false;      // /lib/modules/VERSION exists
};

struct Bootloader {
    std::string type;                      // "grub2", "extlinux", "none"
    std::string config;                    // "/boot/grub/grub.cfg"
    bool in_mbr = false;                   // the MBR's boot code is this loader's
    std::vector<std::string> kernel_args;  // the command lines of its entries, in order
};

struct LinuxGuest {
    unsigned root_partition = 0;
    std::string distribution;    // os-release ID: "debian"
    std::string version;         // VERSION_ID: "12"
    std::string pretty_name;
    std::string hostname;
    std::vector<FstabEntry> fstab;
    std::vector<Kernel> kernels;  // newest first
    Bootloader bootloader;
    std::vector<std::string> persistent_net_rules; // udev rule files tying names to MACs
    std::vector<std::string> vendor_agents;        // enabled services of the vendor list
    std::string init_system;     // "systemd", "sysvinit"
    std::string initramfs_tool;  // "initramfs-tools", "dracut"
};

// A service of the SYSTEM hive's current control set.
struct WindowsService {
    std::string name;      // the key's name as stored ("LSI_SAS")
    uint32_t start = 0;    // 0 boot, 1 system, 2 automatic, 3 manual, 4 disabled
    std::string group;     // "SCSI miniport"; empty when none
    bool file = false;     // its ImagePath (or System32\drivers\NAME.sys) exists
};

// A drive letter of SYSTEM\MountedDevices and what it is tied to.
struct DriveLetter {
    std::string letter;    // "C:"
    // "partition 2" (of this disk, by MBR signature and offset or by GPT
    // partition GUID), "disk 0x5eedf00d at 0x100000", "GPT partition
    // {guid}" (another disk), "device \??\IDE#CdRom..." (a device path of
    // the old hardware), "unknown (N bytes)"
    std::string target;
};

struct WindowsGuest {
    unsigned system_partition = 0;  // the volume holding \Windows\System32\config\SYSTEM
    // SOFTWARE\Microsoft\Windows NT\CurrentVersion
    std::string product_name;       // "Windows Server 2019 Standard"
    std::string edition_id;         // "ServerStandard"
    std::string installation_type;  // "Server", "Client"; empty before Windows 7
    std::string current_version;    // "6.3"
    std::string current_build;      // "17763" (CurrentBuildNumber, else CurrentBuild)
    std::string display_version;    // "21H2"; empty before Windows 10 20H2
    // "10.0" from CurrentMajor/MinorVersionNumber (Windows 10 and later keep
    // "6.3" in CurrentVersion), else CurrentVersion
    std::string version;
    std::string system_root;        // "C:\Windows"
    std::string architecture;       // "x86_64", "i386", "aarch64"; empty when unknown
    std::string control_set;        // SYSTEM\Select\Current as a key name: "ControlSet001"
    std::string boot_mode;          // "bios", "uefi", "unknown"
    unsigned boot_partition = 0;    // bios: the volume holding \bootmgr (or \ntldr); 0 otherwise
    unsigned bcd_partition = 0;     // the volume holding the BCD store; 0 when not found
    std::string bcd_path;           // "\Boot\BCD" (bios), "\EFI\Microsoft\Boot\BCD" (uefi)
    std::string hostname;           // SYSTEM: ComputerName of the current control set
    bool hiberfil = false;          // \hiberfil.sys exists
    bool hibernation_enabled = false; // Control\Power HibernateEnabled (else: hiberfil)
    bool hibernated = false;        // \hiberfil.sys holds a hibernation image
    bool fast_startup = false;      // HiberbootEnabled=1
    std::vector<WindowsService> storage_drivers;  // kernel drivers of disk controllers
    std::vector<WindowsService> hypervisor_tools; // services of known hypervisors' tools
    std::vector<WindowsService> vendor_agents;    // services of known hardware vendors' agents
    std::vector<unsigned> bitlocker_partitions;   // volumes encrypted with BitLocker
    bool dynamic_disk = false;      // the disk is a dynamic (LDM) disk
    std::vector<DriveLetter> drive_letters;       // by letter
};

// An incompatibility or remark, by a stable name users and tools can match.
struct Finding {
    std::string id;       // "bitlocker", "dynamic-disk", "no-storage-driver", ...
    std::string severity; // "blocker", "warning", "info"
    std::string message;  // one sentence naming what and where
};

struct Inventory {
    std::string disk;      // the disk's name
    uint64_t size = 0;
    PartitionTable table;
    std::vector<Volume> volumes;
    std::string firmware;  // "bios", "uefi" (an EFI System partition), "unknown"
    std::string os;        // "linux", "windows", "unknown"
    std::optional<LinuxGuest> linux_guest;
    std::optional<WindowsGuest> windows_guest;
    std::vector<Finding> findings;
};

struct InspectOptions {
    // Services of hardware vendors' agents, which fail or misbehave on
    // virtual hardware; fixups disable them.
    std::vector<std::string> vendor_agents = default_vendor_agents();
    static std::vector<std::string> default_vendor_agents();
};

// Inspects `disk`. Throws Error only when the disk cannot be read at all;
// everything else (a broken table, a file system that cannot be opened) is
// a finding.
Inventory inspect(const DevicePtr& disk, const InspectOptions& options = {});

nlohmann::json to_json(const Inventory& inv);
std::string report_text(const Inventory& inv);

// Storage / network driver modules among `modules` (by name).
bool is_storage_module(const std::string& module);
bool is_network_module(const std::string& module);

// The partition number a controller-style device name refers to:
// /dev/sda1 -> 1, /dev/cciss/c0d0p2 -> 2, /dev/nvme0n1p3 -> 3, /dev/hda5 -> 5,
// /dev/vda1, /dev/xvda1, /dev/mmcblk0p1 likewise; nullopt for names that do
// not name a partition of the first disk by controller path.
std::optional<unsigned> partition_of_device_name(const std::string& name);

} // namespace p2vfs::guest

// The guest's file tree as the fixups and inspection see it: the root file
// system and, when /boot is a file system of its own, that one too. Only
// ext2/3/4 can be opened (libext2fs).
#include "guest/ext_fs.h"
#include <memory>
namespace p2vfs::guest {

class GuestTree {
public:
    // Opens the root (and /boot) volumes the inventory found. Throws Error
    // when the inventory has no Linux root or its file system cannot be
    // opened (writable: also when its journal needs recovery).
    GuestTree(const DevicePtr& disk, const Inventory& inv, bool writable);

    // The file system holding guest path `path`, and the path inside it.
    std::pair<ExtFs*, std::string> locate(const std::string& path);
    std::optional<std::string> read_if_exists(const std::string& path, uint64_t limit = 1 << 20);
    std::optional<ExtStat> stat(const std::string& path, bool follow = true);
    std::vector<std::string> list(const std::string& dir);
    void close(); // flushes both (writable)

private:
    std::unique_ptr<ExtFs> root_;
    std::unique_ptr<ExtFs> boot_;
};

// The volume an fstab spec names (UUID=, LABEL=, PARTUUID=, /dev/disk/by-*,
// a controller device name); nullptr when none does.
const Volume* volume_for_spec(const Inventory& inv, const std::string& spec);

} // namespace p2vfs::guest
