// On-disk structures of VirtualBox's Virtual Disk Image (VDI), version 1.1.
//
// VirtualBox src/VBox/Storage/VDICore.h: VDIPREHEADER, VDIHEADER1PLUS
// (the 1.1 header with the LCHS geometry appended, which VirtualBox writes
// for every new image) and VDIDISKGEOMETRY. VDI.cpp stores these fields
// little-endian and the UUIDs as RTUUID structures, whose first three fields
// (32, 16, 16 bits) are in host (little-endian) order. qemu's block/vdi.c
// reads the same layout (VdiHeader, with qemu_uuid_bswap on the UUIDs).
#pragma once

#include "common/endian.h"

#include <array>
#include <cstdint>

namespace p2vfs::vdi {

inline constexpr uint64_t sector_size = 512;
// VDI_IMAGE_FILE_INFO: text "for eyes only" at the start of the file.
inline constexpr char file_info[] = "<<< Oracle VM VirtualBox Disk Image >>>\n";
inline constexpr uint32_t signature = 0xbeda107f;   // VDI_IMAGE_SIGNATURE
inline constexpr uint32_t version_1_1 = 0x00010001; // major 1, minor 1
inline constexpr uint32_t image_type_normal = 1;    // dynamically growing base image
// The block size VirtualBox creates (VDI_IMAGE_DEFAULT_BLOCK_SIZE) and the
// only one qemu opens ("block size N is not 1048576").
inline constexpr uint64_t block_size = 1ULL << 20;
// VDI_DATA_ALIGN: VirtualBox aligns the block map and the data area to 1 MiB.
inline constexpr uint64_t data_align = 1ULL << 20;
// Block map entries that are not block numbers (VDICore.h): FREE was never
// written (a base image reads zeros, a differencing image its parent), ZERO
// reads as zeros.
inline constexpr uint32_t block_free = ~uint32_t{0};
inline constexpr uint32_t block_zero = ~uint32_t{1};

#pragma pack(push, 1)
struct PreHeader {
    char file_info[64]; // NUL-padded text
    le32 signature;
    le32 version;
};
static_assert(sizeof(PreHeader) == 72);

struct DiskGeometry {
    le32 cylinders; // 0, 0, 0: "not calculated", the guest's BIOS decides
    le32 heads;
    le32 sectors;
    le32 sector_bytes; // always 512
};
static_assert(sizeof(DiskGeometry) == 16);

using Uuid = std::array<unsigned char, 16>; // RTUUID byte order (see above)

// VDIHEADER1PLUS, right after the pre-header (file offset 72).
struct Header {
    le32 header_size; // sizeof(Header): 400
    le32 image_type;
    le32 image_flags;
    char comment[256];  // UTF-8, NUL-terminated
    le32 blocks_offset; // file offset of the block map
    le32 data_offset;   // file offset of the first block
    DiskGeometry legacy_geometry;
    le32 dummy;     // was the BIOS translation mode
    le64 disk_size; // bytes
    le32 block_size;
    le32 block_extra; // bytes before each block's data: 0
    le32 blocks;      // entries in the block map
    le32 blocks_allocated;
    Uuid uuid_create;
    Uuid uuid_modify;
    Uuid uuid_linkage;       // parent image (differencing images only)
    Uuid uuid_parent_modify; // parent's last modification
    DiskGeometry lchs_geometry;
};
static_assert(sizeof(Header) == 400);
#pragma pack(pop)

} // namespace p2vfs::vdi
