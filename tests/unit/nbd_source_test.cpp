// NbdSource against a real nbdkit on a unix socket: request splitting,
// alignment to the server's minimum block size, the kept block status
// answers, and the errors a caller sees. The expected values come from the
// image file nbdkit serves and from libnbd's own block status, not from the
// code under test.
#include "common/error.h"
#include "nbd-bridge/nbd_source.h"

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <libnbd.h>
#include <random>
#include <spawn.h>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace p2vfs {
namespace {

constexpr uint64_t disk_size = 8u << 20;

class NbdSourceTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (std::system("command -v nbdkit >/dev/null 2>&1") != 0)
            GTEST_SKIP() << "nbdkit is not installed";
        char tmpl[] = "/tmp/p2vfs-unit-nbd-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        image_ = dir_ + "/disk.img";
        // Data runs at unaligned offsets, holes between them.
        bytes_.assign(disk_size, 0);
        std::mt19937_64 rng(20261124);
        const int fd = ::open(image_.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(::ftruncate(fd, disk_size), 0);
        for (const auto& [off, len] :
             std::vector<std::pair<uint64_t, uint64_t>>{{0, 5000},
                                                        {1u << 20, 300000},
                                                        {(3u << 20) + 123, 70000},
                                                        {disk_size - 4096, 4096}}) {
            for (uint64_t i = 0; i < len; ++i)
                bytes_[off + i] = static_cast<unsigned char>(rng() | 1);
            ASSERT_EQ(::pwrite(fd, bytes_.data() + off, len, static_cast<off_t>(off)),
                      static_cast<ssize_t>(len));
        }
        ::close(fd);
    }

    void TearDown() override {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        if (!dir_.empty())
            std::system(("rm -rf " + dir_).c_str());
    }

    // Starts nbdkit serving the image (extra arguments before the plugin).
    std::string serve(std::vector<std::string> filters) {
        const std::string sock = dir_ + "/nbd.sock";
        std::vector<std::string> args{"nbdkit", "-f", "-r", "-U", sock};
        for (auto& f : filters)
            args.push_back(f);
        args.push_back("file");
        args.push_back(image_);
        std::vector<std::string> params = std::move(params_);
        for (auto& p : params)
            args.push_back(p);
        std::vector<char*> argv;
        for (auto& a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        EXPECT_EQ(::posix_spawnp(&pid_, "nbdkit", nullptr, nullptr, argv.data(), environ), 0);
        for (int i = 0; i < 500; ++i) {
            struct stat st;
            if (::stat(sock.c_str(), &st) == 0)
                break;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return "nbd+unix:///?socket=" + sock;
    }

    // base:allocation as libnbd reports it, for the whole disk.
    std::vector<Extent> libnbd_extents(const std::string& uri) {
        nbd_handle* h = nbd_create();
        nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION);
        EXPECT_EQ(nbd_connect_uri(h, uri.c_str()), 0) << nbd_get_error();
        std::vector<Extent> out;
        uint64_t pos = 0;
        while (pos < disk_size) {
            std::vector<Extent> got;
            auto cb = [](void* user, const char*, uint64_t off, uint32_t* e, size_t n, int*) {
                auto* v = static_cast<std::vector<Extent>*>(user);
                for (size_t i = 0; i + 1 < n; i += 2) {
                    const ExtentType t = !(e[i + 1] & LIBNBD_STATE_ZERO)  ? ExtentType::Data
                                         : (e[i + 1] & LIBNBD_STATE_HOLE) ? ExtentType::Hole
                                                                          : ExtentType::Zero;
                    v->push_back(Extent{off, e[i], t});
                    off += e[i];
                }
                return 0;
            };
            EXPECT_EQ(nbd_block_status(h, disk_size - pos, pos,
                                       nbd_extent_callback{cb, &got, nullptr}, 0),
                      0);
            for (const Extent& e : got) {
                const uint64_t end = std::min(e.offset + e.length, disk_size);
                append_extent(out, Extent{e.offset, end - e.offset, e.type});
                pos = end;
            }
        }
        nbd_close(h);
        return out;
    }

    std::string dir_, image_;
    std::vector<unsigned char> bytes_;
    std::vector<std::string> params_;
    pid_t pid_ = -1;
};

TEST_F(NbdSourceTest, ReadsAreCutIntoRequestsOfTheAskedSize) {
    NbdOptions o;
    o.request_size = 64u << 10;
    NbdSource src(serve({}), o);
    EXPECT_EQ(src.size(), disk_size);
    EXPECT_EQ(src.connection_count(), 4u); // the file plugin allows multi-conn
    const uint64_t before = src.stats().requests;
    std::vector<unsigned char> buf(1u << 20);
    src.read(buf.data(), buf.size(), 1u << 20);
    EXPECT_EQ(src.stats().requests - before, 16u);
    EXPECT_EQ(0, std::memcmp(buf.data(), bytes_.data() + (1u << 20), buf.size()));
}

TEST_F(NbdSourceTest, UnalignedReadsOfAnAlignedOnlyServerReadTheRightBytes) {
    params_ = {"blocksize-minimum=4096", "blocksize-preferred=65536", "blocksize-maximum=262144",
               "blocksize-error-policy=error"};
    NbdOptions o;
    o.request_size = 1u << 20; // clamped to the server's 256 KiB
    NbdSource src(serve({"--filter=blocksize-policy"}), o);
    std::mt19937_64 rng(7);
    for (int i = 0; i < 200; ++i) {
        const uint64_t len = 1 + rng() % 600000;
        const uint64_t off = rng() % (disk_size - len);
        std::vector<unsigned char> buf(len);
        src.read(buf.data(), len, off);
        ASSERT_EQ(0, std::memcmp(buf.data(), bytes_.data() + off, len))
            << len << " bytes at " << off;
    }
    const uint64_t before = src.stats().requests;
    std::vector<unsigned char> buf(1u << 20);
    src.read(buf.data(), buf.size(), 0);
    EXPECT_EQ(src.stats().requests - before, 4u);
}

TEST_F(NbdSourceTest, ExtentsMatchTheServerAndAreAskedForOnce) {
    const std::string uri = serve({});
    const std::vector<Extent> expected = libnbd_extents(uri);
    ASSERT_GT(expected.size(), 3u);
    NbdSource src(uri, NbdOptions{});
    // Pieces first, out of order and overlapping, then the whole disk: the
    // kept answers must fit together exactly.
    for (const auto& [off, len] : std::vector<std::pair<uint64_t, uint64_t>>{
             {3u << 20, 1u << 20}, {12345, 2u << 20}, {(3u << 20) + 4096, 8192}}) {
        std::vector<Extent> want;
        for (const Extent& e : expected) {
            const uint64_t a = std::max(e.offset, off),
                           b = std::min(e.offset + e.length, off + len);
            if (a < b)
                append_extent(want, Extent{a, b - a, e.type});
        }
        EXPECT_EQ(src.extents(off, len), want) << "range " << off << "+" << len;
    }
    EXPECT_EQ(src.extents(0, disk_size), expected);
    const uint64_t before = src.stats().requests;
    EXPECT_EQ(src.extents(0, disk_size), expected);
    EXPECT_EQ(src.extents(5u << 20, 100), (std::vector<Extent>{{5u << 20, 100, ExtentType::Hole}}));
    EXPECT_EQ(src.stats().requests, before) << "block status asked again";
}

TEST_F(NbdSourceTest, KnownHolesAreNotFetched) {
    params_ = {"blocksize-minimum=4096", "blocksize-error-policy=error"};
    NbdOptions o;
    o.request_size = 64u << 10;
    NbdSource src(serve({"--filter=blocksize-policy"}), o);
    src.extents(0, disk_size);
    // 5-6 MiB holds nothing: zeros, no request.
    uint64_t before = src.stats().requests;
    std::vector<unsigned char> buf(1u << 20, 0xee);
    src.read(buf.data(), buf.size(), 5u << 20);
    EXPECT_EQ(src.stats().requests - before, 0u);
    EXPECT_EQ(std::vector<unsigned char>(1u << 20, 0), buf);
    // 1 MiB + 300000 bytes of data, then holes to 2 MiB: only the data's
    // 4 KiB-rounded 64 KiB requests (300000 bytes -> 5 requests).
    before = src.stats().requests;
    std::fill(buf.begin(), buf.end(), 0xee);
    src.read(buf.data(), buf.size(), 1u << 20);
    EXPECT_EQ(src.stats().requests - before, 5u);
    EXPECT_EQ(0, std::memcmp(buf.data(), bytes_.data() + (1u << 20), buf.size()));
    // Unaligned reads across data and holes read the right bytes.
    std::mt19937_64 rng(11);
    for (int i = 0; i < 300; ++i) {
        const uint64_t len = 1 + rng() % 400000;
        const uint64_t off = rng() % (disk_size - len);
        std::vector<unsigned char> got(len, 0xee);
        src.read(got.data(), len, off);
        ASSERT_EQ(0, std::memcmp(got.data(), bytes_.data() + off, len)) << len << " at " << off;
    }
}

TEST_F(NbdSourceTest, ServerErrorsNameTheServerAndTheOffset) {
    params_ = {"error-pread=EIO", "error-pread-rate=100%"};
    const std::string uri = serve({"--filter=error"});
    NbdSource src(uri, NbdOptions{});
    std::vector<unsigned char> buf(4096);
    try {
        src.read(buf.data(), buf.size(), 0x300000);
        FAIL() << "read succeeded";
    } catch (const Error& e) {
        EXPECT_EQ(e.error_number(), EIO);
        EXPECT_EQ(std::string(e.what()), "NBD server " + uri +
                                             ": read of 4096 bytes at offset 0x300000 failed: "
                                             "Input/output error");
    }
}

TEST_F(NbdSourceTest, NoServerIsAnErrorNamingTheUri) {
    const std::string uri = "nbd+unix:///?socket=" + dir_ + "/nobody.sock";
    try {
        NbdSource src(uri, NbdOptions{});
        FAIL() << "connected to nothing";
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()).rfind("NBD server " + uri + ": ", 0), 0u) << e.what();
    }
}

TEST(NbdOptions, BadValuesAreRefusedByName) {
    NbdOptions o;
    o.connections = 0;
    EXPECT_THROW(validate(o), InvalidArgument);
    o = {};
    o.request_size = 3000;
    EXPECT_THROW(validate(o), InvalidArgument);
    o = {};
    o.max_in_flight = 0;
    EXPECT_THROW(validate(o), InvalidArgument);
    EXPECT_NO_THROW(validate(NbdOptions{}));
}

TEST(NbdUri, SchemesLibnbdTakes) {
    for (const char* s : {"nbd://h/e", "nbds://h:10809/", "nbd+unix:///?socket=/s",
                          "nbds+unix://alice@/?socket=/s&tls-psk-file=/k", "nbd+vsock://2"})
        EXPECT_TRUE(is_nbd_uri(s)) << s;
    for (const char* s : {"/dev/sda", "http://h/x", "nbd:/x", "qcow2:/x"})
        EXPECT_FALSE(is_nbd_uri(s)) << s;
}

} // namespace
} // namespace p2vfs
