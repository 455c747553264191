// The overlay store: segments (log + mapped index), layers with checkpoints,
// and the overlaid device, including recovery after a process is killed at
// many points and after the log's unsynced end is torn.
#include "block/checked_device.h"
#include "common/error.h"
#include "memory_device.h"
#include "overlay/overlay.h"
#include "overlay/segment.h"

#include <algorithm>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <gtest/gtest.h>
#include <random>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace p2vfs {
namespace {

using overlay::Geometry;
using overlay::Segment;
using overlay::SegmentOptions;
using test::MemoryDevice;

class TempDir {
public:
    TempDir() {
        char tmpl[] = "/tmp/p2vfs-overlay-test-XXXXXX";
        path_ = ::mkdtemp(tmpl);
    }
    ~TempDir() { std::filesystem::remove_all(path_); }
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

constexpr uint32_t chunk = 64 * 1024;

// The content write number `i` gives a chunk: random, compressible, or zeros.
std::vector<unsigned char> content(uint64_t i, uint32_t length = chunk) {
    std::vector<unsigned char> b(length);
    switch (i % 3) {
    case 0: {
        std::mt19937_64 rng(i);
        for (auto& x : b)
            x = static_cast<unsigned char>(rng());
        break;
    }
    case 1:
        for (uint32_t k = 0; k < length; ++k)
            b[k] = static_cast<unsigned char>((k / 512 + i) & 0xff);
        break;
    default:
        break; // zeros
    }
    b[0] = i % 3 == 2 ? 0 : static_cast<unsigned char>(i);
    return b;
}

TEST(OverlaySegment, WritesReadBackAndSurviveReopen) {
    TempDir d;
    const Geometry g{chunk, 10 * uint64_t{chunk} + 1000}; // a short last chunk
    {
        auto s = Segment::create(d.path() + "/s", g, {});
        for (uint64_t c : {0, 2, 3, 9, 10}) {
            const auto data = content(c, g.chunk_length(c));
            s->write_chunk(c, data.data());
        }
        // Overwrite one: the newest record wins.
        const auto again = content(31, chunk);
        s->write_chunk(3, again.data());
        s->sync();
        EXPECT_EQ(s->stats().chunks, 5u);
    }
    auto s = Segment::open(d.path() + "/s", g, {});
    EXPECT_EQ(s->stats().chunks, 5u);
    EXPECT_EQ(s->stats().zero_chunks, 1u); // chunk 2: content(2) is zeros
    for (uint64_t c = 0; c < g.chunk_count(); ++c) {
        const bool expect = c == 0 || c == 2 || c == 3 || c == 9 || c == 10;
        ASSERT_EQ(s->has(c), expect) << c;
        if (!expect)
            continue;
        std::vector<unsigned char> got(g.chunk_length(c));
        s->read_chunk(c, got.data());
        EXPECT_EQ(got, content(c == 3 ? 31 : c, g.chunk_length(c))) << c;
    }
    EXPECT_EQ(s->next_present(1, g.chunk_count()), 2u);
    EXPECT_EQ(s->next_absent(2, g.chunk_count()), 4u);
    EXPECT_EQ(s->next_present(4, g.chunk_count()), 9u);
    EXPECT_EQ(s->next_absent(9, g.chunk_count()), 11u);
}

TEST(OverlaySegment, RefusesAnotherGeometry) {
    TempDir d;
    Segment::create(d.path() + "/s", {chunk, 1 << 20}, {});
    try {
        Segment::open(d.path() + "/s", {chunk, 2 << 20}, {});
        FAIL() << "opened with the wrong disk size";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("made for a disk of 1048576 bytes"), std::string::npos)
            << e.what();
    }
}

TEST(OverlaySegment, DamagedRecordIsAnErrorNotWrongBytes) {
    TempDir d;
    const Geometry g{chunk, 4 * uint64_t{chunk}};
    {
        auto s = Segment::create(d.path() + "/s", g, {.writable = true, .compress = false});
        const auto data = content(0);
        s->write_chunk(1, data.data());
        s->sync();
    }
    // Flip a byte in the payload of the only record (offset 4096 + 64 + 100).
    const int fd = ::open((d.path() + "/s/log").c_str(), O_RDWR);
    unsigned char b = 0;
    ASSERT_EQ(::pread(fd, &b, 1, 4096 + 64 + 100), 1);
    b ^= 0xff;
    ASSERT_EQ(::pwrite(fd, &b, 1, 4096 + 64 + 100), 1);
    ::close(fd);
    auto s = Segment::open(d.path() + "/s", g, {});
    std::vector<unsigned char> got(chunk);
    try {
        s->read_chunk(1, got.data());
        FAIL() << "a damaged chunk was served";
    } catch (const Error& e) {
        EXPECT_EQ(e.error_number(), EIO);
        EXPECT_NE(std::string(e.what()).find("chunk 1 at log offset 0x1000: payload checksum"),
                  std::string::npos)
            << e.what();
    }
}

// The writes of a crash test, from one seed: write i stores content(i) in
// chunk chunks[i].
struct Script {
    explicit Script(uint64_t seed, size_t n, uint64_t chunk_count) {
        std::mt19937_64 rng(seed);
        for (size_t i = 0; i < n; ++i)
            chunks.push_back(rng() % chunk_count);
    }
    std::vector<uint64_t> chunks;
};

// After a crash, chunk c must hold the content of its last write before
// `acked` (the writes a completed sync covered) or of a later write to it;
// with no write before `acked`, it may also be absent.
void check_after_crash(Segment& s, const Script& script, size_t acked, size_t done) {
    std::map<uint64_t, std::vector<size_t>> writes;
    for (size_t i = 0; i < done; ++i)
        writes[script.chunks[i]].push_back(i);
    std::vector<unsigned char> got(chunk);
    for (const auto& [c, list] : writes) {
        size_t floor_index = SIZE_MAX;
        for (size_t i : list)
            if (i < acked)
                floor_index = i;
        if (!s.has(c)) {
            ASSERT_EQ(floor_index, SIZE_MAX) << "chunk " << c << " lost write " << floor_index;
            continue;
        }
        s.read_chunk(c, got.data()); // throws on a torn chunk
        bool matched = false;
        for (size_t i : list)
            if ((floor_index == SIZE_MAX || i >= floor_index) && got == content(i))
                matched = true;
        ASSERT_TRUE(matched) << "chunk " << c << " holds none of its acceptable writes (acked "
                             << acked << ")";
    }
}

// A child process writes the script, syncing every few writes and telling the
// parent (through a pipe) how many writes each completed sync covered; the
// parent kills it with SIGKILL at a random moment, then reopens the segment.
TEST(OverlaySegment, SurvivesSigkillAtManyPoints) {
    TempDir d;
    const Geometry g{chunk, 256 * uint64_t{chunk}};
    const std::string dir = d.path() + "/s";
    Segment::create(dir, g, {});
    const size_t total = 600;
    std::mt19937_64 rng(7);
    for (int round = 0; round < 25; ++round) {
        const Script script(1000 + static_cast<uint64_t>(round), total, g.chunk_count());
        int p[2];
        ASSERT_EQ(::pipe(p), 0);
        const pid_t pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            ::close(p[0]);
            auto s = Segment::open(dir, g, {.writable = true, .compress = true, .auto_sync_chunks = 50});
            for (size_t i = 0; i < total; ++i) {
                const auto data = content(i);
                s->write_chunk(script.chunks[i], data.data());
                const uint64_t started = i + 1;
                if (i % 7 == 6) {
                    s->sync();
                    if (::write(p[1], &started, sizeof started) != sizeof started)
                        ::_exit(3);
                }
            }
            ::pause(); // wait to be killed, never closing cleanly
            ::_exit(0);
        }
        ::close(p[1]);
        ::usleep(static_cast<useconds_t>(rng() % 60000));
        ::kill(pid, SIGKILL);
        int status = 0;
        ::waitpid(pid, &status, 0);
        uint64_t acked = 0, v;
        while (::read(p[0], &v, sizeof v) == sizeof v)
            acked = v;
        ::close(p[0]);
        auto s = Segment::open(dir, g, {});
        // The child may have written up to `total` writes; any later one
        // may be present, so judge against all of them.
        check_after_crash(*s, script, acked, total);
        // Each round starts from an empty segment, so it judges its own writes.
        s.reset();
        std::filesystem::remove_all(dir);
        Segment::create(dir, g, {});
    }
}

// Power loss: the log's unsynced end torn at arbitrary byte positions, or
// filled with garbage. Synced writes stay; the segment opens cleanly.
TEST(OverlaySegment, OpensCleanlyWithATornLogEnd) {
    const Geometry g{chunk, 64 * uint64_t{chunk}};
    const Script script(99, 200, g.chunk_count());
    std::mt19937_64 rng(3);
    for (int round = 0; round < 30; ++round) {
        TempDir d;
        const std::string dir = d.path() + "/s";
        uint64_t synced_end = 0;
        {
            auto s = Segment::create(dir, g, {});
            for (size_t i = 0; i < 100; ++i) {
                const auto data = content(i);
                s->write_chunk(script.chunks[i], data.data());
            }
            s->sync();
            synced_end = std::filesystem::file_size(dir + "/log");
        }
        // Unsynced writes: a child appends them and dies without syncing.
        const pid_t pid = ::fork();
        if (pid == 0) {
            auto s = Segment::open(dir, g, {.writable = true, .compress = true, .auto_sync_chunks = 100000});
            for (size_t i = 100; i < 200; ++i) {
                const auto data = content(i);
                s->write_chunk(script.chunks[i], data.data());
            }
            ::_exit(0); // no sync, no destructor
        }
        int status = 0;
        ::waitpid(pid, &status, 0);
        const uint64_t size = std::filesystem::file_size(dir + "/log");
        ASSERT_GT(size, synced_end);
        const uint64_t cut = synced_end + rng() % (size - synced_end);
        if (round % 2 == 0) {
            ::truncate((dir + "/log").c_str(), static_cast<off_t>(cut));
        } else {
            // Garbage over part of the tail, as a torn multi-block write leaves.
            std::vector<unsigned char> junk(4096 + rng() % 20000);
            for (auto& x : junk)
                x = static_cast<unsigned char>(rng());
            const int fd = ::open((dir + "/log").c_str(), O_RDWR);
            ASSERT_GE(::pwrite(fd, junk.data(), std::min<uint64_t>(junk.size(), size - cut),
                               static_cast<off_t>(cut)),
                      0);
            ::close(fd);
        }
        auto s = Segment::open(dir, g, {});
        check_after_crash(*s, script, 100, 200);
        // And it keeps working: a new write after recovery reads back.
        const auto data = content(500);
        s->write_chunk(5, data.data());
        s->sync();
        s.reset();
        s = Segment::open(dir, g, {});
        std::vector<unsigned char> got(chunk);
        s->read_chunk(5, got.data());
        ASSERT_EQ(got, data);
    }
}

TEST(OverlaySegment, TornHeaderSlotFallsBackToTheOther) {
    TempDir d;
    const Geometry g{chunk, 8 * uint64_t{chunk}};
    const std::string dir = d.path() + "/s";
    {
        auto s = Segment::create(dir, g, {});
        const auto a = content(0);
        s->write_chunk(2, a.data());
        s->sync();
    }
    // Damage both bytes of whichever slot is newer: the older one still
    // describes a consistent state, and replay brings the log back in.
    for (uint64_t slot : {0, 2048}) {
        const int fd = ::open((dir + "/index").c_str(), O_RDWR);
        unsigned char junk[16];
        std::memset(junk, 0xa5, sizeof junk);
        ASSERT_EQ(::pwrite(fd, junk, sizeof junk, static_cast<off_t>(slot + 40)), 16);
        ::close(fd);
        if (slot == 0) {
            auto s = Segment::open(dir, g, {});
            std::vector<unsigned char> got(chunk);
            s->read_chunk(2, got.data());
            EXPECT_EQ(got, content(0));
        }
    }
    try {
        Segment::open(dir, g, {.writable = false});
        FAIL() << "opened with both header slots damaged";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("no valid index header"), std::string::npos) << e.what();
    }
}

// ------------------------------------------------------------ the overlay

std::shared_ptr<MemoryDevice> make_source(uint64_t size) {
    auto m = std::make_shared<MemoryDevice>(size);
    m->put_pattern(0, 300000);
    m->put_pattern(1 << 20, 200000);
    return m;
}

TEST(Overlay, RandomUnalignedWritesMatchAModel) {
    TempDir d;
    const uint64_t size = 3 * (1 << 20) + 12345;
    auto source = make_source(size);
    std::vector<unsigned char> model = test::read_all(*source);
    std::mt19937_64 rng(11);
    {
        auto o = Overlay::open(d.path(), "pc", source, "mem", {.writable = true}, true);
        auto dev = checked(o->device(user_layer, user_layer));
        for (int i = 0; i < 300; ++i) {
            const uint64_t len = 1 + rng() % 150000;
            const uint64_t off = rng() % (size - len);
            std::vector<unsigned char> b(len);
            const bool zeros = i % 5 == 0;
            for (auto& x : b)
                x = zeros ? 0 : static_cast<unsigned char>(rng());
            dev->write(b.data(), len, off);
            std::memcpy(model.data() + off, b.data(), len);
        }
        dev->flush();
        EXPECT_EQ(test::read_all(*dev), model);
    }
    // Reopened read-only: the same bytes; the source untouched.
    auto o = Overlay::open(d.path(), "pc", source, "mem", {}, false);
    auto dev = checked(o->device());
    EXPECT_EQ(test::read_all(*dev), model);
    EXPECT_EQ(test::read_all(*source), [&] {
        auto p = make_source(size);
        return test::read_all(*p);
    }());
    // Extents cover the disk exactly (the checked device verifies) and every
    // chunk written is allocated.
    uint64_t covered = 0;
    for (const Extent& e : dev->extents(0, size))
        covered += e.length;
    EXPECT_EQ(covered, size);
}

TEST(Overlay, LayersStackAndCheckpointsRollBack) {
    TempDir d;
    const uint64_t size = 1 << 20;
    auto source = make_source(size);
    auto o = Overlay::open(d.path(), "pc", source, "mem", {.writable = true}, true);
    auto fix = o->device(fixups_layer, fixups_layer);
    auto user = o->device(user_layer, user_layer);
    const std::vector<unsigned char> a(5000, 'a'), b(5000, 'b'), c(5000, 'c');
    fix->write(a.data(), a.size(), 100000);
    user->write(b.data(), b.size(), 102000); // overlaps the fixup's end
    auto top = o->device();
    auto at = [&](BlockDevice& dev, uint64_t off) { return test::read_at(dev, off, 1)[0]; };
    EXPECT_EQ(at(*top, 100000), 'a');
    EXPECT_EQ(at(*top, 102000), 'b');
    EXPECT_EQ(at(*top, 106999), 'b');
    EXPECT_EQ(at(*fix, 102000), 'a'); // the fixups layer alone
    EXPECT_EQ(at(*top, 107000), MemoryDevice::pattern(107000));

    // Views lay out Data only: the allocation generation moves when a chunk
    // appears in a layer or turns from zeros to data, not on a rewrite.
    const std::vector<unsigned char> zeros(65536, 0), ones(65536, 1);
    uint64_t g = o->allocation_generation();
    user->write(zeros.data(), zeros.size(), 6 * 65536);
    EXPECT_EQ(o->allocation_generation(), ++g); // new to the layer
    user->write(ones.data(), 100, 6 * 65536 + 7);
    EXPECT_EQ(o->allocation_generation(), ++g); // zeros -> data
    user->write(ones.data(), 100, 6 * 65536 + 9);
    EXPECT_EQ(o->allocation_generation(), g); // data rewritten
    const uint64_t content = o->content_generation();
    user->write(zeros.data(), zeros.size(), 6 * 65536);
    EXPECT_EQ(o->allocation_generation(), ++g); // data -> zeros
    EXPECT_EQ(o->content_generation(), content + 1);
    EXPECT_EQ(top->extents(6 * 65536, 65536),
              (std::vector<Extent>{{6 * 65536, 65536, ExtentType::Zero}}));

    o->layer(user_layer).checkpoint("one");
    user->write(c.data(), c.size(), 200000);
    EXPECT_EQ(at(*top, 200000), 'c');
    EXPECT_THROW(o->layer(user_layer).checkpoint("one"), InvalidArgument);
    try {
        o->layer(user_layer).rollback("nope");
        FAIL();
    } catch (const InvalidArgument& e) {
        EXPECT_NE(std::string(e.what()).find("(it has: one)"), std::string::npos) << e.what();
    }
    o->layer(user_layer).rollback("one");
    EXPECT_EQ(at(*top, 200000), MemoryDevice::pattern(200000));
    EXPECT_EQ(at(*top, 102000), 'b');
    EXPECT_EQ(o->layer(user_layer).info().checkpoints.size(), 1u);

    o->layer(user_layer).discard();
    EXPECT_EQ(at(*top, 102000), 'a');
    EXPECT_EQ(o->layer(user_layer).info().checkpoints.size(), 0u);
    EXPECT_EQ(o->layer(user_layer).info().chunks, 0u);
    EXPECT_EQ(o->layer(fixups_layer).info().chunks, 1u);

    // The delta: only changed chunks are data.
    auto delta = o->delta();
    const auto ex = delta->extents(0, size);
    ASSERT_EQ(ex.size(), 3u);
    EXPECT_EQ(ex[1], (Extent{65536, 65536, ExtentType::Data}));
}

TEST(Overlay, RefusesAnotherSourceAndASecondOpener) {
    TempDir d;
    auto source = make_source(1 << 20);
    auto o = Overlay::open(d.path(), "pc", source, "mem", {.writable = true}, true);
    try {
        Overlay::open(d.path(), "pc", source, "mem", {.writable = true}, true);
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("is in use by another process"), std::string::npos)
            << e.what();
    }
    o.reset();
    auto other = make_source(2 << 20);
    try {
        Overlay::open(d.path(), "pc", other, "mem2", {.writable = true}, true);
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("was made over another disk"), std::string::npos)
            << e.what();
    }
    EXPECT_EQ(Overlay::recorded_source(d.path(), "pc"), "mem");
    // A layer gone from an existing overlay is an error, not a fresh start.
    std::filesystem::remove_all(d.path() + "/overlays/pc/user");
    try {
        Overlay::open(d.path(), "pc", source, "mem", {.writable = true}, true);
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("overlays/pc/user: missing"), std::string::npos)
            << e.what();
    }
}

} // namespace
} // namespace p2vfs
