#include "block/cache_device.h"
#include "common/error.h"
#include "memory_device.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <gtest/gtest.h>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace p2vfs {
namespace {

using test::MemoryDevice;
using test::read_at;

constexpr uint32_t KiB = 1024;
constexpr uint32_t B4K = 4 * KiB;

// The layer below the cache as the tests see it: records every read asked
// of it (before sleeping, so a test can see a slow read has started), can be
// slow from a chosen offset on, and can fail reads that touch chosen offsets.
class CountingDevice : public BlockDevice {
public:
    using Call = std::pair<uint64_t, size_t>; // offset, length

    explicit CountingDevice(std::shared_ptr<MemoryDevice> mem) : mem_(std::move(mem)) {}

    std::string name() const override { return "memory"; }
    std::string identity() const override { return mem_->identity(); }
    uint64_t size() const override { return mem_->size(); }
    std::vector<Extent> extents(uint64_t offset, uint64_t length) override {
        return mem_->extents(offset, length);
    }

    void read(void* buf, size_t length, uint64_t offset) override {
        {
            std::lock_guard lock(mutex_);
            calls_.emplace_back(offset, length);
        }
        if (offset >= slow_from_.load())
            std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_.load()));
        {
            std::lock_guard lock(mutex_);
            for (uint64_t bad : faults_)
                if (bad >= offset && bad < offset + length)
                    throw Error("memory: read at " + hex(bad) + " failed: Input/output error");
        }
        mem_->read(buf, length, offset);
    }

    void fail_at(uint64_t offset) {
        std::lock_guard lock(mutex_);
        faults_.insert(offset);
    }
    void clear_faults() {
        std::lock_guard lock(mutex_);
        faults_.clear();
    }
    void slow(int delay_ms, uint64_t from = 0) {
        slow_from_ = from;
        delay_ms_ = delay_ms;
    }

    std::vector<Call> calls() const {
        std::lock_guard lock(mutex_);
        return calls_;
    }
    std::vector<Call> sorted_calls() const {
        auto c = calls();
        std::sort(c.begin(), c.end());
        return c;
    }
    size_t count() const { return calls().size(); }
    size_t count_at(uint64_t offset) const {
        auto c = calls();
        return static_cast<size_t>(
            std::count_if(c.begin(), c.end(), [&](const Call& x) { return x.first == offset; }));
    }
    // How many reads covered each block of `bs` bytes.
    std::vector<int> per_block(uint32_t bs) const {
        std::vector<int> n((size() + bs - 1) / bs);
        for (const auto& [off, len] : calls())
            for (uint64_t b = off / bs; b <= (off + len - 1) / bs; ++b)
                ++n[b];
        return n;
    }

private:
    std::shared_ptr<MemoryDevice> mem_;
    mutable std::mutex mutex_;
    std::vector<Call> calls_;
    std::set<uint64_t> faults_;
    std::atomic<int> delay_ms_{0};
    std::atomic<uint64_t> slow_from_{0};
};

std::vector<unsigned char> random_bytes(size_t n, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<unsigned char> out(n);
    for (auto& b : out)
        b = static_cast<unsigned char>(rng());
    return out;
}

std::vector<unsigned char> text_bytes(size_t n) {
    const std::string line = "bootmgr ntldr BCD /etc/fstab UUID=1234-ABCD / ext4 defaults 0 1\n";
    std::vector<unsigned char> out(n);
    for (size_t i = 0; i < n; ++i)
        out[i] = static_cast<unsigned char>(line[i % line.size()]);
    return out;
}

// Polls `done` until it holds or 10 s pass; readahead runs in the background.
bool eventually(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline)
            return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
}

struct Disk {
    std::shared_ptr<MemoryDevice> mem;
    std::shared_ptr<CountingDevice> lower;
};

Disk pattern_disk(uint64_t size) {
    auto mem = std::make_shared<MemoryDevice>(size);
    mem->put_pattern(0, size);
    return {mem, std::make_shared<CountingDevice>(mem)};
}

Disk random_disk(uint64_t size, uint64_t seed = 7) {
    auto mem = std::make_shared<MemoryDevice>(size);
    mem->put(0, random_bytes(size, seed));
    return {mem, std::make_shared<CountingDevice>(mem)};
}

CacheOptions options(uint64_t capacity, uint32_t block_size, uint64_t readahead_max) {
    CacheOptions o;
    o.capacity = capacity;
    o.block_size = block_size;
    o.readahead_max = readahead_max;
    return o;
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

void expect_random_reads_match(const CacheOptions& o, uint64_t seed) {
    SCOPED_TRACE("seed " + std::to_string(seed) + ", capacity " + std::to_string(o.capacity));
    // Pattern data, a hole, random bytes, text, and a short last block.
    const uint64_t size = 40 * B4K + 1234;
    auto mem = std::make_shared<MemoryDevice>(size);
    mem->put_pattern(0, 10 * B4K);
    mem->put(20 * B4K, random_bytes(10 * B4K, seed));
    mem->put(30 * B4K + 100, text_bytes(size - 30 * B4K - 100));
    auto lower = std::make_shared<CountingDevice>(mem);
    CacheDevice cache(lower, o);

    std::mt19937_64 rng(seed);
    for (int i = 0; i < 3000; ++i) {
        const uint64_t off = rng() % size;
        const size_t len =
            static_cast<size_t>(1 + rng() % std::min<uint64_t>(3 * B4K + 100, size - off));
        ASSERT_EQ(read_at(cache, off, len), read_at(*mem, off, len))
            << "read " << len << " at " << off;
        // Now and then follow on sequentially, so readahead runs too.
        if (i % 7 == 0 && off + 2 * len <= size) {
            ASSERT_EQ(read_at(cache, off + len, len), read_at(*mem, off + len, len));
        }
    }
    EXPECT_EQ(read_at(cache, size - 1, 1), read_at(*mem, size - 1, 1));
    EXPECT_EQ(read_at(cache, 0, size), read_at(*mem, 0, size));
    EXPECT_LE(cache.stats().stored_bytes, o.capacity);
}

TEST(CacheDeviceTest, ReadsMatchTheDeviceAtRandomOffsetsAndLengths) {
    expect_random_reads_match(options(64ull << 20, B4K, 64 * KiB), 1);
}

TEST(CacheDeviceTest, ReadsMatchTheDeviceWhileEvicting) {
    expect_random_reads_match(options(6 * B4K, B4K, B4K), 2);
    expect_random_reads_match(options(9 * B4K, B4K, 0), 3);
}

TEST(CacheDeviceTest, SecondReadOfARangeMakesNoLowerReads) {
    auto d = pattern_disk(64 * B4K);
    CacheDevice cache(d.lower, options(1 << 20, B4K, 0));
    const auto first = read_at(cache, 3 * B4K + 17, 5 * B4K);
    EXPECT_EQ(first, read_at(*d.mem, 3 * B4K + 17, 5 * B4K));
    const size_t calls = d.lower->count();
    EXPECT_EQ(read_at(cache, 3 * B4K + 17, 5 * B4K), first);
    EXPECT_EQ(read_at(cache, 4 * B4K, 100), read_at(*d.mem, 4 * B4K, 100));
    EXPECT_EQ(d.lower->count(), calls);
    const CacheStats s = cache.stats();
    EXPECT_EQ(s.misses, 6u);   // blocks 3..8
    EXPECT_EQ(s.hits, 6u + 1); // the same again, then block 4
    EXPECT_EQ(s.blocks, 6u);
}

TEST(CacheDeviceTest, MissingRunIsFetchedInOneLowerRead) {
    auto d = pattern_disk(64 * B4K);
    CacheDevice cache(d.lower, options(1 << 20, B4K, 0));
    // Unaligned at both ends: blocks 1..6 whole, in one read.
    EXPECT_EQ(read_at(cache, B4K + 100, 5 * B4K), read_at(*d.mem, B4K + 100, 5 * B4K));
    EXPECT_EQ(d.lower->calls(), (std::vector<CountingDevice::Call>{{B4K, 6 * B4K}}));
}

TEST(CacheDeviceTest, HeldBlocksSplitAMissIntoOneReadPerRun) {
    auto d = pattern_disk(64 * B4K);
    CacheDevice cache(d.lower, options(1 << 20, B4K, 0));
    read_at(cache, 21 * B4K, 1);
    read_at(cache, 24 * B4K, 1);
    EXPECT_EQ(read_at(cache, 20 * B4K, 6 * B4K), read_at(*d.mem, 20 * B4K, 6 * B4K));
    EXPECT_EQ(d.lower->calls(), (std::vector<CountingDevice::Call>{{21 * B4K, B4K},
                                                                   {24 * B4K, B4K},
                                                                   {20 * B4K, B4K},
                                                                   {22 * B4K, 2 * B4K},
                                                                   {25 * B4K, B4K}}));
}

TEST(CacheDeviceTest, ShortLastBlockIsFetchedAndServedShort) {
    const uint64_t size = 3 * B4K + 100;
    auto d = pattern_disk(size);
    CacheDevice cache(d.lower, options(1 << 20, B4K, 0));
    EXPECT_EQ(read_at(cache, size - 50, 50), read_at(*d.mem, size - 50, 50));
    EXPECT_EQ(d.lower->calls(), (std::vector<CountingDevice::Call>{{3 * B4K, 100}}));
    EXPECT_EQ(read_at(cache, 0, size), read_at(*d.mem, 0, size));
    EXPECT_EQ(d.lower->calls(), (std::vector<CountingDevice::Call>{{3 * B4K, 100}, {0, 3 * B4K}}));
    EXPECT_EQ(read_at(cache, size - 100, 100), read_at(*d.mem, size - 100, 100));
    EXPECT_EQ(d.lower->count(), 2u);
}

TEST(CacheDeviceTest, EvictsTheLeastRecentlyUsedBlock) {
    // Random blocks are held raw, 4 KiB each: room for three, not four,
    // whatever the per-block bookkeeping charge (well under 256 B).
    auto d = random_disk(16 * B4K);
    const uint64_t capacity = 3 * B4K + 3 * 256;
    CacheDevice cache(d.lower, options(capacity, B4K, 0));
    read_at(cache, 0 * B4K, B4K);
    read_at(cache, 1 * B4K, B4K);
    read_at(cache, 2 * B4K, B4K);
    EXPECT_EQ(cache.stats().evictions, 0u);
    read_at(cache, 0, 1); // touch block 0: block 1 is now the oldest
    read_at(cache, 3 * B4K, B4K);
    CacheStats s = cache.stats();
    EXPECT_EQ(s.evictions, 1u);
    EXPECT_EQ(s.blocks, 3u);
    EXPECT_EQ(s.stored_bytes, 3u * B4K);
    EXPECT_LE(s.stored_bytes, capacity);

    const size_t calls = d.lower->count();
    EXPECT_EQ(read_at(cache, 0, B4K), read_at(*d.mem, 0, B4K)); // survived
    EXPECT_EQ(d.lower->count(), calls);
    EXPECT_EQ(read_at(cache, B4K, B4K), read_at(*d.mem, B4K, B4K)); // evicted: fetched again
    EXPECT_EQ(d.lower->count(), calls + 1);
    EXPECT_EQ(d.lower->calls().back(), (CountingDevice::Call{B4K, B4K}));
    // That evicted block 2, now the oldest; 3 and 0 stay.
    EXPECT_EQ(cache.stats().evictions, 2u);
    read_at(cache, 3 * B4K, B4K);
    read_at(cache, 0, B4K);
    EXPECT_EQ(d.lower->count(), calls + 1);
    read_at(cache, 2 * B4K, B4K);
    EXPECT_EQ(d.lower->count(), calls + 2);
}

TEST(CacheDeviceTest, ZeroBlocksCostNoStoredBytes) {
    auto mem = std::make_shared<MemoryDevice>(64 * B4K);
    mem->put(63 * B4K + 10, {1, 2, 3}); // one block of data after 63 of zeros
    auto lower = std::make_shared<CountingDevice>(mem);
    CacheDevice cache(lower, options(1 << 20, B4K, 0));
    EXPECT_EQ(read_at(cache, 0, 63 * B4K), std::vector<unsigned char>(63 * B4K, 0));
    CacheStats s = cache.stats();
    EXPECT_EQ(s.blocks, 63u);
    EXPECT_EQ(s.stored_bytes, 0u);
    EXPECT_EQ(read_at(cache, 100, 5 * B4K), std::vector<unsigned char>(5 * B4K, 0));
    EXPECT_EQ(lower->count(), 1u);
    EXPECT_EQ(read_at(cache, 0, 64 * B4K), read_at(*mem, 0, 64 * B4K));
    s = cache.stats();
    EXPECT_EQ(s.blocks, 64u);
    EXPECT_GT(s.stored_bytes, 0u);
    EXPECT_LT(s.stored_bytes, 100u);
}

TEST(CacheDeviceTest, IncompressibleBlocksRoundTripStoredRaw) {
    auto d = random_disk(16 * B4K + 300);
    CacheDevice cache(d.lower, options(1 << 20, B4K, 0));
    const auto all = read_at(*d.mem, 0, d.mem->size());
    EXPECT_EQ(read_at(cache, 0, all.size()), all);
    EXPECT_EQ(cache.stats().stored_bytes, all.size()); // every block raw, the last one short
    EXPECT_EQ(read_at(cache, 0, all.size()), all);
    EXPECT_EQ(read_at(cache, 5 * B4K - 3, 7), read_at(*d.mem, 5 * B4K - 3, 7));
    EXPECT_EQ(d.lower->count(), 1u);
}

TEST(CacheDeviceTest, CompressibleBlocksRoundTripStoredSmaller) {
    auto mem = std::make_shared<MemoryDevice>(16 * B4K);
    mem->put(0, text_bytes(16 * B4K));
    auto lower = std::make_shared<CountingDevice>(mem);
    CacheDevice cache(lower, options(1 << 20, B4K, 0));
    const auto all = read_at(*mem, 0, mem->size());
    EXPECT_EQ(read_at(cache, 0, all.size()), all);
    EXPECT_LT(cache.stats().stored_bytes, all.size() / 4);
    EXPECT_EQ(read_at(cache, 0, all.size()), all);
    EXPECT_EQ(read_at(cache, 7 * B4K + 11, 13), read_at(*mem, 7 * B4K + 11, 13));
    EXPECT_EQ(lower->count(), 1u);
}

TEST(CacheDeviceTest, LowerErrorPropagatesUnchangedAndIsNotCached) {
    auto d = pattern_disk(64 * B4K);
    CacheDevice cache(d.lower, options(1 << 20, B4K, 0));
    d.lower->fail_at(5 * B4K + 10);
    try {
        read_at(cache, 2 * B4K, 6 * B4K);
        FAIL() << "the failed read succeeded";
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()), "memory: read at 0x500a failed: Input/output error");
        EXPECT_EQ(e.error_number(), EIO);
    }
    EXPECT_EQ(cache.stats().blocks, 0u); // not even the good blocks of the failed run
    EXPECT_EQ(cache.stats().misses, 0u);
    // Still failing: nothing was remembered, the layer below is asked again.
    EXPECT_EQ(error_of([&] { read_at(cache, 5 * B4K, 1); }),
              "memory: read at 0x500a failed: Input/output error");
    d.lower->clear_faults();
    EXPECT_EQ(read_at(cache, 2 * B4K, 6 * B4K), read_at(*d.mem, 2 * B4K, 6 * B4K));
    EXPECT_EQ(cache.stats().blocks, 6u);
    EXPECT_EQ(d.lower->count(), 3u);
}

void expect_concurrent_readers_fetch_each_block_once(uint64_t readahead_max) {
    SCOPED_TRACE("readahead_max " + std::to_string(readahead_max));
    const uint64_t size = 256 * B4K;
    auto d = pattern_disk(size);
    d.lower->slow(1); // widen the windows in which readers meet
    CacheDevice cache(d.lower, options(16 << 20, B4K, readahead_max));
    const auto expect = read_at(*d.mem, 0, size);
    std::atomic<int> wrong{0};
    std::vector<std::thread> readers;
    for (unsigned t = 0; t < 8; ++t)
        readers.emplace_back([&, t] {
            std::mt19937_64 rng(100 + t);
            for (int i = 0; i < 60; ++i) {
                // Overlapping ranges: half the threads walk sequentially.
                const uint64_t off =
                    t % 2 ? (static_cast<uint64_t>(i) * 3 * B4K + 7) % (size - 8 * B4K)
                          : rng() % (size - 8 * B4K);
                const size_t len = static_cast<size_t>(1 + rng() % (8 * B4K));
                if (read_at(cache, off, len) !=
                    std::vector<unsigned char>(expect.begin() + static_cast<long>(off),
                                               expect.begin() + static_cast<long>(off + len)))
                    ++wrong;
            }
        });
    for (auto& r : readers)
        r.join();
    EXPECT_EQ(wrong.load(), 0);
    EXPECT_EQ(read_at(cache, 0, size), expect);
    EXPECT_EQ(d.lower->per_block(B4K), std::vector<int>(256, 1));
    const CacheStats s = cache.stats();
    EXPECT_EQ(s.misses + s.readahead, 256u);
    EXPECT_EQ(s.blocks, 256u);
    if (readahead_max == 0) {
        EXPECT_EQ(s.readahead, 0u);
    }
}

TEST(CacheDeviceTest, ConcurrentReadersFetchEachBlockOnce) {
    expect_concurrent_readers_fetch_each_block_once(0);
}

TEST(CacheDeviceTest, ConcurrentReadersAndReadaheadFetchEachBlockOnce) {
    expect_concurrent_readers_fetch_each_block_once(32 * KiB);
}

TEST(CacheDeviceTest, SequentialReadsReadAheadInAWindowThatDoubles) {
    auto d = pattern_disk(1 << 20);
    CacheDevice cache(d.lower, options(1 << 20, B4K, 64 * KiB));
    read_at(cache, 0, B4K);   // a stream starts
    read_at(cache, B4K, B4K); // sequential: 4 KiB ahead
    ASSERT_TRUE(eventually([&] { return cache.stats().readahead == 1; }));
    // Each read is served from what was read ahead, and reads ahead twice as much.
    uint64_t off = 2 * B4K;
    uint64_t len = B4K;
    uint64_t ahead = 1;
    for (uint64_t window : {8u * KiB, 16u * KiB, 32u * KiB, 64u * KiB, 64u * KiB}) {
        const size_t calls = d.lower->count_at(off);
        EXPECT_EQ(read_at(cache, off, len), read_at(*d.mem, off, len));
        EXPECT_EQ(d.lower->count_at(off), calls) << "read at " << off << " went below";
        ahead += window / B4K;
        ASSERT_TRUE(eventually([&] { return cache.stats().readahead == ahead; }))
            << "window after " << off;
        off += len;
        len = window;
    }
    const CacheStats s = cache.stats();
    EXPECT_EQ(s.misses, 2u);
    EXPECT_EQ(s.readahead, 47u);
    EXPECT_EQ(s.hits, 31u);
    EXPECT_EQ(d.lower->sorted_calls(), (std::vector<CountingDevice::Call>{{0, B4K},
                                                                          {B4K, B4K},
                                                                          {2 * B4K, B4K},
                                                                          {3 * B4K, 8 * KiB},
                                                                          {5 * B4K, 16 * KiB},
                                                                          {9 * B4K, 32 * KiB},
                                                                          {17 * B4K, 64 * KiB},
                                                                          {33 * B4K, 64 * KiB}}));
}

TEST(CacheDeviceTest, ReadaheadSkipsHeldBlocksAndReadsEachMissingRunOnce) {
    auto d = pattern_disk(1 << 20);
    CacheDevice cache(d.lower, options(1 << 20, B4K, 64 * KiB));
    read_at(cache, 7 * B4K, B4K);
    read_at(cache, 0, B4K);
    read_at(cache, B4K, 16 * KiB); // sequential: 16 KiB ahead, blocks 5..8
    ASSERT_TRUE(eventually([&] { return cache.stats().readahead == 3; }));
    EXPECT_EQ(d.lower->sorted_calls(),
              (std::vector<CountingDevice::Call>{
                  {0, B4K}, {B4K, 16 * KiB}, {5 * B4K, 2 * B4K}, {7 * B4K, B4K}, {8 * B4K, B4K}}));
}

TEST(CacheDeviceTest, ReadaheadSkipsTheBlockTheReaderIsFetching) {
    auto d = pattern_disk(1 << 20);
    CacheDevice cache(d.lower, options(1 << 20, B4K, 64 * KiB));
    read_at(cache, 0, B4K);
    d.lower->slow(200, B4K); // long enough for the worker to meet the reader's fetch
    // Ends inside block 2, which the reader fetches; the window ahead,
    // [0x2064, 0x30c8), starts in that block too.
    EXPECT_EQ(read_at(cache, B4K, B4K + 100), read_at(*d.mem, B4K, B4K + 100));
    ASSERT_TRUE(eventually([&] { return cache.stats().readahead == 1; }));
    EXPECT_EQ(d.lower->sorted_calls(),
              (std::vector<CountingDevice::Call>{{0, B4K}, {B4K, 2 * B4K}, {3 * B4K, B4K}}));
}

TEST(CacheDeviceTest, InterleavedSequentialReadersBothReadAhead) {
    auto d = pattern_disk(1 << 20);
    CacheDevice cache(d.lower, options(1 << 20, B4K, 64 * KiB));
    const uint64_t a = 0;
    const uint64_t b = 512 * KiB;
    read_at(cache, a, B4K);
    read_at(cache, b, B4K);
    read_at(cache, a + B4K, B4K);
    read_at(cache, b + B4K, B4K);
    ASSERT_TRUE(eventually([&] { return cache.stats().readahead == 2; }));
    EXPECT_EQ(read_at(cache, a + 2 * B4K, B4K), read_at(*d.mem, a + 2 * B4K, B4K));
    EXPECT_EQ(read_at(cache, b + 2 * B4K, B4K), read_at(*d.mem, b + 2 * B4K, B4K));
    ASSERT_TRUE(eventually([&] { return cache.stats().readahead == 6; }));
    EXPECT_EQ(cache.stats().misses, 4u);
    EXPECT_EQ(d.lower->sorted_calls(), (std::vector<CountingDevice::Call>{{a, B4K},
                                                                          {a + B4K, B4K},
                                                                          {a + 2 * B4K, B4K},
                                                                          {a + 3 * B4K, 2 * B4K},
                                                                          {b, B4K},
                                                                          {b + B4K, B4K},
                                                                          {b + 2 * B4K, B4K},
                                                                          {b + 3 * B4K, 2 * B4K}}));
}

TEST(CacheDeviceTest, FailedReadaheadLeavesTheErrorToTheReader) {
    auto d = pattern_disk(1 << 20);
    CacheDevice cache(d.lower, options(1 << 20, B4K, 64 * KiB));
    d.lower->fail_at(2 * B4K + 5);
    d.lower->slow(300, 2 * B4K); // reads from block 2 on take a while
    read_at(cache, 0, B4K);
    read_at(cache, B4K, B4K); // reads block 2 ahead, which will fail
    ASSERT_TRUE(eventually([&] { return d.lower->count_at(2 * B4K) == 1; }));
    // Block 2 is in flight (or has just failed): the reader waits for it,
    // finds it missing, and fetches it itself to get the real error.
    EXPECT_EQ(error_of([&] { read_at(cache, 2 * B4K, B4K); }),
              "memory: read at 0x2005 failed: Input/output error");
    EXPECT_EQ(d.lower->count_at(2 * B4K), 2u);
    d.lower->clear_faults();
    d.lower->slow(0);
    EXPECT_EQ(read_at(cache, 2 * B4K, B4K), read_at(*d.mem, 2 * B4K, B4K));
    EXPECT_EQ(d.lower->count_at(2 * B4K), 3u); // the failure was not cached
}

TEST(CacheDeviceTest, DestructorReturnsPromptlyWithReadaheadInFlight) {
    auto d = pattern_disk(1 << 20);
    auto cache = std::make_unique<CacheDevice>(d.lower, options(1 << 20, B4K, 128 * KiB));
    // Every other block of [256 KiB, 384 KiB) held, so reading that window
    // ahead takes 16 separate reads below. These reads leave gaps between
    // them: none is sequential, nothing is read ahead yet.
    for (uint64_t i = 1; i < 32; i += 2)
        read_at(*cache, 256 * KiB + i * B4K, B4K);
    read_at(*cache, 0, 128 * KiB);
    const size_t before = d.lower->count();
    d.lower->slow(300);
    read_at(*cache, 128 * KiB, 128 * KiB); // sequential: reads [256 KiB, 384 KiB) ahead
    ASSERT_TRUE(eventually([&] { return d.lower->count() >= before + 2; }));
    const auto start = std::chrono::steady_clock::now();
    cache.reset();
    const auto took = std::chrono::steady_clock::now() - start;
    // The worker finishes the one read it is in (300 ms), not all 16 (4.8 s).
    EXPECT_LT(took, std::chrono::milliseconds(1000));
    EXPECT_LE(d.lower->count() - before - 1, 3u);
}

TEST(CacheDeviceTest, ReadLargerThanTheCapacityWorks) {
    auto d = random_disk(64 * B4K);
    const uint64_t capacity = 4 * B4K + 4 * 256;
    CacheDevice cache(d.lower, options(capacity, B4K, 0));
    EXPECT_EQ(read_at(cache, 100, 40 * B4K), read_at(*d.mem, 100, 40 * B4K));
    EXPECT_EQ(d.lower->calls(), (std::vector<CountingDevice::Call>{{0, 41 * B4K}}));
    const CacheStats s = cache.stats();
    EXPECT_LE(s.stored_bytes, capacity);
    EXPECT_EQ(s.blocks, 4u);
    EXPECT_EQ(s.misses, 41u);
    EXPECT_EQ(s.evictions, 0u); // only the tail that fits was kept at all
    // The tail is what was kept.
    EXPECT_EQ(read_at(cache, 37 * B4K, 4 * B4K), read_at(*d.mem, 37 * B4K, 4 * B4K));
    EXPECT_EQ(d.lower->count(), 1u);
}

TEST(CacheDeviceTest, ZeroCapacityPassesReadsStraightThrough) {
    auto d = pattern_disk(64 * B4K);
    CacheDevice cache(d.lower, options(0, B4K, 64 * KiB));
    EXPECT_EQ(read_at(cache, 10, 100), read_at(*d.mem, 10, 100));
    EXPECT_EQ(read_at(cache, 110, 2 * B4K), read_at(*d.mem, 110, 2 * B4K));
    EXPECT_EQ(read_at(cache, 10, 100), read_at(*d.mem, 10, 100));
    EXPECT_EQ(d.lower->calls(),
              (std::vector<CountingDevice::Call>{{10, 100}, {110, 2 * B4K}, {10, 100}}));
    const CacheStats s = cache.stats();
    EXPECT_EQ(s.hits + s.misses + s.readahead + s.blocks + s.stored_bytes, 0u);
}

TEST(CacheDeviceTest, ExtentsPassThrough) {
    auto mem = std::make_shared<MemoryDevice>(64 * B4K);
    mem->put_pattern(5 * B4K, 3 * B4K);
    CacheDevice cache(std::make_shared<CountingDevice>(mem), CacheOptions{});
    EXPECT_EQ(cache.extents(0, 64 * B4K), mem->extents(0, 64 * B4K));
    EXPECT_EQ(cache.identity(), mem->identity());
    EXPECT_FALSE(cache.fd_span(0, B4K).has_value());
}

TEST(CacheDeviceTest, ValidateNamesTheBadOption) {
    EXPECT_EQ(error_of([] { validate(options(1 << 20, 3000, 0)); }),
              "cache option block_size: 3000 bytes is not a power of two from 4 KiB to 4 MiB");
    EXPECT_EQ(error_of([] { validate(options(1 << 20, 2048, 0)); }),
              "cache option block_size: 2048 bytes is not a power of two from 4 KiB to 4 MiB");
    EXPECT_EQ(error_of([] { validate(options(1 << 20, 8u << 20, 0)); }),
              "cache option block_size: 8388608 bytes is not a power of two from 4 KiB to 4 MiB");
    EXPECT_EQ(error_of([] { validate(options(1 << 20, 64 * KiB, 4096)); }),
              "cache option readahead_max: 4096 bytes is less than block_size (64 KiB); 0 turns "
              "readahead off");
    EXPECT_EQ(error_of([] { validate(options(0, 4 * KiB, 0)); }), "(no error)");
    EXPECT_EQ(error_of([] { validate(options(1 << 20, 4u << 20, 4u << 20)); }), "(no error)");
    try {
        CacheDevice cache(pattern_disk(B4K).lower, options(1 << 20, 3000, 0));
        FAIL() << "a cache with a bad block size was made";
    } catch (const InvalidArgument& e) {
        EXPECT_EQ(e.error_number(), EINVAL);
    }
}

} // namespace
} // namespace p2vfs
