#include "block/checked_device.h"
#include "block/local_source.h"
#include "common/error.h"

#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace p2vfs {
namespace {

class LocalSourceTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/p2vfs-unit-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }

    std::string make_file(const std::string& name, uint64_t size,
                          const std::vector<std::pair<uint64_t, std::string>>& writes) {
        const std::string path = dir_ + "/" + name;
        const int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
        EXPECT_GE(fd, 0);
        EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
        for (const auto& [off, bytes] : writes)
            EXPECT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(off)),
                      static_cast<ssize_t>(bytes.size()));
        ::close(fd);
        return path;
    }

    std::string error_of(const std::string& path) {
        try {
            LocalSource s(path);
        } catch (const Error& e) {
            return e.what();
        }
        return "(no error)";
    }

    std::string dir_;
};

TEST_F(LocalSourceTest, ReadsTheFileBytes) {
    const auto path = make_file("a.img", 8192, {{4000, "hello"}});
    LocalSource s(path);
    EXPECT_EQ(s.size(), 8192u);
    char buf[5];
    s.read(buf, 5, 4000);
    EXPECT_EQ(std::string(buf, 5), "hello");
}

TEST_F(LocalSourceTest, HolesAndDataComeFromSeekData) {
    const uint64_t MiB = 1 << 20;
    const auto path = make_file("sparse.img", 16 * MiB, {{4 * MiB, std::string(4096, 'x')}});
    LocalSource s(path);
    const auto ext = s.extents(0, 16 * MiB);
    ASSERT_EQ(ext.size(), 3u);
    EXPECT_EQ(ext[0], (Extent{0, 4 * MiB, ExtentType::Hole}));
    EXPECT_EQ(ext[1], (Extent{4 * MiB, 4096, ExtentType::Data}));
    EXPECT_EQ(ext[2], (Extent{4 * MiB + 4096, 12 * MiB - 4096, ExtentType::Hole}));
    // A window inside the hole and one inside the data.
    EXPECT_EQ(s.extents(MiB, 100), (std::vector<Extent>{{MiB, 100, ExtentType::Hole}}));
    EXPECT_EQ(s.extents(4 * MiB + 10, 100),
              (std::vector<Extent>{{4 * MiB + 10, 100, ExtentType::Data}}));
}

TEST_F(LocalSourceTest, DirectReadsUnalignedRanges) {
    const auto path = make_file("d.img", 3 * 4096 + 100, {{4095, "abc"}, {3 * 4096 + 97, "xyz"}});
    LocalSource s(path, LocalSourceOptions{true});
    char buf[3];
    s.read(buf, 3, 4095);
    EXPECT_EQ(std::string(buf, 3), "abc");
    s.read(buf, 3, 3 * 4096 + 97); // the partial last block
    EXPECT_EQ(std::string(buf, 3), "xyz");
}

TEST_F(LocalSourceTest, MissingPathNamesThePath) {
    EXPECT_EQ(error_of(dir_ + "/nope.img"), dir_ + "/nope.img: No such file or directory");
}

TEST_F(LocalSourceTest, DirectoryIsRefused) {
    EXPECT_EQ(error_of(dir_), dir_ + ": is a directory, not a disk image or block device");
}

TEST_F(LocalSourceTest, EmptyFileIsRefused) {
    const auto path = make_file("empty.img", 0, {});
    EXPECT_EQ(error_of(path), path + ": is empty (0 bytes); there is no disk to show");
}

TEST_F(LocalSourceTest, FifoIsRefusedWithoutBlocking) {
    const std::string path = dir_ + "/fifo";
    ASSERT_EQ(::mkfifo(path.c_str(), 0644), 0);
    EXPECT_EQ(error_of(path), path + ": not a regular file or block device");
}

TEST_F(LocalSourceTest, CheckedWrapperRefusesReadsPastTheEnd) {
    const auto path = make_file("c.img", 1000, {});
    auto dev = checked(std::make_shared<LocalSource>(path));
    char buf[10];
    try {
        dev->read(buf, 10, 995);
        FAIL() << "read past the end succeeded";
    } catch (const Error& e) {
        EXPECT_EQ(e.error_number(), EINVAL);
        EXPECT_EQ(std::string(e.what()),
                  path + ": read of 10 bytes at 0x3e3 is beyond the end (1000 bytes)");
    }
}

TEST_F(LocalSourceTest, NeverOpensForWriting) {
    const auto path = make_file("ro.img", 4096, {});
    auto dev = checked(std::make_shared<LocalSource>(path));
    EXPECT_FALSE(dev->writable());
    EXPECT_THROW(dev->write("x", 1, 0), UnsupportedError);
}

} // namespace
} // namespace p2vfs

namespace p2vfs {
namespace {

TEST_F(LocalSourceTest, PreallocatedRangesAreZeroWhateverIsCached) {
    const uint64_t MiB = 1 << 20;
    const auto path = make_file("prealloc.img", 8 * MiB, {{0, std::string(4096, 'd')}});
    const int fd = ::open(path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    if (::fallocate(fd, FALLOC_FL_KEEP_SIZE, 2 * MiB, 2 * MiB) != 0) {
        ::close(fd);
        GTEST_SKIP() << "fallocate not supported on " << path << ": " << std::strerror(errno);
    }
    ::close(fd);
    LocalSource s(path);
    const std::vector<Extent> expect{{0, 4096, ExtentType::Data},
                                     {4096, 2 * MiB - 4096, ExtentType::Hole},
                                     {2 * MiB, 2 * MiB, ExtentType::Zero},
                                     {4 * MiB, 4 * MiB, ExtentType::Hole}};
    EXPECT_EQ(s.extents(0, 8 * MiB), expect);
    // Reading the preallocated range pulls it into the page cache, after
    // which ext4's SEEK_DATA calls it data; the map must not change.
    std::vector<char> buf(2 * MiB);
    s.read(buf.data(), buf.size(), 2 * MiB);
    EXPECT_EQ(s.extents(0, 8 * MiB), expect);
}

} // namespace
} // namespace p2vfs
