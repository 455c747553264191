// Layout of the VDI view, checked field by field at the offsets VirtualBox's
// VDICore.h gives (pre-header, VDIHEADER1PLUS, block map, data area), and by
// reading the disk back through a small reader written from that header
// file, not from the view's code.
#include "common/endian.h"
#include "common/error.h"
#include "formats/format.h"
#include "memory_device.h"
#include "spec_bytes.h"

#include <atomic>
#include <cstring>
#include <gtest/gtest.h>

namespace p2vfs {
namespace {

using test::le32_at;
using test::le64_at;

using test::MemoryDevice;
using test::read_all;
using test::read_at;

constexpr uint64_t KiB = 1024, MiB = KiB * KiB, TiB = MiB * MiB;
constexpr uint32_t free_block = 0xffffffff; // VDI_IMAGE_BLOCK_FREE

// Offsets in the file: VDIPREHEADER is 72 bytes, VDIHEADER1PLUS follows it.
enum : size_t {
    at_signature = 64,
    at_version = 68,
    at_header_size = 72,
    at_type = 76,
    at_flags = 80,
    at_comment = 84,
    at_blocks_offset = 340,
    at_data_offset = 344,
    at_legacy_geometry = 348,
    at_dummy = 364,
    at_disk_size = 368,
    at_block_size = 376,
    at_block_extra = 380,
    at_blocks = 384,
    at_blocks_allocated = 388,
    at_uuid_create = 392,
    at_uuid_modify = 408,
    at_uuid_linkage = 424,
    at_uuid_parent_modify = 440,
    at_lchs_geometry = 456,
    header_end = 472,
};

// A disk that counts reads and says every range can be spliced from
// descriptor 42 at the same offset.
class CountingDevice : public MemoryDevice {
public:
    using MemoryDevice::MemoryDevice;
    void read(void* buf, size_t length, uint64_t offset) override {
        ++reads;
        MemoryDevice::read(buf, length, offset);
    }
    std::optional<FdSpan> fd_span(uint64_t offset, size_t) override { return FdSpan{42, offset}; }
    std::atomic<int> reads{0};
};

DevicePtr vdi_view(DevicePtr src) {
    return make_view(*find_format("vdi"), std::move(src), {});
}

bool all_zero(const std::vector<unsigned char>& b, size_t from, size_t to) {
    return std::all_of(b.begin() + from, b.begin() + to, [](unsigned char c) { return c == 0; });
}

// A dynamic VDI reader from VDICore.h: header -> block map -> blocks at
// offData + entry * cbBlock; entries FREE (~0) and ZERO (~1) read as zeros.
std::vector<unsigned char> read_back_vdi(const std::vector<unsigned char>& f) {
    EXPECT_EQ(le32_at(f, at_signature), 0xbeda107fu);
    const uint64_t size = le64_at(f, at_disk_size);
    const uint64_t map = le32_at(f, at_blocks_offset);
    const uint64_t data = le32_at(f, at_data_offset);
    const uint64_t block = le32_at(f, at_block_size);
    const uint32_t blocks = le32_at(f, at_blocks);
    std::vector<unsigned char> disk(size, 0);
    for (uint64_t i = 0; i < blocks; ++i) {
        const uint32_t e = le32_at(f, map + 4 * i);
        if (e >= 0xfffffffe)
            continue;
        const uint64_t n = std::min<uint64_t>(block, size - i * block);
        const uint64_t from = data + e * block;
        EXPECT_LE(from + block, f.size()) << "block " << i << " reaches past the end of the file";
        std::memcpy(&disk[i * block], &f[from], n);
    }
    return disk;
}

std::shared_ptr<CountingDevice> sample_disk() {
    // 10 MiB: 100 bytes in block 3, all of block 9.
    auto d = std::make_shared<CountingDevice>(10 * MiB);
    d->put_pattern(3 * MiB, 100);
    d->put_pattern(9 * MiB, MiB);
    return d;
}

TEST(VdiLayout, PreHeaderAndHeaderFieldsSitWhereVdiCoreSays) {
    auto f = read_all(*vdi_view(sample_disk()));
    const std::string info = "<<< Oracle VM VirtualBox Disk Image >>>\n";
    EXPECT_EQ(std::string(f.begin(), f.begin() + info.size()), info);
    EXPECT_TRUE(all_zero(f, info.size(), 64)) << "file info is NUL-padded";
    EXPECT_EQ(le32_at(f, at_signature), 0xbeda107fu);
    EXPECT_EQ(le32_at(f, at_version), 0x00010001u);
    EXPECT_EQ(le32_at(f, at_header_size), 400u); // VDIHEADER1PLUS
    EXPECT_EQ(le32_at(f, at_type), 1u);          // VDI_IMAGE_TYPE_NORMAL: dynamic
    EXPECT_EQ(le32_at(f, at_flags), 0u);
    EXPECT_TRUE(all_zero(f, at_comment, at_blocks_offset)) << "empty comment";
    EXPECT_EQ(le32_at(f, at_blocks_offset), MiB); // VDI_DATA_ALIGN
    EXPECT_EQ(le32_at(f, at_data_offset), 2 * MiB);
    for (size_t g : {size_t{at_legacy_geometry}, size_t{at_lchs_geometry}}) {
        EXPECT_EQ(le32_at(f, g), 0u) << "cylinders at " << g;
        EXPECT_EQ(le32_at(f, g + 4), 0u) << "heads at " << g;
        EXPECT_EQ(le32_at(f, g + 8), 0u) << "sectors at " << g;
        EXPECT_EQ(le32_at(f, g + 12), 512u) << "sector size at " << g;
    }
    EXPECT_EQ(le32_at(f, at_dummy), 0u);
    EXPECT_EQ(le64_at(f, at_disk_size), 10 * MiB);
    EXPECT_EQ(le32_at(f, at_block_size), MiB);
    EXPECT_EQ(le32_at(f, at_block_extra), 0u);
    EXPECT_EQ(le32_at(f, at_blocks), 10u);
    EXPECT_EQ(le32_at(f, at_blocks_allocated), 2u);
    EXPECT_FALSE(all_zero(f, at_uuid_create, at_uuid_modify));
    EXPECT_FALSE(all_zero(f, at_uuid_modify, at_uuid_linkage));
    EXPECT_FALSE(std::equal(f.begin() + at_uuid_create, f.begin() + at_uuid_modify,
                            f.begin() + at_uuid_modify));
    EXPECT_TRUE(all_zero(f, at_uuid_linkage, at_lchs_geometry)) << "linkage, parent: none";
    EXPECT_TRUE(all_zero(f, header_end, MiB)) << "between header and block map";
}

TEST(VdiLayout, BlockMapHoldsDataBlocksInDiskOrderAndFreeElsewhere) {
    auto f = read_all(*vdi_view(sample_disk()));
    ASSERT_EQ(f.size(), 4 * MiB); // data area at 2 MiB, two blocks
    for (uint32_t i = 0; i < 10; ++i) {
        const uint32_t want = i == 3 ? 0 : i == 9 ? 1 : free_block;
        EXPECT_EQ(le32_at(f, MiB + 4 * i), want) << "entry " << i;
    }
    EXPECT_TRUE(all_zero(f, MiB + 40, 2 * MiB)) << "after the block map";
    EXPECT_EQ(f[2 * MiB], MemoryDevice::pattern(3 * MiB));
    EXPECT_EQ(f[2 * MiB + 99], MemoryDevice::pattern(3 * MiB + 99));
    EXPECT_TRUE(all_zero(f, 2 * MiB + 100, 3 * MiB)) << "rest of block 3";
    EXPECT_EQ(f[3 * MiB + 12345], MemoryDevice::pattern(9 * MiB + 12345));
}

TEST(VdiLayout, PaddingBeforeTheBlockMapAndTheDataIsAHole) {
    auto v = vdi_view(sample_disk());
    const auto ext = v->extents(0, 2 * MiB);
    ASSERT_EQ(ext.size(), 4u);
    EXPECT_EQ(ext[0], (Extent{0, header_end, ExtentType::Data}));
    EXPECT_EQ(ext[1], (Extent{header_end, MiB - header_end, ExtentType::Hole}));
    EXPECT_EQ(ext[2], (Extent{MiB, 40, ExtentType::Data}));
    EXPECT_EQ(ext[3], (Extent{MiB + 40, MiB - 40, ExtentType::Hole}));
    // Blocks are stored whole, but holes of the source inside them stay
    // holes of the file (the first stored block holds 100 bytes of data).
    EXPECT_EQ(v->extents(2 * MiB, 2 * MiB),
              (std::vector<Extent>{{2 * MiB, 100, ExtentType::Data},
                                   {2 * MiB + 100, MiB - 100, ExtentType::Hole},
                                   {3 * MiB, MiB, ExtentType::Data}}));
}

TEST(VdiLayout, ReadsBackAsTheSourceDisk) {
    auto src = sample_disk();
    EXPECT_EQ(read_back_vdi(read_all(*vdi_view(src))), read_all(*src));
}

TEST(VdiLayout, OddSizeRoundsUpToWholeSectorsAndStoresTheLastBlockWhole) {
    auto src = std::make_shared<MemoryDevice>(5 * MiB + 1234);
    src->put_pattern(5 * MiB, 1234);
    auto f = read_all(*vdi_view(src));
    EXPECT_EQ(le64_at(f, at_disk_size), 5 * MiB + 1536);
    EXPECT_EQ(le32_at(f, at_blocks), 6u);
    EXPECT_EQ(f.size(), 2 * MiB + MiB); // VirtualBox reads no block cut short
    auto expect = read_all(*src);
    expect.resize(5 * MiB + 1536, 0);
    EXPECT_EQ(read_back_vdi(f), expect);
}

TEST(VdiLayout, EmptyDiskIsHeaderAndBlockMapOnly) {
    auto f = read_all(*vdi_view(std::make_shared<MemoryDevice>(64 * MiB)));
    EXPECT_EQ(f.size(), 2 * MiB);
    EXPECT_EQ(le32_at(f, at_blocks), 64u);
    EXPECT_EQ(le32_at(f, at_blocks_allocated), 0u);
    EXPECT_EQ(le32_at(f, MiB + 4 * 63), free_block);
}

TEST(VdiLayout, DiskUnderOneBlockHasOneEntry) {
    auto src = std::make_shared<MemoryDevice>(4096);
    src->put_pattern(0, 4096);
    auto f = read_all(*vdi_view(src));
    EXPECT_EQ(le64_at(f, at_disk_size), 4096u);
    EXPECT_EQ(le32_at(f, at_blocks), 1u);
    EXPECT_EQ(f.size(), 3 * MiB);
    EXPECT_EQ(read_back_vdi(f), read_all(*src));
}

TEST(VdiLayout, TerabyteDiskOpensWithoutReadingData) {
    // 1 TiB, 1 MiB of data at the end: the layout comes from extents alone.
    auto src = std::make_shared<CountingDevice>(TiB);
    src->put_pattern(TiB - MiB, MiB);
    auto v = vdi_view(src);
    EXPECT_EQ(src->reads, 0);
    // 2^20 entries: a 4 MiB block map from 1 MiB, data from 5 MiB.
    auto head = read_at(*v, 0, header_end);
    EXPECT_EQ(le32_at(head, at_blocks), 1u << 20);
    EXPECT_EQ(le32_at(head, at_data_offset), 5 * MiB);
    EXPECT_EQ(v->size(), 6 * MiB);
    EXPECT_EQ(src->reads, 0);
    EXPECT_EQ(load_le<uint32_t>(read_at(*v, MiB + 4 * ((1u << 20) - 1), 4).data()), 0u);
    EXPECT_EQ(load_le<uint32_t>(read_at(*v, MiB, 4).data()), free_block);
    EXPECT_EQ(read_at(*v, v->size() - 1, 1)[0], MemoryDevice::pattern(TiB - 1));
}

TEST(VdiLayout, DataAreaReadsARunOfBlocksInOneSourceRead) {
    auto src = std::make_shared<CountingDevice>(16 * MiB);
    src->put_pattern(2 * MiB, 3 * MiB); // blocks 2-4: one run
    src->put_pattern(8 * MiB, MiB);     // block 8: another
    auto v = vdi_view(src);
    const uint64_t data = 2 * MiB;
    src->reads = 0;
    auto run = read_at(*v, data + 100, 3 * MiB - 100);
    EXPECT_EQ(src->reads, 1);
    EXPECT_EQ(run.back(), MemoryDevice::pattern(5 * MiB - 1));
    // Splices: within a run, from the source at the block's own offset;
    // never across the gap between blocks 4 and 8.
    auto span = v->fd_span(data + MiB + 7, 2 * MiB - 7);
    ASSERT_TRUE(span.has_value());
    EXPECT_EQ(span->fd, 42);
    EXPECT_EQ(span->offset, 3 * MiB + 7);
    EXPECT_FALSE(v->fd_span(data + 3 * MiB - 1, 2).has_value());
    EXPECT_FALSE(v->fd_span(MiB, 4).has_value()) << "the block map is generated";
}

TEST(VdiIdentity, UuidsComeFromTheSourceInRtuuidByteOrder) {
    auto a = read_all(*vdi_view(sample_disk()));
    auto b = read_all(*vdi_view(sample_disk()));
    EXPECT_EQ(a, b);
    auto c = read_at(*vdi_view(std::make_shared<MemoryDevice>(10 * MiB + 512)), 0, header_end);
    EXPECT_FALSE(std::equal(a.begin() + at_uuid_create, a.begin() + at_uuid_modify,
                            c.begin() + at_uuid_create));
    EXPECT_FALSE(std::equal(a.begin() + at_uuid_modify, a.begin() + at_uuid_linkage,
                            c.begin() + at_uuid_modify));
    // RTUUID keeps time_hi_and_version little-endian: the version nibble (8,
    // RFC 9562 "custom") is in the 8th byte, the variant bits in the 9th.
    for (size_t u : {size_t{at_uuid_create}, size_t{at_uuid_modify}}) {
        EXPECT_EQ(a[u + 7] >> 4, 8) << "UUID at " << u;
        EXPECT_EQ(a[u + 8] & 0xc0, 0x80) << "UUID at " << u;
    }
}

TEST(VdiLimits, RefusesDisksOver511TiB) {
    EXPECT_NO_THROW(vdi_view(std::make_shared<MemoryDevice>(511 * TiB)));
    try {
        vdi_view(std::make_shared<MemoryDevice>(511 * TiB + 1));
        FAIL() << "a disk over 511 TiB was accepted";
    } catch (const FormatLimitError& e) {
        EXPECT_EQ(std::string(e.what()),
                  "VDI: disk of 511.0 TiB (561850441793537 bytes) exceeds the format's 511 TiB "
                  "limit");
    }
}

TEST(VdiLimits, LargestDiskStaysWithinQemusBlockCount) {
    // qemu opens at most (2^31 - 512) / 4 blocks; VirtualBox's data offset
    // is 32-bit.
    auto head = read_at(*vdi_view(std::make_shared<MemoryDevice>(511 * TiB)), 0, header_end);
    EXPECT_LE(le32_at(head, at_blocks), (uint32_t{1} << 29) - 128);
    EXPECT_EQ(le32_at(head, at_data_offset), MiB + 511 * 4 * MiB);
}

TEST(VdiOptions, HasNone) {
    try {
        make_view(*find_format("vdi"), sample_disk(), {{"block-size", "2097152"}});
        FAIL() << "an unknown option was accepted";
    } catch (const InvalidArgument& e) {
        EXPECT_EQ(std::string(e.what()), "vdi: unknown option 'block-size' (known: none)");
    }
}

} // namespace
} // namespace p2vfs
