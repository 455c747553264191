// Windows guests: which Windows a disk holds, where, how it boots, what
// drives its disk controller, what stands in the way of running it on
// other hardware (inspect_windows); and the registry edits that make it
// boot on a target's virtual hardware (windows_fixups.cpp, through
// plan_fixups / apply_fixups of guest/fixups.h).
//
// NTFS is read (and for fixups written) in process through libntfs-3g on a
// partition's range of the disk (guest/ntfs.h); hives are copies edited by
// hivex (guest/registry.h); the EFI System partition's BCD store is found
// with the FAT reader (guest/fat_fs.h). Nothing is mounted.
#pragma once

#include "block/block_device.h"
#include "guest/inspect.h"

#include <string>
#include <vector>

namespace p2vfs::guest {

// Reads the Windows installation among the NTFS volumes of `inv` (its
// volumes already probed): sets inv.windows_guest when one is found, and
// adds findings — "hibernated" (blocker), "fast-startup" (warning),
// "hypervisor-tools" and "vendor-agents" (info), "windows-unreadable"
// (warning, naming the volume and what is missing or damaged). Never
// throws for what the disk holds.
void inspect_windows(const DevicePtr& disk, Inventory& inv);

// Known services, by the key name under Services (matched without regard
// to case), and whose they are.
struct KnownService {
    const char* name;  // "VMTools"
    const char* owner; // "vmware", "virtualbox", "xen", "parallels"; "hp", "dell", "lenovo"
};
const std::vector<KnownService>& windows_hypervisor_tools();
const std::vector<KnownService>& windows_vendor_agents();

// Paths on the system volume (libntfs-3g's form, '/'-separated).
inline constexpr const char* windows_system_hive = "Windows/System32/config/SYSTEM";
inline constexpr const char* windows_software_hive = "Windows/System32/config/SOFTWARE";

// The NTFS path of a driver's file from its service's ImagePath
// ("system32\DRIVERS\x.sys", "\SystemRoot\System32\drivers\x.sys",
// "\??\C:\Windows\..."), relative to the system volume's root, given the
// system root directory ("Windows"); System32/drivers/NAME.sys when the
// ImagePath is empty. "" when it points elsewhere (another drive).
std::string driver_file_path(const std::string& image_path, const std::string& service,
                             const std::string& system_root);

} // namespace p2vfs::guest
