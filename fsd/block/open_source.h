// Turns a --source SPEC into the device it names.
//
//   /path/disk.img        a raw image file or a block device (LocalSource)
//   /path/disk.qcow2      an image in a format qemu reads (qcow2, VMDK, VHD,
//                         VHDX, VDI), probed by its magic, with its backing
//                         chain, read through a private qemu-nbd
//   qcow2:/path/x         the format named, not probed (raw: forces raw)
//   nbd://host/export     a remote disk over NBD (any libnbd URI), behind a
//                         read cache
//   snapshot:/path/x      a point-in-time copy of the image file, kept in
//                         SourceOptions::snapshot_dir and then opened as the
//                         plain path would be (snapshot:FORMAT:PATH too);
//                         see snapshot_source.h
//
// Block devices are never probed: a physical disk is raw whatever its first
// sector says, so a machine being migrated cannot pass itself off as a qcow2
// whose backing file is a file of the conversion host.
#pragma once

#include "block/block_device.h"
#include "block/cache_device.h"
#include "nbd-bridge/nbd_source.h"

#include <optional>
#include <string>

namespace p2vfs {

struct SourceOptions {
    bool direct = false; // local sources: O_DIRECT
    NbdOptions nbd;      // NBD sources, and images served by qemu-nbd
    CacheOptions cache;  // NBD sources (remote); capacity 0: no cache
    // Snapshot sources: where point-in-time copies are kept. Empty: snapshot
    // sources cannot be opened.
    std::string snapshot_dir;
};

// Throws InvalidArgument naming the bad option.
void validate(const SourceOptions& options);

// Throws Error naming the spec when it cannot be opened or used.
DevicePtr open_source(const std::string& spec, const SourceOptions& options);

// The local file or device a spec reads (the origin of a snapshot:), or
// nothing for an NBD URI: what an access check must look at.
std::optional<std::string> local_path_of(const std::string& spec);

// How qemu would name the disk `source` (opened from `spec`) as a backing
// file: an absolute path with its image format, or an NBD URI (raw). A
// snapshot source names its snapshot file, not the live origin.
struct BackingFile {
    std::string file;
    std::string format; // raw, qcow2, vmdk, vpc, vhdx, vdi
};
BackingFile backing_file_of(const std::string& spec, const DevicePtr& source);

} // namespace p2vfs
