// Partition tables written by sfdisk (util-linux), and hand-made hostile
// ones. Tests needing a tool skip with the reason when it is missing.
#include "block/local_source.h"
#include "common/endian.h"
#include "guest/partitions.h"
#include "memory_device.h"

#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <gtest/gtest.h>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>
#include <zlib.h>

namespace p2vfs::guest {
namespace {

using test::MemoryDevice;
constexpr uint64_t MiB = 1 << 20;

// Forwards reads to `disk` and fails the test on any read past its end:
// the parsers promise never to make one.
class EndGuard : public BlockDevice {
public:
    explicit EndGuard(BlockDevice& disk) : disk_(disk) {}
    std::string name() const override { return disk_.name(); }
    std::string identity() const override { return disk_.identity(); }
    uint64_t size() const override { return disk_.size(); }
    void read(void* buf, size_t length, uint64_t offset) override {
        if (offset > size() || length > size() - offset) {
            ADD_FAILURE() << "read of " << length << " bytes at " << hex(offset)
                          << " passes the end of the disk (" << hex(size()) << ")";
            throw Error("read past the end");
        }
        disk_.read(buf, length, offset);
    }
    std::vector<Extent> extents(uint64_t offset, uint64_t length) override {
        return disk_.extents(offset, length);
    }

private:
    BlockDevice& disk_;
};

PartitionTable table_of(BlockDevice& disk, uint32_t sector_size = 512) {
    EndGuard guard(disk);
    return read_partition_table(guard, sector_size);
}

// One line per partition, so a mismatch shows every field at once.
std::string describe(const Partition& p) {
    std::ostringstream s;
    s << p.number << " " << hex(p.offset) << "+" << hex(p.length) << " " << p.type << " '"
      << p.type_name << "'";
    if (!p.guid.empty())
        s << " guid=" << p.guid;
    if (!p.label.empty())
        s << " label='" << p.label << "'";
    if (p.bootable)
        s << " bootable";
    if (p.logical)
        s << " logical";
    if (p.extended)
        s << " extended";
    return s.str();
}

std::vector<std::string> describe(const PartitionTable& t) {
    std::vector<std::string> out;
    for (const auto& p : t.partitions)
        out.push_back(describe(p));
    return out;
}

bool have(const std::string& tool) {
    return std::system(("command -v " + tool + " >/dev/null 2>&1").c_str()) == 0;
}

#define REQUIRE_TOOL(tool)                                                                         \
    do {                                                                                           \
        if (!have(tool))                                                                           \
            GTEST_SKIP() << tool << " is not installed; this test needs it to build its image";    \
    } while (0)

class PartitionTableTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/p2vfs-partitions-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override {
        if (!loop_.empty())
            std::system(("losetup -d " + loop_).c_str());
        std::system(("rm -rf " + dir_).c_str());
    }

    std::string path(const std::string& name) const { return dir_ + "/" + name; }

    // Runs a shell command; a failure names it and shows its output.
    bool run(const std::string& command) {
        const std::string log = path("command.log");
        const int rc = std::system((command + " >" + log + " 2>&1").c_str());
        if (rc == 0)
            return true;
        std::ifstream in(log);
        std::stringstream out;
        out << in.rdbuf();
        ADD_FAILURE() << "`" << command << "` failed (status " << rc << "):\n" << out.str();
        return false;
    }

    // A sparse image of `size` bytes partitioned by an sfdisk script.
    std::string sfdisk_image(const std::string& name, uint64_t size, const std::string& script) {
        const std::string image = path(name);
        std::ofstream(path(name + ".sfdisk")) << script;
        run("truncate -s " + std::to_string(size) + " " + image + " && sfdisk -q " + image + " < " +
            path(name + ".sfdisk"));
        return image;
    }

    static void patch(const std::string& file, uint64_t offset, const std::string& bytes) {
        const int fd = ::open(file.c_str(), O_WRONLY);
        ASSERT_GE(fd, 0) << file;
        ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)),
                  static_cast<ssize_t>(bytes.size()));
        ::close(fd);
    }

    static void resize(const std::string& file, uint64_t size) {
        ASSERT_EQ(::truncate(file.c_str(), static_cast<off_t>(size)), 0) << file;
    }

    // Makes the CRC32 of the GPT header at `lba` right again after a patch.
    static void refresh_gpt_header_crc(const std::string& file, uint64_t lba) {
        std::string header(92, '\0');
        {
            LocalSource disk(file);
            disk.read(header.data(), header.size(), lba * 512);
        }
        std::memset(header.data() + 16, 0, 4);
        std::string crc(4, '\0');
        store_le<uint32_t>(crc.data(), static_cast<uint32_t>(::crc32(
                                           0L, reinterpret_cast<const Bytef*>(header.data()), 92)));
        patch(file, lba * 512 + 16, crc);
    }

    static PartitionTable table_of_file(const std::string& file, uint32_t sector_size = 512) {
        LocalSource disk(file);
        return table_of(disk, sector_size);
    }

    std::string dir_;
    std::string loop_;
};

const std::string gpt_script = R"(label: gpt
label-id: 01234567-89AB-CDEF-0123-456789ABCDEF
unit: sectors
first-lba: 2048
start=2048, size=2048, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=11111111-2222-3333-4444-555555555555, name="EFI system partition"
start=4096, size=8192, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=22222222-2222-3333-4444-555555555555, name="root", attrs="LegacyBIOSBootable"
start=12288, size=4096, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, uuid=33333333-2222-3333-4444-555555555555, name="swap"
start=16384, size=20480, type=E6D6D379-F507-44C2-A23C-238F2A3DF928, uuid=44444444-2222-3333-4444-555555555555, name="lvm ü"
)";

const std::vector<std::string> gpt_partitions = {
    "1 0x100000+0x100000 c12a7328-f81f-11d2-ba4b-00a0c93ec93b 'EFI System' "
    "guid=11111111-2222-3333-4444-555555555555 label='EFI system partition'",
    "2 0x200000+0x400000 0fc63daf-8483-4772-8e79-3d69d8477de4 'Linux filesystem' "
    "guid=22222222-2222-3333-4444-555555555555 label='root' bootable",
    "3 0x600000+0x200000 0657fd6d-a4ab-43c4-84e5-0933c84b4f4f 'Linux swap' "
    "guid=33333333-2222-3333-4444-555555555555 label='swap'",
    "4 0x800000+0xa00000 e6d6d379-f507-44c2-a23c-238f2a3df928 'Linux LVM' "
    "guid=44444444-2222-3333-4444-555555555555 label='lvm ü'",
};

constexpr uint64_t gpt_disk = 20 * MiB;
constexpr uint64_t gpt_last_lba = gpt_disk / 512 - 1; // 40959

TEST_F(PartitionTableTest, MbrPrimariesExtendedAndLogicalPartitionsNumberedAsLinuxDoes) {
    REQUIRE_TOOL("sfdisk");
    const auto image = sfdisk_image("mbr.img", 20 * MiB, R"(label: dos
label-id: 0x1234abcd
unit: sectors
2048,4096,83,*
6144,4096,82
10240,30720,5
12288,4096,83
18432,4096,8e
24576,16384,fd
)");
    const auto t = table_of_file(image);
    EXPECT_EQ(t.scheme, "mbr");
    EXPECT_EQ(t.disk_id, "0x1234abcd");
    EXPECT_EQ(t.sector_size, 512u);
    EXPECT_EQ(describe(t), (std::vector<std::string>{
                               "1 0x100000+0x200000 0x83 'Linux' bootable",
                               "2 0x300000+0x200000 0x82 'Linux swap'",
                               "3 0x500000+0xf00000 0x05 'extended' extended",
                               "5 0x600000+0x200000 0x83 'Linux' logical",
                               "6 0x900000+0x200000 0x8e 'Linux LVM' logical",
                               "7 0xc00000+0x800000 0xfd 'Linux RAID' logical",
                           }));
    EXPECT_EQ(t.problems, std::vector<std::string>{});
}

TEST_F(PartitionTableTest, GptPartitionsWithTypesNamesAndGuids) {
    REQUIRE_TOOL("sfdisk");
    const auto t = table_of_file(sfdisk_image("gpt.img", gpt_disk, gpt_script));
    EXPECT_EQ(t.scheme, "gpt");
    EXPECT_EQ(t.disk_id, "01234567-89ab-cdef-0123-456789abcdef");
    EXPECT_EQ(t.gpt_header_used, "primary");
    EXPECT_EQ(t.gpt_backup_lba, gpt_last_lba);
    EXPECT_EQ(describe(t), gpt_partitions);
    EXPECT_EQ(t.problems, std::vector<std::string>{});
}

TEST_F(PartitionTableTest, GptWithCorruptPrimaryHeaderIsReadFromTheBackup) {
    REQUIRE_TOOL("sfdisk");
    const auto image = sfdisk_image("gpt.img", gpt_disk, gpt_script);
    patch(image, 512 + 56, "XXXX"); // inside the disk GUID: the header CRC no longer matches
    const auto t = table_of_file(image);
    EXPECT_EQ(t.scheme, "gpt");
    EXPECT_EQ(t.gpt_header_used, "backup");
    EXPECT_EQ(t.gpt_backup_lba, gpt_last_lba);
    EXPECT_EQ(t.disk_id, "01234567-89ab-cdef-0123-456789abcdef");
    EXPECT_EQ(describe(t), gpt_partitions);
    ASSERT_EQ(t.problems.size(), 1u);
    EXPECT_EQ(t.problems[0].rfind("GPT primary header at LBA 1 is corrupt (header CRC32 0x", 0), 0u)
        << t.problems[0];
    EXPECT_NE(t.problems[0].find(" does not match its contents (0x"), std::string::npos)
        << t.problems[0];
    EXPECT_NE(t.problems[0].find("); using the backup at LBA 40959"), std::string::npos)
        << t.problems[0];
}

TEST_F(PartitionTableTest, GptWithCorruptPrimaryEntryArrayIsReadFromTheBackup) {
    REQUIRE_TOOL("sfdisk");
    const auto image = sfdisk_image("gpt.img", gpt_disk, gpt_script);
    patch(image, 2 * 512 + 56, "Z"); // first entry's name
    const auto t = table_of_file(image);
    EXPECT_EQ(t.gpt_header_used, "backup");
    EXPECT_EQ(describe(t), gpt_partitions);
    ASSERT_EQ(t.problems.size(), 1u);
    EXPECT_EQ(t.problems[0].rfind("GPT primary header at LBA 1 is corrupt (partition entry array "
                                  "CRC32 0x",
                                  0),
              0u)
        << t.problems[0];
}

TEST_F(PartitionTableTest, GptHeadersThatDisagreeAreNamed) {
    REQUIRE_TOOL("sfdisk");
    const auto image = sfdisk_image("gpt.img", gpt_disk, gpt_script);
    patch(image, gpt_last_lba * 512 + 56, std::string(4, '\xff')); // the backup's disk GUID
    refresh_gpt_header_crc(image, gpt_last_lba);
    const auto t = table_of_file(image);
    EXPECT_EQ(t.gpt_header_used, "primary");
    EXPECT_EQ(t.disk_id, "01234567-89ab-cdef-0123-456789abcdef");
    EXPECT_EQ(describe(t), gpt_partitions);
    EXPECT_EQ(t.problems, (std::vector<std::string>{
                              "GPT primary and backup headers disagree on the disk GUID: "
                              "01234567-89ab-cdef-0123-456789abcdef vs "
                              "ffffffff-89ab-cdef-0123-456789abcdef (primary at LBA 1, backup at "
                              "LBA 40959)"}));
}

TEST_F(PartitionTableTest, GptWithBothHeadersBrokenIsAnErrorNamingBoth) {
    REQUIRE_TOOL("sfdisk");
    const auto image = sfdisk_image("gpt.img", gpt_disk, gpt_script);
    patch(image, 512 + 56, "XXXX");
    patch(image, gpt_last_lba * 512, "NOT PART");
    try {
        table_of_file(image);
        FAIL() << "a GPT without a usable header was read";
    } catch (const InspectError& e) {
        const std::string what = e.what();
        EXPECT_EQ(what.rfind("GPT: the primary header at LBA 1 is unusable (header CRC32 0x", 0),
                  0u)
            << what;
        EXPECT_NE(what.find(") and the backup at LBA 40959 is unusable too (no \"EFI PART\" "
                            "signature at 0x13ffe00)"),
                  std::string::npos)
            << what;
    }
}

TEST_F(PartitionTableTest, GptCutToThreeSectorsIsAnErrorNamingWhatIsMissing) {
    REQUIRE_TOOL("sfdisk");
    const auto image = sfdisk_image("gpt.img", gpt_disk, gpt_script);
    resize(image, 3 * 512);
    try {
        table_of_file(image);
        FAIL() << "a GPT cut short was read";
    } catch (const InspectError& e) {
        EXPECT_EQ(std::string(e.what()),
                  "GPT: the primary header at LBA 1 is unusable (partition entry array at LBA 2 "
                  "(16384 bytes at 0x400) is not within the disk (0x600 bytes, 3 sectors of "
                  "512)) and the backup at LBA 2 is unusable too (no \"EFI PART\" signature at "
                  "0x400)");
    }
}

TEST_F(PartitionTableTest, GptOnADiskThatGrewNamesTheMisplacedBackup) {
    REQUIRE_TOOL("sfdisk");
    const auto image = sfdisk_image("gpt.img", gpt_disk, gpt_script);
    resize(image, 30 * MiB);
    const auto t = table_of_file(image);
    EXPECT_EQ(t.gpt_header_used, "primary");
    EXPECT_EQ(t.gpt_backup_lba, gpt_last_lba);
    EXPECT_EQ(describe(t), gpt_partitions);
    EXPECT_EQ(t.problems, (std::vector<std::string>{
                              "GPT backup header is at LBA 40959, not at the end of the disk (LBA "
                              "61439): the disk grew since the table was written"}));
}

TEST_F(PartitionTableTest, GptOnADiskThatShrankKeepsThePartitionsCutToTheDisk) {
    REQUIRE_TOOL("sfdisk");
    const auto image = sfdisk_image("gpt.img", gpt_disk, gpt_script);
    resize(image, 15 * MiB);
    const auto t = table_of_file(image);
    EXPECT_EQ(t.gpt_header_used, "primary");
    auto expected = gpt_partitions;
    expected[3] = "4 0x800000+0x700000 e6d6d379-f507-44c2-a23c-238f2a3df928 'Linux LVM' "
                  "guid=44444444-2222-3333-4444-555555555555 label='lvm ü'";
    EXPECT_EQ(describe(t), expected);
    EXPECT_EQ(t.problems,
              (std::vector<std::string>{
                  "GPT backup header at LBA 40959 is missing or corrupt (LBA 40959 lies past the "
                  "end of the disk (0xf00000 bytes, 30720 sectors of 512)): the disk is smaller "
                  "than when the table was written; the primary is used",
                  "partition 4 at LBA 16384-36863 (0x800000-0x11fffff) extends past the end of "
                  "the disk (0xf00000 bytes, 30720 sectors of 512); kept with its length cut to "
                  "0x700000"}));
}

TEST_F(PartitionTableTest, GptWith4096ByteSectors) {
    REQUIRE_TOOL("sfdisk");
    REQUIRE_TOOL("losetup");
    const auto image = path("gpt4k.img");
    ASSERT_TRUE(run("truncate -s 20M " + image));
    // sfdisk takes the sector size from the device, so the table is written
    // through a loop device with 4096-byte sectors over the image file.
    const std::string out = path("loop.name");
    if (std::system(("losetup -f --show -b 4096 " + image + " >" + out + " 2>&1").c_str()) != 0) {
        std::ifstream in(out);
        std::stringstream why;
        why << in.rdbuf();
        GTEST_SKIP() << "cannot attach a loop device with 4096-byte sectors: " << why.str();
    }
    std::ifstream(out) >> loop_;
    std::ofstream(path("script")) << "label: gpt\nlabel-id: 01234567-89AB-CDEF-0123-456789ABCDEF\n"
                                     "unit: sectors\nstart=256, size=1024, "
                                     "type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, "
                                     "uuid=11111111-2222-3333-4444-555555555555\n";
    // sfdisk cannot make the kernel re-read a loop device's table; the table is written anyway.
    std::system(
        ("sfdisk -q --no-reread " + loop_ + " < " + path("script") + " >/dev/null 2>&1").c_str());
    ASSERT_TRUE(run("sync && losetup -d " + loop_));
    loop_.clear();

    const auto t = table_of_file(image, 4096);
    EXPECT_EQ(t.scheme, "gpt");
    EXPECT_EQ(t.sector_size, 4096u);
    EXPECT_EQ(t.gpt_backup_lba, 20 * MiB / 4096 - 1);
    EXPECT_EQ(describe(t), (std::vector<std::string>{
                               "1 0x100000+0x400000 c12a7328-f81f-11d2-ba4b-00a0c93ec93b 'EFI "
                               "System' guid=11111111-2222-3333-4444-555555555555"}));
    EXPECT_EQ(t.problems, std::vector<std::string>{});
    // Read with the wrong sector size, the error says what is likely wrong.
    try {
        table_of_file(image, 512);
        FAIL() << "a 4096-byte-sector GPT was read with 512-byte sectors";
    } catch (const InspectError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("(a GPT header lies at 0x1000: the disk may have 4096-byte sectors)"),
                  std::string::npos)
            << what;
    }
}

TEST_F(PartitionTableTest, PartitionsPastTheEndOfTheDiskAreKeptCutAndNamed) {
    REQUIRE_TOOL("sfdisk");
    const auto image = sfdisk_image("mbr.img", 20 * MiB, R"(label: dos
label-id: 0x0badcafe
unit: sectors
2048,4096,83
6144,16384,83
24576,8192,83
)");
    resize(image, 10 * MiB);
    const auto t = table_of_file(image);
    EXPECT_EQ(t.scheme, "mbr");
    EXPECT_EQ(describe(t), (std::vector<std::string>{
                               "1 0x100000+0x200000 0x83 'Linux'",
                               "2 0x300000+0x700000 0x83 'Linux'",
                               "3 0xc00000+0x0 0x83 'Linux'",
                           }));
    EXPECT_EQ(t.problems,
              (std::vector<std::string>{
                  "partition 2 at LBA 6144-22527 (0x300000-0xafffff) extends past the end of the "
                  "disk (0xa00000 bytes, 20480 sectors of 512); kept with its length cut to "
                  "0x700000",
                  "partition 3 at LBA 24576-32767 (0xc00000-0xffffff) extends past the end of the "
                  "disk (0xa00000 bytes, 20480 sectors of 512); kept with its length cut to 0x0",
              }));
}

TEST_F(PartitionTableTest, FatWrittenOverTheWholeDiskIsNoPartitionTable) {
    REQUIRE_TOOL("mkfs.vfat");
    const auto image = path("floppy.img");
    ASSERT_TRUE(run("mkfs.vfat -C -i 1234ABCD " + image + " 2048"));
    const auto t = table_of_file(image);
    EXPECT_EQ(t.scheme, "none");
    EXPECT_EQ(describe(t), std::vector<std::string>{});
}

// --- Hand-made tables ----------------------------------------------------

std::vector<unsigned char>
mbr_sector(std::initializer_list<std::tuple<uint8_t, uint32_t, uint32_t>> entries) {
    std::vector<unsigned char> s(512);
    unsigned slot = 0;
    for (const auto& [type, start, count] : entries) {
        unsigned char* e = &s[0x1be + 16 * slot++];
        e[4] = type;
        store_le<uint32_t>(e + 8, start);
        store_le<uint32_t>(e + 12, count);
    }
    s[510] = 0x55;
    s[511] = 0xaa;
    return s;
}

TEST(PartitionTableCrafted, LoopInTheChainOfExtendedBootRecordsEndsTheChain) {
    MemoryDevice disk(8 * MiB);
    disk.put(0, mbr_sector({{0x05, 2048, 8192}}));
    // EBR at 2048: a logical partition 2048 sectors further, next EBR at 2048 + 4096.
    disk.put(2048 * 512, mbr_sector({{0x83, 2048, 1024}, {0x05, 4096, 2048}}));
    // EBR at 6144: its logical partition, then a link back to the first EBR.
    disk.put(6144 * 512, mbr_sector({{0x83, 2048, 1024}, {0x05, 0, 2048}}));
    const auto t = table_of(disk);
    EXPECT_EQ(describe(t), (std::vector<std::string>{
                               "1 0x100000+0x400000 0x05 'extended' extended",
                               "5 0x200000+0x80000 0x83 'Linux' logical",
                               "6 0x400000+0x80000 0x83 'Linux' logical",
                           }));
    EXPECT_EQ(t.problems, (std::vector<std::string>{
                              "loop in the chain of extended boot records of extended partition "
                              "1: the record at LBA 6144 links back to LBA 2048; the chain ends "
                              "there"}));
}

TEST(PartitionTableCrafted, ExtendedBootRecordLinkingToItselfIsALoop) {
    MemoryDevice disk(8 * MiB);
    disk.put(0, mbr_sector({{0x0f, 2048, 8192}}));
    disk.put(2048 * 512, mbr_sector({{0x83, 1, 100}, {0x05, 0, 2048}}));
    const auto t = table_of(disk);
    EXPECT_EQ(describe(t), (std::vector<std::string>{
                               "1 0x100000+0x400000 0x0f 'extended (LBA)' extended",
                               "5 0x100200+0xc800 0x83 'Linux' logical",
                           }));
    EXPECT_EQ(t.problems, (std::vector<std::string>{
                              "loop in the chain of extended boot records of extended partition "
                              "1: the record at LBA 2048 links back to LBA 2048; the chain ends "
                              "there"}));
}

TEST(PartitionTableCrafted, LongChainOfExtendedBootRecordsIsCut) {
    MemoryDevice disk(4 * MiB);
    disk.put(0, mbr_sector({{0x05, 2048, 4096}}));
    for (uint32_t k = 0; k < 300; ++k)
        disk.put((2048 + 4 * k) * 512, mbr_sector({{0x83, 1, 1}, {0x05, 4 * (k + 1), 4}}));
    const auto t = table_of(disk);
    ASSERT_EQ(t.partitions.size(), 1u + 128u);
    EXPECT_EQ(describe(t.partitions.back()), "132 0x13fa00+0x200 0x83 'Linux' logical");
    EXPECT_EQ(t.problems, (std::vector<std::string>{
                              "the chain of extended boot records in extended partition 1 is "
                              "longer than 128 records; the rest (from LBA 2560) are ignored"}));
}

TEST(PartitionTableCrafted, ExtendedPartitionPastTheEndOfTheDisk) {
    MemoryDevice disk(1 * MiB);
    disk.put(0, mbr_sector({{0x83, 1, 100}, {0x05, 4096, 2048}}));
    const auto t = table_of(disk);
    EXPECT_EQ(describe(t), (std::vector<std::string>{
                               "1 0x200+0xc800 0x83 'Linux'",
                               "2 0x200000+0x0 0x05 'extended' extended",
                           }));
    EXPECT_EQ(t.problems,
              (std::vector<std::string>{
                  "partition 2 at LBA 4096-6143 (0x200000-0x2fffff) extends past the end of the "
                  "disk (0x100000 bytes, 2048 sectors of 512); kept with its length cut to 0x0",
                  "extended boot record at LBA 4096 (0x200000) in extended partition 2 lies past "
                  "the end of the disk (0x100000 bytes, 2048 sectors of 512)"}));
}

TEST(PartitionTableCrafted, MbrWith4096ByteSectors) {
    MemoryDevice disk(16 * MiB);
    auto s0 = mbr_sector({{0x07, 256, 1024}});
    s0.resize(4096);
    disk.put(0, s0);
    const auto t = table_of(disk, 4096);
    EXPECT_EQ(t.scheme, "mbr");
    EXPECT_EQ(describe(t), (std::vector<std::string>{"1 0x100000+0x400000 0x07 'NTFS/exFAT'"}));
}

TEST(PartitionTableCrafted, OverlappingPartitionsAreNamed) {
    MemoryDevice disk(8 * MiB);
    disk.put(0, mbr_sector({{0x83, 2048, 4096}, {0x83, 4096, 4096}}));
    const auto t = table_of(disk);
    EXPECT_EQ(t.partitions.size(), 2u);
    EXPECT_EQ(t.problems,
              (std::vector<std::string>{"partitions 1 and 2 overlap from 0x200000 (LBA 4096)"}));
}

TEST(PartitionTableCrafted, NoSignatureMeansNoPartitionTable) {
    MemoryDevice disk(1 * MiB);
    disk.put(0x1be, {0x80, 0, 0, 0, 0x83, 0, 0, 0, 1, 0, 0, 0, 100, 0, 0, 0});
    const auto t = table_of(disk);
    EXPECT_EQ(t.scheme, "none");
    EXPECT_EQ(t.partitions.size(), 0u);
    EXPECT_EQ(t.problems, std::vector<std::string>{});
}

TEST(PartitionTableCrafted, DiskSmallerThanASectorHoldsNoTable) {
    MemoryDevice disk(300);
    const auto t = table_of(disk);
    EXPECT_EQ(t.scheme, "none");
    EXPECT_EQ(t.problems, (std::vector<std::string>{"the disk (0x12c bytes) is smaller than one "
                                                    "sector of 512 bytes; it holds no partition "
                                                    "table"}));
}

TEST(PartitionTableCrafted, ProtectiveMbrOnADiskOfOneSectorIsAnError) {
    MemoryDevice disk(512);
    disk.put(0, mbr_sector({{0xee, 1, 0xffffffff}}));
    EXPECT_THROW(table_of(disk), InspectError);
}

TEST(PartitionTableCrafted, SectorSizesOtherThanPowersOfTwoAreRefused) {
    MemoryDevice disk(1 * MiB);
    EXPECT_THROW(table_of(disk, 520), InvalidArgument);
    EXPECT_THROW(table_of(disk, 8192), InvalidArgument);
}

TEST(PartitionTableCrafted, GuidTextIsMixedEndian) {
    // The EFI System type GUID as it lies on disk.
    const unsigned char bytes[16] = {0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11,
                                     0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b};
    EXPECT_EQ(guid_text(bytes), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
}

} // namespace
} // namespace p2vfs::guest
