// Layout of the qcow2 view, checked against qemu's docs/interop/qcow2.txt:
// fields at the header offsets the specification gives, the disk read back
// through a small reader written from "Cluster mapping" (header -> L1 -> L2
// -> data), and the reference counts checked through "Host cluster
// management" against every cluster the image uses. Neither reader shares
// code with the view.
#include "common/endian.h"
#include "common/error.h"
#include "formats/format.h"
#include "memory_device.h"
#include "spec_bytes.h"

#include <atomic>
#include <cstring>
#include <gtest/gtest.h>
#include <map>
#include <tuple>

namespace p2vfs {
namespace {

using test::be16_at;
using test::be32_at;
using test::be64_at;

using test::MemoryDevice;
using test::read_all;
using test::read_at;

constexpr uint64_t KiB = 1024, MiB = KiB * KiB, GiB = MiB * KiB, TiB = GiB * KiB;

// Bits 9-55: the offset in L1 entries, L2 entries and refcount table entries.
constexpr uint64_t offset_mask = 0x00fffffffffffe00ULL;
constexpr uint64_t copied = 1ULL << 63;

DevicePtr qcow2(DevicePtr src, std::map<std::string, std::string> opts = {}) {
    return make_view(*find_format("qcow2"), std::move(src), opts);
}

// A qcow2 reader from the specification's "Cluster mapping": the guest disk
// as a reader sees it. An unallocated cluster reads from `backing` (zeros
// past its end), or as zeros without one; the zero flag reads as zeros.
std::vector<unsigned char> read_back_qcow2(const std::vector<unsigned char>& f,
                                           const std::vector<unsigned char>* backing = nullptr) {
    EXPECT_EQ(be32_at(f, 0), 0x514649fbu);
    const uint64_t cluster = 1ULL << be32_at(f, 20);
    const uint64_t size = be64_at(f, 24);
    const uint64_t l1 = be64_at(f, 40);
    const uint64_t l2_entries = cluster / 8;
    std::vector<unsigned char> disk(size, 0);
    if (backing)
        std::memcpy(disk.data(), backing->data(), std::min<uint64_t>(size, backing->size()));
    for (uint64_t g = 0; g * cluster < size; ++g) {
        const uint64_t l2 = be64_at(f, l1 + 8 * (g / l2_entries)) & offset_mask;
        if (l2 == 0)
            continue;
        const uint64_t entry = be64_at(f, l2 + 8 * (g % l2_entries));
        EXPECT_EQ(entry & (1ULL << 62), 0u) << "compressed cluster " << g;
        const uint64_t host = entry & offset_mask;
        const uint64_t n = std::min(cluster, size - g * cluster);
        if (entry & 1) {
            std::memset(&disk[g * cluster], 0, n); // reads as zeros, never from the backing file
            continue;
        }
        if (host == 0)
            continue; // unallocated: the backing file's bytes, or zeros
        EXPECT_LE(host + n, f.size()) << "guest cluster " << g;
        std::memcpy(&disk[g * cluster], &f[host], n);
    }
    return disk;
}

// A refcount checker from the specification's "Host cluster management":
// every cluster the image uses (header, L1 table, refcount table and blocks,
// L2 tables, data) is used once and has refcount 1, every other cluster the
// refcount structure covers has refcount 0, the file has no unused clusters,
// and the COPIED bit is set on every L1 and L2 entry in use (their refcount
// is 1). Returns the problems found, one per line; empty when there are none.
std::string check_refcounts(const std::vector<unsigned char>& f) {
    std::string problems;
    auto problem = [&problems](const std::string& p) {
        if (problems.size() < 2000)
            problems += p + "\n";
    };
    const uint64_t cluster = 1ULL << be32_at(f, 20);
    const uint64_t size = be64_at(f, 24);
    const uint64_t l1 = be64_at(f, 40), l1_size = be32_at(f, 36);
    const uint64_t rt = be64_at(f, 48), rt_clusters = be32_at(f, 56);
    const uint32_t refcount_bits = 1u << be32_at(f, 96);
    if (refcount_bits != 16)
        return "refcount_bits " + std::to_string(refcount_bits) + ", this checker reads 16\n";
    if (f.size() % cluster != 0)
        problem("file size " + std::to_string(f.size()) + " is not whole clusters");
    const uint64_t per_block = cluster * 8 / refcount_bits;

    std::map<uint64_t, int> uses; // cluster index -> times used
    auto use = [&](uint64_t offset, uint64_t bytes, const std::string& what) {
        if (offset % cluster != 0)
            problem(what + " at unaligned offset " + std::to_string(offset));
        for (uint64_t c = offset / cluster; c < div_round_up(offset + bytes, cluster); ++c)
            ++uses[c];
    };
    use(0, cluster, "header");
    use(l1, l1_size * 8, "L1 table");
    use(rt, rt_clusters * cluster, "refcount table");
    for (uint64_t i = 0; i < rt_clusters * cluster / 8; ++i) {
        const uint64_t e = be64_at(f, rt + 8 * i);
        if (e & ~offset_mask)
            problem("refcount table entry " + std::to_string(i) + " has reserved bits set");
        if (e != 0)
            use(e, cluster, "refcount block " + std::to_string(i));
    }
    const uint64_t l2_entries = cluster / 8;
    const uint64_t guest_clusters = div_round_up(size, cluster);
    for (uint64_t i = 0; i < l1_size; ++i) {
        const uint64_t e = be64_at(f, l1 + 8 * i);
        if (e == 0)
            continue;
        if (!(e & copied))
            problem("L1 entry " + std::to_string(i) + " lacks COPIED");
        if (e & ~(offset_mask | copied))
            problem("L1 entry " + std::to_string(i) + " has reserved bits set");
        const uint64_t l2 = e & offset_mask;
        use(l2, cluster, "L2 table " + std::to_string(i));
        for (uint64_t j = 0; j < l2_entries; ++j) {
            const uint64_t d = be64_at(f, l2 + 8 * j);
            if (d == 0 || d == 1)
                continue; // unallocated; or unallocated and reading as zeros (no refcount)
            const std::string where = "L2 entry " + std::to_string(i) + "/" + std::to_string(j);
            if (i * l2_entries + j >= guest_clusters)
                problem(where + " maps a cluster past the end of the disk");
            if (!(d & copied))
                problem(where + " lacks COPIED");
            if (d & ~(offset_mask | copied))
                problem(where + " has flags or reserved bits set");
            use(d & offset_mask, cluster, where);
        }
    }

    const uint64_t file_clusters = f.size() / cluster;
    for (const auto& [c, n] : uses) {
        if (c >= file_clusters)
            problem("cluster " + std::to_string(c) + " is used but lies past the end of the file");
        if (n != 1)
            problem("cluster " + std::to_string(c) + " is used " + std::to_string(n) + " times");
    }
    if (uses.size() != file_clusters)
        problem(std::to_string(file_clusters - uses.size()) + " clusters of the file are unused");
    // Every refcount the table reaches, also those past the end of the file.
    for (uint64_t b = 0; b < rt_clusters * cluster / 8; ++b) {
        const uint64_t first = b * per_block;
        const uint64_t block = be64_at(f, rt + 8 * b) & offset_mask;
        if (block == 0) { // all counts 0
            const auto it = uses.lower_bound(first);
            if (it != uses.end() && it->first < first + per_block)
                problem("cluster " + std::to_string(it->first) +
                        " is used but has no refcount block");
            continue;
        }
        for (uint64_t c = first; c < first + per_block; ++c) {
            const uint64_t want = uses.count(c) ? 1 : 0;
            const uint64_t got = be16_at(f, block + 2 * (c - first));
            if (got != want)
                problem("cluster " + std::to_string(c) + ": refcount " + std::to_string(got) +
                        ", expected " + std::to_string(want));
        }
    }
    return problems;
}

std::shared_ptr<MemoryDevice> sample_disk() {
    // 10 MiB: 100 bytes at 3 MiB (one cluster), the last MiB (16 clusters).
    auto d = std::make_shared<MemoryDevice>(10 * MiB);
    d->put_pattern(3 * MiB, 100);
    d->put_pattern(9 * MiB, MiB);
    return d;
}

TEST(Qcow2Layout, HeaderFieldsSitWhereTheSpecSays) {
    auto f = read_all(*qcow2(sample_disk()));
    const uint64_t c = 64 * KiB;
    // header, L1, refcount table, one refcount block, one L2 table, 17 data clusters
    ASSERT_EQ(f.size(), 22 * c);
    EXPECT_EQ(std::string(f.begin(), f.begin() + 4), "QFI\xfb");
    EXPECT_EQ(be32_at(f, 4), 3u);        // version
    EXPECT_EQ(be64_at(f, 8), 0u);        // backing_file_offset
    EXPECT_EQ(be32_at(f, 16), 0u);       // backing_file_size
    EXPECT_EQ(be32_at(f, 20), 16u);      // cluster_bits: 64 KiB
    EXPECT_EQ(be64_at(f, 24), 10 * MiB); // size
    EXPECT_EQ(be32_at(f, 32), 0u);       // crypt_method
    EXPECT_EQ(be32_at(f, 36), 1u);       // l1_size: 160 clusters, 8192 per L2 table
    EXPECT_EQ(be64_at(f, 40), c);        // l1_table_offset
    EXPECT_EQ(be64_at(f, 48), 2 * c);    // refcount_table_offset
    EXPECT_EQ(be32_at(f, 56), 1u);       // refcount_table_clusters
    EXPECT_EQ(be32_at(f, 60), 0u);       // nb_snapshots
    EXPECT_EQ(be64_at(f, 64), 0u);       // snapshots_offset
    EXPECT_EQ(be64_at(f, 72), 0u);       // incompatible_features
    EXPECT_EQ(be64_at(f, 80), 0u);       // compatible_features
    EXPECT_EQ(be64_at(f, 88), 0u);       // autoclear_features
    EXPECT_EQ(be32_at(f, 96), 4u);       // refcount_order: 16-bit refcounts
    EXPECT_EQ(be32_at(f, 100), 104u);    // header_length
    for (uint64_t i = 104; i < c; ++i)
        ASSERT_EQ(f[i], 0) << "header cluster byte " << i; // no header extensions

    EXPECT_EQ(be64_at(f, c), 4 * c | copied); // L1[0] -> the L2 table
    EXPECT_EQ(be64_at(f, c + 8), 0u);
    EXPECT_EQ(be64_at(f, 2 * c), 3 * c); // refcount table[0] -> the refcount block
    EXPECT_EQ(be64_at(f, 2 * c + 8), 0u);
    for (uint64_t i = 0; i < 22; ++i)
        EXPECT_EQ(be16_at(f, 3 * c + 2 * i), 1u) << "refcount of cluster " << i;
    EXPECT_EQ(be16_at(f, 3 * c + 2 * 22), 0u);

    const uint64_t l2 = 4 * c;
    EXPECT_EQ(be64_at(f, l2 + 8 * 47), 0u);
    EXPECT_EQ(be64_at(f, l2 + 8 * 48), 5 * c | copied); // 3 MiB: the first data cluster
    EXPECT_EQ(be64_at(f, l2 + 8 * 49), 0u);
    EXPECT_EQ(be64_at(f, l2 + 8 * 144), 6 * c | copied); // 9 MiB onwards, in disk order
    EXPECT_EQ(be64_at(f, l2 + 8 * 159), 21 * c | copied);
    EXPECT_EQ(be64_at(f, l2 + 8 * 160), 0u); // past the end of the disk
    EXPECT_EQ(f[5 * c], MemoryDevice::pattern(3 * MiB));
    EXPECT_EQ(f[21 * c + c - 1], MemoryDevice::pattern(10 * MiB - 1));
}

TEST(Qcow2Layout, ReadsBackAsTheSourceDiskAtEveryClusterSize) {
    auto src = sample_disk();
    const auto disk = read_all(*src);
    for (const char* cs : {"4K", "8K", "16K", "32K", "64K", "128K", "256K", "512K", "1M", "2M"}) {
        auto f = read_all(*qcow2(src, {{"cluster-size", cs}}));
        EXPECT_EQ(read_back_qcow2(f), disk) << "cluster-size=" << cs;
        EXPECT_EQ(check_refcounts(f), "") << "cluster-size=" << cs;
    }
}

TEST(Qcow2Layout, DataSpreadOverManyL2TablesReadsBack) {
    // 4 KiB clusters: an L2 table maps 2 MiB. Data in ranges 0, 3 and 40, and
    // none in between, so most L1 entries are 0.
    auto src = std::make_shared<MemoryDevice>(100 * MiB + 4321);
    src->put_pattern(1000, 5000);
    src->put_pattern(6 * MiB - 100, 200);
    src->put_pattern(80 * MiB + 7, 3 * MiB);
    src->put_pattern(100 * MiB, 4321);
    auto f = read_all(*qcow2(src, {{"cluster-size", "4096"}}));
    auto expect = read_all(*src);
    expect.resize(100 * MiB + 4608, 0); // whole sectors
    EXPECT_EQ(read_back_qcow2(f), expect);
    EXPECT_EQ(check_refcounts(f), "");
    EXPECT_EQ(be32_at(f, 36), 51u); // l1_size: 25602 clusters, 512 per table
    uint64_t tables = 0;
    for (uint64_t i = 0; i < 51; ++i)
        tables += be64_at(f, 4096 + 8 * i) != 0;
    // Ranges 0, 2 and 3 (across 6 MiB), 40 and 41 (the 3 MiB run), 50.
    EXPECT_EQ(tables, 6u);
}

TEST(Qcow2Layout, RefcountBlocksCountThemselves) {
    // 4 KiB clusters: a refcount block holds 2048 counts. With n data
    // clusters from the start of a 16 MiB disk the file needs header, L1,
    // refcount table, ceil(n/512) L2 tables, n data clusters and the blocks;
    // n = 2037..2045 puts that total on both sides of 2048, where the second
    // block must also count itself.
    for (uint64_t n = 2037; n <= 2045; ++n) {
        auto src = std::make_shared<MemoryDevice>(16 * MiB);
        src->put_pattern(0, n * 4096);
        auto f = read_all(*qcow2(src, {{"cluster-size", "4K"}}));
        const uint64_t others = 3 + div_round_up(n, 512) + n;
        const uint64_t blocks = others + 1 <= 2048 ? 1 : 2;
        EXPECT_EQ(f.size(), (others + blocks) * 4096) << n << " data clusters";
        EXPECT_EQ(check_refcounts(f), "") << n << " data clusters";
        EXPECT_EQ(read_back_qcow2(f), read_all(*src)) << n << " data clusters";
    }
}

TEST(Qcow2Layout, OddSizeRoundsUpToWholeSectors) {
    auto src = std::make_shared<MemoryDevice>(5 * MiB + 1234);
    src->put_pattern(5 * MiB, 1234);
    auto f = read_all(*qcow2(src));
    EXPECT_EQ(be64_at(f, 24), 5 * MiB + 1536);
    auto expect = read_all(*src);
    expect.resize(5 * MiB + 1536, 0);
    EXPECT_EQ(read_back_qcow2(f), expect);
    EXPECT_EQ(check_refcounts(f), "");
}

TEST(Qcow2Layout, EmptyDiskHasOnlyMetadata) {
    auto f = read_all(*qcow2(std::make_shared<MemoryDevice>(64 * MiB)));
    // header, L1 (one zero entry), refcount table, refcount block
    EXPECT_EQ(f.size(), 4 * 64 * KiB);
    EXPECT_EQ(be64_at(f, 64 * KiB), 0u);
    EXPECT_EQ(check_refcounts(f), "");
}

TEST(Qcow2Layout, FullyAllocatedDiskReadsBack) {
    auto src = std::make_shared<MemoryDevice>(6 * MiB);
    src->put_pattern(0, 6 * MiB);
    for (const char* cs : {"4K", "64K", "2M"}) {
        auto f = read_all(*qcow2(src, {{"cluster-size", cs}}));
        EXPECT_EQ(read_back_qcow2(f), read_all(*src)) << "cluster-size=" << cs;
        EXPECT_EQ(check_refcounts(f), "") << "cluster-size=" << cs;
    }
}

// A memory disk that records the reads it serves and claims to sit in a
// file descriptor (42) at its own offsets, so splice mapping can be seen.
class RecordingDevice : public MemoryDevice {
public:
    using MemoryDevice::MemoryDevice;
    void read(void* buf, size_t length, uint64_t offset) override {
        ++reads;
        last_read = {offset, length};
        MemoryDevice::read(buf, length, offset);
    }
    std::optional<FdSpan> fd_span(uint64_t offset, size_t) override { return FdSpan{42, offset}; }
    std::atomic<int> reads{0};
    std::pair<uint64_t, uint64_t> last_read{};
};

TEST(Qcow2Layout, ConsecutiveClustersAreOneDeviceReadAndOneSpan) {
    auto src = std::make_shared<RecordingDevice>(10 * MiB);
    src->put_pattern(3 * MiB, 100);
    src->put_pattern(9 * MiB, MiB);
    auto v = qcow2(src);
    EXPECT_EQ(src->reads, 0);
    const uint64_t c = 64 * KiB;
    // Data clusters 1..16 of the file's data area are the run from 9 MiB.
    std::vector<unsigned char> buf(16 * c);
    v->read(buf.data(), buf.size(), 6 * c);
    EXPECT_EQ(src->reads, 1);
    EXPECT_EQ(src->last_read, (std::pair<uint64_t, uint64_t>{9 * MiB, 16 * c}));
    EXPECT_EQ(buf.back(), MemoryDevice::pattern(10 * MiB - 1));
    const auto span = v->fd_span(6 * c + 100, 3 * c);
    ASSERT_TRUE(span.has_value());
    EXPECT_EQ(span->fd, 42);
    EXPECT_EQ(span->offset, 9 * MiB + 100);
    EXPECT_FALSE(v->fd_span(5 * c, 2 * c).has_value()); // two runs: not one range
    EXPECT_FALSE(v->fd_span(c, 8).has_value());         // the L1 table is generated
}

TEST(Qcow2Layout, TerabyteDiskOpensWithoutReadingData) {
    // 1 TiB, 1 MiB of data at its end: the layout comes from extents alone.
    auto src = std::make_shared<RecordingDevice>(TiB);
    src->put_pattern(TiB - MiB, MiB);
    auto v = qcow2(src);
    EXPECT_EQ(src->reads, 0);
    const uint64_t c = 64 * KiB;
    // L1 of 2048 entries (one cluster), refcount table, a block, one L2
    // table, 16 data clusters.
    EXPECT_EQ(v->size(), (5 + 16) * c);
    auto head = read_at(*v, 0, 5 * c);
    EXPECT_EQ(be64_at(head, 24), TiB);
    EXPECT_EQ(be32_at(head, 36), 2048u);
    EXPECT_EQ(be64_at(head, c + 8 * 2047), 4 * c | copied);
    EXPECT_EQ(be64_at(head, 4 * c + 8 * 8176), 5 * c | copied); // cluster 16777200
    EXPECT_EQ(src->reads, 0);
    EXPECT_EQ(read_at(*v, v->size() - 1, 1)[0], MemoryDevice::pattern(TiB - 1));
}

std::string refusal(uint64_t size, std::map<std::string, std::string> opts) {
    try {
        qcow2(std::make_shared<MemoryDevice>(size), opts);
    } catch (const InvalidArgument& e) {
        return e.what();
    }
    return "(accepted)";
}

TEST(Qcow2Options, ClusterSizeTakesBytesOrKOrM) {
    auto bits = [](const char* cs) {
        return be32_at(read_at(*qcow2(sample_disk(), {{"cluster-size", cs}}), 0, 104), 20);
    };
    EXPECT_EQ(bits("4096"), 12u);
    EXPECT_EQ(bits("4K"), 12u);
    EXPECT_EQ(bits("64k"), 16u);
    EXPECT_EQ(bits("2M"), 21u);
    EXPECT_EQ(bits("2097152"), 21u);
}

TEST(Qcow2Options, BadClusterSizesAreRefusedByName) {
    const std::string range = ": must be a power of two from 4K to 2M";
    const std::string syntax = ": not a size (bytes, or a number followed by K or M)";
    for (const char* v : {"3000", "2K", "4M", "0", "1048575", "99999999999999999999"})
        EXPECT_EQ(refusal(MiB, {{"cluster-size", v}}),
                  "option cluster-size=" + std::string(v) + range);
    for (const char* v : {"", "abc", "64KiB", "64 K", "-4096", "0x1000", "4G"})
        EXPECT_EQ(refusal(MiB, {{"cluster-size", v}}),
                  "option cluster-size=" + std::string(v) + syntax);
    EXPECT_EQ(refusal(MiB, {{"cluster_size", "4K"}}),
              "qcow2: unknown option 'cluster_size' (known: cluster-size, backing-file, "
              "backing-format)");
}

TEST(Qcow2Limits, SixtyFourTiBWithDefaultClusters) {
    EXPECT_EQ(refusal(64 * TiB, {}), "(accepted)");
    EXPECT_EQ(refusal(64 * TiB + 512, {}),
              "qcow2: disk of 64.0 TiB (70368744178176 bytes) exceeds the format's 64 TiB limit");
}

TEST(Qcow2Limits, SmallClustersHoldLessAsQemuLimitsTheirTables) {
    // 4 KiB clusters: a fully allocated 8 TiB image would need a refcount
    // table over qemu's 8 MiB, so 4 TiB; 8 KiB clusters: 16 TiB.
    EXPECT_EQ(refusal(4 * TiB, {{"cluster-size", "4K"}}), "(accepted)");
    EXPECT_EQ(refusal(4 * TiB + 1, {{"cluster-size", "4K"}}),
              "qcow2: disk of 4.00 TiB (4398046511616 bytes) exceeds the 4 TiB that qemu opens "
              "with 4 KiB clusters");
    EXPECT_EQ(refusal(16 * TiB, {{"cluster-size", "8K"}}), "(accepted)");
    EXPECT_EQ(refusal(16 * TiB + 512, {{"cluster-size", "8K"}}),
              "qcow2: disk of 16.0 TiB (17592186044928 bytes) exceeds the 16 TiB that qemu opens "
              "with 8 KiB clusters");
    EXPECT_EQ(refusal(64 * TiB, {{"cluster-size", "16K"}}), "(accepted)");
}

TEST(Qcow2Identity, SameSourceSameBytes) {
    EXPECT_EQ(read_all(*qcow2(sample_disk())), read_all(*qcow2(sample_disk())));
    EXPECT_NE(qcow2(sample_disk())->identity(),
              qcow2(sample_disk(), {{"cluster-size", "4K"}})->identity());
}

// ---------------------------------------------------------------- backing file

// A memory disk that also reports chosen ranges as Zero (allocated, known
// zero), as a source does for preallocated or zeroed ranges. Zero ranges lie
// in holes of the data and do not overlap one another.
class ZeroRangesDevice : public MemoryDevice {
public:
    using MemoryDevice::MemoryDevice;
    void put_zero(uint64_t offset, uint64_t length) { zeros_[offset] = length; }

    std::vector<Extent> extents(uint64_t offset, uint64_t length) override {
        std::vector<Extent> out;
        for (const Extent& e : MemoryDevice::extents(offset, length)) {
            uint64_t pos = e.offset;
            const uint64_t end = e.offset + e.length;
            for (const auto& [zo, zl] : zeros_) {
                const uint64_t a = std::max(zo, pos), b = std::min(zo + zl, end);
                if (a >= b || e.type != ExtentType::Hole)
                    continue;
                append_extent(out, {pos, a - pos, e.type});
                append_extent(out, {a, b - a, ExtentType::Zero});
                pos = b;
            }
            append_extent(out, {pos, end - pos, e.type});
        }
        return out;
    }

private:
    std::map<uint64_t, uint64_t> zeros_;
};

// sample_disk() with whole clusters changed: 64 KiB at 3 MiB, the last MiB.
std::shared_ptr<MemoryDevice> changed_disk() {
    auto d = std::make_shared<MemoryDevice>(10 * MiB);
    d->put_pattern(3 * MiB, 64 * KiB);
    d->put_pattern(9 * MiB, MiB);
    return d;
}

// The pristine disk a backed view is compared with: no byte zero.
std::vector<unsigned char> backing_bytes(uint64_t size) {
    std::vector<unsigned char> b(size);
    for (uint64_t i = 0; i < size; ++i)
        b[i] = static_cast<unsigned char>(MemoryDevice::pattern(i) | 0x80);
    return b;
}

const std::map<std::string, std::string> base_raw = {{"backing-file", "/srv/base.img"},
                                                     {"backing-format", "raw"}};

TEST(Qcow2Backing, HeaderPointsAtTheNameAfterTheFormatExtension) {
    auto f = read_all(*qcow2(changed_disk(), base_raw));
    EXPECT_EQ(be64_at(f, 8), 128u);          // backing_file_offset: after the extensions
    EXPECT_EQ(be32_at(f, 16), 13u);          // backing_file_size: "/srv/base.img", no NUL
    EXPECT_EQ(be32_at(f, 100), 104u);        // header_length: still the plain version 3 header
    EXPECT_EQ(be32_at(f, 104), 0xe2792acau); // backing file format name extension
    EXPECT_EQ(be32_at(f, 108), 3u);          // its data: "raw", padded to 8 bytes
    EXPECT_EQ(std::string(f.begin() + 112, f.begin() + 120), std::string("raw\0\0\0\0\0", 8));
    EXPECT_EQ(be64_at(f, 120), 0u); // end of extensions: type 0, length 0
    EXPECT_EQ(std::string(f.begin() + 128, f.begin() + 141), "/srv/base.img");
    for (uint64_t i = 141; i < 64 * KiB; ++i)
        ASSERT_EQ(f[i], 0) << "header cluster byte " << i;
    // The rest of the layout is the unbacked one: the same data clusters.
    EXPECT_EQ(f.size(), 22 * 64 * KiB);
    EXPECT_EQ(check_refcounts(f), "");
}

TEST(Qcow2Backing, FormatNameIsPaddedToEightBytes) {
    auto f = read_at(
        *qcow2(changed_disk(), {{"backing-file", "base.qcow2"}, {"backing-format", "qcow2"}}), 0,
        256);
    EXPECT_EQ(be32_at(f, 108), 5u);
    EXPECT_EQ(std::string(f.begin() + 112, f.begin() + 120), std::string("qcow2\0\0\0", 8));
    EXPECT_EQ(be64_at(f, 120), 0u);
    EXPECT_EQ(be64_at(f, 8), 128u);
    EXPECT_EQ(be32_at(f, 16), 10u);
    EXPECT_EQ(std::string(f.begin() + 128, f.begin() + 138), "base.qcow2");
    EXPECT_EQ(f[138], 0);
}

TEST(Qcow2Backing, LongestNameFitsTheSmallestCluster) {
    const std::string name(1023, 'n');
    auto f = read_all(
        *qcow2(changed_disk(),
               {{"cluster-size", "4K"}, {"backing-file", name}, {"backing-format", "vdi"}}));
    EXPECT_EQ(be64_at(f, 8), 128u);
    EXPECT_EQ(be32_at(f, 16), 1023u);
    EXPECT_EQ(std::string(f.begin() + 128, f.begin() + 128 + 1023), name);
    EXPECT_EQ(be64_at(f, 4096 + 8), 4 * 4096 | copied); // L1 in cluster 1, as always: 2-4 MiB
    EXPECT_EQ(check_refcounts(f), "");
}

TEST(Qcow2Backing, UnchangedClustersReadFromTheBackingFileAndZeroClustersDoNot) {
    // 64 KiB clusters, 4 MiB: cluster 3 changed, cluster 5 changed in its
    // first half and zeroed in its second, clusters 8-9 zeroed, the rest
    // (and the partial cluster 63) unchanged.
    const uint64_t c = 64 * KiB;
    auto src = std::make_shared<ZeroRangesDevice>(4 * MiB);
    src->put_pattern(3 * c, c);
    src->put_pattern(5 * c, c / 2);
    src->put_zero(5 * c + c / 2, c / 2);
    src->put_zero(8 * c, 2 * c);
    const auto base = backing_bytes(4 * MiB);
    auto f = read_all(*qcow2(src, base_raw));

    auto expect = base;
    const auto changed = read_all(*src);
    for (uint64_t g : {3, 5, 8, 9})
        std::memcpy(&expect[g * c], &changed[g * c], c);
    EXPECT_EQ(read_back_qcow2(f, &base), expect);
    EXPECT_EQ(check_refcounts(f), "");

    // header, L1, refcount table, refcount block, one L2 table, 2 data clusters
    ASSERT_EQ(f.size(), 7 * c);
    const uint64_t l2 = 4 * c;
    EXPECT_EQ(be64_at(f, c), l2 | copied);
    EXPECT_EQ(be64_at(f, l2 + 8 * 2), 0u); // unchanged: the backing file's
    EXPECT_EQ(be64_at(f, l2 + 8 * 3), 5 * c | copied);
    EXPECT_EQ(be64_at(f, l2 + 8 * 5), 6 * c | copied); // data and zeros: stored
    EXPECT_EQ(be64_at(f, l2 + 8 * 8), 1u);             // zero flag, no host cluster
    EXPECT_EQ(be64_at(f, l2 + 8 * 9), 1u);
    EXPECT_EQ(be64_at(f, l2 + 8 * 10), 0u);
}

TEST(Qcow2Backing, WithoutBackingFileZeroRangesStayUnallocated) {
    // The same disk unbacked: zeros need no flag, every entry is 0 or data.
    const uint64_t c = 64 * KiB;
    auto src = std::make_shared<ZeroRangesDevice>(4 * MiB);
    src->put_pattern(3 * c, c);
    src->put_zero(8 * c, 2 * c);
    auto f = read_all(*qcow2(src));
    EXPECT_EQ(be64_at(f, 8), 0u);
    EXPECT_EQ(be32_at(f, 16), 0u);
    for (uint64_t i = 104; i < c; ++i)
        ASSERT_EQ(f[i], 0) << "header cluster byte " << i;
    const uint64_t l2 = 4 * c;
    EXPECT_EQ(be64_at(f, l2 + 8 * 3), 5 * c | copied);
    EXPECT_EQ(be64_at(f, l2 + 8 * 8), 0u);
    EXPECT_EQ(be64_at(f, l2 + 8 * 9), 0u);
    EXPECT_EQ(read_back_qcow2(f), read_all(*src));
}

TEST(Qcow2Backing, RangeOfOnlyZeroClustersGetsAnL2Table) {
    // 4 KiB clusters: an L2 table maps 2 MiB. Data in range 0, zeros alone
    // in range 2: its L2 table holds only zero flags.
    auto src = std::make_shared<ZeroRangesDevice>(8 * MiB);
    src->put_pattern(0, 4096);
    src->put_zero(4 * MiB + 8192, 3 * 4096);
    const auto base = backing_bytes(8 * MiB);
    auto opts = base_raw;
    opts["cluster-size"] = "4K";
    auto f = read_all(*qcow2(src, opts));
    // header, L1, refcount table, refcount block, 2 L2 tables, 1 data cluster
    ASSERT_EQ(f.size(), 7 * 4096u);
    EXPECT_EQ(be64_at(f, 4096 + 8 * 0), 4 * 4096 | copied);
    EXPECT_EQ(be64_at(f, 4096 + 8 * 1), 0u);
    EXPECT_EQ(be64_at(f, 4096 + 8 * 2), 5 * 4096 | copied);
    EXPECT_EQ(be64_at(f, 5 * 4096 + 8 * 1), 0u);
    for (uint64_t j = 2; j < 5; ++j)
        EXPECT_EQ(be64_at(f, 5 * 4096 + 8 * j), 1u) << "L2 entry 2/" << j;
    EXPECT_EQ(be64_at(f, 5 * 4096 + 8 * 5), 0u);
    auto expect = base;
    std::memcpy(expect.data(), read_at(*src, 0, 4096).data(), 4096);
    std::memset(&expect[4 * MiB + 8192], 0, 3 * 4096);
    EXPECT_EQ(read_back_qcow2(f, &base), expect);
    EXPECT_EQ(check_refcounts(f), "");
}

TEST(Qcow2Backing, PartialLastClusterCountsOnlyTheDisk) {
    // 1 MiB + 4 KiB of changed data at the end: the last 64 KiB cluster is
    // changed over all of the disk it covers; past the disk is padding.
    auto src = std::make_shared<MemoryDevice>(MiB + 4 * KiB);
    src->put_pattern(MiB, 4 * KiB);
    const auto base = backing_bytes(MiB + 4 * KiB);
    auto f = read_all(*qcow2(src, base_raw));
    auto expect = base;
    std::memcpy(&expect[MiB], read_at(*src, MiB, 4 * KiB).data(), 4 * KiB);
    EXPECT_EQ(read_back_qcow2(f, &base), expect);
    EXPECT_EQ(check_refcounts(f), "");
}

TEST(Qcow2Backing, ClusterPartlyUnchangedIsRefused) {
    // A backed image maps whole clusters: a cluster that is part hole
    // (unchanged) and part data or zeros cannot be shown.
    auto data = std::make_shared<MemoryDevice>(MiB);
    data->put_pattern(64 * KiB + 4 * KiB, 4 * KiB);
    auto zeros = std::make_shared<ZeroRangesDevice>(MiB);
    zeros->put_zero(128 * KiB, 8 * KiB);
    const std::string advice = "; a backed image maps whole clusters, so choose a cluster-size "
                               "no larger than the granularity of the source's changes";
    for (auto [dev, what, at] : {std::tuple{DevicePtr(data), "data", "0x10000"},
                                 std::tuple{DevicePtr(zeros), "zeros", "0x20000"}}) {
        try {
            qcow2(dev, base_raw);
            ADD_FAILURE() << what << ": accepted";
        } catch (const InvalidArgument& e) {
            EXPECT_EQ(std::string(e.what()),
                      std::string("qcow2 with backing file: the 64 KiB cluster at ") + at +
                          " of memory is partly unchanged (a hole) and partly " + what + advice);
        }
    }
    // With 4 KiB clusters the same changes are whole clusters.
    auto opts = base_raw;
    opts["cluster-size"] = "4K";
    EXPECT_NO_THROW(qcow2(data, opts));
    EXPECT_NO_THROW(qcow2(zeros, opts));
    // Without a backing file a hole reads as zeros: nothing to refuse.
    EXPECT_NO_THROW(qcow2(data));
}

TEST(Qcow2Options, BadBackingOptionsAreRefusedByName) {
    const std::string formats = "raw, qcow2, vmdk, vpc, vhdx, vdi";
    EXPECT_EQ(refusal(MiB, {{"backing-file", "/srv/base.img"}}),
              "option backing-file=/srv/base.img: needs backing-format (one of " + formats + ")");
    EXPECT_EQ(refusal(MiB, {{"backing-format", "raw"}}),
              "option backing-format=raw: given without backing-file");
    EXPECT_EQ(refusal(MiB, {{"backing-file", "b.img"}, {"backing-format", "qed"}}),
              "option backing-format=qed: must be one of " + formats);
    EXPECT_EQ(refusal(MiB, {{"backing-file", "b.img"}, {"backing-format", "RAW"}}),
              "option backing-format=RAW: must be one of " + formats);
    for (const std::string& bad : {std::string("a\nb.img"), std::string("a\0b.img", 7)})
        EXPECT_EQ(refusal(MiB, {{"backing-file", bad}, {"backing-format", "raw"}}),
                  "option backing-file: the name contains a NUL or newline character");
    EXPECT_EQ(refusal(MiB, {{"backing-file", std::string(1024, 'n')}, {"backing-format", "raw"}}),
              "option backing-file: a name of 1024 bytes exceeds qcow2's limit of 1023 bytes");
    for (const char* f : {"raw", "qcow2", "vmdk", "vpc", "vhdx", "vdi"})
        EXPECT_EQ(refusal(MiB, {{"backing-file", "b"}, {"backing-format", f}}), "(accepted)") << f;
}

TEST(Qcow2Identity, BackingFileIsPartOfTheIdentity) {
    auto plain = qcow2(changed_disk());
    auto backed = qcow2(changed_disk(), base_raw);
    auto other =
        qcow2(changed_disk(), {{"backing-file", "/srv/other.img"}, {"backing-format", "raw"}});
    EXPECT_NE(plain->identity(), backed->identity());
    EXPECT_NE(backed->identity(), other->identity());
    EXPECT_EQ(backed->identity(), qcow2(changed_disk(), base_raw)->identity());
    EXPECT_EQ(read_all(*backed), read_all(*qcow2(changed_disk(), base_raw)));
}

} // namespace
} // namespace p2vfs
