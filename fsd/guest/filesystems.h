// File systems and other volume contents recognised by their superblocks:
// ext2/3/4, xfs, btrfs, NTFS, FAT (12/16/32), Linux swap, LVM2 physical
// volumes, and BitLocker (by its signature, so the report can name it).
//
// A probe reads only the few sectors a signature lives in, and checks the
// values it reports (block size, counts, sizes against the volume), so an
// absurd superblock is named as such instead of being believed.
#pragma once

#include "block/block_device.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace p2vfs::guest {

struct FileSystemInfo {
    // "ext2", "ext3", "ext4", "xfs", "btrfs", "ntfs", "vfat", "swap",
    // "LVM2_member", "BitLocker" — the names blkid uses.
    std::string type;
    std::string version;     // "FAT32", "LVM2 001", "swap v1", "ext4 1.0"...; may be empty
    std::string uuid;        // as blkid prints it (NTFS/FAT: the volume serial, "A1B2C3D4E5F60718" / "1234-ABCD")
    std::string label;
    uint64_t block_size = 0; // bytes (cluster size for FAT/NTFS, page size for swap)
    uint64_t size = 0;       // bytes the file system says it spans; 0 if it does not say
    // Hibernation signature in swap, NTFS dirty flag, ext4 needs_recovery...
    std::vector<std::string> flags;
    // Set when the signature matched but the values are impossible; the
    // message names the field, its value and the offset ("ext4 superblock at
    // 0x100400: log block size 37 (2^47 bytes) is absurd").
    std::string error;
};

// What lies in [offset, offset+length) of `disk`; nullopt when nothing is
// recognised. Throws Error only when the disk cannot be read.
std::optional<FileSystemInfo> probe_filesystem(BlockDevice& disk, uint64_t offset, uint64_t length);

} // namespace p2vfs::guest
