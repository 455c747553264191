// VDI view: a dynamic VirtualBox disk image holding only the 1 MiB blocks
// that hold data.
//
// Specification: VirtualBox src/VBox/Storage/VDICore.h (structures) and
// VDI.cpp (how VirtualBox creates an image: vdiInitHeader,
// vdiSetupImageState, vdiCreateImage); qemu's block/vdi.c is the second
// reader the layout must satisfy.
//
// Layout, all offsets fixed once from extents():
//   0          pre-header (72): file info text, signature, version 1.1
//   72         header (VDIHEADER1PLUS, 400)
//   472        zeros up to 1 MiB (a hole)
//   1 MiB      block map: one little-endian uint32 per 1 MiB block of the
//              disk, the block's number in the data area or FREE
//   ...        zeros up to the next MiB (a hole)
//   data       the blocks that hold data, whole and in disk order
// VirtualBox aligns both the block map and the data area to VDI_DATA_ALIGN
// (1 MiB), so the view does too. The file ends with the last stored block:
// VirtualBox refuses to read a block that reaches past the end of the file.
//
// Blocks without data are VDI_IMAGE_BLOCK_FREE (~0), not _ZERO (~1): a new
// dynamic image has every entry FREE in both VirtualBox (vdiSetupImageState)
// and qemu (vdi_co_do_create writes VDI_UNALLOCATED, the same value), and
// both read a FREE block of a base image as zeros (VirtualBox's VD layer
// zero-fills a block no image in the chain holds; qemu's vdi_co_preadv
// zero-fills every unallocated block). VirtualBox writes ZERO only when it
// discards a block or a guest writes a whole block of zeros — history a view
// of a source does not have.
//
// Header fields are those VirtualBox writes for a new base image: type
// "normal" (dynamic), no flags, an empty comment, no extra bytes per block,
// and both geometries "not calculated" (0/0/0, 512-byte sectors), as
// vdiInitHeader leaves them and VBoxManage convertfromraw creates them:
// VirtualBox fills in the LCHS geometry from the guest's BIOS on first use
// (the legacy field is ignored from version 1.1 on).
// The creation and modification UUIDs are derived from the source (the
// modification UUID must not be null: vdiValidateHeader refuses it); the
// linkage and parent-modification UUIDs stay null, as in any base image
// (qemu refuses an image with a non-null link or parent UUID).
#include "block/grow_device.h"
#include "common/endian.h"
#include "common/error.h"
#include "common/stable_id.h"
#include "formats/allocation_map.h"
#include "formats/format.h"
#include "formats/layout_view.h"
#include "formats/vdi_spec.h"

#include <algorithm>
#include <cstring>

namespace p2vfs {
namespace {

// The block map is 32-bit, so with 1 MiB blocks it could address almost
// 4 PiB (VirtualBox creates up to 4 PiB - 3 MiB). The readers allow less:
// the header's data offset is 32-bit, so a 1 MiB-aligned block map ends
// before 4 GiB (about 1 PiB of disk), and qemu opens at most 2^29 - 128
// blocks (VDI_BLOCKS_IN_IMAGE_MAX: the map must fit in an int), 512 TiB less
// 128 MiB. 511 TiB keeps a margin under qemu's limit and is a size people
// say; it is a multiple of 512, so rounding up to sectors never crosses it.
constexpr uint64_t max_disk_size = 511ULL << 40;

// VirtualBox rounds a disk size that is not whole sectors down when it
// opens an image (vdiImageReadHeader) and refuses to create one, so the
// view rounds up: the padding reads as zeros.
uint64_t vdi_disk_size(const ViewRequest& req) {
    const uint64_t size = round_up(req.source->size(), vdi::sector_size);
    if (size > max_disk_size)
        throw FormatLimitError("VDI: disk of " + human_size(size) + " (" + std::to_string(size) +
                               " bytes) exceeds the format's " + human_size(max_disk_size) +
                               " limit");
    return size;
}

// A UUID from stable_uuid() (RFC 9562 byte order) as an RTUUID in the file:
// VirtualBox writes the structure as it sits in an x86's memory, its first
// three fields little-endian, so VBoxManage and qemu print the same text as
// uuid_text() does.
vdi::Uuid rtuuid_bytes(const std::array<uint8_t, 16>& uuid) {
    vdi::Uuid out;
    std::copy(uuid.begin(), uuid.end(), out.begin());
    std::reverse(out.begin(), out.begin() + 4);
    std::reverse(out.begin() + 4, out.begin() + 6);
    std::reverse(out.begin() + 6, out.begin() + 8);
    return out;
}

void set_unset_geometry(vdi::DiskGeometry& g) {
    g.cylinders.set(0);
    g.heads.set(0);
    g.sectors.set(0);
    g.sector_bytes.set(static_cast<uint32_t>(vdi::sector_size));
}

template <typename T> std::vector<unsigned char> bytes_of(const T& s) {
    const auto* p = reinterpret_cast<const unsigned char*>(&s);
    return {p, p + sizeof s};
}

class VdiDynamicView : public LayoutView {
public:
    explicit VdiDynamicView(const ViewRequest& req)
        : LayoutView(req.file_name + " of " + req.source->name(),
                     "vdi(" + req.options.canonical() + "):" + req.source->identity()) {
        const uint64_t disk_size = vdi_disk_size(req);
        const uint64_t blocks = div_round_up(disk_size, vdi::block_size);
        const uint64_t blocks_offset =
            round_up(sizeof(vdi::PreHeader) + sizeof(vdi::Header), vdi::data_align);
        const uint64_t data_offset = round_up(blocks_offset + blocks * 4, vdi::data_align);

        // Stored blocks are whole, the last one too: past the disk it reads zeros.
        data_ = grown(req.source, blocks * vdi::block_size);
        map_ = AllocationMap::of(*req.source, vdi::block_size);

        vdi::PreHeader pre{};
        std::memcpy(pre.file_info, vdi::file_info, sizeof vdi::file_info - 1);
        pre.signature.set(vdi::signature);
        pre.version.set(vdi::version_1_1);
        add_bytes(bytes_of(pre));

        vdi::Header h{};
        h.header_size.set(sizeof h);
        h.image_type.set(vdi::image_type_normal);
        h.image_flags.set(0);
        h.blocks_offset.set(static_cast<uint32_t>(blocks_offset));
        h.data_offset.set(static_cast<uint32_t>(data_offset));
        set_unset_geometry(h.legacy_geometry);
        h.disk_size.set(disk_size);
        h.block_size.set(static_cast<uint32_t>(vdi::block_size));
        h.block_extra.set(0);
        h.blocks.set(static_cast<uint32_t>(blocks));
        h.blocks_allocated.set(static_cast<uint32_t>(map_.allocated_count()));
        const std::string id = "|" + req.options.canonical() + "|" + req.source->identity();
        h.uuid_create = rtuuid_bytes(stable_uuid("vdi-create" + id));
        h.uuid_modify = rtuuid_bytes(stable_uuid("vdi-modify" + id));
        set_unset_geometry(h.lchs_geometry);
        add_bytes(bytes_of(h));
        pad_to(blocks_offset);

        const AllocationMap* map = &map_;
        add_generated(blocks * 4, [map, blocks](unsigned char* out, size_t n, uint64_t rel) {
            fill_table<uint32_t>(
                out, n, rel, blocks,
                [map](uint64_t block) {
                    const auto o = map->ordinal(block);
                    return o ? static_cast<uint32_t>(*o) : vdi::block_free;
                },
                false, vdi::block_free);
        });
        pad_to(data_offset);

        add_stored_blocks(data_, map);
    }

private:
    DevicePtr data_;
    AllocationMap map_;
};

} // namespace

extern const Format vdi_dynamic_format{
    // extern: listed in format_table.cpp
    "vdi",
    "VDI",
    "disk.vdi",
    "VDI, dynamic: only the 1 MiB blocks that hold data are in the file (VirtualBox, qemu)",
    // No options: VirtualBox could use other block sizes, but qemu opens
    // only 1 MiB blocks.
    {},
    max_disk_size,
    one_file<VdiDynamicView>,
};

} // namespace p2vfs
