// On-disk structures of VMware's hosted sparse extent.
//
// VMware "Virtual Disk Format 5.0", "Hosted Sparse Extent Header" and
// "Grain Directories and Grain Tables". All fields are little-endian; sizes
// and offsets are in 512-byte sectors.
#pragma once

#include "common/endian.h"

#include <cstdint>

namespace p2vfs::vmdk {

inline constexpr uint64_t sector_size = 512;
inline constexpr uint32_t magic = 0x564d444b; // "KDMV"
inline constexpr uint32_t flag_valid_newline_test = 1u << 0;
inline constexpr uint32_t flag_redundant_grain_table = 1u << 1;
inline constexpr uint64_t default_grain_sectors = 128; // 64 KiB
inline constexpr uint32_t gtes_per_gt = 512;
inline constexpr uint64_t descriptor_sectors = 20; // room for the embedded descriptor

#pragma pack(push, 1)
struct SparseExtentHeader {
    le32 magic_number;
    le32 version; // 1
    le32 flags;
    le64 capacity;   // sectors
    le64 grain_size; // sectors
    le64 descriptor_offset;
    le64 descriptor_size;
    le32 num_gtes_per_gt;
    le64 rgd_offset; // redundant grain directory
    le64 gd_offset;
    le64 over_head; // sectors before the first grain
    unsigned char unclean_shutdown;
    char single_end_line_char;  // '\n'
    char non_end_line_char;     // ' '
    char double_end_line_char1; // '\r'
    char double_end_line_char2; // '\n'
    le16 compress_algorithm;
    unsigned char pad[433];
};
#pragma pack(pop)
static_assert(sizeof(SparseExtentHeader) == 512);

} // namespace p2vfs::vmdk
