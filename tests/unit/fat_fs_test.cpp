// FAT volumes made by mkfs.vfat and filled by mtools (neither of them our
// code), read back through FatVolume, then patched into hostile shapes.
// Tests skip with the reason when a tool is missing.
#include "block/local_source.h"
#include "common/endian.h"
#include "common/error.h"
#include "guest/fat_fs.h"

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <gtest/gtest.h>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <unistd.h>

namespace p2vfs::guest {
namespace {

namespace fs = std::filesystem;
constexpr uint64_t MiB = 1 << 20;
const std::string bcd_path = "EFI/Microsoft/Boot/BCD";
const std::string bcd_shown = "\\EFI\\Microsoft\\Boot\\BCD";

bool have(const char* tool) {
    return std::system((std::string("command -v ") + tool + " >/dev/null 2>&1").c_str()) == 0;
}

std::string read_whole(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// Forwards reads to the disk and fails the test on any read outside the
// volume: the reader must not look past its range, whatever the volume says.
class RangeGuard : public BlockDevice {
public:
    RangeGuard(DevicePtr disk, uint64_t offset, uint64_t length)
        : disk_(std::move(disk)), begin_(offset), end_(offset + length) {}
    std::string name() const override { return disk_->name(); }
    std::string identity() const override { return disk_->identity(); }
    uint64_t size() const override { return disk_->size(); }
    void read(void* buf, size_t length, uint64_t offset) override {
        if (offset < begin_ || offset + length > end_) {
            ADD_FAILURE() << "read of " << length << " bytes at " << hex(offset)
                          << " leaves the volume " << hex(begin_) << "-" << hex(end_);
            throw Error("read outside the volume");
        }
        disk_->read(buf, length, offset);
    }
    std::vector<Extent> extents(uint64_t offset, uint64_t length) override {
        return disk_->extents(offset, length);
    }

private:
    DevicePtr disk_;
    uint64_t begin_;
    uint64_t end_;
};

// The message of the Error `f` throws, with its errno after a '|'.
std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return std::string(e.what()) + "|" + std::to_string(e.error_number());
    }
    return "(no error)";
}

class FatFs : public ::testing::Test {
protected:
    void SetUp() override {
        for (const char* tool : {"mkfs.vfat", "mmd", "mcopy"})
            if (!have(tool))
                GTEST_SKIP() << "needs " << tool << " (packages dosfstools, mtools) to build its "
                             << "FAT volumes";
        ::setenv("MTOOLS_SKIP_CHECK", "1", 1);
        char tmpl[] = "/tmp/p2vfs-fat-test-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override {
        if (!dir_.empty())
            fs::remove_all(dir_);
    }

    void run(const std::string& cmd) {
        const int rc =
            std::system(("{ " + cmd + "; } >" + (dir_ / "log").string() + " 2>&1").c_str());
        ASSERT_EQ(rc, 0) << cmd << "\n" << read_whole(dir_ / "log");
    }

    // A sparse image of `size` bytes formatted by `mkfs.vfat <args>`.
    fs::path volume(uint64_t size, const std::string& args) {
        const fs::path img = dir_ / "fat.img";
        run("truncate -s " + std::to_string(size) + " " + img.string() + " && mkfs.vfat " + args +
            " " + img.string());
        return img;
    }

    // A file of `bytes` pseudo-random bytes (a fixed seed: failures repeat).
    fs::path random_file(const std::string& name, size_t bytes) {
        std::mt19937 gen(static_cast<unsigned>(bytes));
        std::string data(bytes, '\0');
        for (char& c : data)
            c = static_cast<char>(gen());
        const fs::path p = dir_ / name;
        std::ofstream(p, std::ios::binary) << data;
        return p;
    }

    // \EFI\Microsoft\Boot\BCD holding `bytes` random bytes; its source file.
    fs::path add_bcd(const fs::path& img, size_t bytes) {
        const fs::path src = random_file("bcd", bytes);
        run("mmd -i " + img.string() +
            " ::/EFI ::/EFI/Microsoft ::/EFI/Microsoft/Boot && mcopy -i " + img.string() + " " +
            src.string() + " ::/" + bcd_path);
        return src;
    }

    std::unique_ptr<FatVolume> open(const fs::path& img, uint64_t offset = 0, uint64_t length = 0) {
        auto disk = std::make_shared<LocalSource>(img.string());
        if (length == 0)
            length = disk->size() - offset;
        auto guard = std::make_shared<RangeGuard>(disk, offset, length);
        return std::make_unique<FatVolume>(guard, offset, length, "partition 1");
    }

    // ---- reading and patching the image as the specification lays it out ----

    static std::string bytes_at(const fs::path& img, uint64_t at, size_t n) {
        std::ifstream in(img, std::ios::binary);
        in.seekg(static_cast<std::streamoff>(at));
        std::string b(n, '\0');
        in.read(b.data(), static_cast<std::streamsize>(n));
        return b;
    }
    static void patch(const fs::path& img, uint64_t at, const std::string& bytes) {
        std::fstream f(img, std::ios::binary | std::ios::in | std::ios::out);
        f.seekp(static_cast<std::streamoff>(at));
        f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }

    // Offset in the image of the 32-byte directory entry whose 8.3 name is
    // `name11` (space-padded, as stored).
    static uint64_t entry_of(const fs::path& img, const std::string& name11) {
        const std::string all = read_whole(img);
        for (uint64_t at = 0; at + 32 <= all.size(); at += 32)
            if (all.compare(at, 11, name11) == 0)
                return at;
        ADD_FAILURE() << "no directory entry " << name11;
        return 0;
    }
    static uint32_t first_cluster(const fs::path& img, const std::string& name11) {
        const std::string e = bytes_at(img, entry_of(img, name11), 32);
        return uint32_t{load_le<uint16_t>(e.data() + 0x14)} << 16 |
               load_le<uint16_t>(e.data() + 0x1a);
    }

    // Sets the FAT entry of `cluster` to `value` in every FAT copy.
    static void set_fat_entry(const fs::path& img, int bits, uint32_t cluster, uint32_t value) {
        const std::string boot = bytes_at(img, 0, 512);
        const uint64_t sector = load_le<uint16_t>(boot.data() + 0x0b);
        const uint64_t reserved = load_le<uint16_t>(boot.data() + 0x0e);
        const uint64_t fats = static_cast<unsigned char>(boot[0x10]);
        uint64_t fat_size = load_le<uint16_t>(boot.data() + 0x16);
        if (fat_size == 0)
            fat_size = load_le<uint32_t>(boot.data() + 0x24);
        for (uint64_t i = 0; i < fats; ++i) {
            const uint64_t fat = (reserved + i * fat_size) * sector;
            if (bits == 12) {
                const uint64_t at = fat + cluster + cluster / 2;
                const std::string old = bytes_at(img, at, 2);
                uint16_t v = load_le<uint16_t>(old.data());
                v = cluster & 1 ? static_cast<uint16_t>((v & 0x000f) | (value << 4))
                                : static_cast<uint16_t>((v & 0xf000) | (value & 0xfff));
                std::string b(2, '\0');
                store_le(b.data(), v);
                patch(img, at, b);
            } else {
                std::string b(bits / 8, '\0');
                if (bits == 16)
                    store_le(b.data(), static_cast<uint16_t>(value));
                else
                    store_le(b.data(), value);
                patch(img, fat + cluster * uint64_t(bits / 8), b);
            }
        }
    }

    fs::path dir_;
};

// ---- reading what the tools wrote ---------------------------------------------

TEST_F(FatFs, Fat12FindsNestedFileCaseInsensitively) {
    const fs::path img = volume(2 * MiB, "");
    const fs::path src = add_bcd(img, 20 * 1024 + 5); // 11 clusters of 2 KiB
    auto fat = open(img);
    EXPECT_EQ(fat->fat_bits(), 12);
    const auto st = fat->stat("efi/MICROSOFT/boot/bcd");
    ASSERT_TRUE(st);
    EXPECT_FALSE(st->directory);
    EXPECT_EQ(st->size, 20u * 1024 + 5);
    EXPECT_EQ(fat->read_file("EFI/microsoft/Boot/Bcd", MiB), read_whole(src));
    const auto boot = fat->stat("/EFI//Microsoft/./Boot/");
    ASSERT_TRUE(boot);
    EXPECT_TRUE(boot->directory);
    EXPECT_EQ(boot->size, 0u);
    const auto root = fat->stat("");
    ASSERT_TRUE(root);
    EXPECT_TRUE(root->directory);
}

TEST_F(FatFs, Fat12FindsLongMixedCaseNameAndItsShortAlias) {
    const fs::path img = volume(2 * MiB, "");
    const fs::path src = random_file("src", 3000);
    run("mmd -i " + img.string() + " ::/Deep ::/Deep/Er && mcopy -i " + img.string() + " " +
        src.string() + " ::/Deep/Er/ThisIsALongerMixedCaseName.Data");
    auto fat = open(img);
    EXPECT_EQ(fat->read_file("deep/er/thisisalongermixedcasename.DATA", MiB), read_whole(src));
    // mtools' alias for the long name, as mdir shows it.
    EXPECT_EQ(fat->read_file("DEEP/ER/thisis~1.dat", MiB), read_whole(src));
    EXPECT_FALSE(fat->stat("deep/er/ThisIsALongerMixedCaseName"));
    EXPECT_FALSE(fat->stat("deep/er/ThisIsALongerMixedCaseName.Data2"));
}

TEST_F(FatFs, Fat16ReadsFileSpanningManyClustersByteExact) {
    const fs::path img = volume(64 * MiB, "-F 16");
    const fs::path src = add_bcd(img, 3 * MiB + 17);
    auto fat = open(img);
    EXPECT_EQ(fat->fat_bits(), 16);
    EXPECT_EQ(fat->read_file(bcd_path, 4 * MiB), read_whole(src));
}

TEST_F(FatFs, Fat32ReadsFileSpanningManyClustersByteExact) {
    const fs::path img = volume(100 * MiB, "-F 32");
    const fs::path src = add_bcd(img, 2 * MiB + 1); // 4097 clusters of 512 bytes
    auto fat = open(img);
    EXPECT_EQ(fat->fat_bits(), 32);
    EXPECT_EQ(fat->read_file(bcd_path, 4 * MiB), read_whole(src));
    EXPECT_TRUE(fat->stat("efi")->directory);
}

TEST_F(FatFs, Fat32FindsEveryFileOfADirectorySpanningClusters) {
    const fs::path img = volume(100 * MiB, "-F 32");
    std::string files;
    for (int i = 0; i < 120; ++i) { // 3 entries each (two long, one short): 23 clusters
        const std::string name = "File Number " + std::to_string(i) + " Of Many.txt";
        std::ofstream(dir_ / name) << std::string(static_cast<size_t>(i), 'x');
        files += " '" + (dir_ / name).string() + "'";
    }
    run("mmd -i " + img.string() + " ::/Many && mcopy -i " + img.string() + files + " ::/Many/");
    auto fat = open(img);
    for (int i = 0; i < 120; ++i) {
        const auto st = fat->stat("MANY/file number " + std::to_string(i) + " of many.TXT");
        ASSERT_TRUE(st) << i;
        EXPECT_EQ(st->size, static_cast<uint64_t>(i));
    }
}

TEST_F(FatFs, ReadsVolumeAtAnOffsetInsideALargerDisk) {
    const fs::path img = volume(2 * MiB, "");
    const fs::path src = add_bcd(img, 9000);
    // 1 MiB of 0xff on each side: a read off the volume would find no FAT there.
    const fs::path disk = dir_ / "disk.img";
    const std::string fill(MiB, '\xff');
    std::ofstream(disk, std::ios::binary) << fill << read_whole(img) << fill;
    auto fat = open(disk, MiB, 2 * MiB);
    EXPECT_EQ(fat->read_file("efi/microsoft/boot/bcd", MiB), read_whole(src));
}

TEST_F(FatFs, MissingPathIsNullopt) {
    const fs::path img = volume(2 * MiB, "");
    add_bcd(img, 100);
    auto fat = open(img);
    EXPECT_FALSE(fat->stat("EFI/Microsoft/Boot/BCD.old"));
    EXPECT_FALSE(fat->stat("EFI/Linux/grub.cfg"));
    EXPECT_FALSE(fat->stat("EFI/Microsoft/Boot/BCD/below")); // through a file
    EXPECT_FALSE(fat->stat("EFI/.."));
}

TEST_F(FatFs, ReadFileOverTheLimitIsEfbig) {
    const fs::path img = volume(2 * MiB, "");
    add_bcd(img, 20 * 1024);
    auto fat = open(img);
    EXPECT_EQ(error_of([&] { fat->read_file(bcd_path, 16 * 1024); }),
              "partition 1: " + bcd_shown +
                  " is 20 KiB; more than the 16 KiB read from such a "
                  "file|" +
                  std::to_string(EFBIG));
}

TEST_F(FatFs, ReadFileOfADirectoryOrNothingIsAnError) {
    const fs::path img = volume(2 * MiB, "");
    add_bcd(img, 100);
    auto fat = open(img);
    EXPECT_EQ(error_of([&] { fat->read_file("efi/Microsoft", MiB); }),
              "partition 1: \\efi\\Microsoft is a directory, not a file|" + std::to_string(EISDIR));
    EXPECT_EQ(error_of([&] { fat->read_file("EFI/BOOT/BOOTX64.EFI", MiB); }),
              "partition 1: \\EFI\\BOOT\\BOOTX64.EFI does not exist|" + std::to_string(ENOENT));
}

// ---- hostile volumes ----------------------------------------------------------

TEST_F(FatFs, FileChainThatLoopsIsAnErrorNamingTheLoop) {
    const fs::path img = volume(2 * MiB, "");
    add_bcd(img, 5 * 2048); // 5 clusters
    const uint32_t first = first_cluster(img, "BCD        ");
    set_fat_entry(img, 12, first + 1, first + 1); // the second cluster points to itself
    auto fat = open(img);
    EXPECT_EQ(error_of([&] { fat->read_file(bcd_path, MiB); }),
              "partition 1: FAT cluster chain of " + bcd_shown + " loops at cluster " +
                  std::to_string(first + 1) + "|" + std::to_string(EIO));
}

TEST_F(FatFs, DirectoryChainThatLoopsIsAnErrorNamingTheDirectory) {
    const fs::path img = volume(100 * MiB, "-F 32");
    add_bcd(img, 100);
    const uint32_t microsoft = first_cluster(img, "MICROS~1   ");
    set_fat_entry(img, 32, microsoft, microsoft);
    auto fat = open(img);
    EXPECT_EQ(error_of([&] { fat->stat(bcd_path); }),
              "partition 1: FAT cluster chain of \\EFI\\Microsoft loops at cluster " +
                  std::to_string(microsoft) + "|" + std::to_string(EIO));
}

TEST_F(FatFs, FileChainEndingEarlyIsAnError) {
    const fs::path img = volume(64 * MiB, "-F 16");
    add_bcd(img, 10 * 2048);
    const uint32_t first = first_cluster(img, "BCD        ");
    set_fat_entry(img, 16, first, 0xffff);
    auto fat = open(img);
    EXPECT_EQ(error_of([&] { fat->read_file(bcd_path, MiB); }),
              "partition 1: FAT cluster chain of " + bcd_shown +
                  " ends after 1 of the 10 clusters its size needs|" + std::to_string(EIO));
}

TEST_F(FatFs, ClusterPastTheEndIsAnError) {
    const fs::path img = volume(100 * MiB, "-F 32");
    add_bcd(img, 4096);
    const uint32_t first = first_cluster(img, "BCD        ");
    set_fat_entry(img, 32, first, 0x0ffffff0);
    const std::string past = "partition 1: FAT cluster chain of " + bcd_shown +
                             " points to cluster 268435440, outside the FAT (clusters 2..";
    EXPECT_EQ(error_of([&] { open(img)->read_file(bcd_path, MiB); }).substr(0, past.size()), past);
    // The directory entry's own first cluster, past the end.
    const uint64_t entry = entry_of(img, "BCD        ");
    patch(img, entry + 0x14, std::string("\xf0\x0f", 2));
    const std::string start = "partition 1: FAT cluster chain of " + bcd_shown +
                              " points to cluster " + std::to_string(0x0ff00000 | first) +
                              ", outside the FAT (clusters 2..";
    EXPECT_EQ(error_of([&] { open(img)->read_file(bcd_path, MiB); }).substr(0, start.size()),
              start);
}

TEST_F(FatFs, DirectoryOverSixtyFiveThousandEntriesIsAnError) {
    const fs::path img = volume(100 * MiB, "-F 32");
    add_bcd(img, 100);
    // \EFI's chain made 4097 clusters of 512 bytes long (65552 entries) over free clusters.
    const uint32_t efi = first_cluster(img, "EFI        ");
    const uint32_t free = 100000;
    set_fat_entry(img, 32, efi, free);
    for (uint32_t c = free; c < free + 4095; ++c)
        set_fat_entry(img, 32, c, c + 1);
    set_fat_entry(img, 32, free + 4095, 0x0fffffff);
    auto fat = open(img);
    EXPECT_EQ(error_of([&] { fat->stat(bcd_path); }),
              "partition 1: directory \\EFI has more than 65536 entries|" + std::to_string(EIO));
}

TEST_F(FatFs, LongNameOfARenamedShortEntryIsNotBelieved) {
    const fs::path img = volume(2 * MiB, "");
    const fs::path src = random_file("src", 100);
    run("mcopy -i " + img.string() + " " + src.string() + " ::/ThisIsALongerMixedCaseName.Data");
    // As a system that knows no long names would rename it: the long-name
    // entries stay, their checksum no longer matches the short name.
    patch(img, entry_of(img, "THISIS~1DAT") + 7, "2");
    auto fat = open(img);
    EXPECT_FALSE(fat->stat("ThisIsALongerMixedCaseName.Data"));
    EXPECT_FALSE(fat->stat("THISIS~1.DAT"));
    EXPECT_EQ(fat->read_file("thisis~2.dat", MiB), read_whole(src));
}

TEST_F(FatFs, LongNameEntriesOutOfOrderAreNotBelieved) {
    const fs::path img = volume(2 * MiB, "");
    const fs::path src = random_file("src", 100);
    run("mcopy -i " + img.string() + " " + src.string() + " ::/ThisIsALongerMixedCaseName.Data");
    // Its three long-name entries, orders 0x43, 0x02, 0x01, made 0x02, 0x43, 0x01.
    const uint64_t entry = entry_of(img, "THISIS~1DAT");
    const std::string first = bytes_at(img, entry - 96, 32);
    const std::string second = bytes_at(img, entry - 64, 32);
    ASSERT_EQ(first[0x00], '\x43');
    ASSERT_EQ(second[0x00], '\x02');
    patch(img, entry - 96, second + first);
    auto fat = open(img);
    EXPECT_FALSE(fat->stat("ThisIsALongerMixedCaseName.Data"));
    EXPECT_FALSE(fat->stat("ThisIsALonger")); // 0x43 then 0x01: not its first 13 characters either
    EXPECT_EQ(fat->read_file("THISIS~1.DAT", MiB), read_whole(src));
}

TEST_F(FatFs, BytesPerSectorZeroIsRejected) {
    const fs::path img = volume(2 * MiB, "");
    patch(img, 0x0b, std::string(2, '\0'));
    EXPECT_EQ(error_of([&] { open(img); }),
              "partition 1: FAT boot sector: bytes per sector is 0, not a power of two from 512 "
              "to 4096|" +
                  std::to_string(EIO));
}

TEST_F(FatFs, VolumeLargerThanItsRangeIsRejected) {
    const fs::path img = volume(64 * MiB, "-F 16");
    EXPECT_EQ(error_of([&] { open(img, 0, 32 * MiB); }),
              "partition 1: FAT boot sector: total sectors is 131072, more than the 65536 "
              "sectors of the range|" +
                  std::to_string(EIO));
}

TEST_F(FatFs, ZeroedRangeIsNotFat) {
    const fs::path img = dir_ / "zero.img";
    run("truncate -s 1M " + img.string());
    EXPECT_EQ(error_of([&] { open(img); }),
              "partition 1: not a FAT file system (its boot sector does not start with a jump "
              "instruction)|" +
                  std::to_string(EIO));
}

} // namespace
} // namespace p2vfs::guest
