// Initramfs images made as initramfs-tools and dracut make them: `cpio -o
// -H newc` of a tree, compressed by the command line tools, concatenated
// (an uncompressed early microcode archive first). Bad images are made by
// cutting and editing good ones, or written by hand.
#include "common/error.h"
#include "guest/initramfs.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <iostream>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace p2vfs::guest {
namespace {

namespace fs = std::filesystem;
using Names = std::vector<std::string>;

bool have(const std::string& tool) {
    return std::system(("command -v " + tool + " >/dev/null 2>&1").c_str()) == 0;
}

std::string slurp(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

void put(const fs::path& path, const std::string& bytes) {
    fs::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary) << bytes;
}

// A newc header and name, padded, as cpio writes them; `name_size`
// overrides the size field (the real one counts the NUL).
std::string newc(const std::string& name, uint32_t mode, const std::string& data,
                 std::optional<uint32_t> name_size = std::nullopt) {
    char h[111];
    std::snprintf(h, sizeof h, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", 1u,
                  mode, 0u, 0u, 1u, 0u, static_cast<unsigned>(data.size()), 0u, 0u, 0u, 0u,
                  name_size.value_or(static_cast<unsigned>(name.size() + 1)), 0u);
    std::string s(h, 110);
    s += name;
    s += '\0';
    s.resize((s.size() + 3) / 4 * 4, '\0');
    s += data;
    s.resize((s.size() + 3) / 4 * 4, '\0');
    return s;
}

class InitramfsTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (!have("cpio"))
            GTEST_SKIP() << "cpio is not installed (Debian package cpio): the test archives are "
                            "made with cpio -o -H newc";
        char tmpl[] = "/tmp/p2vfs-initramfs-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        // A Debian initramfs's module tree, in small.
        const fs::path k = dir_ / "main/lib/modules/6.1.0-x";
        put(k / "kernel/drivers/block/virtio_blk.ko", "\x7f"
                                                      "ELF virtio_blk");
        put(k / "kernel/drivers/ata/ahci.ko.xz", "\xfd"
                                                 "7zXZ ahci");
        put(k / "kernel/drivers/scsi/sd_mod.ko.zst", "sd_mod");
        put(k / "kernel/drivers/md/dm-mod.ko.gz", "dm-mod");
        put(k / "modules.builtin", "kernel/drivers/ata/libata.ko\nkernel/drivers/scsi/scsi_mod.ko\n"
                                   "kernel/fs/ext4/ext4.ko\n");
        put(k / "modules.dep", "kernel/drivers/block/virtio_blk.ko:\n");
        put(dir_ / "main/conf/notamodule.kobj", "x");
        fs::create_directories(dir_ / "main/etc/directory.ko");
        fs::create_symlink("virtio_blk.ko", k / "kernel/drivers/block/link.ko");
        // Content that spans many of the decoders' output buffers.
        std::mt19937 random(7);
        std::string big(300 << 10, '\0');
        for (char& c : big)
            c = static_cast<char>(random());
        put(dir_ / "main/usr/bin/busybox", big);
        // The early archive: microcode, and here one module to tell it apart.
        put(dir_ / "early/kernel/x86/microcode/GenuineIntel.bin", "microcode");
        put(dir_ / "early/lib/modules/6.1.0-x/kernel/arch/x86/crypto/crc32c-intel.ko", "crc32c");
    }
    void TearDown() override {
        if (!dir_.empty())
            fs::remove_all(dir_);
    }

    // The tree under `tree` as cpio writes it, entries sorted as
    // mkinitramfs sorts them; entries(tree) is how many it holds.
    std::string cpio_of(const std::string& tree, const std::string& format = "newc") {
        const std::string list = (dir_ / (tree + ".list")).string();
        const std::string out = (dir_ / (tree + "." + format)).string();
        const std::string cmd =
            "cd '" + (dir_ / tree).string() + "' && find . -mindepth 1 | LC_ALL=C sort > '" + list +
            "' && cpio -o -H " + format + " --quiet < '" + list + "' > '" + out + "'";
        EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
        return slurp(out);
    }
    Names entries(const std::string& tree) {
        std::istringstream in(slurp(dir_ / (tree + ".list")));
        Names names;
        for (std::string line; std::getline(in, line);)
            names.push_back(line);
        return names;
    }

    // `data` through a compressor's command line ("zstd -q -c").
    std::string compressed(const std::string& data, const std::string& command) {
        const std::string in = (dir_ / "plain").string();
        const std::string out = (dir_ / "packed").string();
        put(in, data);
        const std::string cmd = command + " < '" + in + "' > '" + out + "'";
        EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
        return slurp(out);
    }

    fs::path dir_;
};

const Names main_modules{"ahci", "dm_mod", "sd_mod", "virtio_blk"};
const Names main_builtin{"ext4", "libata", "scsi_mod"};

#define SKIP_WITHOUT(tool, package)                                                                \
    do {                                                                                           \
        if (!have(tool))                                                                           \
            GTEST_SKIP() << tool << " is not installed (Debian package " << package                \
                         << "): no archive compressed with it can be made";                        \
    } while (0)

TEST_F(InitramfsTest, ListsTheModulesOfAnUncompressedArchive) {
    const InitramfsContents c = read_initramfs(cpio_of("main"));
    EXPECT_EQ(c.problems, Names{});
    EXPECT_EQ(c.compressions, Names{"none"});
    EXPECT_EQ(c.modules, main_modules);
    EXPECT_EQ(c.builtin, main_builtin);
    EXPECT_EQ(c.files, entries("main").size());
}

TEST_F(InitramfsTest, ReadsTheCrcFormat) {
    const InitramfsContents c = read_initramfs(cpio_of("main", "crc"));
    EXPECT_EQ(c.problems, Names{});
    EXPECT_EQ(c.modules, main_modules);
    EXPECT_EQ(c.builtin, main_builtin);
}

// One test per compression the kernel can unpack and this reads.
void expect_main_archive(const InitramfsContents& c, const std::string& compression) {
    EXPECT_EQ(c.problems, Names{});
    EXPECT_EQ(c.compressions, Names{compression});
    EXPECT_EQ(c.modules, main_modules);
    EXPECT_EQ(c.builtin, main_builtin);
}

TEST_F(InitramfsTest, ListsTheModulesOfAGzipArchive) {
    SKIP_WITHOUT("gzip", "gzip");
    expect_main_archive(read_initramfs(compressed(cpio_of("main"), "gzip -n -c")), "gzip");
}

TEST_F(InitramfsTest, ListsTheModulesOfAZstdArchive) {
    SKIP_WITHOUT("zstd", "zstd");
    expect_main_archive(read_initramfs(compressed(cpio_of("main"), "zstd -q -c")), "zstd");
}

TEST_F(InitramfsTest, ListsTheModulesOfAnXzArchive) {
    SKIP_WITHOUT("xz", "xz-utils");
    // --check=crc32: the kernel's xz decoder knows no other check.
    expect_main_archive(read_initramfs(compressed(cpio_of("main"), "xz -c --check=crc32")), "xz");
}

TEST_F(InitramfsTest, ListsTheModulesOfAnLzmaArchive) {
    SKIP_WITHOUT("xz", "xz-utils");
    expect_main_archive(read_initramfs(compressed(cpio_of("main"), "xz -c --format=lzma")), "lzma");
}

TEST_F(InitramfsTest, ListsTheModulesOfAnLz4FrameArchive) {
    SKIP_WITHOUT("lz4", "lz4");
    expect_main_archive(read_initramfs(compressed(cpio_of("main"), "lz4 -q -c")), "lz4");
}

TEST_F(InitramfsTest, ListsTheModulesOfAnLz4LegacyArchive) {
    SKIP_WITHOUT("lz4", "lz4");
    expect_main_archive(read_initramfs(compressed(cpio_of("main"), "lz4 -l -q -c")), "lz4");
}

TEST_F(InitramfsTest, ReadsAnEarlyUncompressedArchiveBeforeAZstdOne) {
    SKIP_WITHOUT("zstd", "zstd");
    // As Debian 12's update-initramfs writes it: microcode, then the rest.
    const std::string early = cpio_of("early");
    const InitramfsContents c = read_initramfs(early + compressed(cpio_of("main"), "zstd -q -c"));
    EXPECT_EQ(c.problems, Names{});
    EXPECT_EQ(c.compressions, (Names{"none", "zstd"}));
    EXPECT_EQ(c.modules, (Names{"ahci", "crc32c_intel", "dm_mod", "sd_mod", "virtio_blk"}));
    EXPECT_EQ(c.builtin, main_builtin);
    EXPECT_EQ(c.files, entries("early").size() + entries("main").size());
}

TEST_F(InitramfsTest, SkipsZeroPaddingBetweenArchives) {
    SKIP_WITHOUT("gzip", "gzip");
    SKIP_WITHOUT("zstd", "zstd");
    put(dir_ / "extra/lib/modules/6.1.0-x/kernel/drivers/net/virtio_net.ko", "virtio_net");
    std::string image = cpio_of("early") + std::string(512, '\0');
    image += compressed(cpio_of("main"), "gzip -n -c") + std::string(3, '\0');
    image += compressed(cpio_of("extra"), "zstd -q -c") + std::string(8, '\0');
    const InitramfsContents c = read_initramfs(image);
    EXPECT_EQ(c.problems, Names{});
    EXPECT_EQ(c.compressions, (Names{"none", "gzip", "zstd"}));
    EXPECT_EQ(c.modules,
              (Names{"ahci", "crc32c_intel", "dm_mod", "sd_mod", "virtio_blk", "virtio_net"}));
}

TEST_F(InitramfsTest, ReadsAnArchiveSplitAcrossZstdFrames) {
    SKIP_WITHOUT("zstd", "zstd");
    // zstd -d (and the kernel) read consecutive frames as one output.
    const std::string main = cpio_of("main");
    const size_t half = main.size() / 2 + 1;
    const InitramfsContents c = read_initramfs(compressed(main.substr(0, half), "zstd -q -c") +
                                               compressed(main.substr(half), "zstd -q -c"));
    expect_main_archive(c, "zstd");
}

TEST_F(InitramfsTest, ReadsAnArchiveSplitAcrossGzipMembers) {
    SKIP_WITHOUT("gzip", "gzip");
    const std::string main = cpio_of("main");
    const size_t half = main.size() / 2 + 1;
    const InitramfsContents c = read_initramfs(compressed(main.substr(0, half), "gzip -n -c") +
                                               compressed(main.substr(half), "gzip -n -c"));
    expect_main_archive(c, "gzip");
}

TEST_F(InitramfsTest, EntriesWithoutATrailerMayPrecedeACompressedArchive) {
    SKIP_WITHOUT("gzip", "gzip");
    // The kernel takes a compressed stream after any uncompressed entry.
    const std::string raw = newc("./lib/modules/6.1.0-x/kernel/fs/fat/vfat.ko", 0100644, "vfat") +
                            newc("lib/modules/6.1.0-x/kernel/fs/fat/fat.ko", 0100644, "fat");
    const InitramfsContents c = read_initramfs(raw + compressed(cpio_of("main"), "gzip -n -c"));
    EXPECT_EQ(c.problems, Names{});
    EXPECT_EQ(c.compressions, (Names{"none", "gzip"}));
    EXPECT_EQ(c.modules, (Names{"ahci", "dm_mod", "fat", "sd_mod", "vfat", "virtio_blk"}));
}

TEST_F(InitramfsTest, CorruptZstdDataIsNamedAndEarlierModulesKept) {
    SKIP_WITHOUT("zstd", "zstd");
    const std::string early = cpio_of("early");
    std::string packed = compressed(cpio_of("main"), "zstd -q -c");
    // Mark the first block's type as reserved (3): RFC 8878 3.1.1.2.
    const auto fhd = static_cast<unsigned char>(packed[4]);
    const bool single_segment = fhd & 0x20;
    const size_t fcs[] = {single_segment ? 1u : 0u, 2, 4, 8};
    const size_t did[] = {0, 1, 2, 4};
    const size_t block = 4 + 1 + (single_segment ? 0 : 1) + did[fhd & 3] + fcs[fhd >> 6];
    packed[block] = static_cast<char>(packed[block] | 0x06);

    const InitramfsContents c = read_initramfs(early + packed);
    ASSERT_EQ(c.problems.size(), 1u) << ::testing::PrintToString(c.problems);
    const std::string prefix = "archive 2 at " + hex(early.size()) + ": zstd: ";
    EXPECT_EQ(c.problems[0].substr(0, prefix.size()), prefix) << c.problems[0];
    EXPECT_GT(c.problems[0].size(), prefix.size()) << "the decoder's reason is missing";
    EXPECT_EQ(c.compressions, (Names{"none", "zstd"}));
    EXPECT_EQ(c.modules, Names{"crc32c_intel"});
    EXPECT_EQ(c.builtin, Names{});
}

// Where the header of the entry `name` starts in an uncompressed archive
// (GNU cpio stores "./usr/bin" as "usr/bin").
size_t header_of(const std::string& archive, const std::string& name) {
    const size_t at = archive.find(name + '\0');
    EXPECT_NE(at, std::string::npos) << name;
    return at - 110;
}

TEST_F(InitramfsTest, AnArchiveCutInsideAHeaderIsAProblem) {
    const std::string main = cpio_of("main");
    const std::string name = "lib/modules/6.1.0-x/kernel/drivers/scsi/sd_mod.ko.zst";
    const size_t header = header_of(main, name);
    const InitramfsContents c = read_initramfs(main.substr(0, header + 50));
    EXPECT_EQ(c.problems, Names{"archive 1 at 0x0: cpio entry at " + hex(header) +
                                ": the data ends 50 bytes into its 110-byte header"});
    // What came before is kept (entries are sorted: ata, block, md before scsi).
    EXPECT_EQ(c.modules, (Names{"ahci", "dm_mod", "virtio_blk"}));
    const Names all = entries("main");
    EXPECT_EQ(c.files, std::find(all.begin(), all.end(), "./" + name) - all.begin());
}

TEST_F(InitramfsTest, AnArchiveCutInsideAFileIsAProblem) {
    const std::string main = cpio_of("main");
    const size_t header = header_of(main, "usr/bin/busybox");
    const InitramfsContents c = read_initramfs(main.substr(0, header + 4096));
    EXPECT_EQ(c.problems, Names{"archive 1 at 0x0: cpio entry at " + hex(header) + ": claims " +
                                hex(300 << 10) + " bytes of content, past the end of the image"});
    EXPECT_EQ(c.modules, main_modules);
}

TEST_F(InitramfsTest, ACutZstdStreamIsAProblem) {
    SKIP_WITHOUT("zstd", "zstd");
    const std::string packed = compressed(cpio_of("main"), "zstd -q -c");
    const InitramfsContents c = read_initramfs(packed.substr(0, packed.size() / 2));
    EXPECT_EQ(c.problems,
              Names{"archive 1 at 0x0: zstd: the compressed data ends before the stream does"});
    EXPECT_EQ(c.compressions, Names{"zstd"});
}

TEST_F(InitramfsTest, ACutXzStreamIsAProblem) {
    SKIP_WITHOUT("xz", "xz-utils");
    const std::string packed = compressed(cpio_of("main"), "xz -c --check=crc32");
    const InitramfsContents c = read_initramfs(packed.substr(0, packed.size() - 20));
    EXPECT_EQ(c.problems,
              Names{"archive 1 at 0x0: xz: the compressed data ends before the stream does"});
}

TEST_F(InitramfsTest, GarbageIsAProblemNotAnException) {
    InitramfsContents c = read_initramfs("hello, world\n");
    EXPECT_EQ(c.problems, Names{"archive 1 at 0x0: neither cpio nor a known compression (bytes "
                                "68 65 6c 6c 6f 2c 20 77)"});
    EXPECT_EQ(c.compressions, Names{});
    EXPECT_EQ(c.modules, Names{});
    EXPECT_EQ(c.files, 0u);

    const std::string main = cpio_of("main");
    c = read_initramfs(main + "GARBAGE!");
    EXPECT_EQ(c.problems, Names{"archive 2 at " + hex(main.size()) +
                                ": neither cpio nor a known compression (bytes 47 41 52 42 41 "
                                "47 45 21)"});
    EXPECT_EQ(c.modules, main_modules);

    EXPECT_EQ(read_initramfs("").problems, Names{"the image is empty"});
    EXPECT_EQ(read_initramfs(std::string(4096, '\0')).problems,
              Names{"the image holds only zero bytes (4 KiB)"});
}

TEST_F(InitramfsTest, JunkAfterTheArchivesInAStreamIsAProblem) {
    SKIP_WITHOUT("zstd", "zstd");
    const std::string main = cpio_of("main");
    const InitramfsContents c = read_initramfs(compressed(main + "JUNKJUNK", "zstd -q -c"));
    EXPECT_EQ(c.problems, Names{"archive 1 at 0x0: zstd output: cpio entry at " + hex(main.size()) +
                                ": no cpio magic (bytes 4a 55 4e 4b 4a 55)"});
    EXPECT_EQ(c.modules, main_modules);
}

TEST_F(InitramfsTest, AnUnalignedCpioArchiveIsAProblem) {
    SKIP_WITHOUT("gzip", "gzip");
    std::string image = compressed(cpio_of("early"), "gzip -n -c");
    image.append((5 - image.size() % 4) % 4, '\0'); // the next archive starts at 1 mod 4
    const size_t at = image.size();
    const InitramfsContents c = read_initramfs(image + cpio_of("main"));
    EXPECT_EQ(c.problems,
              Names{"archive 2 at " + hex(at) + ": a cpio archive must start 4-byte aligned"});
    EXPECT_EQ(c.modules, Names{"crc32c_intel"});
}

TEST_F(InitramfsTest, ReadsTheBuiltinListOnlyWhereTheKernelKeepsIt) {
    const std::string list = "kernel/drivers/nvme/host/nvme.ko\nkernel/drivers/md/dm-crypt.ko\n";
    const InitramfsContents c =
        read_initramfs(newc("usr/lib/modules/6.8.0-1/modules.builtin", 0100644, list) +
                       newc("lib/modules/modules.builtin", 0100644, "kernel/a.ko\n") +
                       newc("lib/modules/6.8.0-1/extra/modules.builtin", 0100644, "kernel/b.ko\n") +
                       newc("lib/modules/6.8.0-1/modules.builtin.modinfo", 0100644, "c.ko\n"));
    EXPECT_EQ(c.problems, Names{});
    EXPECT_EQ(c.builtin, (Names{"dm_crypt", "nvme"}));
    EXPECT_EQ(c.modules, Names{});
}

TEST_F(InitramfsTest, AnOversizedBuiltinListIsNotedAndSkipped) {
    put(dir_ / "huge/lib/modules/6.1.0-x/modules.builtin", "");
    fs::resize_file(dir_ / "huge/lib/modules/6.1.0-x/modules.builtin", 17 << 20);
    put(dir_ / "huge/lib/modules/6.1.0-x/kernel/fs/xfs/xfs.ko", "xfs");
    const std::string archive = cpio_of("huge");
    const InitramfsContents c = read_initramfs(archive);
    EXPECT_EQ(c.problems,
              Names{"archive 1 at 0x0: cpio entry 'lib/modules/6.1.0-x/modules.builtin' "
                    "at " +
                    hex(header_of(archive, "lib/modules/6.1.0-x/modules.builtin")) +
                    ": 0x1100000 bytes, over the 16 MiB a list of built-in modules can "
                    "be; not read"});
    EXPECT_EQ(c.builtin, Names{});
    EXPECT_EQ(c.modules, Names{"xfs"});
}

TEST_F(InitramfsTest, AnAbsurdNameSizeIsAProblem) {
    const InitramfsContents c =
        read_initramfs(newc("lib/x.ko", 0100644, "", 0x10000) + std::string(0x10000, 'a'));
    EXPECT_EQ(c.problems, Names{"archive 1 at 0x0: cpio entry at 0x0: name size 0x10000 is over "
                                "the 4096 bytes of PATH_MAX"});
    EXPECT_EQ(c.modules, Names{});
}

TEST_F(InitramfsTest, ANonHexadecimalFieldIsAProblem) {
    std::string image = newc("lib/x.ko", 0100644, "data");
    image.replace(6 + 6 * 8 + 4, 2, "zz"); // in c_filesize
    const InitramfsContents c = read_initramfs(image);
    EXPECT_EQ(c.problems, Names{"archive 1 at 0x0: cpio entry at 0x0: field c_filesize is not "
                                "hexadecimal (\"0000zz04\")"});
}

TEST_F(InitramfsTest, TheOldPortableFormatIsNamed) {
    const InitramfsContents c = read_initramfs(cpio_of("main", "odc"));
    EXPECT_EQ(c.problems, Names{"archive 1 at 0x0: cpio entry at 0x0: old portable format "
                                "(070707); the kernel reads only newc (070701) and crc (070702)"});
}

TEST_F(InitramfsTest, AnUnsupportedCompressionIsNamed) {
    const InitramfsContents c = read_initramfs("BZh91AY&SY");
    EXPECT_EQ(c.compressions, Names{"bzip2"});
    EXPECT_EQ(c.problems, Names{"archive 1 at 0x0: bzip2 compression is not supported here"});
}

TEST_F(InitramfsTest, ADecompressionBombStopsAtTheLimit) {
    SKIP_WITHOUT("zstd", "zstd");
    // 64 MiB of zeros pack into a few KiB; the cpio reader would skip them
    // as padding for ever.
    const std::string bomb = compressed(std::string(64 << 20, '\0'), "zstd -q -c");
    const InitramfsContents c = read_initramfs(bomb, 1 << 20);
    EXPECT_EQ(c.problems, Names{"archive 1 at 0x0: zstd output passes the 1 MiB limit "
                                "(max_output); stopped as a likely decompression bomb"});
}

TEST_F(InitramfsTest, AnEntryLargerThanTheOutputLimitIsRefusedAtItsHeader) {
    SKIP_WITHOUT("zstd", "zstd");
    put(dir_ / "bomb/zeros", "");
    fs::resize_file(dir_ / "bomb/zeros", 8 << 20);
    const std::string archive = cpio_of("bomb");
    const size_t header = header_of(archive, "zeros");
    const InitramfsContents c = read_initramfs(compressed(archive, "zstd -q -c"), 1 << 20);
    EXPECT_EQ(c.problems, Names{"archive 1 at 0x0: zstd output: cpio entry at " + hex(header) +
                                ": claims 0x800000 bytes of content, past the 1 MiB output limit "
                                "(max_output)"});
}

TEST_F(InitramfsTest, TheOutputLimitCountsEveryArchive) {
    SKIP_WITHOUT("gzip", "gzip");
    // Each archive's output is under the limit; together they are over it.
    const std::string main = cpio_of("main");
    const std::string packed = compressed(main, "gzip -n -c");
    const uint64_t limit = main.size() + main.size() / 2;
    const InitramfsContents c = read_initramfs(packed + std::string(4, '\0') + packed, limit);
    EXPECT_EQ(c.compressions, (Names{"gzip", "gzip"}));
    EXPECT_EQ(c.problems,
              Names{"archive 2 at " + hex(packed.size() + 4) + ": gzip output: cpio entry at " +
                    hex(header_of(main, "usr/bin/busybox")) + ": claims " + hex(300 << 10) +
                    " bytes of content, past the " + human_size(limit) +
                    " output limit (max_output)"});
}

// The initramfs images of the machine running the tests, made by
// update-initramfs (or dracut), against lsinitramfs's reading of them.
TEST(InitramfsOfThisMachine, ListsTheModulesLsinitramfsLists) {
    std::vector<fs::path> images;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/boot", ec))
        if (e.path().filename().string().rfind("initrd.img-", 0) == 0)
            images.push_back(e.path());
    if (images.empty())
        GTEST_SKIP() << "no /boot/initrd.img-* on this machine: no initramfs made by "
                        "update-initramfs to read";
    for (const fs::path& image : images) {
        SCOPED_TRACE(image.string());
        const InitramfsContents c = read_initramfs(slurp(image));
        EXPECT_EQ(c.problems, Names{});
        EXPECT_FALSE(c.compressions.empty());
        // Debian's default (MODULES=most) takes every disk driver.
        for (const std::string m : {"ahci", "sd_mod", "virtio_blk", "virtio_pci"})
            EXPECT_TRUE(std::binary_search(c.modules.begin(), c.modules.end(), m)) << m;
        if (!have("lsinitramfs")) {
            std::cout << "lsinitramfs is not installed (Debian package initramfs-tools-core): "
                         "the module list of "
                      << image << " is not compared with its reading\n";
            continue;
        }
        const std::string cmd = "lsinitramfs '" + image.string() + "'";
        FILE* pipe = ::popen(cmd.c_str(), "r");
        ASSERT_NE(pipe, nullptr) << cmd;
        std::set<std::string> expected;
        bool has_builtin_list = false;
        char line[4096];
        while (std::fgets(line, sizeof line, pipe)) {
            std::string path(line);
            if (!path.empty() && path.back() == '\n')
                path.pop_back();
            const std::string base = path.substr(path.find_last_of('/') + 1);
            for (const std::string suffix : {".ko", ".ko.xz", ".ko.zst", ".ko.gz"}) {
                if (base.size() > suffix.size() &&
                    base.compare(base.size() - suffix.size(), suffix.size(), suffix) == 0) {
                    std::string name = base.substr(0, base.size() - suffix.size());
                    std::replace(name.begin(), name.end(), '-', '_');
                    expected.insert(name);
                }
            }
            if (path.find("lib/modules/") != std::string::npos && path.size() > 16 &&
                path.compare(path.size() - 16, 16, "/modules.builtin") == 0)
                has_builtin_list = true;
        }
        EXPECT_EQ(::pclose(pipe), 0) << cmd;
        EXPECT_EQ(c.modules, Names(expected.begin(), expected.end()));
        EXPECT_EQ(c.builtin.empty(), !has_builtin_list);
    }
}

} // namespace
} // namespace p2vfs::guest
