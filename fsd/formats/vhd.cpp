// VHD views: fixed (the disk followed by a footer) and dynamic (footer copy,
// dynamic header, BAT, and only the blocks that hold data).
//
// Specification: Microsoft "Virtual Hard Disk Image Format Specification" 1.0.
//
// Dynamic layout, all offsets fixed once from extents():
//   0      footer copy (512)
//   512    dynamic header (1024)
//   1536   BAT: one big-endian sector offset per block, 0xffffffff if absent,
//          padded with 0xff to a whole sector
//   ...    each stored block, in disk order: sector bitmap (all ones: every
//          sector is present) followed by the block's 2 MiB of data
//   end    footer (512)
//
// Creator "win ": qemu takes the virtual size from the footer's current size
// only for a few creators (win, qem2, d2v, CTXS, tap) and otherwise from the
// CHS geometry, which rounds down and would cut off the end of the disk
// (where a GPT keeps its backup). Windows and Hyper-V always use the current
// size. So the view carries the geometry the specification computes and the
// creator tag under which every reader agrees on the size.
#include "block/grow_device.h"
#include "common/endian.h"
#include "common/error.h"
#include "common/stable_id.h"
#include "formats/allocation_map.h"
#include "formats/format.h"
#include "formats/geometry.h"
#include "formats/layout_view.h"
#include "formats/vhd_spec.h"

#include <cstring>

namespace p2vfs {
namespace {

uint64_t vhd_disk_size(const ViewRequest& req) {
    const bool mib = req.options.get_choice("round", {"sector", "mib"}) == "mib";
    const uint64_t size = round_up(req.source->size(), mib ? (1ULL << 20) : vhd::sector_size);
    if (size > vhd::max_disk_size)
        throw FormatLimitError("VHD: disk of " + human_size(size) + " (" + std::to_string(size) +
                               (mib ? " bytes, rounded up to whole MiB)" : " bytes)") +
                               " exceeds the format's " + human_size(vhd::max_disk_size) +
                               " limit");
    return size;
}

std::vector<unsigned char> make_footer(const ViewRequest& req, const std::string& kind,
                                       uint64_t disk_size, bool dynamic) {
    vhd::Footer f{};
    std::memcpy(f.cookie, "conectix", 8);
    f.features.set(2);
    f.file_format_version.set(0x00010000);
    f.data_offset.set(dynamic ? vhd::sector_size : vhd::no_offset);
    f.timestamp.set(0); // a view's bytes depend on its source only, not on the clock
    std::memcpy(f.creator_application, "win ", 4);
    f.creator_version.set(0x000a0000); // as Windows writes it
    std::memcpy(f.creator_host_os, "Wi2k", 4);
    f.original_size.set(disk_size);
    f.current_size.set(disk_size);
    const Chs chs = vhd_geometry(disk_size / vhd::sector_size);
    f.cylinders.set(static_cast<uint16_t>(chs.cylinders));
    f.heads = static_cast<unsigned char>(chs.heads);
    f.sectors_per_track = static_cast<unsigned char>(chs.sectors_per_track);
    f.disk_type.set(dynamic ? vhd::disk_type_dynamic : vhd::disk_type_fixed);
    const auto uid =
        stable_uuid(kind + "|" + req.options.canonical() + "|" + req.source->identity());
    std::memcpy(f.unique_id, uid.data(), uid.size());
    f.checksum.set(vhd::checksum(&f, sizeof f));
    const auto* p = reinterpret_cast<const unsigned char*>(&f);
    return {p, p + sizeof f};
}

std::string view_identity(const ViewRequest& req, const char* kind) {
    return std::string(kind) + "(" + req.options.canonical() + "):" + req.source->identity();
}

class VhdFixedView : public LayoutView {
public:
    explicit VhdFixedView(const ViewRequest& req)
        : LayoutView(req.file_name + " of " + req.source->name(), view_identity(req, "vhd-fixed")) {
        const uint64_t size = vhd_disk_size(req);
        // Fixed VHD is the raw disk with a footer: reads of the data pass
        // straight through (and splice), holes in the source stay holes.
        add_device(grown(req.source, size), 0, size);
        add_bytes(make_footer(req, "vhd-fixed", size, false));
    }
};

// The stored blocks of a dynamic VHD: for each, a sector bitmap of all ones
// followed by the block's data.
struct BlockArea {
    DevicePtr data;
    const AllocationMap* map;
    uint64_t bitmap_bytes;
    uint64_t block_size;

    uint64_t stride() const { return bitmap_bytes + block_size; }

    void read(unsigned char* out, size_t n, uint64_t rel) const {
        while (n > 0) {
            const uint64_t within = rel % stride();
            size_t k;
            if (within < bitmap_bytes) {
                k = static_cast<size_t>(std::min<uint64_t>(n, bitmap_bytes - within));
                std::memset(out, 0xff, k);
            } else {
                const uint64_t w = within - bitmap_bytes;
                k = static_cast<size_t>(std::min<uint64_t>(n, block_size - w));
                data->read(out, k, map->block_at(rel / stride()) * block_size + w);
            }
            out += k;
            rel += k;
            n -= k;
        }
    }

    std::optional<FdSpan> fd_span(uint64_t rel, size_t n) const {
        const uint64_t within = rel % stride();
        if (within < bitmap_bytes || within - bitmap_bytes + n > block_size)
            return std::nullopt;
        return data->fd_span(map->block_at(rel / stride()) * block_size + within - bitmap_bytes, n);
    }
};

class VhdDynamicView : public LayoutView {
public:
    explicit VhdDynamicView(const ViewRequest& req)
        : LayoutView(req.file_name + " of " + req.source->name(), view_identity(req, "vhd")) {
        const uint64_t size = vhd_disk_size(req);
        const uint64_t block_size = vhd::default_block_size;
        data_ = grown(req.source, round_up(size, block_size));
        map_ = AllocationMap::of(*req.source, block_size);
        const uint64_t entries = div_round_up(size, block_size);
        const uint64_t bitmap_bytes =
            round_up(div_round_up(block_size / vhd::sector_size, 8), vhd::sector_size);
        const uint64_t stride = bitmap_bytes + block_size;
        const uint64_t bat_offset = 3 * vhd::sector_size;
        const uint64_t bat_bytes = round_up(entries * 4, vhd::sector_size);
        const uint64_t data_start = bat_offset + bat_bytes;

        auto footer = make_footer(req, "vhd", size, true);
        add_bytes(footer);

        vhd::DynamicHeader h{};
        std::memcpy(h.cookie, "cxsparse", 8);
        h.data_offset.set(vhd::no_offset);
        h.table_offset.set(bat_offset);
        h.header_version.set(0x00010000);
        h.max_table_entries.set(static_cast<uint32_t>(entries));
        h.block_size.set(static_cast<uint32_t>(block_size));
        h.checksum.set(vhd::checksum(&h, sizeof h));
        const auto* hp = reinterpret_cast<const unsigned char*>(&h);
        add_bytes({hp, hp + sizeof h});

        const AllocationMap* map = &map_;
        add_generated(bat_bytes, [map, entries, data_start, stride](unsigned char* out, size_t n,
                                                                    uint64_t rel) {
            fill_table<uint32_t>(
                out, n, rel, entries,
                [map, data_start, stride](uint64_t block) {
                    const auto o = map->ordinal(block);
                    return o ? static_cast<uint32_t>((data_start + *o * stride) / vhd::sector_size)
                             : vhd::no_block;
                },
                true, vhd::no_block);
        });

        auto area = std::make_shared<BlockArea>(BlockArea{data_, map, bitmap_bytes, block_size});
        add_generated(
            map_.allocated_count() * stride,
            [area](unsigned char* out, size_t n, uint64_t rel) { area->read(out, n, rel); }, {},
            [area](uint64_t rel, size_t n) { return area->fd_span(rel, n); });
        add_bytes(std::move(footer));
    }

private:
    DevicePtr data_;
    AllocationMap map_;
};

} // namespace

extern const Format vhd_dynamic_format{
    // extern: listed in format_table.cpp
    "vhd",
    "VHD",
    "disk.vhd",
    "VHD, dynamic: only blocks that hold data are in the file (Hyper-V, Azure after conversion "
    "to fixed, VirtualBox)",
    {{"round", "sector", "virtual size rounded up to whole 'sector's or whole 'mib' (Azure)"}},
    vhd::max_disk_size,
    one_file<VhdDynamicView>,
};

extern const Format vhd_fixed_format{
    // extern: listed in format_table.cpp
    "vhd-fixed",
    "VHD",
    "disk-fixed.vhd",
    "VHD, fixed: the disk followed by a footer (Azure, Hyper-V)",
    {{"round", "sector", "virtual size rounded up to whole 'sector's or whole 'mib' (Azure)"}},
    vhd::max_disk_size,
    one_file<VhdFixedView>,
};

} // namespace p2vfs
