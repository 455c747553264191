// A FAT12/16/32 file system inside a disk, read-only: enough of it for
// Windows inspection to find \EFI\Microsoft\Boot\BCD on an EFI System
// partition, without mounting it and without trusting a byte of it.
//
// Every read goes through the disk's BlockDevice and is checked to lie in
// the volume's range first, so a lying boot sector, FAT or directory cannot
// make it read another partition. Names are matched without regard to case
// (ASCII letters, as the boot paths need), against long (VFAT) and short 8.3
// names alike. The on-disk layout is described in fat_fs.cpp.
//
// Not thread-safe: one FatVolume is used by one thread at a time (it keeps
// the part of the FAT it read last).
#pragma once

#include "block/block_device.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace p2vfs::guest {

struct FatEntry {
    bool directory = false;
    uint64_t size = 0; // bytes; 0 for a directory (FAT records no size for one)
};

class FatVolume {
public:
    // The FAT file system in [offset, offset+length) of `disk`; `where` names
    // it in messages ("partition 1"). Throws Error naming `where` and the
    // field when the boot sector is not FAT or its values are impossible.
    FatVolume(DevicePtr disk, uint64_t offset, uint64_t length, std::string where);

    const std::string& where() const { return where_; }
    int fat_bits() const { return bits_; } // 12, 16 or 32

    // `path` is relative to the root, '/'-separated. nullopt when it does not
    // exist. Throws Error naming `where` and the path on damage: a cluster
    // chain that loops or leaves the FAT, a directory over 65536 entries.
    std::optional<FatEntry> stat(const std::string& path);

    // The whole file. Throws Error naming the path when it is missing or a
    // directory, and Error (EFBIG) when it is larger than `limit`.
    std::string read_file(const std::string& path, uint64_t limit);

private:
    struct Node; // a directory entry found on a path: kind, first cluster, size

    std::optional<Node> resolve(const std::vector<std::string>& parts);
    std::string read_directory(const Node& dir, const std::string& shown);
    std::vector<uint32_t> chain(uint32_t first, uint64_t count, bool directory,
                                const std::string& shown);
    uint32_t fat_entry(uint32_t cluster);
    std::string read_clusters(const std::vector<uint32_t>& clusters, uint64_t bytes);
    void read(void* buf, uint64_t length, uint64_t at);

    DevicePtr disk_;
    uint64_t offset_;
    uint64_t length_;
    std::string where_;

    int bits_ = 0;                          // bits per FAT entry: the FAT type
    uint64_t cluster_size_ = 0;             // bytes
    uint64_t fat_offset_ = 0;               // the FAT in use, from the volume's start
    uint64_t fat_bytes_ = 0;                // its length
    uint64_t root_offset_ = 0;              // FAT12/16: the fixed root directory...
    uint64_t root_bytes_ = 0;               // ...and its length
    uint32_t root_cluster_ = 0;             // FAT32: the root directory's first cluster
    uint64_t data_offset_ = 0;              // where cluster 2 starts
    uint32_t last_cluster_ = 0;             // the highest cluster number the volume has
    std::vector<unsigned char> fat_window_; // the FAT bytes read last
    uint64_t fat_window_at_ = 0;            // their offset in the FAT
};

} // namespace p2vfs::guest
