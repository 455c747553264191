// qcow2 view: a version 3 (compat 1.1) image holding only the clusters that
// hold data, with reference counts that qemu-img check finds exact.
//
// Specification: qemu's docs/interop/qcow2.txt ("Header", "Header
// extensions", "Host cluster management", "Cluster mapping").
//
// Layout, in clusters of C bytes (64 KiB unless cluster-size says otherwise),
// fixed once from extents():
//   0        header (104 bytes), then, only with a backing file, the backing
//            file format name extension, the end-of-extensions marker and the
//            backing file's name (backing_file_offset points at it); the rest
//            of the cluster zero. Without a backing file the zeros after the
//            header read as the end of the (empty) extension list.
//   1        L1 table: one entry per C/8 guest clusters; the offset of that
//            range's L2 table with COPIED set, or 0 where no cluster of the
//            range is mapped (then no L2 table exists for it)
//   ...      refcount table: the offsets of the refcount blocks, in order
//   ...      refcount blocks: 16-bit refcounts (refcount_order 4), each block
//            covering the next C/2 clusters of the file
//   ...      L2 tables, in the order of their L1 entries: per guest cluster
//            the offset of its data with COPIED set, the zero flag alone
//            (backed images only, see below), or 0 (unallocated)
//   ...      data clusters, in disk order
// Nothing is ever shared or freed, so every cluster of the file is in use
// exactly once and every refcount is 1, up to the last cluster of the file;
// entries past it are 0. The refcount blocks are one flat array of 16-bit
// counts indexed by file cluster, the L1 and L2 tables are computed from
// AllocationMaps (of stored clusters, of zero-flagged clusters, and of the
// C/8-cluster ranges an L2 table maps) on each read: nothing is built whole.
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
// Without a backing file an unallocated cluster reads as zeros, so Zero and
// Hole ranges alike are left unallocated, every L2 entry is 0 or the offset
// of stored data, and the zero flag is not used.
//
// With a backing file (backing-file, backing-format) an unallocated cluster
// reads from the backing file: the source's Hole ranges mean "as in the
// backing file" (an overlay's delta device: Data where chunks changed, Hole
// elsewhere), and each guest cluster is one of
//   - Hole only:           unallocated, L2 entry 0: the backing file shows;
//   - Zero only:           L2 entry = the zero flag (bit 0), no host cluster.
//                          A known-zero range must not fall through to the
//                          backing file, and the flag keeps it out of the
//                          file: storing data clusters of zeros instead would
//                          grow the image by every zeroed range (a wiped or
//                          trimmed disk by its whole size) for bytes qemu
//                          never needs to read;
//   - Data, or Data and Zero: stored whole, read from the source;
//   - Hole and anything else: refused. Its unchanged bytes would have to come
//                          from the backing file, which the view cannot read,
//                          and neither an unallocated nor a stored cluster
//                          shows both; a cluster-size no larger than the
//                          granularity of the source's changes avoids it.
// Only the source's own size counts: the tail of the last cluster past it is
// padding.
#include "block/grow_device.h"
#include "common/endian.h"
#include "common/error.h"
#include "formats/allocation_map.h"
#include "formats/format.h"
#include "formats/layout_view.h"
#include "formats/qcow2_spec.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>

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

// The formats qemu can name in the backing file format extension that this
// project also shows or opens.
constexpr std::array<std::string_view, 6> backing_formats = {"raw", "qcow2", "vmdk",
                                                             "vpc", "vhdx",  "vdi"};

struct Backing {
    std::string file; // empty: no backing file
    std::string format;
};

// backing-file and backing-format: both or neither.
Backing backing_options(const ViewOptions& options) {
    Backing b{options.get("backing-file"), options.get("backing-format")};
    if (b.file.empty()) {
        if (!b.format.empty())
            throw InvalidArgument("option backing-format=" + b.format +
                                  ": given without backing-file");
        return b;
    }
    if (b.file.find_first_of(std::string_view("\0\n", 2)) != std::string::npos)
        throw InvalidArgument("option backing-file: the name contains a NUL or newline character");
    if (b.file.size() > qcow2::max_backing_file_name)
        throw InvalidArgument("option backing-file: a name of " + std::to_string(b.file.size()) +
                              " bytes exceeds qcow2's limit of " +
                              std::to_string(qcow2::max_backing_file_name) + " bytes");
    std::string list;
    for (std::string_view f : backing_formats)
        list += (list.empty() ? "" : ", ") + std::string(f);
    if (b.format.empty())
        throw InvalidArgument("option backing-file=" + b.file + ": needs backing-format (one of " +
                              list + ")");
    if (std::find(backing_formats.begin(), backing_formats.end(), b.format) ==
        backing_formats.end())
        throw InvalidArgument("option backing-format=" + b.format + ": must be one of " + list);
    return b;
}

constexpr uint64_t extension_bytes(uint64_t data_length) {
    return sizeof(qcow2::ExtensionHeader) + round_up(data_length, qcow2::extension_alignment);
}

// The longest backing file name with the longest format name fits in cluster
// 0 at the smallest cluster size, so the 1023-byte limit is the only one.
static_assert(qcow2::header_length + extension_bytes(5) + extension_bytes(0) +
                  qcow2::max_backing_file_name <=
              (1ULL << qcow2::min_cluster_bits));

// What follows the header in cluster 0 with a backing file: the backing file
// format name extension, the end of extensions, then the backing file's name
// (not NUL-terminated), which ends the returned bytes.
std::vector<unsigned char> header_extensions(const Backing& b) {
    std::vector<unsigned char> out(extension_bytes(b.format.size()) + extension_bytes(0), 0);
    qcow2::ExtensionHeader format{};
    format.type.set(qcow2::extension_backing_format);
    format.length.set(static_cast<uint32_t>(b.format.size()));
    std::memcpy(out.data(), &format, sizeof format);
    std::memcpy(out.data() + sizeof format, b.format.data(), b.format.size());
    // The end marker: type extension_end, length 0, already zero.
    static_assert(qcow2::extension_end == 0);
    out.insert(out.end(), b.file.begin(), b.file.end());
    return out;
}

uint64_t type_bit(ExtentType t) {
    return 1U << static_cast<unsigned>(t);
}

// The kind of each guest cluster of a backed image (see the top of the
// file), as cluster-aligned extents: Data stored, Zero flagged, Hole left to
// the backing file. `extents` cover the source, in order.
std::vector<Extent> backed_clusters(const std::vector<Extent>& extents, uint64_t cluster_bytes,
                                    const std::string& source_name) {
    std::vector<Extent> out;
    constexpr uint64_t none = UINT64_MAX;
    uint64_t current = none; // the cluster whose types are being gathered
    uint64_t seen = 0;       // type_bit()s of the ranges in it
    auto finish = [&] {
        if (current == none)
            return;
        const uint64_t hole = type_bit(ExtentType::Hole);
        ExtentType kind = ExtentType::Data;
        if (seen == hole)
            kind = ExtentType::Hole;
        else if (seen == type_bit(ExtentType::Zero))
            kind = ExtentType::Zero;
        else if (seen & hole)
            throw InvalidArgument(
                "qcow2 with backing file: the " + human_size(cluster_bytes) + " cluster at " +
                hex(current * cluster_bytes) + " of " + source_name +
                " is partly unchanged (a hole) and partly " +
                (seen & type_bit(ExtentType::Data) ? "data" : "zeros") +
                "; a backed image maps whole clusters, so choose a cluster-size no larger than "
                "the granularity of the source's changes");
        append_extent(out, {current * cluster_bytes, cluster_bytes, kind});
    };
    for (const Extent& e : extents) {
        if (e.length == 0)
            continue;
        const uint64_t first = e.offset / cluster_bytes;
        const uint64_t last = (e.offset + e.length - 1) / cluster_bytes;
        if (first != current) {
            finish();
            current = first;
            seen = 0;
        }
        seen |= type_bit(e.type);
        if (last != first) {
            finish();
            // Clusters strictly inside the extent are wholly of its type.
            append_extent(
                out, {(first + 1) * cluster_bytes, (last - first - 1) * cluster_bytes, e.type});
            current = last;
            seen = type_bit(e.type);
        }
    }
    finish();
    return out;
}

// `extents` with the types in `as_data` made Data and all others Hole: what
// an AllocationMap of just those clusters is built from.
std::vector<Extent> select_types(const std::vector<Extent>& extents,
                                 std::initializer_list<ExtentType> as_data) {
    std::vector<Extent> out;
    for (Extent e : extents) {
        e.type = std::find(as_data.begin(), as_data.end(), e.type) != as_data.end()
                     ? ExtentType::Data
                     : ExtentType::Hole;
        append_extent(out, e);
    }
    return out;
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

        const Backing backing = backing_options(req.options);

        const uint64_t l2_entries = cluster_bytes / 8;
        const std::vector<Extent> extents = req.source->extents(0, req.source->size());
        if (backing.file.empty()) {
            clusters_ = AllocationMap(extents, req.source->size(), cluster_bytes);
            l2_ranges_ = AllocationMap(extents, req.source->size(), cluster_bytes * l2_entries);
        } else {
            const std::vector<Extent> kinds =
                backed_clusters(extents, cluster_bytes, req.source->name());
            clusters_ = AllocationMap(kinds, req.source->size(), cluster_bytes);
            zero_clusters_ = AllocationMap(select_types(kinds, {ExtentType::Zero}),
                                           req.source->size(), cluster_bytes);
            l2_ranges_ = AllocationMap(select_types(kinds, {ExtentType::Data, ExtentType::Zero}),
                                       req.source->size(), cluster_bytes * l2_entries);
        }
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
        std::vector<unsigned char> extensions;
        if (!backing.file.empty()) {
            extensions = header_extensions(backing);
            h.backing_file_offset.set(qcow2::header_length + extensions.size() -
                                      backing.file.size());
            h.backing_file_size.set(static_cast<uint32_t>(backing.file.size()));
        }
        const auto* hp = reinterpret_cast<const unsigned char*>(&h);
        std::vector<unsigned char> cluster0(hp, hp + sizeof h);
        cluster0.insert(cluster0.end(), extensions.begin(), extensions.end());
        add_bytes(std::move(cluster0));
        pad_to(cluster_bytes);

        const AllocationMap* clusters = &clusters_;
        const AllocationMap* zero_clusters = &zero_clusters_;
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

        // The L2 entry of guest cluster g: its data, the zero flag, or unallocated.
        auto l2_entry = [l, clusters, zero_clusters](uint64_t g) -> uint64_t {
            if (const auto o = clusters->ordinal(g))
                return ((l.data_at() + *o) * l.cluster_bytes) | qcow2::flag_copied;
            return zero_clusters->ordinal(g) ? qcow2::flag_zero : 0;
        };
        add_generated(l.l2_tables * cluster_bytes, [l, l2_entries, l2_ranges, l2_entry](
                                                       unsigned char* out, size_t n, uint64_t rel) {
            // One table at a time: table k maps the guest clusters of the
            // k-th L1 range that is mapped.
            while (n > 0) {
                const uint64_t within = rel % l.cluster_bytes;
                const size_t k =
                    static_cast<size_t>(std::min<uint64_t>(n, l.cluster_bytes - within));
                const uint64_t first = l2_ranges->block_at(rel / l.cluster_bytes) * l2_entries;
                fill_table<uint64_t>(
                    out, k, within, std::min(l2_entries, l.guest_clusters - first),
                    [&l2_entry, first](uint64_t j) { return l2_entry(first + j); }, true, 0);
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
    AllocationMap zero_clusters_; // backed images only: Zero clusters, flagged
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
    {{"cluster-size", "64K", "cluster size: a power of two from 4K to 2M (bytes, or with K or M)"},
     {"backing-file", "",
      "backing file name written into the image (qemu resolves a relative one from the image's "
      "directory); holes of the source then read from it. Empty: none"},
     {"backing-format", "",
      "format of the backing file: raw, qcow2, vmdk, vpc, vhdx or vdi; needed with "
      "backing-file"}},
    max_disk_size,
    one_file<Qcow2View>,
};

} // namespace p2vfs
