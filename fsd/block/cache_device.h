// A bounded read cache for remote sources, blocks stored compressed with lz4,
// with readahead for sequential readers.
//
// Sits right above a source whose reads cost a network round trip (an NBD
// export over a WAN): file system metadata, partition tables and a hypervisor
// booting from a view are read again and again, and must not cross the link
// twice. Blocks are `block_size` aligned (the last one of a device whose size
// is not a multiple is short); a block is fetched whole, compressed (stored
// raw when lz4 does not shrink it, or recorded as all zeros, which costs no
// data) and kept until it no longer fits, then evicted least recently used
// first. What must fit in `capacity` is the compressed bytes plus a small
// fixed charge per block for its bookkeeping, so that a disk of zeros, whose
// blocks hold no data, cannot grow the cache without bound either.
// stored_bytes therefore never exceeds `capacity`. A block that cannot fit
// even in an empty cache is served and not kept; of a read larger than the
// cache only the blocks at its end are kept. capacity 0 turns the layer into
// a plain pass-through: no caching, no readahead.
//
// Reads: blocks held are served from memory; the blocks missing from a read
// are fetched in contiguous runs, one read of the layer below per run (an NBD
// source splits a big read into parallel requests, so fewer, bigger reads are
// faster than many small ones).
//
// Readahead: a read that starts where one of the last few reads ended (up to
// 8 streams are followed, so interleaved sequential readers each count) is
// sequential; the window after it is fetched in the background by two worker
// threads, starting at the read's size (at least one block) and doubling up
// to `readahead_max` while the stream stays sequential. Blocks held or being
// fetched are skipped; each contiguous run of missing ones is one read below.
// The window is also kept to half the capacity, so readahead cannot evict
// what it has just fetched. A reader never fetches a block another thread is
// already fetching: it waits for that fetch.
//
// Errors: a failed fetch is not cached; the reader that asked for the block
// gets the error (naming the offset, from the layer below) unchanged. A
// failed readahead is dropped (logged at debug): a reader waiting for those
// blocks, or needing them later, fetches them itself and gets the error then.
//
// Thread model: read() and stats() are called from many threads at once. One
// mutex guards the blocks, the set of blocks being fetched, the readahead
// streams and queue, and the counters; it is never held across a read of the
// layer below, nor while compressing or decompressing. The destructor stops
// the readahead workers: each finishes at most the one read below it is in.
//
// Extents are passed through unchanged (views ask once, when they open).
#pragma once

#include "block/filter_device.h"

#include <cstdint>
#include <memory>

namespace p2vfs {

struct CacheOptions {
    uint64_t capacity = 256ull << 20; // compressed bytes + bookkeeping held at most; 0: no caching
    uint32_t block_size = 64u << 10;  // power of two, 4 KiB .. 4 MiB
    // 32 MiB: at a 50 ms round trip, 8 MiB windows kept ~2 requests in flight
    // (1.2x nbdfuse), 32 MiB ~5 (3.2x); tools/bench/nbd-bench.sh.
    uint64_t readahead_max = 32ull << 20; // 0: no readahead
};

// Counts of blocks: a read counts every block it touches, even partly, once.
struct CacheStats {
    uint64_t hits = 0;         // blocks served from the cache (also after waiting for a fetch)
    uint64_t misses = 0;       // blocks a reader fetched from below, successfully
    uint64_t readahead = 0;    // blocks fetched ahead of a reader, successfully
    uint64_t evictions = 0;    // blocks dropped to make room
    uint64_t blocks = 0;       // blocks held now
    uint64_t stored_bytes = 0; // compressed bytes held now (0 for a block of zeros)
};

class CacheDevice : public FilterDevice {
public:
    CacheDevice(DevicePtr next, CacheOptions options);
    ~CacheDevice() override; // stops readahead workers before the cache goes
    CacheDevice(const CacheDevice&) = delete;
    CacheDevice& operator=(const CacheDevice&) = delete;

    void read(void* buf, size_t length, uint64_t offset) override;
    std::optional<FdSpan> fd_span(uint64_t, size_t) override { return std::nullopt; }

    CacheStats stats() const;

private:
    struct State;
    std::unique_ptr<State> state_;
};

// Throws InvalidArgument naming the bad option.
void validate(const CacheOptions& options);

} // namespace p2vfs
