// VMDK monolithicSparse view: one file holding header, embedded descriptor,
// grain directories and tables, and only the grains that hold data.
//
// Specification: VMware "Virtual Disk Format 5.0" (hosted sparse extents).
//
// Layout, in sectors, fixed once from extents():
//   0          sparse extent header
//   1..20      embedded descriptor (text from vmdk_descriptor.h, NUL-padded)
//   21         redundant grain directory, then its grain tables
//   ...        grain directory, then its grain tables
//   over_head  grains that hold data, in disk order (over_head is grain-aligned)
// Both directories point at a full set of grain tables, as VMware and qemu-img
// write them; a table entry is the sector of its grain or 0 (unallocated,
// reads as zeros). Tables are computed from the AllocationMap on each read.
// The two copies are identical, which is what "redundant" promises.
#include "block/grow_device.h"
#include "common/endian.h"
#include "common/error.h"
#include "formats/allocation_map.h"
#include "formats/format.h"
#include "formats/layout_view.h"
#include "formats/vmdk_descriptor.h"
#include "formats/vmdk_spec.h"

#include <cstring>

namespace p2vfs {
namespace {

std::string descriptor_text(const ViewRequest& req, uint64_t capacity_sectors) {
    return vmdk::descriptor_text({
        "monolithicSparse",
        vmdk::extent_line(capacity_sectors, "SPARSE", req.file_name),
        capacity_sectors,
        vmdk::disk_database(req.options),
        "vmdk|" + req.options.canonical() + "|" + req.source->identity(),
        "vmdk-uuid|" + req.source->identity(),
    });
}

class VmdkSparseView : public LayoutView {
public:
    explicit VmdkSparseView(const ViewRequest& req)
        : LayoutView(req.file_name + " of " + req.source->name(),
                     "vmdk(" + req.options.canonical() + "):" + req.source->identity()) {
        const uint64_t grain_sectors = vmdk::default_grain_sectors;
        const uint64_t grain_bytes = grain_sectors * vmdk::sector_size;
        const uint64_t capacity = div_round_up(req.source->size(), vmdk::sector_size);
        const uint64_t grains = div_round_up(capacity, grain_sectors);
        const uint64_t tables = div_round_up(grains, vmdk::gtes_per_gt);
        const uint64_t gt_sectors = vmdk::gtes_per_gt * 4 / vmdk::sector_size;
        const uint64_t gd_sectors = div_round_up(tables * 4, vmdk::sector_size);
        const uint64_t rgd = 1 + vmdk::descriptor_sectors;
        const uint64_t gd = rgd + gd_sectors + tables * gt_sectors;
        const uint64_t over_head = round_up(gd + gd_sectors + tables * gt_sectors, grain_sectors);

        data_ = grown(req.source, grains * grain_bytes);
        map_ = AllocationMap::of(*req.source, grain_bytes);

        vmdk::SparseExtentHeader h{};
        h.magic_number.set(vmdk::magic);
        h.version.set(1);
        h.flags.set(vmdk::flag_valid_newline_test | vmdk::flag_redundant_grain_table);
        h.capacity.set(capacity);
        h.grain_size.set(grain_sectors);
        h.descriptor_offset.set(1);
        h.descriptor_size.set(vmdk::descriptor_sectors);
        h.num_gtes_per_gt.set(vmdk::gtes_per_gt);
        h.rgd_offset.set(rgd);
        h.gd_offset.set(gd);
        h.over_head.set(over_head);
        h.single_end_line_char = '\n';
        h.non_end_line_char = ' ';
        h.double_end_line_char1 = '\r';
        h.double_end_line_char2 = '\n';
        const auto* hp = reinterpret_cast<const unsigned char*>(&h);
        add_bytes({hp, hp + sizeof h});

        const std::string text = descriptor_text(req, capacity);
        std::vector<unsigned char> desc(vmdk::descriptor_sectors * vmdk::sector_size, 0);
        if (text.size() >= desc.size())
            throw Error("VMDK: descriptor of " + std::to_string(text.size()) +
                        " bytes does not fit its " + std::to_string(desc.size()) + " reserved");
        std::memcpy(desc.data(), text.data(), text.size());
        add_bytes(std::move(desc));

        const AllocationMap* map = &map_;
        for (uint64_t dir : {rgd, gd}) {
            const uint64_t first_gt = dir + gd_sectors;
            add_generated(
                gd_sectors * vmdk::sector_size,
                [tables, first_gt, gt_sectors](unsigned char* out, size_t n, uint64_t rel) {
                    fill_table<uint32_t>(
                        out, n, rel, tables,
                        [first_gt, gt_sectors](uint64_t t) {
                            return static_cast<uint32_t>(first_gt + t * gt_sectors);
                        },
                        false, 0);
                });
            add_generated(
                tables * gt_sectors * vmdk::sector_size,
                [map, grains, over_head, grain_sectors](unsigned char* out, size_t n,
                                                        uint64_t rel) {
                    fill_table<uint32_t>(
                        out, n, rel, grains,
                        [map, over_head, grain_sectors](uint64_t g) {
                            const auto o = map->ordinal(g);
                            return o ? static_cast<uint32_t>(over_head + *o * grain_sectors) : 0u;
                        },
                        false, 0);
                });
        }
        pad_to(over_head * vmdk::sector_size);

        add_stored_blocks(data_, map);
        if (over_head > 0xffffffffULL ||
            over_head + map_.allocated_count() * grain_sectors > 0xffffffffULL)
            throw FormatLimitError("VMDK: disk of " + human_size(req.source->size()) +
                                   " needs sector offsets beyond 32 bits");
    }

private:
    DevicePtr data_;
    AllocationMap map_;
};

} // namespace

extern const Format vmdk_sparse_format{
    // extern: listed in format_table.cpp
    "vmdk",
    "VMDK",
    "disk.vmdk",
    "VMDK monolithicSparse (hosted): VMware Workstation/Fusion/Player, VirtualBox, qemu",
    {vmdk::adapter_option, vmdk::hwversion_option},
    // 32-bit sector offsets in grain tables: 2 TiB, less the metadata.
    (2ULL << 40) - (1ULL << 30),
    one_file<VmdkSparseView>,
};

} // namespace p2vfs
