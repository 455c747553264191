// Layout of the VHD and VMDK views, checked field by field against the
// specifications, and by reading the disk back through small independent
// readers written from the specifications (not from the views' code).
#include "common/endian.h"
#include "common/error.h"
#include "formats/format.h"
#include "memory_device.h"
#include "spec_bytes.h"

#include <cstring>
#include <gtest/gtest.h>

namespace p2vfs {
namespace {

using test::be32_at;
using test::be64_at;
using test::le32_at;
using test::le64_at;

using test::MemoryDevice;
using test::read_all;
using test::read_at;

constexpr uint64_t KiB = 1024, MiB = KiB * KiB, GiB = MiB * KiB;

DevicePtr view(const char* format, DevicePtr src, std::map<std::string, std::string> opts = {}) {
    return make_view(*find_format(format), std::move(src), opts);
}

uint32_t vhd_checksum(std::vector<unsigned char> b, size_t checksum_at) {
    std::memset(&b[checksum_at], 0, 4);
    uint32_t sum = 0;
    for (unsigned char c : b)
        sum += c;
    return ~sum;
}

// A dynamic VHD reader from the specification: footer -> dynamic header -> BAT.
std::vector<unsigned char> read_back_dynamic_vhd(const std::vector<unsigned char>& f) {
    const uint64_t dyn = be64_at(f, 16);
    const uint64_t size = be64_at(f, 48);
    const uint64_t bat = be64_at(f, dyn + 16);
    const uint32_t block = be32_at(f, dyn + 32);
    const uint64_t bitmap = (block / 512 / 8 + 511) / 512 * 512;
    std::vector<unsigned char> disk(size, 0);
    for (uint64_t i = 0; i * block < size; ++i) {
        const uint32_t e = be32_at(f, bat + 4 * i);
        if (e == 0xffffffff)
            continue;
        const uint64_t n = std::min<uint64_t>(block, size - i * block);
        std::memcpy(&disk[i * block], &f[e * 512ULL + bitmap], n);
    }
    return disk;
}

// A monolithicSparse VMDK reader from the specification: header -> GD -> GT.
std::vector<unsigned char> read_back_vmdk(const std::vector<unsigned char>& f, bool redundant) {
    const uint64_t capacity = le64_at(f, 12), grain = le64_at(f, 20);
    const uint64_t gd = le64_at(f, redundant ? 48 : 56);
    const uint32_t per_gt = le32_at(f, 44);
    std::vector<unsigned char> disk(capacity * 512, 0);
    for (uint64_t g = 0; g * grain < capacity; ++g) {
        const uint32_t gt = le32_at(f, gd * 512 + 4 * (g / per_gt));
        if (gt == 0)
            continue;
        const uint32_t sector = le32_at(f, gt * 512ULL + 4 * (g % per_gt));
        if (sector == 0)
            continue;
        const uint64_t n = std::min<uint64_t>(grain, capacity - g * grain) * 512;
        std::memcpy(&disk[g * grain * 512], &f[sector * 512ULL], n);
    }
    return disk;
}

std::shared_ptr<MemoryDevice> sample_disk() {
    // 10 MiB: a little data in block 1, nothing in blocks 2-3, the end of block 4.
    auto d = std::make_shared<MemoryDevice>(10 * MiB);
    d->put_pattern(3 * MiB, 100);
    d->put_pattern(9 * MiB, MiB);
    return d;
}

TEST(VhdDynamicLayout, HeaderBatAndBlocksSitWhereTheSpecSays) {
    auto f = read_all(*view("vhd", sample_disk()));
    const uint64_t stride = 512 + 2 * MiB;
    // footer copy, header, one sector of BAT, two blocks, footer
    ASSERT_EQ(f.size(), 512 + 1024 + 512 + 2 * stride + 512);
    EXPECT_EQ(std::string(f.begin(), f.begin() + 8), "conectix");
    EXPECT_TRUE(std::equal(f.begin(), f.begin() + 512, f.end() - 512)); // footer copy == footer
    EXPECT_EQ(be64_at(f, 16), 512u);     // data offset: the dynamic header
    EXPECT_EQ(be64_at(f, 48), 10 * MiB); // current size
    EXPECT_EQ(be32_at(f, 60), 3u);       // dynamic
    EXPECT_EQ(std::string(f.begin() + 28, f.begin() + 32), "win ");
    EXPECT_EQ(f[56] * 256 + f[57], 301); // CHS 301/4/17 for 20480 sectors
    EXPECT_EQ(f[58], 4);
    EXPECT_EQ(f[59], 17);
    EXPECT_EQ(be32_at(f, 64), vhd_checksum({f.begin(), f.begin() + 512}, 64));

    std::vector<unsigned char> dyn(f.begin() + 512, f.begin() + 1536);
    EXPECT_EQ(std::string(dyn.begin(), dyn.begin() + 8), "cxsparse");
    EXPECT_EQ(be64_at(dyn, 16), 1536u); // BAT offset
    EXPECT_EQ(be32_at(dyn, 28), 5u);    // max table entries
    EXPECT_EQ(be32_at(dyn, 32), 2 * MiB);
    EXPECT_EQ(be32_at(dyn, 36), vhd_checksum(dyn, 36));

    // BAT: blocks 1 and 4 stored right after the BAT, in disk order.
    EXPECT_EQ(be32_at(f, 1536 + 0), 0xffffffffu);
    EXPECT_EQ(be32_at(f, 1536 + 4), 4u);
    EXPECT_EQ(be32_at(f, 1536 + 8), 0xffffffffu);
    EXPECT_EQ(be32_at(f, 1536 + 12), 0xffffffffu);
    EXPECT_EQ(be32_at(f, 1536 + 16), 4u + stride / 512);
    for (size_t i = 1536 + 20; i < 2048; ++i)
        ASSERT_EQ(f[i], 0xff) << "BAT padding at " << i;
    for (size_t i = 2048; i < 2048 + 512; ++i)
        ASSERT_EQ(f[i], 0xff) << "sector bitmap at " << i;
    EXPECT_EQ(f[2560 + MiB], MemoryDevice::pattern(3 * MiB));
}

TEST(VhdDynamicLayout, ReadsBackAsTheSourceDisk) {
    auto src = sample_disk();
    EXPECT_EQ(read_back_dynamic_vhd(read_all(*view("vhd", src))), read_all(*src));
}

TEST(VhdDynamicLayout, OddSizeRoundsUpToWholeSectors) {
    auto src = std::make_shared<MemoryDevice>(5 * MiB + 1234);
    src->put_pattern(5 * MiB, 1234);
    auto f = read_all(*view("vhd", src));
    EXPECT_EQ(be64_at(f, 48), 5 * MiB + 1536);
    auto disk = read_back_dynamic_vhd(f);
    auto expect = read_all(*src);
    expect.resize(5 * MiB + 1536, 0);
    EXPECT_EQ(disk, expect);
}

TEST(VhdDynamicLayout, EmptyDiskHasNoBlocks) {
    auto f = read_all(*view("vhd", std::make_shared<MemoryDevice>(64 * MiB)));
    EXPECT_EQ(f.size(), 512 + 1024 + 512 + 512u);
}

TEST(VhdFixedLayout, IsTheDiskFollowedByAFooter) {
    auto src = sample_disk();
    auto v = view("vhd-fixed", src);
    auto f = read_all(*v);
    ASSERT_EQ(f.size(), 10 * MiB + 512);
    EXPECT_TRUE(std::equal(f.begin(), f.begin() + 10 * MiB, read_all(*src).begin()));
    std::vector<unsigned char> footer(f.end() - 512, f.end());
    EXPECT_EQ(be64_at(footer, 16), ~uint64_t{0});
    EXPECT_EQ(be32_at(footer, 60), 2u);
    EXPECT_EQ(be32_at(footer, 64), vhd_checksum(footer, 64));
    // Holes of the source stay holes in the file.
    const auto ext = v->extents(0, v->size());
    EXPECT_EQ(ext.front(), (Extent{0, 3 * MiB, ExtentType::Hole}));
    EXPECT_EQ(ext.back(), (Extent{9 * MiB, MiB + 512, ExtentType::Data}));
}

TEST(VhdLimits, RefusesDisksOver2040GiB) {
    EXPECT_NO_THROW(view("vhd", std::make_shared<MemoryDevice>(2040 * GiB)));
    try {
        view("vhd", std::make_shared<MemoryDevice>(2040 * GiB + 512));
        FAIL() << "a disk over 2040 GiB was accepted";
    } catch (const FormatLimitError& e) {
        EXPECT_EQ(std::string(e.what()),
                  "VHD: disk of 1.99 TiB (2190433321472 bytes) exceeds the format's 2040 GiB "
                  "limit");
    }
}

TEST(VhdLimits, MibRoundingStaysWithinTheLimit) {
    // The limit is a whole number of MiB, so rounding up never crosses it.
    auto v =
        view("vhd-fixed", std::make_shared<MemoryDevice>(2040 * GiB - 512), {{"round", "mib"}});
    EXPECT_EQ(v->size(), 2040 * GiB + 512);
}

TEST(VhdOptions, MibRoundingGivesWholeMiB) {
    auto f = read_all(
        *view("vhd-fixed", std::make_shared<MemoryDevice>(3 * MiB + 1), {{"round", "mib"}}));
    EXPECT_EQ(f.size(), 4 * MiB + 512);
    EXPECT_EQ(be64_at({f.end() - 512, f.end()}, 48), 4 * MiB);
}

TEST(VhdOptions, UnknownValueIsRefusedByName) {
    try {
        view("vhd", sample_disk(), {{"round", "gib"}});
        FAIL();
    } catch (const InvalidArgument& e) {
        EXPECT_EQ(std::string(e.what()), "option round=gib: must be one of sector, mib");
    }
}

TEST(VhdIdentity, SameSourceSameBytesOtherSourceOtherId) {
    auto a = read_all(*view("vhd", sample_disk()));
    auto b = read_all(*view("vhd", sample_disk()));
    EXPECT_EQ(a, b);
    auto other = std::make_shared<MemoryDevice>(10 * MiB + 512);
    auto c = read_all(*view("vhd", other));
    EXPECT_FALSE(std::equal(a.begin() + 68, a.begin() + 84, c.begin() + 68)); // unique id
}

TEST(VmdkLayout, HeaderDirectoriesAndTablesSitWhereTheSpecSays) {
    auto src = sample_disk();
    auto f = read_all(*view("vmdk", src));
    EXPECT_EQ(le32_at(f, 0), 0x564d444bu); // "KDMV"
    EXPECT_EQ(le32_at(f, 4), 1u);
    EXPECT_EQ(le32_at(f, 8), 3u);      // newline test + redundant grain table
    EXPECT_EQ(le64_at(f, 12), 20480u); // capacity in sectors
    EXPECT_EQ(le64_at(f, 20), 128u);   // 64 KiB grains
    EXPECT_EQ(le64_at(f, 28), 1u);     // descriptor at sector 1
    EXPECT_EQ(le64_at(f, 36), 20u);
    EXPECT_EQ(le32_at(f, 44), 512u);
    // 160 grains -> 1 grain table of 4 sectors; GD of 1 sector.
    EXPECT_EQ(le64_at(f, 48), 21u);  // redundant GD
    EXPECT_EQ(le64_at(f, 56), 26u);  // GD after rGD (1) + rGT (4)
    EXPECT_EQ(le64_at(f, 64), 128u); // overhead rounded to a grain
    EXPECT_EQ(std::string(f.begin() + 73, f.begin() + 77), "\n \r\n");
    EXPECT_EQ(le32_at(f, 21 * 512), 22u); // rGD -> rGT
    EXPECT_EQ(le32_at(f, 26 * 512), 27u); // GD -> GT
    // Grain 48 (3 MiB) is the first stored; grains 144-159 (9-10 MiB) follow.
    for (uint64_t gt : {22u, 27u}) {
        EXPECT_EQ(le32_at(f, gt * 512 + 4 * 47), 0u);
        EXPECT_EQ(le32_at(f, gt * 512 + 4 * 48), 128u);
        EXPECT_EQ(le32_at(f, gt * 512 + 4 * 49), 0u);
        EXPECT_EQ(le32_at(f, gt * 512 + 4 * 144), 256u);
        EXPECT_EQ(le32_at(f, gt * 512 + 4 * 159), 128u + 16 * 128);
    }
    EXPECT_EQ(f.size(), (128 + 17 * 128) * 512u);
}

TEST(VmdkLayout, ReadsBackThroughBothDirectories) {
    auto src = sample_disk();
    auto f = read_all(*view("vmdk", src));
    EXPECT_EQ(read_back_vmdk(f, false), read_all(*src));
    EXPECT_EQ(read_back_vmdk(f, true), read_all(*src));
}

TEST(VmdkLayout, OddSizeRoundsUpToWholeSectors) {
    auto src = std::make_shared<MemoryDevice>(MiB + 700);
    src->put_pattern(MiB, 700);
    auto f = read_all(*view("vmdk", src));
    EXPECT_EQ(le64_at(f, 12), 2050u);
    auto expect = read_all(*src);
    expect.resize(2050 * 512, 0);
    EXPECT_EQ(read_back_vmdk(f, false), expect);
}

std::string descriptor_of(const std::vector<unsigned char>& f) {
    return std::string(reinterpret_cast<const char*>(&f[512]));
}

TEST(VmdkDescriptor, NamesTheExtentTypeAndDefaults) {
    auto d = descriptor_of(read_at(*view("vmdk", sample_disk()), 0, 21 * 512));
    EXPECT_NE(d.find("createType=\"monolithicSparse\"\n"), std::string::npos) << d;
    EXPECT_NE(d.find("\nRW 20480 SPARSE \"disk.vmdk\"\n"), std::string::npos) << d;
    EXPECT_NE(d.find("ddb.adapterType = \"ide\"\n"), std::string::npos) << d;
    EXPECT_NE(d.find("ddb.virtualHWVersion = \"4\"\n"), std::string::npos) << d;
    EXPECT_NE(d.find("ddb.geometry.heads = \"16\"\n"), std::string::npos) << d;
}

TEST(VmdkDescriptor, AdapterAndHardwareVersionOptions) {
    auto d = descriptor_of(read_at(
        *view("vmdk", sample_disk(), {{"adapter", "pvscsi"}, {"hwversion", "13"}}), 0, 21 * 512));
    EXPECT_NE(d.find("ddb.adapterType = \"pvscsi\"\n"), std::string::npos) << d;
    EXPECT_NE(d.find("ddb.virtualHWVersion = \"13\"\n"), std::string::npos) << d;
    EXPECT_NE(d.find("ddb.geometry.heads = \"255\"\n"), std::string::npos) << d;
}

TEST(VmdkOptions, BadValuesAreRefusedByName) {
    auto try_opts = [](std::map<std::string, std::string> o) -> std::string {
        try {
            view("vmdk", sample_disk(), o);
        } catch (const InvalidArgument& e) {
            return e.what();
        }
        return "(accepted)";
    };
    EXPECT_EQ(try_opts({{"adapter", "scsi"}}),
              "option adapter=scsi: must be one of ide, lsilogic, buslogic, pvscsi");
    EXPECT_EQ(try_opts({{"hwversion", "99"}}), "option hwversion=99: must be between 4 and 21");
    EXPECT_EQ(try_opts({{"adapter", "pvscsi"}}),
              "VMDK: adapter=pvscsi needs hwversion 7 or later (given 4)");
    EXPECT_EQ(try_opts({{"colour", "blue"}}),
              "vmdk: unknown option 'colour' (known: adapter, hwversion)");
}

TEST(VmdkLayout, TerabyteDiskOpensWithoutReadingData) {
    // 1 TiB, 1 MiB of data: the layout comes from extents alone.
    auto src = std::make_shared<MemoryDevice>(1ULL << 40);
    src->put_pattern((1ULL << 40) - MiB, MiB);
    auto v = view("vmdk", src);
    const uint64_t tables = (1ULL << 40) / (64 * KiB) / 512;
    const uint64_t over_head = (21 + 2 * (tables * 4 / 512 + tables * 4) + 127) / 128 * 128;
    EXPECT_EQ(v->size(), (over_head + 16 * 128) * 512);
    EXPECT_EQ(read_at(*v, v->size() - 1, 1)[0], MemoryDevice::pattern((1ULL << 40) - 1));
}

} // namespace
} // namespace p2vfs

namespace p2vfs {
namespace {

TEST(VmdkLimits, RefusesDisksWhoseSectorOffsetsNeedMoreThan32Bits) {
    EXPECT_NO_THROW(
        make_view(*find_format("vmdk"), std::make_shared<test::MemoryDevice>(2047ULL << 30), {}));
    try {
        make_view(*find_format("vmdk"), std::make_shared<test::MemoryDevice>((2047ULL << 30) + 512),
                  {});
        FAIL() << "a disk over 2047 GiB was accepted";
    } catch (const FormatLimitError& e) {
        EXPECT_EQ(
            std::string(e.what()),
            "VMDK: disk of 2.00 TiB (2197949514240 bytes) exceeds the format's 2047 GiB limit");
    }
}

} // namespace
} // namespace p2vfs
