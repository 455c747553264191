// On-disk structures of VMware's stream-optimized compressed sparse extent.
//
// VMware "Virtual Disk Format 5.0", "Stream-Optimized Compressed Sparse
// Extents": the hosted sparse extent header (vmdk_spec.h) with compressed
// grains and markers. Every grain is stored as a grain marker (the grain's
// first sector on the disk, the compressed size) followed by the
// zlib-compressed grain, padded to a whole sector. Metadata (grain tables,
// grain directory, footer) is preceded by a one-sector metadata marker
// naming its type and length, and an end-of-stream marker ends the file.
// All fields little-endian; sizes and offsets in 512-byte sectors.
#pragma once

#include "common/endian.h"
#include "formats/vmdk_spec.h"

#include <cstdint>

namespace p2vfs::vmdk {

// ESXi refuses stream-optimized extents of versions 1 and 2 ("sparse VMDK
// version too old"); version 3 is what VMware's own exports carry.
inline constexpr uint32_t stream_version = 3;
inline constexpr uint32_t flag_compressed = 1u << 16;
inline constexpr uint32_t flag_markers = 1u << 17;
inline constexpr uint16_t compress_deflate = 1; // zlib (RFC 1950) streams
// gdOffset in the header of a stream: the grain directory's place is only
// known at the end, so readers take it from the footer.
inline constexpr uint64_t gd_at_end = ~uint64_t{0};

enum MarkerType : uint32_t {
    marker_eos = 0,
    marker_grain_table = 1,
    marker_grain_directory = 2,
    marker_footer = 3,
};

#pragma pack(push, 1)
// Precedes each compressed grain; the compressed bytes follow at once.
struct GrainMarker {
    le64 lba;  // the grain's first sector on the virtual disk
    le32 size; // bytes of compressed data that follow (never 0)
};
// A sector of its own before metadata; size 0 tells it from a grain marker.
struct MetadataMarker {
    le64 num_sectors; // sectors of metadata that follow (0 for end-of-stream)
    le32 size;        // 0
    le32 type;        // MarkerType
    unsigned char pad[496];
};
#pragma pack(pop)
static_assert(sizeof(GrainMarker) == 12);
static_assert(sizeof(MetadataMarker) == 512);

} // namespace p2vfs::vmdk
