// The text descriptor every VMDK carries, and the options that shape it.
//
// VMware "Virtual Disk Format 5.0", "The Descriptor File": a header
// (version, CID, parentCID, createType), the extent lines, and the disk
// database (hardware version, CHS geometry, adapter, UUID). The sparse view
// embeds it in its extent, the flat pair keeps it in a file of its own, the
// stream-optimized view embeds it like the sparse one; the text is made here
// once for all of them.
#pragma once

#include "formats/format.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace p2vfs::vmdk {

// The options of every VMDK view, with the defaults hosted VMware products
// and ESXi both accept (hardware version 4 is the oldest any of them reads).
inline constexpr FormatOption adapter_option{
    "adapter", "ide", "virtual disk controller: ide, lsilogic, buslogic or pvscsi"};
inline constexpr FormatOption hwversion_option{
    "hwversion", "4", "virtual hardware version written in the descriptor (4-21)"};

// The disk database values a view's options choose.
struct DiskDatabase {
    std::string adapter; // ide, lsilogic, buslogic, pvscsi
    uint64_t hw_version;
};

// Reads the adapter and hwversion options; InvalidArgument naming the option
// (and the pair, for pvscsi below hardware version 7, which has no PVSCSI).
DiskDatabase disk_database(const ViewOptions& options);

struct DescriptorSpec {
    std::string create_type; // "monolithicSparse", "vmfs", "streamOptimized"...
    std::string extent_line; // without the newline; see extent_line()
    uint64_t capacity_sectors;
    DiskDatabase ddb;
    // Hashed into CID and ddb.longContentID: what the content is.
    std::string content_key;
    // Hashed into ddb.uuid: which disk this is.
    std::string uuid_key;
};

// `RW 20480 SPARSE "disk.vmdk"`, or with `offset` (FLAT extents):
// `RW 20480 FLAT "disk-flat.vmdk" 0`. The file name is relative to the
// descriptor, so the files can be moved together.
std::string extent_line(uint64_t sectors, std::string_view type, std::string_view file,
                        std::optional<uint64_t> offset = std::nullopt);

// The descriptor text, "\n" line ends, no NUL.
std::string descriptor_text(const DescriptorSpec& spec);

} // namespace p2vfs::vmdk
