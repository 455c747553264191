// Change detection for incremental syncs, against the real thing: dirty
// bitmaps as qemu-nbd serves them from qcow2 images that qemu-io wrote,
// and reflink copies on an xfs (reflink=1) loop mount written with dd. The
// expected ranges come from what the tests wrote, rounded to the
// granularity each one has (a qcow2 bitmap's 64 KiB, xfs's 4 KiB block).
#include "common/error.h"
#include "block/local_source.h"
#include "jobs/reflink_generations.h"
#include "jobs/sync.h"
#include "nbd-bridge/dirty_bitmap.h"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <fstream>
#include <gtest/gtest.h>
#include <iterator>
#include <libnbd.h>
#include <linux/magic.h>
#include <random>
#include <spawn.h>
#include <string>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace p2vfs {
namespace {

using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;
constexpr uint64_t GiB = 1024 * MiB;

// Runs a shell command; returns its exit status and, in `output`, what it
// printed (stdout and stderr), for failure messages.
int run(const std::string& command, std::string* output = nullptr) {
    FILE* p = ::popen((command + " 2>&1").c_str(), "r");
    if (!p)
        return -1;
    std::string text;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0)
        text.append(buf, n);
    const int status = ::pclose(p);
    if (output)
        *output = text;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool have(const std::string& tool) {
    return run("command -v " + tool) == 0;
}

// Asserts a command succeeds, showing what it said if it does not.
#define RUN_OK(command)                                                                            \
    do {                                                                                           \
        std::string out_;                                                                          \
        ASSERT_EQ(run(command, &out_), 0) << (command) << ":\n" << out_;                           \
    } while (0)

std::string make_scratch_dir(const char* prefix) {
    std::string tmpl = std::string("/tmp/") + prefix + "-XXXXXX";
    if (!::mkdtemp(tmpl.data()))
        return {};
    return tmpl;
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0;
}

// ---------------------------------------------------------------- dirty bitmaps

constexpr uint64_t image_size = 64 * MiB;

// A 64 MiB qcow2 image written at 0-1 MiB, then given the persistent
// bitmap b0 (granularity 64 KiB), then written where written_since_b0 says.
class DirtyBitmapTest : public ::testing::Test {
protected:
    void SetUp() override {
        for (const char* tool : {"qemu-img", "qemu-io", "qemu-nbd"})
            if (!have(tool))
                GTEST_SKIP() << tool << " is not installed (Debian: qemu-utils)";
        dir_ = make_scratch_dir("p2vfs-unit-bitmap");
        ASSERT_FALSE(dir_.empty());
        image_ = dir_ + "/x.qcow2";
        RUN_OK("qemu-img create -f qcow2 " + image_ + " 64M");
        RUN_OK(io("write -P 1 0 1M"));
        RUN_OK("qemu-img bitmap --add " + image_ + " b0");
        RUN_OK(io("write -P 2 2M 128K"));                              // two granules exactly
        RUN_OK(io("write -P 2 " + num(5 * MiB + 4 * KiB) + " 4K"));    // one granule
        RUN_OK(io("write -P 2 " + num(8 * MiB - 4 * KiB) + " 8K"));    // across two
        RUN_OK(io("write -P 2 " + num(image_size - 4 * KiB) + " 4K")); // the last
    }

    void TearDown() override {
        stop_server();
        if (!dir_.empty())
            run("rm -rf " + dir_);
    }

    static std::string num(uint64_t n) { return std::to_string(n); }

    std::string io(const std::string& command) {
        return "qemu-io -f qcow2 -c '" + command + "' " + image_;
    }

    // Starts qemu-nbd on the image with `args` before it; returns its URI
    // once it answers. Its socket is there before it is ready: it binds
    // and listens first, then opens the image, and a SIGTERM before it is
    // serving is lost (qemu-nbd 7.2 sets its state to RUNNING afterwards).
    std::string serve(std::vector<std::string> args) {
        const std::string sock = dir_ + "/nbd.sock";
        std::vector<std::string> argv{"qemu-nbd", "-f", "qcow2", "-k", sock, "--persistent"};
        argv.insert(argv.end(), args.begin(), args.end());
        argv.push_back(image_);
        std::vector<char*> cargv;
        for (auto& a : argv)
            cargv.push_back(a.data());
        cargv.push_back(nullptr);
        EXPECT_EQ(::posix_spawnp(&server_, "qemu-nbd", nullptr, nullptr, cargv.data(), environ), 0);
        const std::string uri = "nbd+unix:///?socket=" + sock;
        bool ready = false;
        for (int i = 0; i < 500 && !ready; ++i) {
            if (exists(sock)) {
                nbd_handle* h = nbd_create();
                ready = h && nbd_connect_uri(h, uri.c_str()) == 0;
                if (h)
                    nbd_close(h);
            }
            if (!ready)
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        EXPECT_TRUE(ready) << "qemu-nbd did not answer on " << sock;
        return uri;
    }

    // SIGTERM, so that qemu-nbd writes its bitmaps back; SIGKILL if it has
    // not gone after 10 s, so a test never hangs here.
    void stop_server() {
        if (server_ <= 0)
            return;
        ::kill(server_, SIGTERM);
        for (int i = 0; i < 1000; ++i) {
            if (::waitpid(server_, nullptr, WNOHANG) == server_) {
                server_ = -1;
                return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        ADD_FAILURE() << "qemu-nbd ignored SIGTERM for 10 s: killed";
        ::kill(server_, SIGKILL);
        ::waitpid(server_, nullptr, 0);
        server_ = -1;
    }

    std::string error_of(const std::string& uri, const std::string& bitmap, uint64_t size) {
        try {
            nbd_dirty_ranges(uri, bitmap, size);
        } catch (const Error& e) {
            return e.what();
        }
        return "(no error)";
    }

    const Ranges written_since_b0{{2 * MiB, 128 * KiB},
                                  {5 * MiB, 64 * KiB},
                                  {8 * MiB - 64 * KiB, 128 * KiB},
                                  {image_size - 64 * KiB, 64 * KiB}};
    std::string dir_, image_;
    pid_t server_ = -1;
};

TEST_F(DirtyBitmapTest, TheRangesAreTheGranulesWrittenSinceTheBitmapWasAdded) {
    const std::string uri = serve({"--read-only", "-B", "b0"});
    EXPECT_EQ(nbd_dirty_ranges(uri, "b0", image_size), written_since_b0);
}

TEST_F(DirtyBitmapTest, EachBitmapOfAnExportIsReadByItsName) {
    RUN_OK("qemu-img bitmap --add " + image_ + " b1");
    RUN_OK(io("write -P 3 20M 64K"));
    const std::string uri = serve({"--read-only", "-B", "b0", "-B", "b1"});
    Ranges b0 = written_since_b0;
    b0.insert(b0.begin() + 3, {20 * MiB, 64 * KiB});
    EXPECT_EQ(nbd_dirty_ranges(uri, "b0", image_size), b0);
    EXPECT_EQ(nbd_dirty_ranges(uri, "b1", image_size), (Ranges{{20 * MiB, 64 * KiB}}));
}

TEST_F(DirtyBitmapTest, ABitmapNotOfferedIsNamedWithTheOnesThatAre) {
    RUN_OK("qemu-img bitmap --add " + image_ + " b1");
    const std::string uri = serve({"--read-only", "-B", "b0", "-B", "b1"});
    const std::string e = error_of(uri, "b2", image_size);
    EXPECT_NE(e.find(uri), std::string::npos) << e;
    EXPECT_NE(e.find("does not offer qemu:dirty-bitmap:b2; the bitmaps it offers: b0, b1"),
              std::string::npos)
        << e;
}

TEST_F(DirtyBitmapTest, AnExportWithoutBitmapsSaysItOffersNone) {
    const std::string uri = serve({"--read-only"});
    const std::string e = error_of(uri, "b0", image_size);
    EXPECT_NE(e.find("does not offer qemu:dirty-bitmap:b0; the bitmaps it offers: none"),
              std::string::npos)
        << e;
}

TEST_F(DirtyBitmapTest, AnExportOfAnotherSizeIsRefusedNamingBothSizes) {
    const std::string uri = serve({"--read-only", "-B", "b0"});
    const std::string e = error_of(uri, "b0", 32 * MiB);
    EXPECT_NE(e.find(uri), std::string::npos) << e;
    EXPECT_NE(e.find("the export is 67108864 bytes, not 33554432"), std::string::npos) << e;
}

TEST_F(DirtyBitmapTest, AServerThatIsNotThereIsNamed) {
    const std::string uri = "nbd+unix:///?socket=" + dir_ + "/nobody.sock";
    const std::string e = error_of(uri, "b0", image_size);
    EXPECT_EQ(e.rfind("NBD server " + uri + ": ", 0), 0u) << e;
    EXPECT_NE(e.find("No such file or directory"), std::string::npos) << e;
}

// How a sync job's tests change a live source: qemu-nbd serves the image
// writable with the bitmap, another client writes through it, and the next
// connection sees the write in the bitmap (qemu-nbd keeps an enabled bitmap
// recording while it exports it).
TEST_F(DirtyBitmapTest, WritesThroughAWritableExportShowOnTheNextConnection) {
    const std::string uri = serve({"-B", "b0"});
    ASSERT_EQ(nbd_dirty_ranges(uri, "b0", image_size), written_since_b0);
    RUN_OK("qemu-io -f raw -c 'write -P 4 " + num(30 * MiB + 60 * KiB) + " 8K' '" + uri + "'");
    Ranges expected = written_since_b0;
    expected.insert(expected.begin() + 3, {30 * MiB, 128 * KiB});
    EXPECT_EQ(nbd_dirty_ranges(uri, "b0", image_size), expected);
    // The bitmap is persistent: qemu-nbd writes it back to the image when
    // it stops, and a read-only export of the image shows the write too.
    stop_server();
    const std::string again = serve({"--read-only", "-B", "b0"});
    EXPECT_EQ(nbd_dirty_ranges(again, "b0", image_size), expected);
}

// Block status is asked in pieces of at most 1 GiB: a dirty run across a
// piece's end comes back as one range.
TEST_F(DirtyBitmapTest, ExportsOverOneGibAreReadInPiecesThatJoin) {
    image_ = dir_ + "/big.qcow2";
    RUN_OK("qemu-img create -f qcow2 " + image_ + " 3G");
    RUN_OK("qemu-img bitmap --add " + image_ + " b0");
    RUN_OK(io("write -P 2 " + num(GiB - 4 * KiB) + " 8K"));
    RUN_OK(io("write -P 2 " + num(2 * GiB + 64 * KiB) + " 64K"));
    RUN_OK(io("write -P 2 " + num(3 * GiB - 4 * KiB) + " 4K"));
    const std::string uri = serve({"--read-only", "-B", "b0"});
    EXPECT_EQ(nbd_dirty_ranges(uri, "b0", 3 * GiB), (Ranges{{GiB - 64 * KiB, 128 * KiB},
                                                            {2 * GiB + 64 * KiB, 64 * KiB},
                                                            {3 * GiB - 64 * KiB, 64 * KiB}}));
}

// ---------------------------------------------------------------- reflinks, any file system

std::string random_bytes(size_t n, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::string s(n, '\0');
    for (char& c : s)
        c = static_cast<char>(rng());
    return s;
}

// Writes `bytes` at `offset` of `path` (created if missing, never truncated).
void write_at(const std::string& path, uint64_t offset, const std::string& bytes) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_GE(fd, 0) << path;
    ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)),
              static_cast<ssize_t>(bytes.size()));
    ::close(fd);
}

std::string file_type(const std::string& path) {
    struct statfs sf {};
    if (::statfs(path.c_str(), &sf) != 0)
        return "?";
    switch (sf.f_type) {
    case EXT4_SUPER_MAGIC:
        return "ext4";
    case XFS_SUPER_MAGIC:
        return "xfs";
    case BTRFS_SUPER_MAGIC:
        return "btrfs";
    case TMPFS_MAGIC:
        return "tmpfs";
    default:
        return "other";
    }
}

class ReflinkScratchTest : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = make_scratch_dir("p2vfs-unit-reflink");
        ASSERT_FALSE(dir_.empty());
    }
    void TearDown() override {
        if (!dir_.empty())
            run("rm -rf " + dir_);
    }
    std::string dir_;
};

// Two files that share no blocks differ wherever either has data; where
// both have holes they do not.
TEST_F(ReflinkScratchTest, FilesSharingNoBlocksDifferWhereverEitherHasData) {
    const std::string a = dir_ + "/a", b = dir_ + "/b";
    write_at(a, 0, random_bytes(64 * KiB, 1));
    write_at(a, 1 * MiB, random_bytes(64 * KiB, 2));
    ASSERT_EQ(::truncate(a.c_str(), 4 * MiB), 0);
    write_at(b, 1 * MiB, random_bytes(64 * KiB, 2)); // same bytes, other blocks
    write_at(b, 2 * MiB, random_bytes(4 * KiB, 3));
    ASSERT_EQ(::truncate(b.c_str(), 4 * MiB), 0);
    EXPECT_EQ(reflink_changed_ranges(a, b, 4 * MiB),
              (Ranges{{0, 64 * KiB}, {1 * MiB, 64 * KiB}, {2 * MiB, 4 * KiB}}));
    // Clipped to the size asked about.
    EXPECT_EQ(reflink_changed_ranges(a, b, 1 * MiB + 4 * KiB),
              (Ranges{{0, 64 * KiB}, {1 * MiB, 4 * KiB}}));
    EXPECT_EQ(reflink_changed_ranges(a, a, 4 * MiB), Ranges{});
}

// Preallocated blocks read as zeros, as a hole does, but FIEMAP cannot say
// they were never written since the older copy: a change, conservatively.
TEST_F(ReflinkScratchTest, UnwrittenAgainstAHoleIsAChange) {
    if (!have("fallocate"))
        GTEST_SKIP() << "fallocate is not installed (util-linux)";
    const std::string a = dir_ + "/a", b = dir_ + "/b";
    write_at(a, 0, "");
    ASSERT_EQ(::truncate(a.c_str(), 4 * MiB), 0);
    RUN_OK("truncate -s 4M " + b + " && fallocate -o 1MiB -l 64KiB " + b);
    EXPECT_EQ(reflink_changed_ranges(a, b, 4 * MiB), (Ranges{{1 * MiB, 64 * KiB}}));
    EXPECT_EQ(reflink_changed_ranges(b, b, 4 * MiB), Ranges{});
}

TEST_F(ReflinkScratchTest, AMissingFileIsNamed) {
    write_at(dir_ + "/a", 0, "x");
    try {
        reflink_changed_ranges(dir_ + "/a", dir_ + "/gone", 4096);
        FAIL() << "no error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(dir_ + "/gone: "), std::string::npos) << e.what();
        EXPECT_EQ(e.error_number(), ENOENT);
    }
}

// copy.tmp is made with O_EXCL: a leftover (or a take running at the same
// time) is neither overwritten nor removed.
TEST_F(ReflinkScratchTest, AnExistingTemporaryIsLeftAloneAndNamed) {
    const std::string origin = dir_ + "/origin", copy = dir_ + "/g1";
    write_at(origin, 0, "data");
    write_at(copy + ".tmp", 0, "left");
    try {
        take_reflink_copy(origin, copy);
        FAIL() << "no error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("cannot create " + copy +
                                             ".tmp: File exists (left by an interrupted copy?"),
                  std::string::npos)
            << e.what();
        EXPECT_EQ(e.error_number(), EEXIST);
    }
    std::ifstream in(copy + ".tmp");
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "left");
    EXPECT_FALSE(exists(copy));
}

TEST_F(ReflinkScratchTest, CopiesOnAFileSystemWithoutReflinksAreRefusedNamingIt) {
    const std::string type = file_type(dir_);
    if (type != "ext4" && type != "tmpfs")
        GTEST_SKIP() << "/tmp is " << type << " here, which may support reflinks";
    const std::string origin = dir_ + "/origin", copy = dir_ + "/g1";
    write_at(origin, 0, random_bytes(64 * KiB, 1));
    try {
        take_reflink_copy(origin, copy);
        FAIL() << "no error";
    } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("reflink copy of " + origin + " to " + copy), std::string::npos)
            << what;
        EXPECT_NE(what.find("(" + type + ") does not support reflinks"), std::string::npos) << what;
        EXPECT_EQ(e.error_number(), EOPNOTSUPP);
    }
    EXPECT_FALSE(exists(copy));
    EXPECT_FALSE(exists(copy + ".tmp")) << "the temporary was left behind";
}

// ---------------------------------------------------------------- reflinks on xfs

// A 300 MiB xfs made with reflink=1 on a loop device, mounted in a scratch
// directory for the test and taken down after it, whatever happened.
class ReflinkOnXfsTest : public ReflinkScratchTest {
protected:
    void SetUp() override {
        if (::geteuid() != 0)
            GTEST_SKIP() << "needs root (losetup, mount)";
        for (const char* tool : {"mkfs.xfs", "losetup", "mount", "umount", "dd"})
            if (!have(tool))
                GTEST_SKIP() << tool << " is not installed";
        ReflinkScratchTest::SetUp();
        const std::string image = dir_ + "/fs.img";
        mnt_ = dir_ + "/mnt";
        ASSERT_EQ(::mkdir(mnt_.c_str(), 0700), 0);
        RUN_OK("truncate -s 300M " + image);
        RUN_OK("mkfs.xfs -q -m reflink=1 " + image);
        std::string out;
        if (run("losetup -f --show " + image, &out) != 0)
            GTEST_SKIP() << "no loop device: " << out;
        loop_ = out.substr(0, out.find('\n'));
        if (run("mount " + loop_ + " " + mnt_, &out) != 0)
            GTEST_SKIP() << "cannot mount xfs on " << loop_ << ": " << out;
        mounted_ = true;
        origin_ = mnt_ + "/origin";
    }

    void TearDown() override {
        if (mounted_ && run("umount " + mnt_) != 0)
            run("umount -l " + mnt_);
        if (!loop_.empty())
            run("losetup -d " + loop_);
        ReflinkScratchTest::TearDown();
    }

    // dd over the origin in place, as a VM writing its disk would.
    // Whole 4 KiB blocks are written as one (oflag=direct needs them).
    void dd_write(uint64_t offset, uint64_t length, const std::string& flags = "") {
        const uint64_t bs = offset % (4 * KiB) == 0 && length % (4 * KiB) == 0 ? 4 * KiB : 1;
        RUN_OK("dd if=/dev/urandom of=" + origin_ + " bs=" + std::to_string(bs) +
               " count=" + std::to_string(length / bs) + " seek=" + std::to_string(offset / bs) +
               " conv=notrunc status=none " + flags);
    }

    std::string mnt_, loop_, origin_;
    bool mounted_ = false;
};

TEST_F(ReflinkOnXfsTest, CopiesOfAnUnchangedOriginDoNotDiffer) {
    write_at(origin_, 0, random_bytes(8 * MiB, 1));
    take_reflink_copy(origin_, mnt_ + "/g1");
    take_reflink_copy(origin_, mnt_ + "/g2");
    EXPECT_EQ(reflink_changed_ranges(mnt_ + "/g1", mnt_ + "/g2", 8 * MiB), Ranges{});
    EXPECT_EQ(reflink_changed_ranges(origin_, mnt_ + "/g2", 8 * MiB), Ranges{});
    struct stat st {};
    ASSERT_EQ(::stat((mnt_ + "/g1").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0400u);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), 8 * MiB);
    EXPECT_FALSE(exists(mnt_ + "/g1.tmp"));
    RUN_OK("cmp " + origin_ + " " + mnt_ + "/g1");
}

// xfs copies on write in file system blocks (4 KiB): the changed ranges are
// the written bytes rounded out to 4 KiB, exactly.
TEST_F(ReflinkOnXfsTest, WritesToTheOriginAreTheChangedBlocks) {
    write_at(origin_, 0, random_bytes(8 * MiB, 1));
    take_reflink_copy(origin_, mnt_ + "/g1");
    dd_write(1 * MiB, 4 * KiB);
    dd_write(3 * MiB + 4 * KiB, 4 * KiB, "oflag=direct");
    dd_write(6 * MiB + 100, 4 * KiB); // unaligned: two blocks
    dd_write(8 * MiB - 1, 1);         // the last byte
    take_reflink_copy(origin_, mnt_ + "/g2");
    EXPECT_EQ(reflink_changed_ranges(mnt_ + "/g1", mnt_ + "/g2", 8 * MiB),
              (Ranges{{1 * MiB, 4 * KiB},
                      {3 * MiB + 4 * KiB, 4 * KiB},
                      {6 * MiB, 8 * KiB},
                      {8 * MiB - 4 * KiB, 4 * KiB}}));
    // The next generation: only what changed since g2, even where a block
    // was written again.
    dd_write(1 * MiB + 4 * KiB, 4 * KiB);
    dd_write(1 * MiB, 4 * KiB);
    take_reflink_copy(origin_, mnt_ + "/g3");
    EXPECT_EQ(reflink_changed_ranges(mnt_ + "/g2", mnt_ + "/g3", 8 * MiB),
              (Ranges{{1 * MiB, 8 * KiB}}));
}

// A copy-on-write extent size hint makes xfs reserve 1 MiB around each
// write, yet only the written blocks move.
TEST_F(ReflinkOnXfsTest, ACowExtentSizeHintDoesNotWidenTheChanges) {
    if (!have("xfs_io"))
        GTEST_SKIP() << "xfs_io is not installed (xfsprogs)";
    RUN_OK("touch " + origin_ + " && xfs_io -c 'cowextsize 1m' " + origin_);
    write_at(origin_, 0, random_bytes(8 * MiB, 1));
    take_reflink_copy(origin_, mnt_ + "/g1");
    dd_write(2 * MiB + 12 * KiB, 4 * KiB);
    dd_write(5 * MiB + 100, 200);
    take_reflink_copy(origin_, mnt_ + "/g2");
    EXPECT_EQ(reflink_changed_ranges(mnt_ + "/g1", mnt_ + "/g2", 8 * MiB),
              (Ranges{{2 * MiB + 12 * KiB, 4 * KiB}, {5 * MiB, 4 * KiB}}));
}

// New data in a hole, a punched hole and growth are changes; the hole both
// copies have is not. Nor is preallocation: xfs clones an unwritten extent
// as a hole (both read as zeros), so the copies agree there.
TEST_F(ReflinkOnXfsTest, HolesFilledPunchedAndGrownAreChanges) {
    write_at(origin_, 0, random_bytes(2 * MiB, 1));
    ASSERT_EQ(::truncate(origin_.c_str(), 4 * MiB), 0);
    take_reflink_copy(origin_, mnt_ + "/g1");
    dd_write(3 * MiB, 64 * KiB);
    RUN_OK("fallocate -p -o " + std::to_string(512 * KiB) + " -l 64KiB " + origin_);
    RUN_OK("fallocate -o " + std::to_string(3 * MiB + 512 * KiB) + " -l 128KiB " + origin_);
    write_at(origin_, 5 * MiB, random_bytes(1 * MiB, 2)); // grows to 6 MiB
    take_reflink_copy(origin_, mnt_ + "/g2");
    EXPECT_EQ(reflink_changed_ranges(mnt_ + "/g1", mnt_ + "/g2", 6 * MiB),
              (Ranges{{512 * KiB, 64 * KiB}, {3 * MiB, 64 * KiB}, {5 * MiB, 1 * MiB}}));
    RUN_OK("cmp -n " + std::to_string(6 * MiB) + " " + origin_ + " " + mnt_ + "/g2");
}

TEST_F(ReflinkOnXfsTest, ACopyOnAnotherFileSystemIsRefusedNamingBoth) {
    write_at(origin_, 0, random_bytes(64 * KiB, 1));
    const std::string copy = dir_ + "/g1"; // beside the image, on /tmp's file system
    try {
        take_reflink_copy(origin_, copy);
        FAIL() << "no error";
    } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("reflinks cannot cross file systems: the origin is on " + mnt_ +
                            " (xfs), the copy on "),
                  std::string::npos)
            << what;
        EXPECT_EQ(e.error_number(), EXDEV);
    }
    EXPECT_FALSE(exists(copy));
    EXPECT_FALSE(exists(copy + ".tmp"));
}

} // namespace
} // namespace p2vfs

namespace p2vfs {
namespace {

// A sync job with reflink detection (fsd/jobs/sync.h) over an origin on xfs:
// each sync reads only the blocks whose extents moved since the last copy.
TEST_F(ReflinkOnXfsTest, ASyncJobReadsOnlyTheBlocksTheCopiesSayChanged) {
    constexpr uint64_t size = 8 * MiB, block = 64 * KiB;
    write_at(origin_, 0, random_bytes(size, 7));
    SyncHooks hooks;
    const std::string origin = origin_;
    hooks.open_source = [origin] { return std::make_shared<LocalSource>(origin); };
    hooks.source_spec = origin_;
    hooks.source_size = size;
    SyncOptions o;
    o.format = "raw";
    o.block_size = block;
    o.detection = "reflink";
    o.checkpoint_seconds = 0.05;
    const std::string target = dir_ + "/target.img";
    SyncJob job(dir_ + "/job", target, hooks, o);
    auto wait_for = [&](uint64_t generation) {
        for (int i = 0; i < 3000; ++i) {
            const JobProgress p = job.progress();
            if (p.state == JobState::Failed)
                ADD_FAILURE() << p.error;
            if (p.state != JobState::Running || (p.generation >= generation && p.phase == "waiting"))
                return p;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        ADD_FAILURE() << "no generation " << generation;
        return job.progress();
    };
    job.start();
    JobProgress p = wait_for(1);
    EXPECT_EQ(p.detection, "reflink");
    RUN_OK("cmp " + origin_ + " " + target + ".part");
    const std::string copy1 = mnt_ + "/.origin.p2vfs-sync-job.1";
    EXPECT_TRUE(exists(copy1));

    dd_write(100 * KiB, 4 * KiB);            // block 1
    dd_write(3 * MiB + 60 * KiB, 8 * KiB);   // blocks 48 and 49
    job.request_sync();
    p = wait_for(2);
    EXPECT_EQ(p.generation, 2u);
    EXPECT_EQ(p.read_bytes, 3 * block);
    EXPECT_EQ(p.changed_bytes, 3 * block);
    RUN_OK("cmp " + origin_ + " " + target + ".part");
    EXPECT_FALSE(exists(copy1)); // the older generation's copy is gone
    EXPECT_TRUE(exists(mnt_ + "/.origin.p2vfs-sync-job.2"));
    job.cancel();
    EXPECT_FALSE(exists(mnt_ + "/.origin.p2vfs-sync-job.2"));
    EXPECT_FALSE(exists(target + ".part"));
}

} // namespace
} // namespace p2vfs
