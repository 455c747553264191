// Fixups: the changes a physical machine's system needs to boot on a
// target's virtual hardware, as a plan of named steps of file and registry
// edits that can be previewed (the before and after of every file and
// value), applied into the overlay's fixups layer, and discarded with that
// layer.
//
// Linux steps (each named, so users and tests can refer to them):
//   choose-controller        the target's disk controller, from the drivers
//                            the newest kernel's initramfs holds (no edit)
//   fstab-by-uuid            /etc/fstab entries naming a disk by controller
//                            path (/dev/sda1, /dev/cciss/c0d0p1...) -> UUID=
//   bootloader-by-uuid       root= and resume= of the GRUB / extlinux
//                            entries likewise; /etc/default/grub stops
//                            forcing device names (GRUB_DISABLE_LINUX_UUID)
//   resume-by-uuid           the initramfs' RESUME= setting likewise
//   remove-persistent-net-rules  udev rules that pin names to old MACs
//   disable-vendor-agents    hardware vendors' agents (a configurable list)
//   initramfs-drivers        the controller's modules added to the list the
//                            initramfs tool always includes
//   firstboot-initramfs      a oneshot unit that rebuilds the initramfs on
//                            the first boot on the target, then stays off
//
// Only ext2/3/4 are edited (through libext2fs, in process); a guest whose
// root or /boot is another file system gets a plan that refuses, naming it.
//
// Windows steps (NTFS through libntfs-3g, hives through hivex; edits of
// the current control set):
//   choose-controller        the target's disk controller: one whose driver
//                            the guest has (or the driver directory gives)
//   copy-drivers             before Windows 8: drivers Windows does not ship
//                            (virtio, pvscsi) copied from the user's
//                            directory to boot from, with their service key
//                            and DevicePath entry
//   stage-drivers            Windows 8 and later, which bind a boot
//                            controller only through a driver they installed
//                            themselves: the better controller's driver is
//                            staged for Plug and Play, the disk stays on one
//                            Windows has
//   boot-driver              the controller's driver set to start at boot
//                            (Start=0) in its load-order group
//   critical-device-database Windows before 8: the controller's PCI ids tied
//                            to its driver, so it is used at boot
//   disable-services         other hypervisors' tools and hardware vendors'
//                            agents (a configurable list): Start=4
//   mounted-devices          drive letters tied to the old hardware's device
//                            paths removed; the system volume keeps its letter
//   crash-control            AutoReboot=0: a crash stays on the screen
#pragma once

#include "block/block_device.h"
#include "guest/inspect.h"
#include "guest/registry.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace p2vfs::guest {

struct FileEdit {
    std::string path;                  // in the guest ("\Windows\..." for Windows)
    // "file", "symlink", or "copy" (Windows: a file of the host copied in;
    // `after` is the host file's path, `size` its length)
    std::string kind;
    std::optional<std::string> before; // nullopt: absent; a symlink's target for symlinks
    std::optional<std::string> after;  // nullopt: removed
    uint32_t mode = 0644;              // for a file made new
    uint64_t size = 0;                 // "copy": the bytes copied
};

// One change to a Windows registry hive: a value set, changed or removed,
// or a key made (`value` nullopt; `after` then holds an empty REG_NONE).
struct RegistryEdit {
    std::string hive;                  // "SYSTEM", "SOFTWARE"
    std::string key;                   // "ControlSet001\Services\storahci"
    std::optional<std::string> value;  // the value's name ("" for the default value)
    std::optional<RegValue> before;    // nullopt: absent
    std::optional<RegValue> after;     // nullopt: removed
};

struct FixupStep {
    std::string name;
    std::string description; // one sentence: what and why
    std::vector<FileEdit> edits;
    std::vector<RegistryEdit> registry;
};

struct FixupOptions {
    std::string profile = "kvm";
    // Services to disable. nullopt: the built-in list of the guest's OS
    // (InspectOptions::default_vendor_agents() for Linux,
    // default_windows_services() for Windows).
    std::optional<std::vector<std::string>> vendor_agents;
    bool firstboot_initramfs = true;
    // Windows: a directory holding drivers Windows does not ship (virtio-win's
    // layout, DRIVER/OS/ARCH/DRIVER.sys, or DRIVER.sys directly); "": none.
    std::string drivers_dir;
};

struct FixupPlan {
    std::string profile;
    std::string controller;   // chosen controller (a Controller::name); empty if none
    std::string guest_disk;   // how the guest will name its disk there ("/dev/vda")
    std::string disk_format;  // the profile's view format
    std::string firmware;
    std::string os = "linux"; // "linux" or "windows"
    std::string os_variant;   // "debian12", "win2k16"
    std::vector<FixupStep> steps;
    // Why the plan cannot be applied; empty when it can.
    std::vector<std::string> refusals;

    bool empty() const; // no step edits anything
};

// Windows services of other hypervisors' tools and of hardware vendors'
// agents, disabled by the Windows fixups unless the caller gives a list.
std::vector<std::string> default_windows_services();

// Plans the fixups of the guest on `disk` (inspected as `inv`) for a target.
// Throws InvalidArgument for an unknown profile.
FixupPlan plan_fixups(const DevicePtr& disk, const Inventory& inv, const FixupOptions& options);

// Writes the plan's edits into `disk`, which must take writes (the overlay
// device whose write layer is the fixups layer), checking first that every
// file is still as the plan saw it. Throws Error naming the refusal, the
// file that changed, or the edit that failed.
void apply_fixups(const DevicePtr& disk, const Inventory& inv, const FixupPlan& plan);

// The Windows side (windows_fixups.cpp), which plan_fixups and
// apply_fixups hand Windows guests to: registry edits of SYSTEM (and
// SOFTWARE) in the current control set, and driver files copied in.
FixupPlan plan_windows_fixups(const DevicePtr& disk, const Inventory& inv,
                              const FixupOptions& options);
void apply_windows_fixups(const DevicePtr& disk, const Inventory& inv, const FixupPlan& plan);

nlohmann::json to_json(const FixupPlan& plan);
// The plan as a person reads it: each step, then each file's changed lines
// ("-" before, "+" after).
std::string preview_text(const FixupPlan& plan);

} // namespace p2vfs::guest
