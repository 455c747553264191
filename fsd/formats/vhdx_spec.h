// On-disk structures of the Virtual Hard Disk v2 format.
//
// Microsoft "[MS-VHDX]: Virtual Hard Disk v2 (VHDX) File Format" (Open
// Specifications, revision of 2024): section 2.2 (header section: file type
// identifier, headers, region table), 2.3 (log), 2.4-2.5 (blocks, BAT) and 2.6
// (metadata region). All multibyte fields are little-endian (section 2);
// checksums are CRC-32C over the structure with its checksum field zero.
#pragma once

#include "common/endian.h"

#include <array>
#include <cstdint>

namespace p2vfs::vhdx {

inline constexpr uint64_t KiB = 1024, MiB = 1024 * KiB, TiB = MiB * MiB;

// 2.2: the header section is 1 MB: five 64 KB slots, the rest reserved.
inline constexpr uint64_t header_section_size = MiB;
inline constexpr uint64_t file_identifier_offset = 0;
inline constexpr uint64_t header1_offset = 64 * KiB;
inline constexpr uint64_t header2_offset = 128 * KiB;
inline constexpr uint64_t region_table1_offset = 192 * KiB;
inline constexpr uint64_t region_table2_offset = 256 * KiB;
inline constexpr uint64_t header_slot_size = 64 * KiB;
inline constexpr uint64_t header_size = 4 * KiB;        // 2.2.2: what the checksum covers
inline constexpr uint64_t region_table_size = 64 * KiB; // 2.2.3.1: likewise
inline constexpr uint64_t metadata_table_size = 64 * KiB;
// 2.1: every object (region, log, payload block) sits on a 1 MB boundary.
inline constexpr uint64_t object_alignment = MiB;

// 2.6.2.2: the virtual disk holds at most 64 TB.
inline constexpr uint64_t max_disk_size = 64 * TiB;
// 2.6.2.1: block sizes are powers of two from 1 MB to 256 MB.
inline constexpr uint64_t min_block_size = MiB;
inline constexpr uint64_t max_block_size = 256 * MiB;
// 2.4: a sector bitmap block describes 2^23 logical sectors (one chunk).
inline constexpr uint64_t sectors_per_bitmap_block = uint64_t{1} << 23;

// 2.5.1.1 and 2.5.1.2: BAT entry states (bits 0-2 of an entry).
inline constexpr uint64_t payload_block_not_present = 0;
inline constexpr uint64_t payload_block_zero = 2;
inline constexpr uint64_t payload_block_fully_present = 6;
inline constexpr uint64_t sb_block_not_present = 0;
inline constexpr uint64_t bat_state_mask = 7;
// Bits 20-63: FileOffsetMB. A 1 MB-aligned offset is its own entry bits.
inline constexpr unsigned bat_file_offset_shift = 20;

// 2.6.2.1: File Parameters flags.
inline constexpr uint32_t leave_block_allocated = 1;
inline constexpr uint32_t has_parent = 2;

// 2.6.1.2: Metadata Table Entry flags.
inline constexpr uint32_t metadata_is_user = 1;
inline constexpr uint32_t metadata_is_virtual_disk = 2;
inline constexpr uint32_t metadata_is_required = 4;

// A GUID "in its binary form" (2.2.3.2): Data1 as a little-endian 32-bit
// value, Data2 and Data3 little-endian 16-bit, then the last eight bytes in
// the order written. guid("2DC27766-F623-4200-9D64-115E9BFD4A08") gives the
// bytes 66 77 C2 2D 23 F6 00 42 9D 64 11 5E 9B FD 4A 08.
using Guid = std::array<uint8_t, 16>;

constexpr uint8_t hex_digit(char c) {
    return static_cast<uint8_t>(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
}

constexpr Guid guid(const char (&text)[37]) {
    // Text positions of the 16 bytes in the order the text shows them.
    constexpr int at[16] = {0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34};
    // Where each of those bytes goes in the binary form.
    constexpr int to[16] = {3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15};
    Guid g{};
    for (int i = 0; i < 16; ++i)
        g[to[i]] = static_cast<uint8_t>(hex_digit(text[at[i]]) << 4 | hex_digit(text[at[i] + 1]));
    return g;
}

// 2.2.3.2: the known regions.
inline constexpr Guid bat_region = guid("2DC27766-F623-4200-9D64-115E9BFD4A08");
inline constexpr Guid metadata_region = guid("8B7CA206-4790-4B9A-B8FE-575F050F886E");

// 2.6.2: the known metadata items.
inline constexpr Guid file_parameters_item = guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
inline constexpr Guid virtual_disk_size_item = guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
inline constexpr Guid virtual_disk_id_item = guid("BECA12AB-B2E6-4523-93EF-C309E000C746");
inline constexpr Guid logical_sector_size_item = guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");
inline constexpr Guid physical_sector_size_item = guid("CDA348C7-445D-4471-9CC9-E9885251C556");

// 2.2.1
struct FileIdentifier {
    char signature[8];          // "vhdxfile"
    unsigned char creator[512]; // UTF-16LE, diagnostic only
};
static_assert(sizeof(FileIdentifier) == 520);

// 2.2.2
struct Header {
    char signature[4]; // "head"
    le32 checksum;     // over the whole 4 KB structure
    le64 sequence_number;
    unsigned char file_write_guid[16];
    unsigned char data_write_guid[16];
    unsigned char log_guid[16]; // zero: the log is empty, nothing to replay
    le16 log_version;           // 0
    le16 version;               // 1
    le32 log_length;            // multiple of 1 MB
    le64 log_offset;            // multiple of 1 MB
    unsigned char reserved[4016];
};
static_assert(sizeof(Header) == header_size);

// 2.2.3.1
struct RegionTableHeader {
    char signature[4]; // "regi"
    le32 checksum;     // over the whole 64 KB table
    le32 entry_count;  // at most 2047
    le32 reserved;
};
static_assert(sizeof(RegionTableHeader) == 16);

// 2.2.3.2
struct RegionTableEntry {
    unsigned char guid[16];
    le64 file_offset; // multiple of 1 MB, at least 1 MB
    le32 length;      // multiple of 1 MB
    le32 required;    // 1: a reader that does not know the region must refuse the file
};
static_assert(sizeof(RegionTableEntry) == 32);

// 2.6.1.1
struct MetadataTableHeader {
    char signature[8]; // "metadata"
    le16 reserved;
    le16 entry_count; // at most 2047
    unsigned char reserved2[20];
};
static_assert(sizeof(MetadataTableHeader) == 32);

// 2.6.1.2
struct MetadataTableEntry {
    unsigned char item_id[16];
    le32 offset; // from the start of the metadata region, at least 64 KB
    le32 length; // at most 1 MB
    le32 flags;  // metadata_is_user | metadata_is_virtual_disk | metadata_is_required
    le32 reserved2;
};
static_assert(sizeof(MetadataTableEntry) == 32);

// 2.6.2.1
struct FileParameters {
    le32 block_size;
    le32 flags; // leave_block_allocated | has_parent
};
static_assert(sizeof(FileParameters) == 8);

// 2.4: payload blocks per sector bitmap block. With a 512-byte logical
// sector and 32 MB blocks a chunk is 4 GB of disk, 128 blocks.
constexpr uint64_t chunk_ratio(uint64_t logical_sector_size, uint64_t block_size) {
    return sectors_per_bitmap_block * logical_sector_size / block_size;
}

// 2.5: the sector bitmap entry of a chunk follows the chunk's payload
// entries, so payload block b sits at BAT index b + floor(b / chunk_ratio).
constexpr uint64_t payload_entry_index(uint64_t block, uint64_t ratio) {
    return block + block / ratio;
}

// 2.5: for a fixed or dynamic disk the BAT ends with the last payload
// block's entry: PayloadBlocks + floor((PayloadBlocks - 1) / ChunkRatio).
constexpr uint64_t bat_entry_count(uint64_t payload_blocks, uint64_t ratio) {
    return payload_blocks == 0 ? 0 : payload_blocks + (payload_blocks - 1) / ratio;
}

} // namespace p2vfs::vhdx
