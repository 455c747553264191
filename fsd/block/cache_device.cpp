// Design (the contract is in cache_device.h):
//
// - Held blocks sit in one LRU list (front: most recently used) indexed by a
//   hash map from block number to list node. A block's bytes are an exact-size
//   allocation (lz4 output or the raw block), or nothing for zeros; with the
//   list node, hash node and the allocation's control block that is about
//   kBlockCharge bytes of bookkeeping per block, which is charged against the
//   capacity beside the data.
// - `in_flight` holds the blocks some thread is fetching. Whoever finds a
//   block neither held nor in flight claims it (inserts it there) and must
//   fetch it or give the claim back; everyone else waits on `fetched`. A
//   thread fetches its own claims before it waits for anyone else's, so two
//   readers that each wait for the other's blocks cannot deadlock.
// - The data is shared_ptr-owned so that a reader can decompress it after
//   unlocking even if the block is evicted meanwhile.
// - Readahead jobs are byte ranges in a short queue served by two worker
//   threads, started by the first job.
#include "block/cache_device.h"

#include "common/error.h"

#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <list>
#include <lz4.h>
#include <mutex>
#include <spdlog/spdlog.h>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace p2vfs {
namespace {

// What a held block costs beside its data: its LRU node (~48 B), hash node
// and bucket (~40 B), the data's shared control block (16 B), allocator
// headers. Charging it bounds a cache of all-zero blocks too.
constexpr uint64_t kBlockCharge = 128;
constexpr size_t kStreams = 8;
constexpr unsigned kWorkers = 2;
// Readahead jobs waiting at most; the oldest are dropped first, as the
// streams that asked for them have moved on.
constexpr size_t kMaxJobs = 16;

enum class Encoding : uint8_t { Zero, Lz4, Raw };

// A block's bytes as held.
struct Stored {
    std::shared_ptr<const char[]> data; // null for zeros
    uint32_t size = 0;                  // bytes in data
    Encoding encoding = Encoding::Zero;
};

struct Block {
    uint64_t index;
    Stored bytes;
};

// A sequential reader: where its last read ended, and its readahead window.
struct Stream {
    uint64_t end = 0;
    uint64_t window = 0; // 0: not seen to be sequential yet
    uint64_t used = 0;   // clock of the last read, for replacing the oldest
};

struct Job {
    uint64_t offset;
    uint64_t length;
};

bool all_zero(const unsigned char* p, size_t n) {
    return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0);
}

// Per-thread room for one block: compression output, or a block that is
// decompressed to serve part of it. Sized to the largest block seen.
char* scratch(size_t n) {
    thread_local std::vector<char> buf;
    if (buf.size() < n)
        buf.resize(n);
    return buf.data();
}

Stored encode(const unsigned char* src, size_t n) {
    if (all_zero(src, n))
        return {};
    char* tmp = scratch(n);
    // Room for one byte less than the block: lz4 gives up (returns 0) on
    // output that would not save anything, and the block is kept raw.
    const int packed = n > 1 ? LZ4_compress_default(reinterpret_cast<const char*>(src), tmp,
                                                    static_cast<int>(n), static_cast<int>(n - 1))
                             : 0;
    const size_t size = packed > 0 ? static_cast<size_t>(packed) : n;
    auto data = std::make_shared_for_overwrite<char[]>(size);
    std::memcpy(data.get(), packed > 0 ? tmp : reinterpret_cast<const char*>(src), size);
    return {std::move(data), static_cast<uint32_t>(size),
            packed > 0 ? Encoding::Lz4 : Encoding::Raw};
}

uint64_t effective_readahead(const CacheOptions& o) {
    // A window over half the cache would evict what it has just fetched.
    uint64_t max = std::min(o.readahead_max, o.capacity / 2);
    return max - max % o.block_size;
}

} // namespace

struct CacheDevice::State {
    State(BlockDevice& below, const CacheOptions& opts)
        : lower(below), options(opts), bs(opts.block_size), size(below.size()),
          readahead_max(effective_readahead(opts)) {}

    class Claim;

    uint64_t block_length(uint64_t index) const {
        return std::min<uint64_t>(bs, size - index * bs);
    }

    void read(unsigned char* out, size_t length, uint64_t offset);
    void copy_out(uint64_t index, const Stored& s, unsigned char* out, size_t length,
                  uint64_t offset) const;
    void fetch_for_reader(Claim& claim, size_t count, unsigned char* out, size_t length,
                          uint64_t offset);
    void complete(Claim& claim, size_t count, std::vector<Stored>& enc, size_t keep_from,
                  bool ahead);
    void insert(uint64_t index, Stored s);
    void follow_stream(uint64_t offset, size_t length);
    void queue(Job job);
    void work();
    void read_ahead(const Job& job);
    std::string where(uint64_t offset) const {
        return lower.name() + ": cache: block at " + hex(offset);
    }

    BlockDevice& lower;
    const CacheOptions options;
    const uint64_t bs;
    const uint64_t size;
    const uint64_t readahead_max; // effective: 0, or whole blocks up to half the capacity

    // The one lock of the cache; nothing is read below, compressed or
    // decompressed while it is held, and no other lock is taken under it.
    mutable std::mutex mutex;
    std::condition_variable fetched; // blocks left in_flight
    std::condition_variable wake;    // a job was queued, or stop was set
    std::list<Block> lru;            // front: most recently used
    std::unordered_map<uint64_t, std::list<Block>::iterator> blocks;
    std::unordered_set<uint64_t> in_flight;
    uint64_t charged = 0; // stored bytes + kBlockCharge per block; <= capacity
    CacheStats counts;    // blocks is taken from `blocks` when asked
    std::array<Stream, kStreams> streams{};
    uint64_t clock = 0;
    std::deque<Job> jobs;
    std::vector<std::thread> workers;
    bool stop = false;
};

// Blocks this thread has put in in_flight, in ascending order; fetched ones
// are released by complete(), the rest given back when the claim goes (a
// failed fetch), so that waiters fetch them themselves.
class CacheDevice::State::Claim {
public:
    Claim(State& state, std::vector<uint64_t> indexes)
        : state_(state), indexes_(std::move(indexes)) {}
    ~Claim() {
        if (next_ == indexes_.size())
            return;
        std::lock_guard lock(state_.mutex);
        for (size_t i = next_; i < indexes_.size(); ++i)
            state_.in_flight.erase(indexes_[i]);
        state_.fetched.notify_all();
    }
    Claim(const Claim&) = delete;
    Claim& operator=(const Claim&) = delete;

    size_t left() const { return indexes_.size() - next_; }
    uint64_t next() const { return indexes_[next_]; }
    // How many claimed blocks from next() on are consecutive, at most `max`.
    size_t run(size_t max) const {
        size_t n = 1;
        while (n < left() && n < max && indexes_[next_ + n] == indexes_[next_ + n - 1] + 1)
            ++n;
        return n;
    }
    // Called under the lock: the next `count` blocks are out of in_flight.
    void released(size_t count) { next_ += count; }

private:
    State& state_;
    std::vector<uint64_t> indexes_;
    size_t next_ = 0;
};

void CacheDevice::State::read(unsigned char* out, size_t length, uint64_t offset) {
    std::vector<uint64_t> todo;
    for (uint64_t i = offset / bs; i <= (offset + length - 1) / bs; ++i)
        todo.push_back(i);
    bool first_pass = true;
    while (!todo.empty()) {
        std::vector<std::pair<uint64_t, Stored>> hits;
        std::vector<uint64_t> claimed;
        std::vector<uint64_t> waiting;
        {
            std::unique_lock lock(mutex);
            if (first_pass)
                follow_stream(offset, length);
            first_pass = false;
            for (;;) {
                for (uint64_t i : todo) {
                    if (auto it = blocks.find(i); it != blocks.end()) {
                        lru.splice(lru.begin(), lru, it->second);
                        hits.emplace_back(i, it->second->bytes);
                    } else if (in_flight.contains(i)) {
                        waiting.push_back(i);
                    } else {
                        in_flight.insert(i);
                        claimed.push_back(i);
                    }
                }
                if (!hits.empty() || !claimed.empty())
                    break;
                // Everything left is being fetched by others. Waking for any
                // block and looking again is cheap at these thread counts.
                waiting.clear();
                fetched.wait(lock);
            }
            counts.hits += hits.size();
        }
        Claim claim(*this, std::move(claimed));
        for (const auto& [index, bytes] : hits)
            copy_out(index, bytes, out, length, offset);
        hits.clear();
        while (claim.left() > 0)
            fetch_for_reader(claim, claim.run(SIZE_MAX), out, length, offset);
        todo = std::move(waiting);
    }
}

void CacheDevice::State::copy_out(uint64_t index, const Stored& s, unsigned char* out,
                                  size_t length, uint64_t offset) const {
    const uint64_t lo = index * bs;
    const size_t block = static_cast<size_t>(block_length(index));
    const uint64_t a = std::max(lo, offset);
    const uint64_t b = std::min(lo + block, offset + length);
    unsigned char* dst = out + (a - offset);
    const size_t skip = static_cast<size_t>(a - lo);
    const size_t n = static_cast<size_t>(b - a);
    switch (s.encoding) {
    case Encoding::Zero:
        std::memset(dst, 0, n);
        return;
    case Encoding::Raw:
        std::memcpy(dst, s.data.get() + skip, n);
        return;
    case Encoding::Lz4: {
        char* whole = n == block ? reinterpret_cast<char*>(dst) : scratch(block);
        const int got = LZ4_decompress_safe(s.data.get(), whole, static_cast<int>(s.size),
                                            static_cast<int>(block));
        // Never serve a wrong byte, even from memory that should not change.
        if (got != static_cast<int>(block))
            throw Error(where(lo) + " does not decompress to " + std::to_string(block) +
                        " bytes (lz4 returned " + std::to_string(got) + ")");
        if (whole != reinterpret_cast<char*>(dst))
            std::memcpy(dst, whole + skip, n);
        return;
    }
    }
}

void CacheDevice::State::fetch_for_reader(Claim& claim, size_t count, unsigned char* out,
                                          size_t length, uint64_t offset) {
    const uint64_t first = claim.next();
    const uint64_t lo = first * bs;
    const uint64_t hi = std::min((first + count) * bs, size);
    const uint64_t end = offset + length;
    // Blocks are fetched whole: straight into the caller's buffer when the
    // run lies inside it, else through a bounce buffer for the edges.
    std::unique_ptr<unsigned char[]> bounce;
    unsigned char* run;
    if (lo >= offset && hi <= end) {
        run = out + (lo - offset);
    } else {
        bounce = std::make_unique_for_overwrite<unsigned char[]>(static_cast<size_t>(hi - lo));
        run = bounce.get();
    }
    lower.read(run, static_cast<size_t>(hi - lo), lo);
    if (bounce) {
        const uint64_t a = std::max(lo, offset);
        const uint64_t b = std::min(hi, end);
        std::memcpy(out + (a - offset), run + (a - lo), static_cast<size_t>(b - a));
    }
    // Of a run bigger than the whole cache only the tail is kept: the rest
    // would be evicted by it at once, so is not worth compressing.
    size_t keep_from = 0;
    if (hi - lo > options.capacity)
        keep_from = count - static_cast<size_t>(options.capacity / bs);
    std::vector<Stored> enc(count);
    for (size_t i = keep_from; i < count; ++i)
        enc[i] = encode(run + i * bs, static_cast<size_t>(block_length(first + i)));
    complete(claim, count, enc, keep_from, false);
}

void CacheDevice::State::complete(Claim& claim, size_t count, std::vector<Stored>& enc,
                                  size_t keep_from, bool ahead) {
    std::lock_guard lock(mutex);
    const uint64_t first = claim.next();
    for (size_t i = 0; i < count; ++i)
        in_flight.erase(first + i);
    claim.released(count);
    // Waiters wake to the lock, which they get once the blocks are in.
    fetched.notify_all();
    (ahead ? counts.readahead : counts.misses) += count;
    for (size_t i = keep_from; i < count; ++i)
        insert(first + i, std::move(enc[i]));
}

void CacheDevice::State::insert(uint64_t index, Stored s) {
    const uint64_t charge = s.size + kBlockCharge;
    if (charge > options.capacity || blocks.contains(index))
        return;
    while (charged + charge > options.capacity) {
        const Block& old = lru.back();
        charged -= old.bytes.size + kBlockCharge;
        counts.stored_bytes -= old.bytes.size;
        ++counts.evictions;
        blocks.erase(old.index);
        lru.pop_back();
    }
    charged += charge;
    counts.stored_bytes += s.size;
    lru.push_front({index, std::move(s)});
    blocks.emplace(index, lru.begin());
}

void CacheDevice::State::follow_stream(uint64_t offset, size_t length) {
    if (readahead_max == 0)
        return;
    ++clock;
    const uint64_t end = offset + length;
    auto it = std::find_if(streams.begin(), streams.end(),
                           [&](const Stream& s) { return s.used != 0 && s.end == offset; });
    if (it == streams.end()) {
        auto oldest =
            std::min_element(streams.begin(), streams.end(),
                             [](const Stream& a, const Stream& b) { return a.used < b.used; });
        *oldest = {end, 0, clock};
        return;
    }
    it->window = it->window == 0 ? std::min<uint64_t>(std::max<uint64_t>(bs, length), readahead_max)
                                 : std::min(it->window * 2, readahead_max);
    it->end = end;
    it->used = clock;
    if (end < size)
        queue({end, std::min(it->window, size - end)});
}

void CacheDevice::State::queue(Job job) {
    if (workers.empty()) {
        try {
            for (unsigned i = 0; i < kWorkers; ++i)
                workers.emplace_back([this] { work(); });
        } catch (const std::system_error& e) {
            // Without threads there is no readahead; reads still work.
            spdlog::debug("{}: cache: no readahead worker: {}", lower.name(), e.what());
            if (workers.empty())
                return;
        }
    }
    if (jobs.size() == kMaxJobs)
        jobs.pop_front();
    jobs.push_back(job);
    wake.notify_one();
}

void CacheDevice::State::work() {
    std::unique_lock lock(mutex);
    for (;;) {
        wake.wait(lock, [&] { return stop || !jobs.empty(); });
        if (stop)
            return;
        const Job job = jobs.front();
        jobs.pop_front();
        lock.unlock();
        try {
            read_ahead(job);
        } catch (const std::exception& e) {
            // Dropped: a reader that needs these blocks fetches them itself
            // and gets the error there, where it can be reported.
            spdlog::debug("{}: cache: readahead of {} bytes at {} dropped: {}", lower.name(),
                          job.length, hex(job.offset), e.what());
        }
        lock.lock();
    }
}

void CacheDevice::State::read_ahead(const Job& job) {
    const uint64_t last = (job.offset + job.length - 1) / bs;
    const size_t max_run = static_cast<size_t>(std::max<uint64_t>(1, readahead_max / bs));
    uint64_t next = job.offset / bs;
    while (next <= last) {
        std::vector<uint64_t> run;
        {
            std::lock_guard lock(mutex);
            // Checked between fetches: a stopping cache waits for at most the
            // one read below each worker is in.
            if (stop)
                return;
            auto wanted = [&](uint64_t i) { return !blocks.contains(i) && !in_flight.contains(i); };
            while (next <= last && !wanted(next))
                ++next;
            while (next <= last && run.size() < max_run && wanted(next)) {
                in_flight.insert(next);
                run.push_back(next);
                ++next;
            }
        }
        if (run.empty())
            return;
        Claim claim(*this, run);
        const uint64_t lo = run.front() * bs;
        const uint64_t hi = std::min((run.back() + 1) * bs, size);
        auto buf = std::make_unique_for_overwrite<unsigned char[]>(static_cast<size_t>(hi - lo));
        lower.read(buf.get(), static_cast<size_t>(hi - lo), lo);
        std::vector<Stored> enc(run.size());
        for (size_t i = 0; i < run.size(); ++i)
            enc[i] = encode(buf.get() + i * bs, static_cast<size_t>(block_length(run[i])));
        complete(claim, run.size(), enc, 0, true);
    }
}

CacheDevice::CacheDevice(DevicePtr next, CacheOptions options) : FilterDevice(std::move(next)) {
    validate(options);
    state_ = std::make_unique<State>(*next_, options);
}

CacheDevice::~CacheDevice() {
    {
        std::lock_guard lock(state_->mutex);
        state_->stop = true;
    }
    state_->wake.notify_all();
    for (std::thread& t : state_->workers)
        t.join();
}

void CacheDevice::read(void* buf, size_t length, uint64_t offset) {
    State& s = *state_;
    // Out-of-range requests are the layer below's to refuse.
    if (s.options.capacity == 0 || length == 0 || offset > s.size || length > s.size - offset) {
        next_->read(buf, length, offset);
        return;
    }
    s.read(static_cast<unsigned char*>(buf), length, offset);
}

CacheStats CacheDevice::stats() const {
    std::lock_guard lock(state_->mutex);
    CacheStats out = state_->counts;
    out.blocks = state_->blocks.size();
    return out;
}

void validate(const CacheOptions& options) {
    const uint32_t bs = options.block_size;
    if (bs < (4u << 10) || bs > (4u << 20) || (bs & (bs - 1)) != 0)
        throw InvalidArgument("cache option block_size: " + std::to_string(bs) +
                              " bytes is not a power of two from 4 KiB to 4 MiB");
    if (options.readahead_max != 0 && options.readahead_max < bs)
        throw InvalidArgument(
            "cache option readahead_max: " + std::to_string(options.readahead_max) +
            " bytes is less than block_size (" + human_size(bs) + "); 0 turns readahead off");
}

} // namespace p2vfs
