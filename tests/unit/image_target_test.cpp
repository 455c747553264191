// Sync targets (fsd/jobs/image_target.h) in every format, written through
// real qemu-img and qemu-nbd, judged by qemu-img's own reading of the file
// (convert to raw, info, map, check) against the bytes the test wrote; and
// run_command (fsd/common/command.h), which runs those tools.
#include "common/command.h"
#include "common/error.h"
#include "jobs/image_target.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace p2vfs {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;
// Not a multiple of any format's cluster or block, nor a CHS geometry.
constexpr uint64_t image_size = 64 * MiB + 7 * 4096 + 512;
// A raw target need not even hold whole sectors.
constexpr uint64_t raw_size = 64 * MiB + 7 * 4096 + 777;

bool have_tool(const std::string& name) {
    const char* path = std::getenv("PATH");
    std::stringstream dirs(path ? path : "/usr/bin:/bin");
    std::string dir;
    while (std::getline(dirs, dir, ':'))
        if (!dir.empty() && ::access((dir + "/" + name).c_str(), X_OK) == 0)
            return true;
    return false;
}

#define REQUIRE_QEMU_TOOLS()                                                                       \
    do {                                                                                           \
        for (const char* tool : {"qemu-img", "qemu-nbd"})                                          \
            if (!have_tool(tool))                                                                  \
                GTEST_SKIP() << tool << " is not installed (package qemu-utils); this test "       \
                             << "writes images through it";                                        \
    } while (0)

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// The byte a test piece `seed` puts at disk offset x: never zero.
unsigned char pattern(uint64_t x, unsigned seed) {
    return static_cast<unsigned char>(((x * 2654435761u) >> 13) ^ (x >> 9) ^ (seed * 37)) | 1;
}

// Where two byte ranges first differ, for a readable failure.
::testing::AssertionResult same_bytes(const unsigned char* got, const unsigned char* want,
                                      size_t length, uint64_t base) {
    if (std::memcmp(got, want, length) == 0)
        return ::testing::AssertionSuccess();
    size_t i = 0;
    while (got[i] == want[i])
        ++i;
    return ::testing::AssertionFailure() << "first difference at disk offset " << base + i
                                         << ": got " << int(got[i]) << ", wanted " << int(want[i]);
}

// A scratch directory per test; TMPDIR points into it, so the socket
// directories of our qemu-nbd land there and the test sees them go.
class ScratchTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/p2vfs-unit-target-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        tmp_ = dir_ + "/tmp";
        fs::create_directory(tmp_);
        const char* old = std::getenv("TMPDIR");
        had_tmpdir_ = old != nullptr;
        old_tmpdir_ = old ? old : "";
        ::setenv("TMPDIR", tmp_.c_str(), 1);
    }
    void TearDown() override {
        if (had_tmpdir_)
            ::setenv("TMPDIR", old_tmpdir_.c_str(), 1);
        else
            ::unsetenv("TMPDIR");
        if (!dir_.empty())
            fs::remove_all(dir_);
    }

    std::string path(const std::string& name) const { return dir_ + "/" + name; }
    bool tmp_is_empty() const { return fs::is_empty(tmp_); }

    std::string dir_;
    std::string tmp_;
    bool had_tmpdir_ = false;
    std::string old_tmpdir_;
};

// ---------------------------------------------------------------- commands

TEST(CommandTest, ReturnsTheExitStatus) {
    const CommandResult r = run_command({"sh", "-c", "exit 3"});
    EXPECT_EQ(r.status, 3);
    EXPECT_FALSE(r.timed_out);
    EXPECT_EQ(r.signal, 0);
    EXPECT_EQ(r.output, "");
}

TEST(CommandTest, CapturesStdoutAndStderrInOrder) {
    const CommandResult r = run_command({"sh", "-c", "echo one; echo two >&2; echo three"});
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, "one\ntwo\nthree\n");
}

TEST(CommandTest, KeepsTheLast64KiBOfOutput) {
    // 200000 numbered lines' worth of bytes: the kept part must be the end.
    const CommandResult r = run_command({"seq", "1", "200000"});
    ASSERT_EQ(r.status, 0);
    std::string all;
    for (int i = 1; i <= 200000; ++i)
        all += std::to_string(i) + "\n";
    ASSERT_EQ(r.output.size(), 64 * KiB);
    EXPECT_EQ(r.output, all.substr(all.size() - 64 * KiB));
}

TEST(CommandTest, StdinIsDevNull) {
    const auto start = std::chrono::steady_clock::now();
    const CommandResult r = run_command({"cat"}, 10);
    EXPECT_EQ(r.status, 0);
    EXPECT_FALSE(r.timed_out);
    EXPECT_EQ(r.output, "");
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(CommandTest, TimeoutKillsItQuickly) {
    const auto start = std::chrono::steady_clock::now();
    const CommandResult r = run_command({"sleep", "60"}, 0.5);
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_TRUE(r.timed_out);
    EXPECT_EQ(r.status, -1);
    EXPECT_EQ(r.signal, SIGTERM);
    EXPECT_GE(took, 450ms);
    EXPECT_LT(took, 3s);
}

TEST(CommandTest, TimeoutKillsTheWholeProcessGroup) {
    // The shell starts a sleep in the background and waits: the sleep is
    // in the shell's group, and must be gone after the timeout too.
    const CommandResult r = run_command({"sh", "-c", "sleep 60 & echo $!; wait"}, 0.5);
    ASSERT_TRUE(r.timed_out);
    const pid_t sleeper = std::stoi(last_line(r.output));
    ASSERT_GT(sleeper, 1);
    // Gone, or a zombie waiting for init to reap it.
    bool gone = false;
    for (int i = 0; i < 200 && !gone; ++i) {
        std::ifstream stat("/proc/" + std::to_string(sleeper) + "/stat");
        std::string pid, comm, state;
        gone = !(stat >> pid >> comm >> state) || state == "Z" || comm != "(sleep)";
        if (!gone)
            std::this_thread::sleep_for(10ms);
    }
    EXPECT_TRUE(gone) << "the background sleep " << sleeper << " outlived the timeout";
}

TEST(CommandTest, SigtermIgnoredGetsSigkillAfterFiveSeconds) {
    // trap '' makes SIGTERM ignored, which exec keeps for the sleep.
    const auto start = std::chrono::steady_clock::now();
    const CommandResult r = run_command({"sh", "-c", "trap '' TERM; sleep 60"}, 0.2);
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_TRUE(r.timed_out);
    EXPECT_EQ(r.status, -1);
    EXPECT_EQ(r.signal, SIGKILL);
    EXPECT_GE(took, 5s);
    EXPECT_LT(took, 8s);
}

TEST(CommandTest, KilledBySignalHasNoStatus) {
    const CommandResult r = run_command({"sh", "-c", "kill -KILL $$"});
    EXPECT_FALSE(r.timed_out);
    EXPECT_EQ(r.status, -1);
    EXPECT_EQ(r.signal, SIGKILL);
}

TEST(CommandTest, MissingProgramGivesStatus127AndSaysWhy) {
    const CommandResult r = run_command({"p2vfs-no-such-program", "x"});
    EXPECT_EQ(r.status, 127);
    EXPECT_EQ(r.output, "cannot run p2vfs-no-such-program: No such file or directory\n");
}

TEST(CommandTest, PassesAndReplacesEnvironment) {
    ::setenv("P2VFS_TEST_REPLACED", "old", 1);
    const CommandResult r =
        run_command({"sh", "-c",
                     "echo \"$P2VFS_TEST_ADDED|$P2VFS_TEST_REPLACED\"; env | grep -c "
                     "'^P2VFS_TEST_REPLACED='"},
                    0, {"P2VFS_TEST_ADDED=a b=c", "P2VFS_TEST_REPLACED=new"});
    ::unsetenv("P2VFS_TEST_REPLACED");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, "a b=c|new\n1\n");
}

TEST(CommandTest, InheritsTheEnvironment) {
    ::setenv("P2VFS_TEST_INHERITED", "yes", 1);
    const CommandResult r = run_command({"sh", "-c", "echo $P2VFS_TEST_INHERITED"});
    ::unsetenv("P2VFS_TEST_INHERITED");
    EXPECT_EQ(r.output, "yes\n");
}

TEST(CommandTest, DescriptorsAreNotInherited) {
    // Opened without O_CLOEXEC, as a library might.
    const int fd = ::open("/dev/null", O_RDONLY);
    ASSERT_GE(fd, 3);
    const std::string probe = "/proc/self/fd/" + std::to_string(fd);
    const CommandResult r =
        run_command({"sh", "-c", "if test -e " + probe + "; then echo open; else echo closed; fi"});
    ::close(fd);
    EXPECT_EQ(r.output, "closed\n");
}

TEST(CommandTest, RefusesNothingToRun) {
    EXPECT_THROW(run_command({}), InvalidArgument);
    EXPECT_THROW(run_command({"true"}, 0, {"NOEQUALS"}), InvalidArgument);
}

TEST(CommandTest, LastLineSkipsBlankLines) {
    EXPECT_EQ(last_line("first\nsecond  \n\n \r\n"), "second");
    EXPECT_EQ(last_line("  only"), "only");
    EXPECT_EQ(last_line("\n\n"), "");
    EXPECT_EQ(last_line(""), "");
}

// ------------------------------------------------------------ format names

TEST(ImageTargetTest, QemuFormatNames) {
    EXPECT_EQ(qemu_format_name("raw"), "raw");
    EXPECT_EQ(qemu_format_name("qcow2"), "qcow2");
    EXPECT_EQ(qemu_format_name("vmdk"), "vmdk");
    EXPECT_EQ(qemu_format_name("vhd"), "vpc");
    EXPECT_EQ(qemu_format_name("vhdx"), "vhdx");
    EXPECT_EQ(qemu_format_name("vdi"), "vdi");
}

TEST(ImageTargetTest, UnknownFormatIsRefused) {
    for (const std::string name : {"vpc", "qed", "QCOW2", ""}) {
        try {
            qemu_format_name(name);
            ADD_FAILURE() << "'" << name << "' was accepted";
        } catch (const InvalidArgument& e) {
            EXPECT_EQ(std::string(e.what()),
                      "unknown target format '" + name + "': raw, qcow2, vmdk, vhd, vhdx or vdi");
        }
    }
    EXPECT_THROW(open_image_target("/nonexistent/x", "qed", MiB, 1, true), InvalidArgument);
}

// ------------------------------------------------- writing every format

struct Piece {
    uint64_t offset;
    uint64_t length;
};

class ImageTargetFormatTest : public ScratchTest,
                              public ::testing::WithParamInterface<std::string> {
protected:
    bool raw() const { return GetParam() == "raw"; }
    uint64_t size() const { return raw() ? raw_size : image_size; }
    // A raw target takes any byte range; an image target whole sectors.
    uint64_t odd_offset() const { return raw() ? 3 * MiB + 12345 : 3 * MiB + 12288 + 512; }

    // Writes pieces (data, odd sizes and offsets, the disk's last bytes)
    // from four threads, each on its own worker and so its own connection,
    // then zeroes ranges that held data. Returns what the disk must hold.
    std::vector<unsigned char> write_disk(Destination& target) {
        const uint64_t n = size();
        std::vector<unsigned char> expected(n, 0);
        const std::vector<Piece> pieces{
            {0, MiB},
            {odd_offset(), raw() ? 70000u : 70144u},
            {8 * MiB, 4 * MiB},
            {20 * MiB - 4096, 8192},
            {raw() ? 33 * MiB + 511 : 33 * MiB + 512, raw() ? 1u : 512u},
            {48 * MiB, 2 * MiB},
            {60 * MiB, 3 * MiB},
            {raw() ? n - 5000 : n - 5120, raw() ? 5000u : 5120u},
        };
        for (size_t i = 0; i < pieces.size(); ++i)
            for (uint64_t x = pieces[i].offset; x < pieces[i].offset + pieces[i].length; ++x)
                expected[x] = pattern(x, static_cast<unsigned>(i));
        constexpr unsigned workers = 4;
        std::vector<std::thread> threads;
        std::vector<std::string> errors(workers);
        for (unsigned w = 0; w < workers; ++w) {
            threads.emplace_back([&, w] {
                try {
                    for (size_t i = w; i < pieces.size(); i += workers) {
                        // In chunks, so the threads' requests interleave.
                        const Piece& p = pieces[i];
                        for (uint64_t at = p.offset; at < p.offset + p.length;) {
                            const uint64_t len =
                                std::min<uint64_t>(256 * KiB, p.offset + p.length - at);
                            target.write(w, expected.data() + at, len, at);
                            at += len;
                        }
                    }
                } catch (const std::exception& e) {
                    errors[w] = e.what();
                }
            });
        }
        for (auto& t : threads)
            t.join();
        for (const auto& e : errors)
            EXPECT_EQ(e, "");
        // Zeros over data: whole clusters, and a few bytes inside a piece.
        const std::vector<Piece> zeroed{{48 * MiB + 64 * KiB, MiB},
                                        {odd_offset() + 7680, raw() ? 1000u : 1024u}};
        for (size_t i = 0; i < zeroed.size(); ++i) {
            target.write_zeros(static_cast<unsigned>(i), zeroed[i].offset, zeroed[i].length);
            std::fill_n(expected.begin() + static_cast<ptrdiff_t>(zeroed[i].offset),
                        zeroed[i].length, 0);
        }
        target.sync();
        return expected;
    }

    // The disk as qemu-img reads the file: raw bytes of exactly its size.
    std::string disk_as_qemu_reads_it(const std::string& file) {
        if (GetParam() == "raw")
            return read_file(file); // qemu rounds a raw file's size up to sectors
        const std::string out = path("converted.raw");
        const CommandResult r = run_command(
            {"qemu-img", "convert", "-f", qemu_format_name(GetParam()), "-O", "raw", file, out});
        EXPECT_EQ(r.status, 0) << r.output;
        std::string bytes = read_file(out);
        fs::remove(out);
        return bytes;
    }
};

TEST_P(ImageTargetFormatTest, WrittenDiskReadsBackExactly) {
    if (!raw()) {
        REQUIRE_QEMU_TOOLS();
    }
    const std::string file = path("disk." + GetParam() + ".part");
    std::vector<unsigned char> expected;
    {
        auto target = open_image_target(file, GetParam(), size(), 4, true);
        EXPECT_EQ(target->name(), file);
        EXPECT_EQ(target->granularity() % 4096, 0u);
        expected = write_disk(*target);
    }
    // The qemu-nbd is gone with its socket directory.
    EXPECT_TRUE(tmp_is_empty());

    const std::string bytes = disk_as_qemu_reads_it(file);
    ASSERT_EQ(bytes.size(), size());
    EXPECT_TRUE(same_bytes(reinterpret_cast<const unsigned char*>(bytes.data()), expected.data(),
                           expected.size(), 0));
    EXPECT_NO_THROW(check_image_target(file, GetParam()));

    // Reopened as it is: the same bytes, read through the target.
    auto target = open_image_target(file, GetParam(), size(), 2, false);
    std::vector<unsigned char> buf(4 * MiB);
    for (uint64_t at = 0; at < size(); at += buf.size()) {
        const size_t len = static_cast<size_t>(std::min<uint64_t>(buf.size(), size() - at));
        target->read(static_cast<unsigned>(at / buf.size()) % 2, buf.data(), len, at);
        ASSERT_TRUE(same_bytes(buf.data(), expected.data() + at, len, at));
    }
    // A short read across a written piece's start.
    const uint64_t edge = odd_offset() - 1024;
    target->read(1, buf.data(), 3072, edge);
    EXPECT_TRUE(same_bytes(buf.data(), expected.data() + edge, 3072, edge));
}

TEST_P(ImageTargetFormatTest, NewTargetReadsAsZerosAndReplacesTheOldFile) {
    if (!raw()) {
        REQUIRE_QEMU_TOOLS();
    }
    const std::string file = path("disk.part");
    {
        std::ofstream old(file, std::ios::binary);
        old << std::string(3 * MiB, 'x');
    }
    ::chmod(file.c_str(), 0644);
    auto target = open_image_target(file, GetParam(), size(), 1, true);
    std::vector<unsigned char> buf(MiB, 0xee);
    target->read(0, buf.data(), buf.size(), 2 * MiB);
    EXPECT_EQ(std::count(buf.begin(), buf.end(), 0), static_cast<ptrdiff_t>(buf.size()));
    struct stat st {};
    ASSERT_EQ(::stat(file.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, GetParam() == "raw" ? 0644u : 0600u)
        << "a raw target is truncated in place; an image is made anew, 0600";
}

TEST_P(ImageTargetFormatTest, ReopenRefusesAnotherSize) {
    if (!raw()) {
        REQUIRE_QEMU_TOOLS();
    }
    const std::string file = path("disk.part");
    open_image_target(file, GetParam(), size(), 1, true).reset();
    for (const uint64_t wrong : {size() - 512, size() + 512}) {
        try {
            open_image_target(file, GetParam(), wrong, 1, false);
            ADD_FAILURE() << "a target of " << size() << " bytes opened as " << wrong;
        } catch (const Error& e) {
            const std::string what = e.what();
            const std::string expect =
                GetParam() == "raw" ? file + ": the raw target holds " + std::to_string(size()) +
                                          " bytes, not the disk's " + std::to_string(wrong)
                                    : file + ": the " + GetParam() + " image's virtual size is " +
                                          std::to_string(size()) + " bytes, not the disk's " +
                                          std::to_string(wrong);
            EXPECT_EQ(what, expect);
        }
    }
    EXPECT_TRUE(tmp_is_empty());
}

TEST_P(ImageTargetFormatTest, ReopenRefusesAMissingFile) {
    if (!raw()) {
        REQUIRE_QEMU_TOOLS();
    }
    const std::string file = path("missing.part");
    try {
        open_image_target(file, GetParam(), size(), 1, false);
        ADD_FAILURE() << "a missing target was opened";
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()),
                  file + ": cannot open the target: No such file or directory");
        EXPECT_EQ(e.error_number(), ENOENT);
    }
    EXPECT_FALSE(fs::exists(file));
}

TEST_P(ImageTargetFormatTest, OwnerIsSet) {
    if (!raw()) {
        REQUIRE_QEMU_TOOLS();
    }
    if (::geteuid() != 0)
        GTEST_SKIP() << "needs root to give a file away";
    const std::string file = path("disk.part");
    open_image_target(file, GetParam(), size(), 1, true, 4321, 4322).reset();
    struct stat st {};
    ASSERT_EQ(::stat(file.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 4321u);
    EXPECT_EQ(st.st_gid, 4322u);
    // Reopened, only the group given.
    open_image_target(file, GetParam(), size(), 1, false, -1, 4323).reset();
    ASSERT_EQ(::stat(file.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 4321u);
    EXPECT_EQ(st.st_gid, 4323u);
}

INSTANTIATE_TEST_SUITE_P(ImageTarget, ImageTargetFormatTest,
                         ::testing::Values("raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi"),
                         [](const auto& format) { return format.param; });

// ------------------------------------------------------ single behaviours

using ImageTargetFileTest = ScratchTest;

TEST_F(ImageTargetFileTest, VhdKeepsTheExactSize) {
    REQUIRE_QEMU_TOOLS();
    // Without force_size, qemu would round this up to a CHS geometry
    // (67194880 bytes), making the target larger than the disk.
    const std::string file = path("disk.vhd.part");
    open_image_target(file, "vhd", image_size, 1, true).reset();
    const CommandResult info =
        run_command({"qemu-img", "info", "--output=json", "-f", "vpc", file});
    ASSERT_EQ(info.status, 0) << info.output;
    EXPECT_EQ(nlohmann::json::parse(info.output).at("virtual-size").get<uint64_t>(), image_size);
    EXPECT_NO_THROW(open_image_target(file, "vhd", image_size, 1, false));
}

TEST_F(ImageTargetFileTest, ImageSizeMustBeWholeSectors) {
    REQUIRE_QEMU_TOOLS();
    const std::string file = path("disk.part");
    try {
        open_image_target(file, "qcow2", MiB + 100, 1, true);
        ADD_FAILURE() << "qcow2 of " << MiB + 100 << " bytes was made";
    } catch (const InvalidArgument& e) {
        EXPECT_EQ(std::string(e.what()), file + ": a qcow2 image holds whole 512-byte sectors; " +
                                             std::to_string(MiB + 100) +
                                             " bytes is not a multiple");
    }
    EXPECT_FALSE(fs::exists(file));
}

TEST_F(ImageTargetFileTest, ReopenRefusesAnotherFormat) {
    REQUIRE_QEMU_TOOLS();
    const std::string file = path("disk.part");
    open_image_target(file, "qcow2", image_size, 1, true).reset();
    try {
        open_image_target(file, "vhdx", image_size, 1, false);
        ADD_FAILURE() << "a qcow2 opened as vhdx";
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()), file + ": not a vhdx image: its magic is a qcow2 image's");
    }
    // A plain file is no image at all.
    const std::string raw = path("raw.part");
    open_image_target(raw, "raw", image_size, 1, true).reset();
    try {
        open_image_target(raw, "vhd", image_size, 1, false);
        ADD_FAILURE() << "a raw file opened as vhd";
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()),
                  raw + ": not a vhd image: its magic is none of an image format's");
    }
    EXPECT_TRUE(tmp_is_empty());
}

TEST_F(ImageTargetFileTest, SecondWriterGetsQemuNbdsOwnMessage) {
    REQUIRE_QEMU_TOOLS();
    const std::string file = path("disk.part");
    auto first = open_image_target(file, "qcow2", image_size, 1, true);
    try {
        open_image_target(file, "qcow2", image_size, 1, false);
        ADD_FAILURE() << "a second qemu-nbd served an image being written";
    } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_EQ(
            what.rfind(file + ": qemu-nbd could not serve it (qemu-nbd exited with status 1: ", 0),
            0u)
            << what;
        EXPECT_NE(what.find("Failed to get \"write\" lock"), std::string::npos) << what;
    }
    // The first goes on working.
    const std::vector<unsigned char> data(4096, 0x5a);
    first->write(0, data.data(), data.size(), 0);
    first->sync();
}

// The qemu-nbd serving `image`, found by its command line; -1 if none.
pid_t qemu_nbd_serving(const std::string& image) {
    for (const auto& entry : fs::directory_iterator("/proc")) {
        const std::string name = entry.path().filename();
        if (name.find_first_not_of("0123456789") != std::string::npos)
            continue;
        std::string cmdline = read_file(entry.path() / "cmdline");
        std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
        if (cmdline.rfind("qemu-nbd ", 0) == 0 &&
            cmdline.find(" " + image + " ") != std::string::npos)
            return std::stoi(name);
    }
    return -1;
}

TEST_F(ImageTargetFileTest, QemuNbdDeathIsReportedWithTheFile) {
    REQUIRE_QEMU_TOOLS();
    const std::string file = path("disk.part");
    auto target = open_image_target(file, "qcow2", image_size, 1, true);
    const pid_t server = qemu_nbd_serving(file);
    ASSERT_GT(server, 0);
    ASSERT_EQ(::kill(server, SIGKILL), 0);
    const std::vector<unsigned char> data(4096, 1);
    try {
        // The first request may still find the socket open.
        for (int i = 0; i < 100; ++i) {
            target->write(0, data.data(), data.size(), 0);
            std::this_thread::sleep_for(10ms);
        }
        ADD_FAILURE() << "writes went on after qemu-nbd was killed";
    } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_EQ(what.rfind(file + ": NBD destination ", 0), 0u) << what;
        EXPECT_NE(what.find(" (qemu-nbd exited with signal 9: no message)"), std::string::npos)
            << what;
    }
    target.reset(); // nothing left to stop, nothing to hang on
    EXPECT_TRUE(tmp_is_empty());
}

TEST_F(ImageTargetFileTest, RelativePathWithAColonIsAFile) {
    REQUIRE_QEMU_TOOLS();
    // qemu would read "pc1:disk.part" as protocol "pc1".
    const fs::path cwd = fs::current_path();
    fs::current_path(dir_);
    const std::string file = "pc1:disk.part";
    std::string error;
    try {
        {
            auto target = open_image_target(file, "vmdk", image_size, 1, true);
            const std::vector<unsigned char> data(4096, 0x31);
            target->write(0, data.data(), data.size(), 8192);
        }
        check_image_target(file, "vmdk");
        auto target = open_image_target(file, "vmdk", image_size, 1, false);
        std::vector<unsigned char> buf(4096);
        target->read(0, buf.data(), buf.size(), 8192);
        EXPECT_EQ(std::count(buf.begin(), buf.end(), 0x31), 4096);
    } catch (const std::exception& e) {
        error = e.what();
    }
    fs::current_path(cwd);
    EXPECT_EQ(error, "");
    EXPECT_TRUE(fs::exists(path(file)));
}

TEST_F(ImageTargetFileTest, WrittenZerosDeallocateInQcow2) {
    REQUIRE_QEMU_TOOLS();
    const std::string file = path("disk.part");
    {
        auto target = open_image_target(file, "qcow2", image_size, 1, true);
        const std::vector<unsigned char> data(4 * MiB, 0x77);
        target->write(0, data.data(), data.size(), 4 * MiB);
        target->write_zeros(0, 5 * MiB, 2 * MiB);
        target->sync();
    }
    const CommandResult map =
        run_command({"qemu-img", "map", "--output=json", "-f", "qcow2", file});
    ASSERT_EQ(map.status, 0) << map.output;
    // Every extent overlapping [5 MiB, 7 MiB) reads as zeros without data;
    // the data on either side is there.
    uint64_t zero_bytes = 0;
    uint64_t data_bytes = 0;
    for (const auto& e : nlohmann::json::parse(map.output)) {
        const uint64_t start = e.at("start"), length = e.at("length");
        const uint64_t lo = std::max<uint64_t>(start, 5 * MiB);
        const uint64_t hi = std::min<uint64_t>(start + length, 7 * MiB);
        if (lo < hi) {
            EXPECT_FALSE(e.at("data").get<bool>()) << e.dump();
            EXPECT_TRUE(e.at("zero").get<bool>()) << e.dump();
            zero_bytes += hi - lo;
        }
        if (e.at("data").get<bool>())
            data_bytes += length;
    }
    EXPECT_EQ(zero_bytes, 2 * MiB);
    EXPECT_EQ(data_bytes, 2 * MiB);
}

TEST_F(ImageTargetFileTest, WrittenZerosPunchARawTarget) {
    const std::string file = path("disk.part");
    auto target = open_image_target(file, "raw", raw_size, 1, true);
    const std::vector<unsigned char> data(4 * MiB, 0x77);
    target->write(0, data.data(), data.size(), 4 * MiB);
    target->write_zeros(0, 5 * MiB, 2 * MiB);
    target->sync();
    const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    const off_t hole = ::lseek(fd, 4 * MiB, SEEK_HOLE);
    const off_t data_again = ::lseek(fd, 5 * MiB, SEEK_DATA);
    ::close(fd);
    if (hole == 8 * MiB && data_again == static_cast<off_t>(8 * MiB))
        GTEST_SKIP() << "this file system cannot punch holes; zeros were written as data";
    EXPECT_EQ(hole, static_cast<off_t>(5 * MiB));
    EXPECT_EQ(data_again, static_cast<off_t>(7 * MiB));
}

TEST_F(ImageTargetFileTest, ImageTargetRefusesPartialSectors) {
    REQUIRE_QEMU_TOOLS();
    const std::string file = path("disk.part");
    auto target = open_image_target(file, "qcow2", image_size, 1, true);
    std::vector<unsigned char> buf(4096, 1);
    const auto refusal = [&](const std::string& what, uint64_t length, uint64_t offset) {
        return file + ": " + what + " of " + std::to_string(length) + " bytes at " + hex(offset) +
               ": an image target is written and read in whole 512-byte sectors";
    };
    try {
        target->write(0, buf.data(), 100, 0);
        ADD_FAILURE() << "a write of 100 bytes was taken";
    } catch (const InvalidArgument& e) {
        EXPECT_EQ(std::string(e.what()), refusal("write", 100, 0));
    }
    try {
        target->write_zeros(0, 256, 512);
        ADD_FAILURE() << "write-zeroes at 256 was taken";
    } catch (const InvalidArgument& e) {
        EXPECT_EQ(std::string(e.what()), refusal("write-zeroes", 512, 256));
    }
    try {
        target->read(0, buf.data(), 512, 4097);
        ADD_FAILURE() << "a read at 4097 was taken";
    } catch (const InvalidArgument& e) {
        EXPECT_EQ(std::string(e.what()), refusal("read", 512, 4097));
    }
    // Nothing was written.
    target->read(0, buf.data(), 4096, 0);
    EXPECT_EQ(std::count(buf.begin(), buf.end(), 0), 4096);
}

TEST_F(ImageTargetFileTest, RawTargetRefusesWritesPastItsEnd) {
    const std::string file = path("disk.part");
    auto target = open_image_target(file, "raw", raw_size, 1, true);
    const std::vector<unsigned char> data(4096, 1);
    EXPECT_THROW(target->write(0, data.data(), data.size(), raw_size - 100), Error);
    struct stat st {};
    ASSERT_EQ(::stat(file.c_str(), &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), raw_size);
}

TEST_F(ImageTargetFileTest, CheckReportsCorruption) {
    REQUIRE_QEMU_TOOLS();
    const std::string file = path("disk.part");
    {
        auto target = open_image_target(file, "qcow2", image_size, 1, true);
        const std::vector<unsigned char> data(MiB, 0x42);
        target->write(0, data.data(), data.size(), 0);
    }
    EXPECT_NO_THROW(check_image_target(file, "qcow2"));
    // Zero the first refcount block: every cluster then has refcount 0
    // while the tables reference it (qcow2 spec: header bytes 48..55 hold
    // the refcount table's offset, big-endian).
    const int fd = ::open(file.c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    unsigned char be[8];
    ASSERT_EQ(::pread(fd, be, 8, 48), 8);
    uint64_t table = 0;
    for (unsigned char b : be)
        table = table << 8 | b;
    ASSERT_EQ(::pread(fd, be, 8, static_cast<off_t>(table)), 8);
    uint64_t block = 0;
    for (unsigned char b : be)
        block = block << 8 | b;
    ASSERT_NE(block, 0u);
    const std::vector<char> zeros(512, 0);
    ASSERT_EQ(::pwrite(fd, zeros.data(), zeros.size(), static_cast<off_t>(block)), 512);
    ::close(fd);
    try {
        check_image_target(file, "qcow2");
        ADD_FAILURE() << "a corrupt qcow2 passed the check";
    } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_EQ(what.rfind("qemu-img check of " + file + ": ", 0), 0u) << what;
        EXPECT_NE(what.find(" errors were found on the image (e.g. ERROR cluster 0 refcount=0 "
                            "reference=1)"),
                  std::string::npos)
            << what;
    }
}

TEST_F(ImageTargetFileTest, CheckSkipsRawAndVhd) {
    // Not images qemu-img could check: these would fail if it were run.
    const std::string file = path("junk");
    {
        std::ofstream out(file, std::ios::binary);
        out << std::string(4096, 'j');
    }
    EXPECT_NO_THROW(check_image_target(file, "raw"));
    EXPECT_NO_THROW(check_image_target(file, "vhd"));
    if (have_tool("qemu-img")) {
        EXPECT_THROW(check_image_target(file, "vdi"), Error);
    }
}

} // namespace
} // namespace p2vfs
