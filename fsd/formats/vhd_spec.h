// On-disk structures of the Virtual Hard Disk format.
//
// Microsoft "Virtual Hard Disk Image Format Specification", version 1.0
// (October 2006): "Hard Disk Footer Format" and "Dynamic Disk Header Format".
// All fields are big-endian.
#pragma once

#include "common/endian.h"

#include <cstdint>

namespace p2vfs::vhd {

inline constexpr uint64_t sector_size = 512;
inline constexpr uint32_t no_block = 0xffffffff;    // BAT entry of an absent block
inline constexpr uint64_t no_offset = ~uint64_t{0}; // "data offset" of a fixed disk
inline constexpr uint32_t disk_type_fixed = 2;
inline constexpr uint32_t disk_type_dynamic = 3;
// Largest disk the format holds: 2040 GiB, per Microsoft's documentation and
// because BAT entries are 32-bit sector offsets.
inline constexpr uint64_t max_disk_size = 2040ULL << 30;
inline constexpr uint64_t default_block_size = 2ULL << 20;

struct Footer {
    char cookie[8];           // "conectix"
    be32 features;            // 0x2: reserved bit, always set
    be32 file_format_version; // 0x00010000
    be64 data_offset;         // dynamic header offset; no_offset for fixed
    be32 timestamp;           // seconds since 2000-01-01 00:00:00 UTC
    char creator_application[4];
    be32 creator_version;
    char creator_host_os[4];
    be64 original_size;
    be64 current_size;
    be16 cylinders;
    unsigned char heads;
    unsigned char sectors_per_track;
    be32 disk_type;
    be32 checksum; // one's complement of the byte sum, this field as zero
    unsigned char unique_id[16];
    unsigned char saved_state;
    unsigned char reserved[427];
};
static_assert(sizeof(Footer) == 512);

struct ParentLocator {
    be32 platform_code;
    be32 platform_data_space;
    be32 platform_data_length;
    be32 reserved;
    be64 platform_data_offset;
};
static_assert(sizeof(ParentLocator) == 24);

struct DynamicHeader {
    char cookie[8];      // "cxsparse"
    be64 data_offset;    // unused: no_offset
    be64 table_offset;   // absolute byte offset of the BAT
    be32 header_version; // 0x00010000
    be32 max_table_entries;
    be32 block_size;
    be32 checksum;
    unsigned char parent_unique_id[16];
    be32 parent_timestamp;
    be32 reserved;
    unsigned char parent_unicode_name[512];
    ParentLocator parent_locators[8];
    unsigned char reserved2[256];
};
static_assert(sizeof(DynamicHeader) == 1024);

// The checksum both structures use.
inline uint32_t checksum(const void* data, size_t length) {
    uint32_t sum = 0;
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < length; ++i)
        sum += p[i];
    return ~sum;
}

} // namespace p2vfs::vhd
