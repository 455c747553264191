// Windows guest inspection: which Windows a disk holds, where, how it
// boots, and whether it was left in a state (hibernated, Fast Startup) that
// breaks when it starts on other hardware.
//
// Read in process and read-only, like the Linux side (ext_fs.h): NTFS
// through libntfs-3g, given a device of ours (windows.cpp) that reads only
// the partition's range of the BlockDevice, so a lying boot sector cannot
// make the library read another partition; the registry hives (SOFTWARE,
// SYSTEM) through hivex, from an in-memory copy. Nothing is mounted and
// nothing is written: a hibernated or dirty volume is read as it lies.
//
// Thread model: libntfs-3g keeps process-wide state (its log handler, among
// others), so every call into it is made under one mutex; inspections of
// different disks may run in parallel and meet only there.
#pragma once

#include "block/block_device.h"
#include "guest/inspect.h"

namespace p2vfs::guest {

// Reads the Windows installation among the NTFS volumes of `inv` (its
// volumes already probed): sets inv.windows_guest when one is found, and
// adds findings — "hibernated" (blocker), "fast-startup" (warning),
// "windows-unreadable" (warning, naming the volume and what is missing or
// damaged). Never throws for what the disk holds.
void inspect_windows(const DevicePtr& disk, Inventory& inv);

} // namespace p2vfs::guest
