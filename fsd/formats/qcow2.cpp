// qcow2 view: a version 3 (compat 1.1) image holding only the clusters that
// hold data, with reference counts that qemu-img check finds exact.
//
// Specification: qemu's docs/interop/qcow2.txt ("Header", "Host cluster
// management", "Cluster mapping").
//
// Layout, in clusters of C bytes (64 KiB unless cluster-size says otherwise),
// fixed once from extents():
//   0        header (104 bytes; no extensions, the rest of the cluster zero)
//   1        L1 table: one entry per C/8 guest clusters; the offset of that
//            range's L2 table with COPIED set, or 0 where no cluster of the
//            range holds data (then no L2 table exists for it)
//   ...      refcount table: the offsets of the refcount blocks, in order
//   ...      refcount blocks: 16-bit refcounts (refcount_order 4), each block
//            covering the next C/2 clusters of the file
//   ...      L2 tables, in the order of their L1 entries: per guest cluster
//            the offset of its data with COPIED set, or 0 (unallocated,
//            reads as zeros: there is no backing file)
//   ...      data clusters, in disk order
// Nothing is ever shared or freed, so every cluster of the file is in use
// exactly once and every refcount is 1, up to the last cluster of the file;
// entries past it are 0. The refcount blocks are one flat array of 16-bit
// counts indexed by file cluster, the L1 and L2 tables are computed from two
// AllocationMaps (of clusters, and of the C/8-cluster ranges an L2 table
// maps) on each read: nothing is built whole.
//
// The refcount structure's size depends on itself: the blocks count their
// own clusters and the table's. With F the clusters of everything else
// (header, L1, L2 tables, data), B blocks and T table clusters must satisfy
//   B = ceil((F + T + B) / (C/2)),   T = ceil(8 B / C).
// Starting from B = T = 0 and recomputing both from the last total can only
// grow them (the right-hand sides are monotone), and they grow far slower
// than the total they count, so the iteration stops within a few rounds at
// the smallest B and T that cover the file including themselves.
//
// The zero flag (bit 0 of a standard cluster descriptor) is not used: with no
// backing file an unallocated cluster already reads as zeros, and leaving it
// out keeps every L2 entry either 0 or the offset of stored data.
#include "block/grow_device.h"
#include "common/endian.h"
#include "common/error.h"
#include "formats/allocation_map.h"
#include "formats/format.h"
#include "formats/layout_view.h"
#include "formats/qcow2_spec.h"

#include <algorithm>
#include <bit>

namespace p2vfs {
namespace {

constexpr uint64_t sector_size = 512;
// 64 TiB, as VHDX holds: beyond any disk a physical machine brings, and at
// 64 KiB clusters an L1 table of 1 MiB. qemu's own limit is its 32 MiB L1
// table (2 PiB at 64 KiB clusters); sizes that large have never been tried
// here, and small clusters lower the limit further (size_limit()).
constexpr uint64_t max_disk_size = 64ULL << 40;

// Where each part of the file sits, in clusters.
struct Qcow2Layout {
    uint64_t cluster_bytes;
    uint64_t guest_clusters;
    uint64_t l1_entries;
    uint64_t l1_clusters;
    uint64_t refcount_table_clusters;
    uint64_t refcount_blocks;
    uint64_t l2_tables;
    uint64_t data_clusters;

    uint64_t l1_at() const { return 1; }
    uint64_t refcount_table_at() const { return l1_at() + l1_clusters; }
    uint64_t refcount_blocks_at() const { return refcount_table_at() + refcount_table_clusters; }
    uint64_t l2_at() const { return refcount_blocks_at() + refcount_blocks; }
    uint64_t data_at() const { return l2_at() + l2_tables; }
    uint64_t total_clusters() const { return data_at() + data_clusters; }
};

Qcow2Layout plan_layout(uint64_t disk_size, uint64_t cluster_bytes, uint64_t l2_tables,
                        uint64_t data_clusters) {
    Qcow2Layout l{};
    l.cluster_bytes = cluster_bytes;
    l.guest_clusters = div_round_up(disk_size, cluster_bytes);
    l.l1_entries = div_round_up(l.guest_clusters, cluster_bytes / 8);
    l.l1_clusters = div_round_up(l.l1_entries * 8, cluster_bytes);
    l.l2_tables = l2_tables;
    l.data_clusters = data_clusters;
    // The fixed point described at the top of the file.
    const uint64_t counts_per_block = cluster_bytes / qcow2::refcount_bytes;
    for (;;) {
        const uint64_t blocks = div_round_up(l.total_clusters(), counts_per_block);
        const uint64_t table = div_round_up(blocks * 8, cluster_bytes);
        if (blocks == l.refcount_blocks && table == l.refcount_table_clusters)
            return l;
        l.refcount_blocks = blocks;
        l.refcount_table_clusters = table;
    }
}

// The largest disk whose image qemu opens at this cluster size even when
// every cluster holds data: 64 TiB, halved while the fully allocated image
// would need an L1 table over 32 MiB or a refcount table over 8 MiB (qemu's
// limits). Only small clusters are affected: 4 TiB at 4 KiB, 16 TiB at 8 KiB.
// A limit that does not depend on how much data the disk holds keeps the view
// from appearing and vanishing as the source fills up.
uint64_t size_limit(uint64_t cluster_bytes) {
    uint64_t limit = max_disk_size;
    for (;;) {
        const Qcow2Layout full = plan_layout(limit, cluster_bytes, 0, 0);
        const Qcow2Layout worst =
            plan_layout(limit, cluster_bytes, full.l1_entries, full.guest_clusters);
        if (worst.l1_entries * 8 <= qcow2::max_l1_bytes &&
            worst.refcount_table_clusters * cluster_bytes <= qcow2::max_refcount_table_bytes)
            return limit;
        limit /= 2;
    }
}

// cluster-size: bytes, or a number followed by K or M, as qemu-img's
// cluster_size option takes it.
uint64_t cluster_size_option(const ViewOptions& options) {
    const std::string& v = options.get("cluster-size");
    size_t digits = 0;
    while (digits < v.size() && v[digits] >= '0' && v[digits] <= '9')
        ++digits;
    const std::string suffix = v.substr(digits);
    uint64_t unit = 1;
    if (suffix == "K" || suffix == "k")
        unit = 1ULL << 10;
    else if (suffix == "M" || suffix == "m")
        unit = 1ULL << 20;
    else if (!suffix.empty() || digits == 0)
        throw InvalidArgument("option cluster-size=" + v +
                              ": not a size (bytes, or a number followed by K or M)");
    // Nine digits already exceed 2M; more could overflow.
    const uint64_t bytes = digits <= 9 ? std::stoull(v.substr(0, digits)) * unit : 0;
    if (!std::has_single_bit(bytes) || bytes < (1ULL << qcow2::min_cluster_bits) ||
        bytes > (1ULL << qcow2::max_cluster_bits))
        throw InvalidArgument("option cluster-size=" + v +
                              ": must be a power of two from 4K to 2M");
    return bytes;
}

// Bytes [rel, rel+n) of the refcount blocks, read as one array of big-endian
// 16-bit counts: 1 for each of the file's `used` clusters, then 0.
void fill_refcounts(unsigned char* out, size_t n, uint64_t rel, uint64_t used) {
    const uint64_t used_bytes = used * qcow2::refcount_bytes;
    for (size_t i = 0; i < n; ++i) {
        const uint64_t at = rel + i;
        // Big-endian: the count's low byte is the last of its two.
        out[i] = at < used_bytes && at % qcow2::refcount_bytes == qcow2::refcount_bytes - 1 ? 1 : 0;
    }
}

class Qcow2View : public LayoutView {
public:
    explicit Qcow2View(const ViewRequest& req)
        : LayoutView(req.file_name + " of " + req.source->name(),
                     "qcow2(" + req.options.canonical() + "):" + req.source->identity()) {
        const uint64_t cluster_bytes = cluster_size_option(req.options);
        // qemu counts a disk in whole sectors.
        const uint64_t size = round_up(req.source->size(), sector_size);
        const uint64_t limit = size_limit(cluster_bytes);
        if (size > limit)
            throw FormatLimitError("qcow2: disk of " + human_size(size) + " (" +
                                   std::to_string(size) + " bytes) exceeds the " +
                                   human_size(limit) + " that qemu opens with " +
                                   human_size(cluster_bytes) + " clusters");

        const uint64_t l2_entries = cluster_bytes / 8;
        const std::vector<Extent> extents = req.source->extents(0, req.source->size());
        clusters_ = AllocationMap(extents, req.source->size(), cluster_bytes);
        l2_ranges_ = AllocationMap(extents, req.source->size(), cluster_bytes * l2_entries);
        const Qcow2Layout l = plan_layout(size, cluster_bytes, l2_ranges_.allocated_count(),
                                          clusters_.allocated_count());
        data_ = grown(req.source, l.guest_clusters * cluster_bytes);

        qcow2::Header h{};
        h.magic.set(qcow2::magic);
        h.version.set(qcow2::version);
        h.cluster_bits.set(static_cast<uint32_t>(std::countr_zero(cluster_bytes)));
        h.size.set(size);
        h.l1_size.set(static_cast<uint32_t>(l.l1_entries));
        h.l1_table_offset.set(l.l1_at() * cluster_bytes);
        h.refcount_table_offset.set(l.refcount_table_at() * cluster_bytes);
        h.refcount_table_clusters.set(static_cast<uint32_t>(l.refcount_table_clusters));
        h.refcount_order.set(qcow2::refcount_order);
        h.header_length.set(qcow2::header_length);
        const auto* hp = reinterpret_cast<const unsigned char*>(&h);
        add_bytes({hp, hp + sizeof h});
        // The zeros after the header read as the end of header extensions.
        pad_to(cluster_bytes);

        const AllocationMap* clusters = &clusters_;
        const AllocationMap* l2_ranges = &l2_ranges_;
        add_generated(l.l1_clusters * cluster_bytes, [l, l2_ranges](unsigned char* out, size_t n,
                                                                    uint64_t rel) {
            fill_table<uint64_t>(
                out, n, rel, l.l1_entries,
                [&l, l2_ranges](uint64_t i) {
                    const auto table = l2_ranges->ordinal(i);
                    return table ? ((l.l2_at() + *table) * l.cluster_bytes) | qcow2::flag_copied
                                 : 0;
                },
                true, 0);
        });

        add_generated(l.refcount_table_clusters * cluster_bytes, [l](unsigned char* out, size_t n,
                                                                     uint64_t rel) {
            fill_table<uint64_t>(
                out, n, rel, l.refcount_blocks,
                [&l](uint64_t i) { return (l.refcount_blocks_at() + i) * l.cluster_bytes; }, true,
                0);
        });

        add_generated(l.refcount_blocks * cluster_bytes,
                      [used = l.total_clusters()](unsigned char* out, size_t n, uint64_t rel) {
                          fill_refcounts(out, n, rel, used);
                      });

        add_generated(l.l2_tables * cluster_bytes, [l, l2_entries, clusters, l2_ranges](
                                                       unsigned char* out, size_t n, uint64_t rel) {
            // One table at a time: table k maps the guest clusters of the
            // k-th L1 range that holds data.
            while (n > 0) {
                const uint64_t within = rel % l.cluster_bytes;
                const size_t k =
                    static_cast<size_t>(std::min<uint64_t>(n, l.cluster_bytes - within));
                const uint64_t first = l2_ranges->block_at(rel / l.cluster_bytes) * l2_entries;
                fill_table<uint64_t>(
                    out, k, within, std::min(l2_entries, l.guest_clusters - first),
                    [&l, clusters, first](uint64_t j) {
                        const auto o = clusters->ordinal(first + j);
                        return o ? ((l.data_at() + *o) * l.cluster_bytes) | qcow2::flag_copied : 0;
                    },
                    true, 0);
                out += k;
                rel += k;
                n -= k;
            }
        });

        add_stored_blocks(data_, clusters);
    }

private:
    DevicePtr data_;
    AllocationMap clusters_;
    AllocationMap l2_ranges_;
};

} // namespace

extern const Format qcow2_format{
    // extern: listed in format_table.cpp
    "qcow2",
    "qcow2",
    "disk.qcow2",
    "qcow2 version 3 (compat 1.1): only clusters that hold data are in the file (qemu/KVM, "
    "libvirt, Proxmox VE, OpenStack)",
    {{"cluster-size", "64K", "cluster size: a power of two from 4K to 2M (bytes, or with K or M)"}},
    max_disk_size,
    one_file<Qcow2View>,
};

} // namespace p2vfs
