// The VMDK flat pair and the stream-optimized VMDK, checked against the
// specification (VMware "Virtual Disk Format 5.0"): the flat descriptor's
// exact text, and the stream read back by two small readers written from
// the specification's stream-optimized section — one through the grain
// directory the footer names, one walking the markers front to back as a
// streaming importer does — decompressing grains with zlib.
#include "block/local_source.h"
#include "common/endian.h"
#include "common/error.h"
#include "formats/format.h"
#include "formats/prepared_view.h"
#include "formats/vmdk_stream.h"
#include "memory_device.h"
#include "spec_bytes.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <zlib.h>

namespace p2vfs {
namespace {

using test::le16_at;
using test::le32_at;
using test::le64_at;

using test::MemoryDevice;
using test::read_all;

constexpr uint64_t KiB = 1024, MiB = KiB * KiB;
constexpr uint64_t grain = 64 * KiB;

std::string text(const std::vector<unsigned char>& b) {
    return {b.begin(), b.end()};
}

std::shared_ptr<MemoryDevice> sample_disk() {
    // 10 MiB: 100 bytes at 3 MiB (grain 48), the whole of 9-10 MiB (grains 144-159).
    auto d = std::make_shared<MemoryDevice>(10 * MiB);
    d->put_pattern(3 * MiB, 100);
    d->put_pattern(9 * MiB, MiB);
    return d;
}

class TempDir {
public:
    TempDir() {
        char tmpl[] = "/tmp/p2vfs-unit-XXXXXX";
        if (!::mkdtemp(tmpl))
            throw std::runtime_error("mkdtemp failed");
        path_ = tmpl;
    }
    ~TempDir() { std::system(("rm -rf " + path_).c_str()); }
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

// ------------------------------------------------------------------ flat pair

std::vector<ViewFile> flat_files(DevicePtr src, std::map<std::string, std::string> opts = {},
                                 std::string name = {}) {
    return make_view_files(*find_format("vmdk-flat"), std::move(src), opts, std::move(name));
}

TEST(VmdkFlatPair, IsADescriptorNamingItsFlatExtentRelatively) {
    auto files = flat_files(sample_disk());
    ASSERT_EQ(files.size(), 2u);
    EXPECT_EQ(files[0].name, "disk-esx.vmdk");
    EXPECT_EQ(files[1].name, "disk-esx-flat.vmdk");
    EXPECT_EQ(text(read_all(*files[0].device)),
              "# Disk DescriptorFile\n"
              "version=1\n"
              "CID=421724d7\n"
              "parentCID=ffffffff\n"
              "createType=\"vmfs\"\n"
              "\n"
              "# Extent description\n"
              "RW 20480 VMFS \"disk-esx-flat.vmdk\"\n"
              "\n"
              "# The Disk Data Base\n"
              "#DDB\n"
              "\n"
              "ddb.virtualHWVersion = \"4\"\n"
              "ddb.geometry.cylinders = \"20\"\n"
              "ddb.geometry.heads = \"16\"\n"
              "ddb.geometry.sectors = \"63\"\n"
              "ddb.adapterType = \"ide\"\n"
              "ddb.uuid = \"0c 0e 79 29 f7 96 83 15-84 06 6a 9c d7 7c 6f 9f\"\n"
              "ddb.longContentID = \"421724d71810a25dae441f48cf6e4378\"\n");
}

TEST(VmdkFlatPair, MonolithicFlatDescriptorHasAFlatExtentAtOffsetZero) {
    auto files = flat_files(
        sample_disk(),
        {{"createtype", "monolithicFlat"}, {"adapter", "lsilogic"}, {"hwversion", "13"}});
    EXPECT_EQ(text(read_all(*files[0].device)),
              "# Disk DescriptorFile\n"
              "version=1\n"
              "CID=62ecac1a\n"
              "parentCID=ffffffff\n"
              "createType=\"monolithicFlat\"\n"
              "\n"
              "# Extent description\n"
              "RW 20480 FLAT \"disk-esx-flat.vmdk\" 0\n"
              "\n"
              "# The Disk Data Base\n"
              "#DDB\n"
              "\n"
              "ddb.virtualHWVersion = \"13\"\n"
              "ddb.geometry.cylinders = \"1\"\n"
              "ddb.geometry.heads = \"255\"\n"
              "ddb.geometry.sectors = \"63\"\n"
              "ddb.adapterType = \"lsilogic\"\n"
              "ddb.uuid = \"0c 0e 79 29 f7 96 83 15-84 06 6a 9c d7 7c 6f 9f\"\n"
              "ddb.longContentID = \"62ecac1a0d649dcaeede6a36f27c2f83\"\n");
}

TEST(VmdkFlatPair, ExtentNameFollowsTheDescriptorName) {
    auto named = flat_files(sample_disk(), {}, "pc1.vmdk");
    EXPECT_EQ(named[1].name, "pc1-flat.vmdk");
    EXPECT_NE(text(read_all(*named[0].device)).find("\nRW 20480 VMFS \"pc1-flat.vmdk\"\n"),
              std::string::npos);
    EXPECT_EQ(flat_files(sample_disk(), {}, "pc1")[1].name, "pc1-flat.vmdk");
}

TEST(VmdkFlatPair, ExtentIsTheSourceGrownToWholeSectorsHolesKept) {
    auto src = std::make_shared<MemoryDevice>(MiB + 700);
    src->put_pattern(MiB, 700);
    auto files = flat_files(src);
    auto& extent = *files[1].device;
    ASSERT_EQ(extent.size(), MiB + 1024);
    auto expect = read_all(*src);
    expect.resize(MiB + 1024, 0);
    EXPECT_EQ(read_all(extent), expect);
    EXPECT_EQ(extent.extents(0, extent.size()),
              (std::vector<Extent>{{0, MiB, ExtentType::Hole},
                                   {MiB, 700, ExtentType::Data},
                                   {MiB + 700, 324, ExtentType::Hole}}));
    EXPECT_NE(text(read_all(*files[0].device)).find("\nRW 2050 VMFS "), std::string::npos);
}

TEST(VmdkFlatPair, ExtentReadsSpliceFromTheSourceFile) {
    TempDir dir;
    const std::string path = dir.path() + "/src.img";
    const int fd = ::open(path.c_str(), O_CREAT | O_WRONLY, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "abcdefgh", 8, 4096), 8);
    ASSERT_EQ(::ftruncate(fd, 8192), 0);
    ::close(fd);
    auto files = flat_files(std::make_shared<LocalSource>(path));
    const auto span = files[1].device->fd_span(4096, 8);
    ASSERT_TRUE(span.has_value());
    EXPECT_EQ(span->offset, 4096u);
    char buf[8];
    ASSERT_EQ(::pread(span->fd, buf, 8, 4096), 8);
    EXPECT_EQ(std::string(buf, 8), "abcdefgh");
}

TEST(VmdkFlatPair, BadCreateTypeIsRefusedByName) {
    try {
        flat_files(sample_disk(), {{"createtype", "streamOptimized"}});
        FAIL() << "accepted";
    } catch (const InvalidArgument& e) {
        EXPECT_EQ(std::string(e.what()),
                  "option createtype=streamOptimized: must be one of vmfs, monolithicFlat");
    }
}

// ---------------------------------------------------------- stream reader

// A stream-optimized extent as the specification describes it.
struct StreamFile {
    std::vector<unsigned char> bytes;
    uint64_t capacity = 0, grain_sectors = 0, gd = 0;
    uint32_t per_gt = 0;

    explicit StreamFile(std::vector<unsigned char> b) : bytes(std::move(b)) {
        // The header's gdOffset is GD_AT_END; the footer, second-to-last
        // sector, holds the real one.
        const uint64_t footer = bytes.size() - 1024;
        capacity = le64_at(bytes, footer + 12);
        grain_sectors = le64_at(bytes, footer + 20);
        per_gt = le32_at(bytes, footer + 44);
        gd = le64_at(bytes, footer + 56);
    }

    uint64_t grains() const { return (capacity + grain_sectors - 1) / grain_sectors; }
    uint64_t tables() const { return (grains() + per_gt - 1) / per_gt; }

    // The grain at `sector` (its marker), decompressed.
    std::vector<unsigned char> inflate_grain(uint64_t sector, uint64_t* lba = nullptr) const {
        const uint64_t at = sector * 512;
        if (lba)
            *lba = le64_at(bytes, at);
        const uint32_t size = le32_at(bytes, at + 8);
        EXPECT_GT(size, 0u);
        std::vector<unsigned char> out(grain_sectors * 512);
        uLongf n = out.size();
        EXPECT_LE(at + 12 + size, bytes.size());
        EXPECT_EQ(uncompress(out.data(), &n, &bytes[at + 12], size), Z_OK);
        out.resize(n);
        return out;
    }

    // Random access: footer -> grain directory -> grain tables -> grains.
    std::vector<unsigned char> read_through_directory() const {
        std::vector<unsigned char> disk(capacity * 512, 0);
        for (uint64_t t = 0; t < tables(); ++t) {
            const uint32_t gt = le32_at(bytes, gd * 512 + 4 * t);
            if (gt == 0)
                continue;
            for (uint64_t e = 0; e < per_gt && t * per_gt + e < grains(); ++e) {
                const uint64_t g = t * per_gt + e;
                const uint32_t sector = le32_at(bytes, gt * 512ULL + 4 * e);
                if (sector == 0)
                    continue;
                uint64_t lba;
                auto data = inflate_grain(sector, &lba);
                EXPECT_EQ(lba, g * grain_sectors) << "grain " << g;
                const uint64_t want = std::min(grain_sectors, capacity - g * grain_sectors) * 512;
                EXPECT_EQ(data.size(), want) << "grain " << g;
                std::memcpy(&disk[g * grain_sectors * 512], data.data(),
                            std::min<uint64_t>(data.size(), want));
            }
        }
        return disk;
    }

    struct Marker {
        uint64_t offset;
        std::string kind; // "grain", "gt", "gd", "footer", "eos"
        uint64_t value;   // grain: lba; others: sectors that follow
    };

    // Sequential access, as a streaming importer reads it: from the header's
    // overHead on, marker after marker, to the end-of-stream marker.
    std::vector<Marker> walk() const {
        std::vector<Marker> out;
        uint64_t pos = le64_at(bytes, 64) * 512;
        while (pos + 512 <= bytes.size()) {
            const uint64_t value = le64_at(bytes, pos);
            const uint32_t size = le32_at(bytes, pos + 8);
            if (size != 0) {
                out.push_back({pos, "grain", value});
                pos += (12 + size + 511) / 512 * 512;
                continue;
            }
            static const char* names[] = {"eos", "gt", "gd", "footer"};
            const uint32_t type = le32_at(bytes, pos + 12);
            if (type > 3) {
                ADD_FAILURE() << "unknown marker type " << type << " at " << pos;
                return out;
            }
            for (uint64_t i = 16; i < 512; ++i)
                if (bytes[pos + i] != 0) {
                    ADD_FAILURE() << "marker padding not zero at " << pos + i;
                    break;
                }
            out.push_back({pos, names[type], value});
            if (type == 0)
                return out;
            pos += 512 + value * 512;
        }
        ADD_FAILURE() << "no end-of-stream marker";
        return out;
    }

    std::vector<unsigned char> read_as_stream() const {
        std::vector<unsigned char> disk(capacity * 512, 0);
        for (const Marker& m : walk()) {
            if (m.kind != "grain")
                continue;
            auto data = inflate_grain(m.offset / 512);
            std::memcpy(&disk[m.value * 512], data.data(), data.size());
        }
        return disk;
    }
};

// ------------------------------------------------------------ stream view

ViewRequest stream_request(DevicePtr src) {
    return {std::move(src), "disk-stream.vmdk", resolve_options(*find_format("vmdk-stream"), {})};
}

std::shared_ptr<VmdkStreamView> stream_view(DevicePtr src, const std::string& cache_dir,
                                            unsigned threads = 2) {
    return std::make_shared<VmdkStreamView>(stream_request(std::move(src)),
                                            vmdk::StreamBodySettings{cache_dir, threads, 6});
}

std::vector<unsigned char> prepared_bytes(const std::shared_ptr<VmdkStreamView>& v) {
    v->prepare({});
    return read_all(*v);
}

class VmdkStreamTest : public ::testing::Test {
protected:
    TempDir cache_;
};

TEST_F(VmdkStreamTest, NothingToReadBeforePrepare) {
    auto v = stream_view(sample_disk(), cache_.path());
    EXPECT_FALSE(v->ready());
    EXPECT_EQ(v->size(), 0u);
    unsigned char b[1];
    EXPECT_THROW(v->read(b, 1, 0), Error);
    EXPECT_THROW(v->extents(0, 1), Error);
    v->prepare({});
    EXPECT_TRUE(v->ready());
    EXPECT_GT(v->size(), 0u);
}

TEST_F(VmdkStreamTest, HeaderAndFooterFieldsSitWhereTheSpecSays) {
    auto f = prepared_bytes(stream_view(sample_disk(), cache_.path()));
    ASSERT_EQ(f.size() % 512, 0u);
    const uint64_t footer = f.size() - 1024;
    for (uint64_t h : {uint64_t{0}, footer}) {
        EXPECT_EQ(le32_at(f, h + 0), 0x564d444bu); // "KDMV"
        EXPECT_EQ(le32_at(f, h + 4), 3u);          // version 3, as ESXi requires
        EXPECT_EQ(le32_at(f, h + 8), 0x30001u);    // newline test, compressed, markers
        EXPECT_EQ(le64_at(f, h + 12), 20480u);     // capacity
        EXPECT_EQ(le64_at(f, h + 20), 128u);       // 64 KiB grains
        EXPECT_EQ(le64_at(f, h + 28), 1u);         // descriptor at sector 1
        EXPECT_EQ(le64_at(f, h + 36), 20u);
        EXPECT_EQ(le32_at(f, h + 44), 512u);
        EXPECT_EQ(le64_at(f, h + 48), 0u);   // no redundant directory
        EXPECT_EQ(le64_at(f, h + 64), 128u); // overHead: the first grain
        EXPECT_EQ(std::string(f.begin() + h + 73, f.begin() + h + 77), "\n \r\n");
        EXPECT_EQ(le16_at(f, h + 77), 1u); // deflate
    }
    EXPECT_EQ(le64_at(f, 56), ~uint64_t{0}); // GD_AT_END in the header
    const uint64_t gd = le64_at(f, footer + 56);
    // Only the two headers differ, in gdOffset.
    auto a = std::vector<unsigned char>(f.begin(), f.begin() + 512);
    auto b = std::vector<unsigned char>(f.begin() + footer, f.begin() + footer + 512);
    std::memset(&a[56], 0, 8);
    std::memset(&b[56], 0, 8);
    EXPECT_EQ(a, b);

    const std::string desc(reinterpret_cast<const char*>(&f[512]));
    EXPECT_NE(desc.find("createType=\"streamOptimized\"\n"), std::string::npos) << desc;
    EXPECT_NE(desc.find("\nRW 20480 SPARSE \"disk-stream.vmdk\"\n"), std::string::npos) << desc;
    EXPECT_NE(desc.find("ddb.adapterType = \"ide\"\n"), std::string::npos) << desc;
    for (uint64_t i = 512 + desc.size(); i < 128 * 512; ++i)
        ASSERT_EQ(f[i], 0) << "byte " << i << " before the first grain";

    // The tail: GD marker, GD (one sector: one table), footer marker,
    // footer, end-of-stream marker.
    EXPECT_EQ(gd * 512, f.size() - 4 * 512);
    const uint64_t gd_marker = gd * 512 - 512;
    EXPECT_EQ(le64_at(f, gd_marker), 1u); // one sector of directory follows
    EXPECT_EQ(le32_at(f, gd_marker + 8), 0u);
    EXPECT_EQ(le32_at(f, gd_marker + 12), 2u);
    EXPECT_EQ(le64_at(f, footer - 512), 1u);
    EXPECT_EQ(le32_at(f, footer - 512 + 8), 0u);
    EXPECT_EQ(le32_at(f, footer - 512 + 12), 3u);
    EXPECT_TRUE(std::all_of(f.end() - 512, f.end(), [](unsigned char c) { return c == 0; }));
}

TEST_F(VmdkStreamTest, MarkersComeInStreamOrder) {
    auto src = sample_disk();
    auto f = prepared_bytes(stream_view(src, cache_.path()));
    StreamFile s(f);
    const auto markers = s.walk();
    // Grain 48, grains 144-159, the grain table after them, the directory,
    // the footer, the end.
    ASSERT_EQ(markers.size(), 1 + 16 + 4u);
    EXPECT_EQ(markers[0].offset, 128 * 512u);
    EXPECT_EQ(markers[0].value, 48 * 128u);
    for (int i = 0; i < 16; ++i)
        EXPECT_EQ(markers[1 + i].value, (144u + i) * 128) << i;
    EXPECT_EQ(markers[17].kind, "gt");
    EXPECT_EQ(markers[17].value, 4u);
    EXPECT_EQ(markers[18].kind, "gd");
    EXPECT_EQ(markers[18].offset, s.gd * 512 - 512);
    EXPECT_EQ(markers[19].kind, "footer");
    EXPECT_EQ(markers[19].offset, f.size() - 1536);
    EXPECT_EQ(markers[20].kind, "eos");
    EXPECT_EQ(markers[20].offset, f.size() - 512);
    // The directory points at the table right after its marker, the table
    // at the grain markers.
    EXPECT_EQ(le32_at(f, s.gd * 512) * 512ULL, markers[17].offset + 512);
    EXPECT_EQ(le32_at(f, markers[17].offset + 512 + 4 * 48) * 512ULL, markers[0].offset);
    EXPECT_EQ(le32_at(f, markers[17].offset + 512 + 4 * 47), 0u);
    EXPECT_EQ(le32_at(f, markers[17].offset + 512 + 4 * 159) * 512ULL, markers[16].offset);
}

TEST_F(VmdkStreamTest, ReadsBackAsTheSourceThroughDirectoryAndAsAStream) {
    auto src = sample_disk();
    auto f = prepared_bytes(stream_view(src, cache_.path()));
    StreamFile s(f);
    EXPECT_EQ(s.read_through_directory(), read_all(*src));
    EXPECT_EQ(s.read_as_stream(), read_all(*src));
}

TEST_F(VmdkStreamTest, OddSizeLastGrainHoldsOnlyTheCapacity) {
    auto src = std::make_shared<MemoryDevice>(MiB + 700);
    src->put_pattern(0, 1000);
    src->put_pattern(MiB, 700);
    auto f = prepared_bytes(stream_view(src, cache_.path()));
    StreamFile s(f);
    EXPECT_EQ(s.capacity, 2050u);
    auto expect = read_all(*src);
    expect.resize(2050 * 512, 0);
    EXPECT_EQ(s.read_through_directory(), expect);
    EXPECT_EQ(s.read_as_stream(), expect);
    // The last grain (16) covers 2 sectors of the disk: 1024 bytes unpacked.
    const auto markers = s.walk();
    ASSERT_GE(markers.size(), 2u);
    EXPECT_EQ(markers[1].value, 16 * 128u);
    EXPECT_EQ(s.inflate_grain(markers[1].offset / 512).size(), 1024u);
}

TEST_F(VmdkStreamTest, ZeroGrainsAndEmptyGrainTablesAreLeftOut) {
    // 80 MiB, three grain tables of 32 MiB: data in the first and the last,
    // a run of allocated zeros in the first, nothing in the second.
    auto src = std::make_shared<MemoryDevice>(80 * MiB);
    src->put_pattern(MiB, grain);
    src->put(2 * MiB, std::vector<unsigned char>(4 * grain, 0));
    src->put_pattern(70 * MiB, 100);
    auto f = prepared_bytes(stream_view(src, cache_.path()));
    StreamFile s(f);
    ASSERT_EQ(s.tables(), 3u);
    EXPECT_NE(le32_at(f, s.gd * 512 + 0), 0u);
    EXPECT_EQ(le32_at(f, s.gd * 512 + 4), 0u);
    EXPECT_NE(le32_at(f, s.gd * 512 + 8), 0u);
    std::vector<std::string> kinds;
    for (const auto& m : s.walk())
        kinds.push_back(m.kind);
    EXPECT_EQ(kinds,
              (std::vector<std::string>{"grain", "gt", "grain", "gt", "gd", "footer", "eos"}));
    EXPECT_EQ(s.read_through_directory(), read_all(*src));
}

TEST_F(VmdkStreamTest, EmptyDiskIsHeaderAndTail) {
    auto f = prepared_bytes(stream_view(std::make_shared<MemoryDevice>(64 * MiB), cache_.path()));
    EXPECT_EQ(f.size(), (128 + 5) * 512u);
    StreamFile s(f);
    EXPECT_EQ(s.read_through_directory(), std::vector<unsigned char>(64 * MiB, 0));
    EXPECT_EQ(s.walk().size(), 3u);
}

TEST_F(VmdkStreamTest, SameSourceSameBytesWhateverTheThreadsAndCacheDir) {
    TempDir other;
    auto a = prepared_bytes(stream_view(sample_disk(), cache_.path(), 1));
    auto b = prepared_bytes(stream_view(sample_disk(), other.path(), 4));
    EXPECT_EQ(a, b);
    // Through the format table, the cachedir option does not change the bytes.
    auto c = prepared(
        make_view(*find_format("vmdk-stream"), sample_disk(), {{"cachedir", other.path() + "/x"}}));
    EXPECT_EQ(read_all(*c), a);
    // Another source, another content ID.
    auto d =
        prepared_bytes(stream_view(std::make_shared<MemoryDevice>(10 * MiB + 512), cache_.path()));
    EXPECT_NE(std::string(reinterpret_cast<const char*>(&a[512])),
              std::string(reinterpret_cast<const char*>(&d[512])));
}

TEST_F(VmdkStreamTest, ConcurrentPreparesCompressOnce) {
    auto v = stream_view(sample_disk(), cache_.path());
    std::atomic<int> finished{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i)
        threads.emplace_back([&] {
            v->prepare([&](uint64_t done, uint64_t total) {
                if (done == total)
                    ++finished;
            });
            EXPECT_TRUE(v->ready());
            EXPECT_GT(v->size(), 0u);
        });
    for (auto& t : threads)
        t.join();
    EXPECT_EQ(finished.load(), 1);
}

TEST_F(VmdkStreamTest, ProgressRunsFromZeroToTheDataToCompress) {
    auto v = stream_view(sample_disk(), cache_.path());
    std::vector<std::pair<uint64_t, uint64_t>> calls;
    v->prepare([&](uint64_t done, uint64_t total) { calls.emplace_back(done, total); });
    ASSERT_GE(calls.size(), 2u);
    EXPECT_EQ(calls.front(), std::make_pair(uint64_t{0}, 17 * grain));
    EXPECT_EQ(calls.back(), std::make_pair(17 * grain, 17 * grain));
    for (size_t i = 1; i < calls.size(); ++i)
        EXPECT_LE(calls[i - 1].first, calls[i].first);
}

TEST_F(VmdkStreamTest, ProgressThatThrowsAbandonsThePassAndALaterPrepareSucceeds) {
    auto v = stream_view(sample_disk(), cache_.path());
    struct Stop {};
    EXPECT_THROW(v->prepare([](uint64_t done, uint64_t) {
        if (done > 0)
            throw Stop{};
    }),
                 Stop);
    EXPECT_FALSE(v->ready());
    EXPECT_EQ(v->size(), 0u);
    v->prepare({});
    EXPECT_EQ(StreamFile(read_all(*v)).read_through_directory(), read_all(*sample_disk()));
}

TEST_F(VmdkStreamTest, PreparedGivesACheckedDeviceOfTheFinalSize) {
    auto dev = make_view(*find_format("vmdk-stream"), sample_disk(), {{"cachedir", cache_.path()}});
    ASSERT_NE(prepared_view_of(*dev), nullptr);
    EXPECT_EQ(dev->size(), 0u);
    auto ready = prepared(dev);
    EXPECT_TRUE(prepared_view_of(*dev)->ready());
    EXPECT_GT(ready->size(), 128 * 512u);
    EXPECT_EQ(StreamFile(read_all(*ready)).read_through_directory(), read_all(*sample_disk()));
    // A view that needs no preparing comes back as it is.
    auto plain = make_view(*find_format("vmdk"), sample_disk(), {});
    EXPECT_EQ(prepared_view_of(*plain), nullptr);
    EXPECT_EQ(prepared(plain), plain);
}

TEST_F(VmdkStreamTest, BodyReadsSpliceFromTheCacheFile) {
    auto v = stream_view(sample_disk(), cache_.path());
    auto f = prepared_bytes(v);
    EXPECT_FALSE(v->fd_span(0, 512).has_value()); // the header is generated
    const auto span = v->fd_span(128 * 512, 4096);
    ASSERT_TRUE(span.has_value());
    std::vector<unsigned char> buf(4096);
    ASSERT_EQ(::pread(span->fd, buf.data(), buf.size(), static_cast<off_t>(span->offset)), 4096);
    EXPECT_TRUE(std::equal(buf.begin(), buf.end(), f.begin() + 128 * 512));
    const auto ext = v->extents(0, v->size());
    EXPECT_EQ(ext[1], (Extent{512 + 20 * 512, 107 * 512, ExtentType::Hole}));
}

TEST_F(VmdkStreamTest, CacheDirectoryIsCreatedAndAnUnusableOneFailsPrepare) {
    const std::string nested = cache_.path() + "/a/b";
    auto v = stream_view(sample_disk(), nested);
    v->prepare({});
    struct stat st {};
    ASSERT_EQ(::stat(nested.c_str(), &st), 0);
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0700u);

    const std::string file = cache_.path() + "/plain-file";
    ::close(::open(file.c_str(), O_CREAT | O_WRONLY, 0644));
    auto w = stream_view(sample_disk(), file);
    try {
        w->prepare({});
        FAIL() << "prepared with a file as cache directory";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
    }
    EXPECT_FALSE(w->ready());
    EXPECT_EQ(w->size(), 0u);
}

TEST_F(VmdkStreamTest, OffsetsPast32BitSectorsAreAFormatLimit) {
    // A body that starts just short of sector 2^32: the first grain still
    // has a sector number, the ones after it do not.
    auto src = std::make_shared<MemoryDevice>(MiB);
    src->put_pattern(0, 4 * grain);
    const auto map = AllocationMap::of(*src, grain);
    try {
        vmdk::write_stream_body(*src, map, MiB / 512, 0xffffffffULL - 10, {cache_.path(), 1, 6}, {},
                                "disk-stream.vmdk of memory");
        FAIL() << "accepted";
    } catch (const FormatLimitError& e) {
        EXPECT_EQ(std::string(e.what()),
                  "disk-stream.vmdk of memory: the compressed disk reaches beyond 2 TiB, past "
                  "the format's 32-bit sector offsets");
    }
}

TEST_F(VmdkStreamTest, BadOptionsFailWhenTheViewIsMadeNotWhenPrepared) {
    try {
        make_view(*find_format("vmdk-stream"), sample_disk(), {{"adapter", "pvscsi"}});
        FAIL() << "accepted";
    } catch (const InvalidArgument& e) {
        EXPECT_EQ(std::string(e.what()),
                  "VMDK: adapter=pvscsi needs hwversion 7 or later (given 4)");
    }
}

} // namespace
} // namespace p2vfs
