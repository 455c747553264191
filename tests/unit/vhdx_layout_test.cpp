// Layout of the VHDX views, checked field by field at the offsets
// [MS-VHDX] gives, and by reading the disk back through a small reader
// written from the specification (not from the views' code): headers,
// region table, metadata table and items, BAT lookup with the chunk ratio.
#include "common/endian.h"
#include "common/error.h"
#include "formats/format.h"
#include "memory_device.h"
#include "spec_bytes.h"

#include <array>
#include <atomic>
#include <cstring>
#include <gtest/gtest.h>
#include <stdexcept>

namespace p2vfs {
namespace {

using test::le16_at;
using test::le32_at;
using test::le64_at;

using test::MemoryDevice;
using test::read_all;
using test::read_at;

constexpr uint64_t KiB = 1024, MiB = KiB * KiB, GiB = MiB * KiB, TiB = GiB * KiB;
using Options = std::map<std::string, std::string>;

DevicePtr view(const char* format, DevicePtr src, Options opts = {}) {
    return make_view(*find_format(format), std::move(src), opts);
}

std::string text_at(const std::vector<unsigned char>& b, size_t off, size_t n) {
    return std::string(b.begin() + static_cast<long>(off), b.begin() + static_cast<long>(off + n));
}
bool all_zero(const std::vector<unsigned char>& b, size_t from, size_t to) {
    return std::all_of(b.begin() + static_cast<long>(from), b.begin() + static_cast<long>(to),
                       [](unsigned char c) { return c == 0; });
}

// ------------------------------------------------ a reader from the spec

// CRC-32C bit by bit (Castagnoli polynomial, section 2), independent of the
// table-driven code the views use.
uint32_t spec_crc32c(std::vector<unsigned char> b, size_t checksum_at) {
    std::memset(&b[checksum_at], 0, 4);
    uint32_t c = 0xffffffff;
    for (unsigned char byte : b) {
        c ^= byte;
        for (int bit = 0; bit < 8; ++bit)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78 : c >> 1;
    }
    return ~c;
}

using Guid = std::array<unsigned char, 16>;
// The GUIDs of 2.2.3.2 and 2.6.2 in their binary form, written out by hand:
// Data1 (4 bytes) and Data2, Data3 (2 bytes each) little-endian.
constexpr Guid bat_guid = {0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42,
                           0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08};
constexpr Guid metadata_guid = {0x06, 0xA2, 0x7C, 0x8B, 0x90, 0x47, 0x9A, 0x4B,
                                0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E};
constexpr Guid file_parameters_guid = {0x37, 0x67, 0xA1, 0xCA, 0x36, 0xFA, 0x43, 0x4D,
                                       0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B};
constexpr Guid disk_size_guid = {0x24, 0x42, 0xA5, 0x2F, 0x1B, 0xCD, 0x76, 0x48,
                                 0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8};
constexpr Guid disk_id_guid = {0xAB, 0x12, 0xCA, 0xBE, 0xE6, 0xB2, 0x23, 0x45,
                               0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46};
constexpr Guid logical_sector_guid = {0x1D, 0xBF, 0x41, 0x81, 0x6F, 0xA9, 0x09, 0x47,
                                      0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F};
constexpr Guid physical_sector_guid = {0xC7, 0x48, 0xA3, 0xCD, 0x5D, 0x44, 0x71, 0x44,
                                       0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56};

Guid guid_at(const std::vector<unsigned char>& b, size_t off) {
    Guid g;
    std::memcpy(g.data(), &b[off], 16);
    return g;
}

void require(bool ok, const std::string& what) {
    if (!ok)
        throw std::runtime_error("not a valid VHDX: " + what);
}

struct SpecHeader {
    bool valid = false;
    uint64_t sequence_number = 0;
    std::vector<unsigned char> bytes;
};

// 2.2.2: valid if the signature and the checksum over 4 KB both check.
SpecHeader read_header(BlockDevice& f, uint64_t at) {
    SpecHeader h;
    h.bytes = read_at(f, at, 4096);
    h.valid = text_at(h.bytes, 0, 4) == "head" && le32_at(h.bytes, 4) == spec_crc32c(h.bytes, 4);
    h.sequence_number = le64_at(h.bytes, 8);
    return h;
}

struct SpecRegion {
    uint64_t offset = 0;
    uint32_t length = 0;
    uint32_t required = 0;
};

// What a reader learns from the header section and the metadata region.
struct SpecImage {
    SpecHeader headers[2];
    int current = -1;
    SpecRegion bat, metadata;
    uint32_t block_size = 0, file_flags = 0, logical = 0, physical = 0;
    uint64_t disk_size = 0;
    Guid disk_id{};
    uint64_t chunk_ratio = 0, payload_blocks = 0, bat_entries = 0;
    std::map<Guid, std::pair<uint32_t, uint32_t>> item_flags_length;
};

SpecImage open_spec(BlockDevice& f) {
    SpecImage img;
    require(text_at(read_at(f, 0, 8), 0, 8) == "vhdxfile", "file type identifier");
    img.headers[0] = read_header(f, 64 * KiB);
    img.headers[1] = read_header(f, 128 * KiB);
    const bool v0 = img.headers[0].valid, v1 = img.headers[1].valid;
    require(v0 || v1, "no valid header");
    // Current: the only valid one, or the valid one with the greater number.
    if (v0 && v1) {
        require(img.headers[0].sequence_number != img.headers[1].sequence_number,
                "equal sequence numbers: no current header");
        img.current = img.headers[0].sequence_number > img.headers[1].sequence_number ? 0 : 1;
    } else {
        img.current = v0 ? 0 : 1;
    }
    const auto& h = img.headers[img.current].bytes;
    require(le16_at(h, 66) == 1, "Version must be 1");
    require(le16_at(h, 64) == 0, "LogVersion must be 0");
    const uint32_t log_length = le32_at(h, 68);
    const uint64_t log_offset = le64_at(h, 72);
    require(log_length % MiB == 0 && log_offset % MiB == 0 && log_offset >= MiB, "log placement");
    require(all_zero(h, 48, 64), "a non-zero LogGuid asks for a log replay");

    // 2.2.3: the region table, checksum over its 64 KB.
    const auto rt = read_at(f, 192 * KiB, 64 * KiB);
    require(text_at(rt, 0, 4) == "regi", "region table signature");
    require(le32_at(rt, 4) == spec_crc32c(rt, 4), "region table checksum");
    const uint32_t count = le32_at(rt, 8);
    require(count <= 2047, "region table entry count");
    std::vector<std::pair<uint64_t, uint64_t>> objects{{log_offset, log_length}};
    for (uint32_t i = 0; i < count; ++i) {
        const size_t e = 16 + 32 * i;
        SpecRegion r{le64_at(rt, e + 16), le32_at(rt, e + 24), le32_at(rt, e + 28)};
        require(r.offset % MiB == 0 && r.offset >= MiB && r.length % MiB == 0, "region placement");
        objects.push_back({r.offset, r.length});
        const Guid g = guid_at(rt, e);
        if (g == bat_guid)
            img.bat = r;
        else if (g == metadata_guid)
            img.metadata = r;
        else
            require(r.required == 0, "an unknown required region");
    }
    require(img.bat.length > 0 && img.metadata.length > 0, "BAT and metadata regions");
    for (size_t a = 0; a < objects.size(); ++a)
        for (size_t b = a + 1; b < objects.size(); ++b)
            require(objects[a].first + objects[a].second <= objects[b].first ||
                        objects[b].first + objects[b].second <= objects[a].first,
                    "overlapping regions");

    // 2.6: the metadata table and the items it points at.
    const auto md = read_at(f, img.metadata.offset, img.metadata.length);
    require(text_at(md, 0, 8) == "metadata", "metadata table signature");
    const uint16_t items = le16_at(md, 10);
    require(items <= 2047, "metadata entry count");
    for (uint16_t i = 0; i < items; ++i) {
        const size_t e = 32 + 32 * i;
        const Guid g = guid_at(md, e);
        const uint32_t off = le32_at(md, e + 16), len = le32_at(md, e + 20);
        const uint32_t flags = le32_at(md, e + 24);
        require(off >= 64 * KiB && off + len <= md.size(), "metadata item placement");
        img.item_flags_length[g] = {flags, len};
        if (g == file_parameters_guid) {
            img.block_size = le32_at(md, off);
            img.file_flags = le32_at(md, off + 4);
        } else if (g == disk_size_guid) {
            img.disk_size = le64_at(md, off);
        } else if (g == disk_id_guid) {
            img.disk_id = guid_at(md, off);
        } else if (g == logical_sector_guid) {
            img.logical = le32_at(md, off);
        } else if (g == physical_sector_guid) {
            img.physical = le32_at(md, off);
        } else {
            require((flags & 4) == 0, "an unknown required metadata item");
        }
    }
    require(img.block_size >= MiB && img.block_size <= 256 * MiB &&
                (img.block_size & (img.block_size - 1)) == 0,
            "block size");
    require(img.logical == 512 || img.logical == 4096, "logical sector size");
    require(img.physical == 512 || img.physical == 4096, "physical sector size");
    require(img.disk_size % img.logical == 0 && img.disk_size <= 64 * TiB, "virtual disk size");
    require((img.file_flags & 2) == 0, "a differencing disk");

    // 2.4, 2.5: chunk ratio and the number of BAT entries.
    img.chunk_ratio = (uint64_t{1} << 23) * img.logical / img.block_size;
    img.payload_blocks = (img.disk_size + img.block_size - 1) / img.block_size;
    img.bat_entries = img.payload_blocks == 0
                          ? 0
                          : img.payload_blocks + (img.payload_blocks - 1) / img.chunk_ratio;
    require(img.bat_entries * 8 <= img.bat.length, "BAT region too small");
    return img;
}

uint64_t bat_entry(BlockDevice& f, const SpecImage& img, uint64_t index) {
    return load_le<uint64_t>(read_at(f, img.bat.offset + 8 * index, 8).data());
}

// 2.5: payload block b's entry follows b / chunk_ratio sector bitmap entries.
uint64_t payload_entry(BlockDevice& f, const SpecImage& img, uint64_t block) {
    return bat_entry(f, img, block + block / img.chunk_ratio);
}

// `length` bytes of the virtual disk at `offset`, through the BAT.
std::vector<unsigned char> read_disk(BlockDevice& f, const SpecImage& img, uint64_t offset,
                                     size_t length) {
    std::vector<unsigned char> out(length, 0);
    size_t done = 0;
    while (done < length) {
        const uint64_t at = offset + done;
        const uint64_t block = at / img.block_size, within = at % img.block_size;
        const size_t n =
            static_cast<size_t>(std::min<uint64_t>(length - done, img.block_size - within));
        const uint64_t e = payload_entry(f, img, block);
        switch (e & 7) {
        case 6: { // PAYLOAD_BLOCK_FULLY_PRESENT
            const uint64_t file_offset = (e >> 20) * MiB;
            require((e & 0xffff8) == 0, "reserved BAT bits set");
            require(file_offset >= MiB && file_offset + img.block_size <= f.size(),
                    "payload block outside the file");
            f.read(out.data() + done, n, file_offset + within);
            break;
        }
        case 0: // NOT_PRESENT, ZERO, UNMAPPED: zeros in a non-differencing disk
        case 2:
        case 3:
            require(e == (e & 7), "FileOffsetMB of an absent block is reserved");
            break;
        default:
            throw std::runtime_error("BAT entry " + hex(e) + " of block " + std::to_string(block) +
                                     " is invalid in a dynamic disk");
        }
        done += n;
    }
    return out;
}

std::vector<unsigned char> read_whole_disk(BlockDevice& f) {
    const SpecImage img = open_spec(f);
    return read_disk(f, img, 0, static_cast<size_t>(img.disk_size));
}

// ------------------------------------------------ sources

std::shared_ptr<MemoryDevice> sample_disk() {
    // 10 MiB: a little data in MiB 3, nothing in MiB 4-8, all of MiB 9.
    auto d = std::make_shared<MemoryDevice>(10 * MiB);
    d->put_pattern(3 * MiB, 100);
    d->put_pattern(9 * MiB, MiB);
    return d;
}

std::vector<unsigned char> padded(BlockDevice& src, uint64_t size) {
    auto b = read_all(src);
    b.resize(size, 0);
    return b;
}

// Counts reads: a view must be laid out from size() and extents() alone.
class CountingDevice : public MemoryDevice {
public:
    using MemoryDevice::MemoryDevice;
    void read(void* buf, size_t length, uint64_t offset) override {
        ++reads;
        MemoryDevice::read(buf, length, offset);
    }
    std::atomic<int> reads{0};
};

// ------------------------------------------------ header section

TEST(VhdxHeaderSection, FileIdentifierHeadersAndRegionTablesSitWhereTheSpecSays) {
    auto f = read_at(*view("vhdx", sample_disk()), 0, 2 * MiB);
    // 2.2.1: signature, then the creator as UTF-16LE.
    EXPECT_EQ(text_at(f, 0, 8), "vhdxfile");
    EXPECT_EQ(text_at(f, 8, 10), std::string("p\0"
                                             "2\0v\0f\0s\0",
                                             10));
    EXPECT_TRUE(all_zero(f, 18, 64 * KiB));

    // 2.2.2: two valid headers, sequence numbers 1 and 2.
    for (uint64_t at : {64 * KiB, 128 * KiB}) {
        SCOPED_TRACE("header at " + std::to_string(at));
        std::vector<unsigned char> h(f.begin() + static_cast<long>(at),
                                     f.begin() + static_cast<long>(at + 4096));
        EXPECT_EQ(text_at(h, 0, 4), "head");
        EXPECT_EQ(le32_at(h, 4), spec_crc32c(h, 4));
        EXPECT_EQ(le64_at(h, 8), at == 64 * KiB ? 1u : 2u);
        EXPECT_FALSE(all_zero(h, 16, 32)) << "FileWriteGuid";
        EXPECT_FALSE(all_zero(h, 32, 48)) << "DataWriteGuid";
        EXPECT_TRUE(all_zero(h, 48, 64)) << "LogGuid: no log to replay";
        EXPECT_EQ(le16_at(h, 64), 0u);  // LogVersion
        EXPECT_EQ(le16_at(h, 66), 1u);  // Version
        EXPECT_EQ(le32_at(h, 68), MiB); // LogLength
        EXPECT_EQ(le64_at(h, 72), MiB); // LogOffset
        EXPECT_TRUE(all_zero(f, at + 80, at + 64 * KiB)) << "reserved";
    }
    // The two headers differ only in checksum and sequence number.
    EXPECT_TRUE(std::equal(f.begin() + 64 * KiB + 16, f.begin() + 64 * KiB + 4096,
                           f.begin() + 128 * KiB + 16));

    // 2.2.3: region table and its identical copy.
    std::vector<unsigned char> rt(f.begin() + 192 * KiB, f.begin() + 256 * KiB);
    EXPECT_TRUE(std::equal(rt.begin(), rt.end(), f.begin() + 256 * KiB));
    EXPECT_EQ(text_at(rt, 0, 4), "regi");
    EXPECT_EQ(le32_at(rt, 4), spec_crc32c(rt, 4));
    EXPECT_EQ(le32_at(rt, 8), 2u);
    EXPECT_EQ(guid_at(rt, 16), bat_guid);
    EXPECT_EQ(le64_at(rt, 32), 3 * MiB);
    EXPECT_EQ(le32_at(rt, 40), MiB);
    EXPECT_EQ(le32_at(rt, 44), 1u); // required
    EXPECT_EQ(guid_at(rt, 48), metadata_guid);
    EXPECT_EQ(le64_at(rt, 64), 2 * MiB);
    EXPECT_EQ(le32_at(rt, 72), MiB);
    EXPECT_EQ(le32_at(rt, 76), 1u);
    EXPECT_TRUE(all_zero(rt, 80, rt.size()));

    // The rest of the header section and the whole log read as zeros.
    EXPECT_TRUE(all_zero(f, 320 * KiB, 2 * MiB));
}

TEST(VhdxHeaderSection, IsTheSameForDynamicAndFixedExceptIdentifiers) {
    auto d = read_at(*view("vhdx", sample_disk()), 0, MiB);
    auto x = read_at(*view("vhdx-fixed", sample_disk()), 0, MiB);
    EXPECT_TRUE(std::equal(d.begin(), d.begin() + 64 * KiB, x.begin()));
    // FileWriteGuid differs (another file), DataWriteGuid is the content's.
    EXPECT_NE(guid_at(d, 64 * KiB + 16), guid_at(x, 64 * KiB + 16));
    EXPECT_EQ(guid_at(d, 64 * KiB + 32), guid_at(x, 64 * KiB + 32));
    EXPECT_TRUE(std::equal(d.begin() + 192 * KiB, d.end(), x.begin() + 192 * KiB));
}

// ------------------------------------------------ metadata region

TEST(VhdxMetadata, TableAndItemsHoldHyperVsDefaults) {
    auto src = sample_disk();
    auto v = view("vhdx", src);
    const SpecImage img = open_spec(*v);
    auto md = read_at(*v, 2 * MiB, 64 * KiB + 64);
    EXPECT_EQ(text_at(md, 0, 8), "metadata");
    EXPECT_EQ(le16_at(md, 8), 0u);
    EXPECT_EQ(le16_at(md, 10), 5u);
    EXPECT_TRUE(all_zero(md, 12, 32));
    // 2.6.2: IsUser 1, IsVirtualDisk 2, IsRequired 4.
    const std::pair<Guid, std::pair<uint32_t, uint32_t>> expected[] = {
        {file_parameters_guid, {4, 8}}, {disk_size_guid, {6, 8}},       {disk_id_guid, {6, 16}},
        {logical_sector_guid, {6, 4}},  {physical_sector_guid, {6, 4}},
    };
    for (const auto& [g, flags_length] : expected)
        EXPECT_EQ(img.item_flags_length.at(g), flags_length);
    EXPECT_EQ(img.block_size, 32 * MiB);
    EXPECT_EQ(img.file_flags, 0u); // dynamic: blocks may be absent
    EXPECT_EQ(img.disk_size, 10 * MiB);
    EXPECT_EQ(img.logical, 512u);
    EXPECT_EQ(img.physical, 4096u);
    EXPECT_NE(img.disk_id, Guid{});
    // The items follow the 64 KB table in the order of its entries.
    EXPECT_EQ(le32_at(md, 32 + 16), 64 * KiB);
    EXPECT_EQ(le32_at(md, 64 * KiB), 32 * MiB);
    EXPECT_EQ(le64_at(md, 64 * KiB + 8), 10 * MiB);
}

TEST(VhdxMetadata, FixedLeavesBlocksAllocatedAndOptionsAreWritten) {
    auto v = view(
        "vhdx-fixed", sample_disk(),
        {{"block-size", "1M"}, {"logical-sector-size", "4096"}, {"physical-sector-size", "4096"}});
    const SpecImage img = open_spec(*v);
    EXPECT_EQ(img.file_flags, 1u); // LeaveBlockAllocated
    EXPECT_EQ(img.block_size, MiB);
    EXPECT_EQ(img.logical, 4096u);
    EXPECT_EQ(img.physical, 4096u);
    EXPECT_EQ(img.chunk_ratio, 32768u);
}

// ------------------------------------------------ BAT

TEST(VhdxDynamicBat, StoresOnlyBlocksWithDataInDiskOrder) {
    auto v = view("vhdx", sample_disk(), {{"block-size", "1M"}});
    const SpecImage img = open_spec(*v);
    ASSERT_EQ(img.payload_blocks, 10u);
    ASSERT_EQ(img.bat_entries, 10u); // chunk ratio 4096: no sector bitmap entry yet
    // Data starts after the 1 MB BAT at 3 MB, blocks 3 and 9 in order.
    for (uint64_t b = 0; b < 10; ++b) {
        const uint64_t e = payload_entry(*v, img, b);
        if (b == 3)
            EXPECT_EQ(e, 4 * MiB | 6);
        else if (b == 9)
            EXPECT_EQ(e, 5 * MiB | 6);
        else
            EXPECT_EQ(e, 0u) << "block " << b << ": PAYLOAD_BLOCK_NOT_PRESENT";
    }
    EXPECT_EQ(v->size(), 6 * MiB);
    EXPECT_EQ(read_at(*v, 4 * MiB, 100), read_at(*sample_disk(), 3 * MiB, 100));
    EXPECT_EQ(read_at(*v, 5 * MiB, MiB), read_at(*sample_disk(), 9 * MiB, MiB));
}

TEST(VhdxDynamicBat, EmptyDiskHasNoPayloadBlocks) {
    auto v = view("vhdx", std::make_shared<MemoryDevice>(64 * MiB));
    const SpecImage img = open_spec(*v);
    EXPECT_EQ(v->size(), 4 * MiB);
    for (uint64_t i = 0; i < img.bat_entries; ++i)
        EXPECT_EQ(bat_entry(*v, img, i), 0u);
    // A source of no bytes still makes a valid file, with a 1 MiB BAT region.
    for (const char* format : {"vhdx", "vhdx-fixed"}) {
        auto none = view(format, std::make_shared<MemoryDevice>(0));
        EXPECT_EQ(open_spec(*none).disk_size, 0u) << format;
        EXPECT_EQ(none->size(), 4 * MiB) << format;
    }
}

TEST(VhdxBat, SectorBitmapEntriesFollowEachChunk) {
    // 256 MiB blocks, 512-byte sectors: chunk ratio 2^23 * 512 / 256 MiB = 16,
    // a chunk is 4 GiB. Block 16 (the first of the second chunk) holds data.
    auto src = std::make_shared<MemoryDevice>(5 * GiB);
    src->put_pattern(4 * GiB + 3 * MiB, 5000);
    src->put_pattern(7 * MiB, 100);
    for (const char* format : {"vhdx", "vhdx-fixed"}) {
        SCOPED_TRACE(format);
        auto v = view(format, src, {{"block-size", "256M"}});
        const SpecImage img = open_spec(*v);
        ASSERT_EQ(img.chunk_ratio, 16u);
        ASSERT_EQ(img.payload_blocks, 20u);
        ASSERT_EQ(img.bat_entries, 21u);
        EXPECT_EQ(bat_entry(*v, img, 16), 0u) << "SB_BLOCK_NOT_PRESENT";
        const bool fixed = std::string(format) == "vhdx-fixed";
        const uint64_t block16 = fixed ? 4 * MiB + 16 * 256 * MiB : 4 * MiB + 256 * MiB;
        EXPECT_EQ(bat_entry(*v, img, 17), block16 | 6);
        EXPECT_EQ(bat_entry(*v, img, 0), 4 * MiB | 6);
        EXPECT_EQ(read_disk(*v, img, 4 * GiB + 3 * MiB, 5000),
                  read_at(*src, 4 * GiB + 3 * MiB, 5000));
        EXPECT_EQ(read_disk(*v, img, 0, 8 * MiB), read_at(*src, 0, 8 * MiB));
        if (fixed) {
            for (uint64_t b = 0; b < 20; ++b)
                EXPECT_EQ(payload_entry(*v, img, b), (4 * MiB + b * 256 * MiB) | 6);
        }
    }
}

TEST(VhdxBat, ChunkRatioFollowsTheLogicalSectorSize) {
    // 4096-byte sectors: chunk ratio 2^23 * 4096 / 256 MiB = 128 (32 GiB).
    auto src = std::make_shared<MemoryDevice>(40 * GiB);
    src->put_pattern(33 * GiB, 4096);
    auto v = view("vhdx", src, {{"block-size", "256M"}, {"logical-sector-size", "4096"}});
    const SpecImage img = open_spec(*v);
    ASSERT_EQ(img.chunk_ratio, 128u);
    ASSERT_EQ(img.bat_entries, 160u + 1);
    EXPECT_EQ(bat_entry(*v, img, 128), 0u);
    EXPECT_EQ(bat_entry(*v, img, 132 + 1), 4 * MiB | 6); // block 132 = 33 GiB
    EXPECT_EQ(read_disk(*v, img, 33 * GiB, 4096), read_at(*src, 33 * GiB, 4096));
}

// ------------------------------------------------ read back

TEST(VhdxReadBack, DynamicAndFixedHoldTheSourceUnderEveryOption) {
    auto src = sample_disk();
    const Options variants[] = {
        {},
        {{"block-size", "1M"}},
        {{"block-size", "256M"}},
        {{"block-size", "2048K"}, {"physical-sector-size", "512"}},
        {{"logical-sector-size", "4096"}},
    };
    for (const char* format : {"vhdx", "vhdx-fixed"})
        for (const Options& o : variants) {
            SCOPED_TRACE(std::string(format) + " " + ViewOptions(o).canonical());
            auto v = view(format, src, o);
            EXPECT_EQ(read_whole_disk(*v), read_all(*src));
        }
}

TEST(VhdxReadBack, OddSizeRoundsUpToWholeLogicalSectors) {
    auto src = std::make_shared<MemoryDevice>(5 * MiB + 1234);
    src->put_pattern(5 * MiB, 1234);
    for (const char* format : {"vhdx", "vhdx-fixed"}) {
        SCOPED_TRACE(format);
        auto v512 = view(format, src);
        EXPECT_EQ(open_spec(*v512).disk_size, 5 * MiB + 1536);
        EXPECT_EQ(read_whole_disk(*v512), padded(*src, 5 * MiB + 1536));
        auto v4k = view(format, src, {{"logical-sector-size", "4096"}});
        EXPECT_EQ(open_spec(*v4k).disk_size, 5 * MiB + 4096);
        EXPECT_EQ(read_whole_disk(*v4k), padded(*src, 5 * MiB + 4096));
    }
}

TEST(VhdxReadBack, TinyDiskIsOneBlock) {
    auto src = std::make_shared<MemoryDevice>(4096);
    src->put_pattern(0, 4096);
    auto v = view("vhdx", src, {{"block-size", "1M"}});
    EXPECT_EQ(v->size(), 5 * MiB);
    EXPECT_EQ(read_whole_disk(*v), read_all(*src));
}

// ------------------------------------------------ allocation in the file

TEST(VhdxFixed, PayloadIsTheSourceInOrderWithItsHoles) {
    auto src = sample_disk();
    auto v = view("vhdx-fixed", src, {{"block-size", "1M"}});
    EXPECT_EQ(v->size(), 4 * MiB + 10 * MiB);
    EXPECT_EQ(read_at(*v, 4 * MiB, 10 * MiB), read_all(*src));
    const auto ext = v->extents(4 * MiB, 10 * MiB);
    const std::vector<Extent> want = {
        {4 * MiB, 3 * MiB, ExtentType::Hole},
        {7 * MiB, 100, ExtentType::Data},
        {7 * MiB + 100, 6 * MiB - 100, ExtentType::Hole},
        {13 * MiB, MiB, ExtentType::Data},
    };
    EXPECT_EQ(ext, want);
    // The log and the reserved space of the header section are holes too.
    EXPECT_EQ(v->extents(MiB, MiB), (std::vector<Extent>{{MiB, MiB, ExtentType::Hole}}));
}

TEST(VhdxDynamic, StoredBlocksKeepTheSourcesHoles) {
    auto v = view("vhdx", sample_disk(), {{"block-size", "1M"}});
    const std::vector<Extent> want = {
        {4 * MiB, 100, ExtentType::Data},
        {4 * MiB + 100, MiB - 100, ExtentType::Hole},
        {5 * MiB, MiB, ExtentType::Data},
    };
    EXPECT_EQ(v->extents(4 * MiB, 2 * MiB), want);
}

// ------------------------------------------------ limits and options

TEST(VhdxLimits, Accepts64TiBAndRefusesMore) {
    for (const char* format : {"vhdx", "vhdx-fixed"}) {
        SCOPED_TRACE(format);
        auto v = view(format, std::make_shared<MemoryDevice>(64 * TiB), {{"block-size", "1M"}});
        const SpecImage img = open_spec(*v);
        EXPECT_EQ(img.disk_size, 64 * TiB);
        // 2^26 payload entries and 2^26 / 4096 - 1 sector bitmap entries.
        EXPECT_EQ(img.bat_entries, (uint64_t{1} << 26) + 16383);
        EXPECT_EQ(img.bat.length, 513 * MiB);
        try {
            view(format, std::make_shared<MemoryDevice>(64 * TiB + 512));
            ADD_FAILURE() << "a disk over 64 TiB was accepted";
        } catch (const FormatLimitError& e) {
            EXPECT_EQ(std::string(e.what()),
                      "VHDX: disk of 64.0 TiB (70368744178176 bytes) exceeds the format's 64 TiB "
                      "limit");
        }
    }
}

TEST(VhdxLimits, RoundingUpToAWholeSectorStaysWithinTheLimit) {
    auto v = view("vhdx", std::make_shared<MemoryDevice>(64 * TiB - 100),
                  {{"logical-sector-size", "4096"}});
    EXPECT_EQ(open_spec(*v).disk_size, 64 * TiB);
}

std::string refusal(const char* format, Options o) {
    try {
        view(format, sample_disk(), std::move(o));
    } catch (const InvalidArgument& e) {
        return e.what();
    }
    return "(accepted)";
}

TEST(VhdxOptions, BadValuesAreRefusedByName) {
    for (const char* bad : {"3M", "512K", "512M", "1G", "0", "", "abc", "32 M", "-1M", "32MiB",
                            "99999999999999999999M"})
        EXPECT_EQ(refusal("vhdx", {{"block-size", bad}}),
                  "option block-size=" + std::string(bad) +
                      ": must be a power of two from 1M to 256M");
    EXPECT_EQ(refusal("vhdx-fixed", {{"logical-sector-size", "1024"}}),
              "option logical-sector-size=1024: must be one of 512, 4096");
    EXPECT_EQ(refusal("vhdx", {{"physical-sector-size", "2048"}}),
              "option physical-sector-size=2048: must be one of 512, 4096");
    EXPECT_EQ(refusal("vhdx", {{"logical-sector-size", "4096"}, {"physical-sector-size", "512"}}),
              "VHDX: physical-sector-size=512 is smaller than logical-sector-size=4096");
    EXPECT_EQ(refusal("vhdx", {{"colour", "blue"}}),
              "vhdx: unknown option 'colour' (known: block-size, logical-sector-size, "
              "physical-sector-size)");
}

TEST(VhdxOptions, BlockSizeTakesBytesOrBinarySuffixes) {
    for (const auto& [text, bytes] : std::vector<std::pair<std::string, uint64_t>>{
             {"1M", MiB}, {"1048576", MiB}, {"1024K", MiB}, {"256M", 256 * MiB}, {"64M", 64 * MiB}})
        EXPECT_EQ(open_spec(*view("vhdx", sample_disk(), {{"block-size", text}})).block_size, bytes)
            << text;
}

// ------------------------------------------------ cost and identity

TEST(VhdxOpen, TerabyteDiskOpensWithoutReadingData) {
    auto src = std::make_shared<CountingDevice>(TiB);
    src->put_pattern(TiB - MiB, MiB);
    for (const char* format : {"vhdx", "vhdx-fixed"}) {
        SCOPED_TRACE(format);
        src->reads = 0;
        auto v = view(format, src);
        EXPECT_EQ(src->reads, 0) << "opening read the source";
        const SpecImage img = open_spec(*v);
        EXPECT_EQ(src->reads, 0) << "metadata reads reached the source";
        EXPECT_EQ(img.disk_size, TiB);
        EXPECT_EQ(img.bat_entries, 32768u + 255);
        EXPECT_EQ(read_disk(*v, img, TiB - MiB, MiB), read_at(*src, TiB - MiB, MiB));
        EXPECT_EQ(read_disk(*v, img, 0, 4096), std::vector<unsigned char>(4096, 0));
    }
    // Dynamic: the header section, log, metadata, a 1 MiB BAT, one block.
    EXPECT_EQ(view("vhdx", src)->size(), 4 * MiB + 32 * MiB);
}

TEST(VhdxIdentity, SameSourceSameBytesOtherSourceOtherIds) {
    auto a = read_at(*view("vhdx", sample_disk()), 0, 3 * MiB);
    auto b = read_at(*view("vhdx", sample_disk()), 0, 3 * MiB);
    EXPECT_EQ(a, b);
    auto other = std::make_shared<MemoryDevice>(10 * MiB + 512);
    auto c = read_at(*view("vhdx", other), 0, 3 * MiB);
    EXPECT_NE(guid_at(a, 64 * KiB + 16), guid_at(c, 64 * KiB + 16)); // FileWriteGuid
    EXPECT_NE(guid_at(a, 64 * KiB + 32), guid_at(c, 64 * KiB + 32)); // DataWriteGuid
    auto fixed = view("vhdx-fixed", sample_disk());
    EXPECT_NE(open_spec(*view("vhdx", sample_disk())).disk_id, open_spec(*fixed).disk_id);
    EXPECT_NE(open_spec(*view("vhdx", other)).disk_id,
              open_spec(*view("vhdx", sample_disk())).disk_id);
}

} // namespace
} // namespace p2vfs
