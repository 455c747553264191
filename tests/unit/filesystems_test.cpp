// File systems made by their own mkfs tools, then patched into hostile
// shapes; a few signatures only a byte pattern can stand for are hand-made.
// Tests needing a tool skip with the reason when it is missing.
#include "block/local_source.h"
#include "common/endian.h"
#include "guest/filesystems.h"
#include "guest/partitions.h"
#include "memory_device.h"

#include <cstdlib>
#include <fcntl.h>
#include <fstream>
#include <gtest/gtest.h>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace p2vfs::guest {
namespace {

using test::MemoryDevice;
constexpr uint64_t MiB = 1 << 20;

// Forwards reads to `disk` and fails the test on any read outside the
// volume being probed: a probe must not look past its volume.
class VolumeGuard : public BlockDevice {
public:
    VolumeGuard(BlockDevice& disk, uint64_t offset, uint64_t length)
        : disk_(disk), begin_(offset), end_(offset + length) {}
    std::string name() const override { return disk_.name(); }
    std::string identity() const override { return disk_.identity(); }
    uint64_t size() const override { return disk_.size(); }
    void read(void* buf, size_t length, uint64_t offset) override {
        if (offset < begin_ || offset + length > end_ || offset + length > size()) {
            ADD_FAILURE() << "read of " << length << " bytes at " << hex(offset)
                          << " leaves the volume " << hex(begin_) << "-" << hex(end_) << " (disk "
                          << hex(size()) << ")";
            throw Error("read outside the volume");
        }
        disk_.read(buf, length, offset);
    }
    std::vector<Extent> extents(uint64_t offset, uint64_t length) override {
        return disk_.extents(offset, length);
    }

private:
    BlockDevice& disk_;
    uint64_t begin_;
    uint64_t end_;
};

std::optional<FileSystemInfo> probe(BlockDevice& disk, uint64_t offset, uint64_t length) {
    VolumeGuard guard(disk, offset, std::min(length, disk.size() - offset));
    return probe_filesystem(guard, offset, length);
}

std::optional<FileSystemInfo> probe_file(const std::string& file) {
    LocalSource disk(file);
    return probe(disk, 0, disk.size());
}

// Every field in one line, so a mismatch shows them all.
std::string describe(const std::optional<FileSystemInfo>& info) {
    if (!info)
        return "(nothing)";
    std::ostringstream s;
    s << info->type << " version='" << info->version << "' uuid='" << info->uuid << "' label='"
      << info->label << "' block=" << info->block_size << " size=" << hex(info->size);
    for (const auto& f : info->flags)
        s << " [" << f << "]";
    if (!info->error.empty())
        s << " error='" << info->error << "'";
    return s.str();
}

bool have(const std::string& tool) {
    return std::system(("command -v " + tool + " >/dev/null 2>&1").c_str()) == 0;
}

#define REQUIRE_TOOL(tool)                                                                         \
    do {                                                                                           \
        if (!have(tool))                                                                           \
            GTEST_SKIP() << tool << " is not installed; this test needs it to build its image";    \
    } while (0)

class FileSystemTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/p2vfs-filesystems-XXXXXX";
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
        std::string output;
        if (attempt(command, output))
            return true;
        ADD_FAILURE() << "`" << command << "` failed:\n" << output;
        return false;
    }
    bool attempt(const std::string& command, std::string& output) {
        const std::string log = path("command.log");
        const int rc = std::system(("(" + command + ") >" + log + " 2>&1 </dev/null").c_str());
        std::ifstream in(log);
        std::stringstream out;
        out << in.rdbuf();
        output = out.str();
        return rc == 0;
    }

    // A sparse file of `size` bytes and a command run over it ("mkfs.xfs -q IMAGE").
    std::string image(const std::string& name, uint64_t size, const std::string& command) {
        const std::string file = path(name);
        run("truncate -s " + std::to_string(size) + " " + file + " && " + command + " " + file);
        return file;
    }

    static void patch(const std::string& file, uint64_t offset, const std::string& bytes) {
        const int fd = ::open(file.c_str(), O_WRONLY);
        ASSERT_GE(fd, 0) << file;
        ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)),
                  static_cast<ssize_t>(bytes.size()));
        ::close(fd);
    }
    static void patch_le32(const std::string& file, uint64_t offset, uint32_t value) {
        std::string b(4, '\0');
        store_le<uint32_t>(b.data(), value);
        patch(file, offset, b);
    }
    static uint32_t read_le32(const std::string& file, uint64_t offset) {
        LocalSource disk(file);
        unsigned char b[4];
        disk.read(b, 4, offset);
        return load_le<uint32_t>(b);
    }

    std::string dir_;
    std::string loop_;
};

// --- ext2/3/4 --------------------------------------------------------------

constexpr const char* ext_uuid = "0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9";

std::string mkfs_ext(const std::string& type, const std::string& label, unsigned block) {
    return "mkfs." + type + " -q -F -b " + std::to_string(block) + " -U " + ext_uuid + " -L " +
           label;
}

TEST_F(FileSystemTest, Ext4UuidLabelBlockSizeAndSize) {
    REQUIRE_TOOL("mkfs.ext4");
    const auto fs = image("ext4.img", 16 * MiB, mkfs_ext("ext4", "rootfs", 4096));
    EXPECT_EQ(describe(probe_file(fs)),
              "ext4 version='1.0' uuid='0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9' label='rootfs' "
              "block=4096 size=0x1000000");
}

TEST_F(FileSystemTest, Ext3IsTheJournalledExt2) {
    REQUIRE_TOOL("mkfs.ext3");
    const auto fs = image("ext3.img", 8 * MiB, mkfs_ext("ext3", "old", 1024));
    EXPECT_EQ(describe(probe_file(fs)),
              "ext3 version='1.0' uuid='0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9' label='old' "
              "block=1024 size=0x800000");
}

TEST_F(FileSystemTest, Ext2HasNoJournal) {
    REQUIRE_TOOL("mkfs.ext2");
    const auto fs = image("ext2.img", 8 * MiB, mkfs_ext("ext2", "boot", 1024));
    EXPECT_EQ(describe(probe_file(fs)),
              "ext2 version='1.0' uuid='0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9' label='boot' "
              "block=1024 size=0x800000");
}

TEST_F(FileSystemTest, Ext4AtAnOffsetIsProbedThere) {
    REQUIRE_TOOL("mkfs.ext4");
    const auto fs = path("offset.img");
    ASSERT_TRUE(run("truncate -s 10M " + fs + " && " + mkfs_ext("ext4", "inner", 1024) +
                    " -E offset=1048576 " + fs + " 8192"));
    LocalSource disk(fs);
    EXPECT_EQ(describe(probe(disk, MiB, 8 * MiB)),
              "ext4 version='1.0' uuid='0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9' label='inner' "
              "block=1024 size=0x800000");
    EXPECT_EQ(describe(probe(disk, 0, MiB)), "(nothing)");
}

TEST_F(FileSystemTest, Ext4WithAbsurdLogBlockSizeIsNamed) {
    REQUIRE_TOOL("mkfs.ext4");
    const auto fs = image("ext4.img", 16 * MiB, mkfs_ext("ext4", "rootfs", 4096));
    patch_le32(fs, 1024 + 0x18, 37);
    EXPECT_EQ(describe(probe_file(fs)),
              "ext4 version='1.0' uuid='0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9' label='rootfs' "
              "block=0 size=0x0 error='ext4 superblock at 0x400: log block size 37 at 0x418 is "
              "absurd (blocks of 2^47 bytes; at most 6, 64 KiB blocks, exist)'");
}

TEST_F(FileSystemTest, Ext4WithMoreBlocksThanTheVolumeIsNamed) {
    REQUIRE_TOOL("mkfs.ext4");
    const auto fs = image("ext4.img", 16 * MiB, mkfs_ext("ext4", "rootfs", 4096));
    patch_le32(fs, 1024 + 0x04, 100000);
    const auto info = probe_file(fs);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->error, "ext4 superblock at 0x400: block count 100000 at 0x404 (0x186a0000 "
                           "bytes) exceeds the volume (0x1000000 bytes)");
}

TEST_F(FileSystemTest, Ext4CutShortByItsPartitionIsNamed) {
    REQUIRE_TOOL("mkfs.ext4");
    const auto fs = image("ext4.img", 16 * MiB, mkfs_ext("ext4", "rootfs", 4096));
    LocalSource disk(fs);
    const auto info = probe(disk, 0, 8 * MiB);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->error, "ext4 superblock at 0x400: block count 4096 at 0x404 (0x1000000 "
                           "bytes) exceeds the volume (0x800000 bytes)");
}

TEST_F(FileSystemTest, Ext4NeedingJournalRecoveryIsFlagged) {
    REQUIRE_TOOL("mkfs.ext4");
    const auto fs = image("ext4.img", 16 * MiB, mkfs_ext("ext4", "rootfs", 4096));
    patch_le32(fs, 1024 + 0x60, read_le32(fs, 1024 + 0x60) | 0x4); // INCOMPAT_RECOVER
    const auto info = probe_file(fs);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->type, "ext4");
    EXPECT_EQ(info->flags, std::vector<std::string>{"needs_recovery"});
    EXPECT_EQ(info->error, "");
}

// --- xfs, btrfs ------------------------------------------------------------

TEST_F(FileSystemTest, XfsUuidLabelAndSize) {
    REQUIRE_TOOL("mkfs.xfs");
    // mkfs.xfs refuses file systems under 300 MiB; the image is sparse.
    const auto fs =
        image("xfs.img", 320 * MiB,
              "mkfs.xfs -q -f -b size=4096 -m uuid=5c3e0d41-7a1b-4c2d-9e8f-0123456789ab "
              "-L xfslabel");
    EXPECT_EQ(describe(probe_file(fs)),
              "xfs version='V5' uuid='5c3e0d41-7a1b-4c2d-9e8f-0123456789ab' label='xfslabel' "
              "block=4096 size=0x14000000");
}

TEST_F(FileSystemTest, XfsWithABlockSizeThatIsNoPowerOfTwoIsNamed) {
    REQUIRE_TOOL("mkfs.xfs");
    const auto fs = image("xfs.img", 320 * MiB, "mkfs.xfs -q -f");
    patch(fs, 4, std::string("\x00\x00\x10\x01", 4)); // sb_blocksize, big-endian 4097
    const auto info = probe_file(fs);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->error, "xfs superblock at 0x0: block size 4097 at 0x4 is not a power of two "
                           "from 512 to 65536");
}

TEST_F(FileSystemTest, BtrfsUuidLabelAndSize) {
    REQUIRE_TOOL("mkfs.btrfs");
    const auto fs = image("btrfs.img", 128 * MiB,
                          "mkfs.btrfs -q -f -U 6d4f1e52-8b2c-4d3e-af90-123456789abc -L btrlabel");
    EXPECT_EQ(describe(probe_file(fs)),
              "btrfs version='' uuid='6d4f1e52-8b2c-4d3e-af90-123456789abc' label='btrlabel' "
              "block=4096 size=0x8000000");
}

TEST_F(FileSystemTest, BtrfsWithABadChecksumIsNamed) {
    REQUIRE_TOOL("mkfs.btrfs");
    const auto fs = image("btrfs.img", 128 * MiB, "mkfs.btrfs -q -f -L btrlabel");
    patch(fs, 0x10000 + 0x12b, "x"); // the label, under the checksum
    const auto info = probe_file(fs);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->label, "xtrlabel");
    EXPECT_EQ(info->error.rfind("btrfs superblock at 0x10000: checksum ", 0), 0u) << info->error;
}

// --- NTFS, FAT, BitLocker ---------------------------------------------------

TEST_F(FileSystemTest, NtfsSerialClusterSizeAndSize) {
    REQUIRE_TOOL("mkfs.ntfs");
    const auto fs = image("ntfs.img", 16 * MiB, "mkfs.ntfs -q -Q -F -c 4096 -L winvol");
    // mkntfs picks a random serial; a known one makes the text exact.
    patch(fs, 0x48, "\x18\x07\xf6\xe5\xd4\xc3\xb2\xa1");
    // NTFS keeps its last sector for the backup boot sector.
    EXPECT_EQ(describe(probe_file(fs)),
              "ntfs version='' uuid='A1B2C3D4E5F60718' label='' block=4096 size=0xfffe00");
}

TEST_F(FileSystemTest, NtfsClustersOver64KiBUseTheNegativeShift) {
    MemoryDevice disk(64 * MiB);
    std::vector<unsigned char> boot(512);
    boot[0] = 0xeb;
    boot[1] = 0x52;
    boot[2] = 0x90;
    std::memcpy(&boot[3], "NTFS    ", 8);
    store_le<uint16_t>(&boot[0x0b], 512);
    boot[0x0d] = 0xf4; // -12: 2^12 sectors, 2 MiB clusters
    store_le<uint64_t>(&boot[0x28], 64 * MiB / 512 - 1);
    store_le<uint64_t>(&boot[0x30], 4);
    store_le<uint64_t>(&boot[0x38], 8);
    boot[510] = 0x55;
    boot[511] = 0xaa;
    disk.put(0, boot);
    EXPECT_EQ(describe(probe(disk, 0, disk.size())),
              "ntfs version='' uuid='0000000000000000' label='' block=2097152 size=0x3fffe00");
    // -16 would be 32 MiB clusters, beyond what Windows makes.
    boot[0x0d] = 0xf0;
    disk.put(0, boot);
    const auto info = probe(disk, 0, disk.size());
    ASSERT_TRUE(info);
    EXPECT_EQ(info->error, "NTFS boot sector at 0x0: sectors per cluster byte 240 at 0xd gives "
                           "clusters of 32 MiB, over 2 MiB");
}

TEST_F(FileSystemTest, Fat12SerialAndLabelAsBlkidPrintsThem) {
    REQUIRE_TOOL("mkfs.vfat");
    const auto fs = path("fat12.img");
    ASSERT_TRUE(run("mkfs.vfat -C -s 4 -i 1234ABCD -n 'MY DISK' " + fs + " 2048"));
    EXPECT_EQ(describe(probe_file(fs)),
              "vfat version='FAT12' uuid='1234-ABCD' label='MY DISK' block=2048 size=0x200000");
}

TEST_F(FileSystemTest, Fat16) {
    REQUIRE_TOOL("mkfs.vfat");
    const auto fs = path("fat16.img");
    ASSERT_TRUE(run("mkfs.vfat -C -F 16 -s 4 -i 0BADF00D -n BOOT16 " + fs + " 16384"));
    EXPECT_EQ(describe(probe_file(fs)),
              "vfat version='FAT16' uuid='0BAD-F00D' label='BOOT16' block=2048 size=0x1000000");
}

TEST_F(FileSystemTest, Fat32) {
    REQUIRE_TOOL("mkfs.vfat");
    const auto fs = path("fat32.img");
    ASSERT_TRUE(run("mkfs.vfat -C -F 32 -S 512 -s 1 -i DEADBEEF -n EFI " + fs + " 65536"));
    EXPECT_EQ(describe(probe_file(fs)),
              "vfat version='FAT32' uuid='DEAD-BEEF' label='EFI' block=512 size=0x4000000");
}

TEST_F(FileSystemTest, FatWithZeroBytesPerSectorIsNamed) {
    REQUIRE_TOOL("mkfs.vfat");
    const auto fs = path("fat16.img");
    ASSERT_TRUE(run("mkfs.vfat -C -F 16 -i 0BADF00D " + fs + " 16384"));
    patch(fs, 0x0b, std::string("\0\0", 2));
    const auto info = probe_file(fs);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->type, "vfat");
    EXPECT_EQ(info->error, "FAT boot sector at 0x0: bytes per sector 0 at 0xb is not a power of "
                           "two from 512 to 4096");
}

TEST_F(FileSystemTest, BitLockerIsNamedBySignature) {
    MemoryDevice disk(MiB);
    std::vector<unsigned char> boot(512);
    boot[0] = 0xeb;
    boot[1] = 0x58;
    boot[2] = 0x90;
    std::memcpy(&boot[3], "-FVE-FS-", 8);
    store_le<uint16_t>(&boot[0x0b], 512);
    boot[0x0d] = 8;
    boot[510] = 0x55;
    boot[511] = 0xaa;
    disk.put(0, boot);
    EXPECT_EQ(describe(probe(disk, 0, disk.size())),
              "BitLocker version='' uuid='' label='' block=0 size=0x0");
}

TEST_F(FileSystemTest, BootSectorThatOnlyJumpsIsNotFat) {
    // GRUB's boot.img: a jump, code, the 0x55aa signature; no BPB.
    MemoryDevice disk(MiB);
    std::vector<unsigned char> boot(512, 0x90);
    boot[0] = 0xeb;
    boot[1] = 0x63;
    boot[2] = 0x90;
    boot[510] = 0x55;
    boot[511] = 0xaa;
    disk.put(0, boot);
    EXPECT_EQ(describe(probe(disk, 0, disk.size())), "(nothing)");
}

// --- swap, LVM ---------------------------------------------------------------

TEST_F(FileSystemTest, SwapUuidLabelAndSize) {
    REQUIRE_TOOL("mkswap");
    const auto fs =
        image("swap.img", MiB, "mkswap -U 7e3f2a10-1b2c-4d5e-8f90-a1b2c3d4e5f6 -L swaplabel");
    EXPECT_EQ(describe(probe_file(fs)),
              "swap version='swap v1' uuid='7e3f2a10-1b2c-4d5e-8f90-a1b2c3d4e5f6' "
              "label='swaplabel' block=4096 size=0x100000");
}

TEST_F(FileSystemTest, SwapHoldingAHibernationImageIsFlagged) {
    REQUIRE_TOOL("mkswap");
    const auto fs =
        image("swap.img", MiB, "mkswap -U 7e3f2a10-1b2c-4d5e-8f90-a1b2c3d4e5f6 -L swaplabel");
    patch(fs, 4096 - 10, std::string("S1SUSPEND\0", 10));
    EXPECT_EQ(describe(probe_file(fs)),
              "swap version='swap v1' uuid='7e3f2a10-1b2c-4d5e-8f90-a1b2c3d4e5f6' "
              "label='swaplabel' block=4096 size=0x100000 [hibernation image]");
}

class FileSystemLvmTest : public FileSystemTest {
protected:
    // pvcreate writes only to block devices: a loop device over an image
    // file of our own. Skips (with the reason) where that cannot be done.
    std::string physical_volume(const std::string& uuid) {
        const std::string file = path("pv.img");
        std::string out;
        if (!attempt("truncate -s 8M " + file + " && losetup -f --show " + file, out))
            return "skip: cannot attach a loop device: " + out;
        loop_ = out.substr(0, out.find('\n'));
        const std::string config = "devices { use_devicesfile=0 filter=[\"a|^" + loop_ +
                                   "$|\",\"r|.*|\"] obtain_device_list_from_udev=0 } "
                                   "activation { udev_sync=0 udev_rules=0 }";
        if (!attempt("LVM_SUPPRESS_FD_WARNINGS=1 pvcreate -ff -y --nolocking --norestorefile "
                     "--uuid " +
                         uuid + " --config '" + config + "' " + loop_,
                     out))
            return "skip: pvcreate on " + loop_ + " failed: " + out;
        run("sync && losetup -d " + loop_);
        loop_.clear();
        return file;
    }
};

TEST_F(FileSystemLvmTest, PhysicalVolumeUuidAsLvmPrintsIt) {
    REQUIRE_TOOL("pvcreate");
    REQUIRE_TOOL("losetup");
    const auto pv = physical_volume("aBcDeF-1234-5678-9abc-DEFG-hijk-LMNOPq");
    if (pv.rfind("skip: ", 0) == 0)
        GTEST_SKIP() << pv.substr(6);
    EXPECT_EQ(describe(probe_file(pv)),
              "LVM2_member version='LVM2 001' uuid='aBcDeF-1234-5678-9abc-DEFG-hijk-LMNOPq' "
              "label='' block=512 size=0x800000");
    // A changed id no longer matches the label's CRC.
    patch(pv, 512 + 32, "X");
    const auto info = probe_file(pv);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->error.rfind("LVM2 label at 0x200: CRC ", 0), 0u) << info->error;
}

// --- Whole disks ---------------------------------------------------------------

TEST_F(FileSystemTest, FileSystemsInPartitionsOfAnMbrDisk) {
    REQUIRE_TOOL("sfdisk");
    REQUIRE_TOOL("mkfs.ext4");
    REQUIRE_TOOL("mkswap");
    const auto disk_file = path("disk.img");
    std::ofstream(path("script")) << "label: dos\nunit: sectors\n2048,16384,83\n18432,2048,82\n";
    ASSERT_TRUE(run("truncate -s 20M " + disk_file + " && sfdisk -q " + disk_file + " < " +
                    path("script")));
    ASSERT_TRUE(run(mkfs_ext("ext4", "root", 1024) + " -E offset=1048576 " + disk_file + " 8192"));
    // mkswap takes no offset: the swap area is made alone and copied in.
    ASSERT_TRUE(run("truncate -s 1M " + path("swap") + " && mkswap -U " + ext_uuid + " " +
                    path("swap") + " && dd if=" + path("swap") + " of=" + disk_file +
                    " bs=512 seek=18432 conv=notrunc status=none"));
    LocalSource disk(disk_file);
    const auto table = read_partition_table(disk);
    ASSERT_EQ(table.partitions.size(), 2u);
    std::vector<std::string> found;
    for (const auto& p : table.partitions)
        found.push_back(describe(probe(disk, p.offset, p.length)));
    EXPECT_EQ(found, (std::vector<std::string>{
                         "ext4 version='1.0' uuid='0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9' "
                         "label='root' block=1024 size=0x800000",
                         "swap version='swap v1' uuid='0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9' "
                         "label='' block=4096 size=0x100000",
                     }));
    EXPECT_EQ(describe(probe(disk, 0, disk.size())), "(nothing)");
}

TEST(FileSystemProbe, ZerosAreNothing) {
    MemoryDevice disk(4 * MiB);
    EXPECT_EQ(describe(probe(disk, 0, disk.size())), "(nothing)");
    EXPECT_EQ(describe(probe(disk, MiB, 100)), "(nothing)");
    EXPECT_EQ(describe(probe(disk, disk.size(), 0)), "(nothing)");
}

TEST(FileSystemProbe, SignatureBeyondTheVolumeIsNotRead) {
    // An ext superblock lies at 1 KiB; a volume of 1 KiB does not reach it.
    MemoryDevice disk(4 * MiB);
    disk.put(1024 + 0x38, {0x53, 0xef});
    EXPECT_EQ(describe(probe(disk, 0, 1024)), "(nothing)");
    EXPECT_NE(describe(probe(disk, 0, 4096)), "(nothing)");
}

} // namespace
} // namespace p2vfs::guest
