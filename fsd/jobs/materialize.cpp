#include "jobs/materialize.h"

#include "common/crc32c.h"
#include "common/error.h"
#include "common/file_io.h"
#include "jobs/destination.h"
#include "nbd-bridge/nbd_source.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <new>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace p2vfs {
namespace {

using Clock = std::chrono::steady_clock;
using Seconds = std::chrono::duration<double>;

constexpr const char* checkpoint_format = "p2vfs-materialize-checkpoint";
constexpr uint64_t checkpoint_version = 1;
constexpr auto notify_interval = std::chrono::milliseconds(250);
constexpr Seconds rate_window{5.0};
// How far a slow stretch may be made up for by reading faster afterwards.
constexpr Seconds throttle_depth{0.5};

// Where a block is. Written: its writes have returned, not yet synced.
// Done: synced and recorded (or being recorded) in the checkpoint.
enum class Block : uint8_t { Pending, Written, Done };

// What the checkpoint file holds (layout: materialize.h).
struct Checkpoint {
    uint64_t view_size = 0;
    std::string view_identity;
    std::string view_name;
    uint64_t block_size = 0;
    std::string destination;
    std::vector<uint64_t> done;                      // block numbers, ascending (encode)
    std::vector<std::pair<uint64_t, uint64_t>> runs; // [first, count] (decode)
    std::vector<uint32_t> crcs;                      // one per done block
    bool complete = false;
};

// Names and identities are bytes; JSON strings must be UTF-8. Text that is
// not is kept as "hex:" and its bytes, the same way every time, so the
// comparison at resume is of equal encodings.
std::string json_text(const std::string& s) {
    try {
        (void)nlohmann::json(s).dump();
        return s;
    } catch (const nlohmann::json::exception&) {
        std::string out = "hex:";
        char buf[3];
        for (const unsigned char c : s) {
            std::snprintf(buf, sizeof buf, "%02x", c);
            out += buf;
        }
        return out;
    }
}

std::string encode(const Checkpoint& cp) {
    nlohmann::json j;
    j["format"] = checkpoint_format;
    j["version"] = checkpoint_version;
    j["view_size"] = cp.view_size;
    j["view_identity"] = json_text(cp.view_identity);
    j["view_name"] = json_text(cp.view_name);
    j["block_size"] = cp.block_size;
    j["destination"] = json_text(cp.destination);
    nlohmann::json runs = nlohmann::json::array();
    for (size_t i = 0; i < cp.done.size();) {
        size_t k = i + 1;
        while (k < cp.done.size() && cp.done[k] == cp.done[k - 1] + 1)
            ++k;
        runs.push_back(nlohmann::json::array({cp.done[i], static_cast<uint64_t>(k - i)}));
        i = k;
    }
    j["done"] = std::move(runs);
    std::string crcs;
    crcs.reserve(cp.crcs.size() * 8);
    char buf[9];
    for (const uint32_t c : cp.crcs) {
        std::snprintf(buf, sizeof buf, "%08x", c);
        crcs += buf;
    }
    j["crc32c"] = std::move(crcs);
    j["complete"] = cp.complete;
    const std::string body = j.dump();
    j["checksum"] = crc32c(body.data(), body.size());
    return j.dump(1) + "\n";
}

uint64_t unsigned_field(const nlohmann::json& j, const char* key) {
    const nlohmann::json& v = j.at(key);
    if (!v.is_number_unsigned())
        throw Error(std::string("\"") + key + "\" is not an unsigned number");
    return v.get<uint64_t>();
}

std::string string_field(const nlohmann::json& j, const char* key) {
    const nlohmann::json& v = j.at(key);
    if (!v.is_string())
        throw Error(std::string("\"") + key + "\" is not a string");
    return v.get<std::string>();
}

Checkpoint decode(const std::string& text, const std::string& path) {
    const auto bad = [&](const std::string& why) {
        return Error(path + ": not a usable materialization checkpoint: " + why +
                         "; cancel the job to copy again from the start",
                     EINVAL);
    };
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw bad(std::string("it does not parse (") + e.what() + ")");
    }
    Checkpoint cp;
    try {
        if (!j.is_object())
            throw Error("not a JSON object");
        const uint64_t checksum = unsigned_field(j, "checksum");
        j.erase("checksum");
        const std::string body = j.dump();
        if (crc32c(body.data(), body.size()) != checksum)
            throw Error("its checksum does not match its content");
        if (string_field(j, "format") != checkpoint_format)
            throw Error("\"format\" is not \"" + std::string(checkpoint_format) + "\"");
        const uint64_t version = unsigned_field(j, "version");
        if (version != checkpoint_version)
            throw Error("format version " + std::to_string(version) +
                        " (this build reads version " + std::to_string(checkpoint_version) + ")");
        cp.view_size = unsigned_field(j, "view_size");
        cp.view_identity = string_field(j, "view_identity");
        cp.view_name = string_field(j, "view_name");
        cp.block_size = unsigned_field(j, "block_size");
        cp.destination = string_field(j, "destination");
        const nlohmann::json& runs = j.at("done");
        if (!runs.is_array())
            throw Error("\"done\" is not a list");
        uint64_t next = 0;
        uint64_t total = 0;
        for (const nlohmann::json& run : runs) {
            if (!run.is_array() || run.size() != 2 || !run[0].is_number_unsigned() ||
                !run[1].is_number_unsigned())
                throw Error("\"done\" holds something other than [first, count] pairs");
            const uint64_t first = run[0].get<uint64_t>();
            const uint64_t count = run[1].get<uint64_t>();
            if (first < next || count == 0 || count > (UINT64_MAX - first) / 2)
                throw Error("the runs of \"done\" are not ascending and disjoint");
            cp.runs.emplace_back(first, count);
            next = first + count;
            total += count;
        }
        const std::string crcs = string_field(j, "crc32c");
        if (crcs.size() / 8 != total || crcs.size() % 8 != 0)
            throw Error("\"crc32c\" holds " + std::to_string(crcs.size()) + " digits for " +
                        std::to_string(total) + " done blocks (8 each)");
        cp.crcs.reserve(total);
        for (size_t i = 0; i < crcs.size(); i += 8) {
            uint32_t c = 0;
            for (size_t k = i; k < i + 8; ++k) {
                const char ch = crcs[k];
                const int d = ch >= '0' && ch <= '9'   ? ch - '0'
                              : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                                                       : -1;
                if (d < 0)
                    throw Error("\"crc32c\" holds a character that is not a hex digit");
                c = c << 4 | static_cast<uint32_t>(d);
            }
            cp.crcs.push_back(c);
        }
        const nlohmann::json& complete = j.at("complete");
        if (!complete.is_boolean())
            throw Error("\"complete\" is not true or false");
        cp.complete = complete.get<bool>();
    } catch (const nlohmann::json::exception& e) {
        throw bad(e.what());
    } catch (const Error& e) {
        throw bad(e.what());
    }
    return cp;
}

// The reads of all workers, paced to `rate` bytes per second: a token bucket
// that starts empty and holds at most `throttle_depth` worth of tokens, in
// its equivalent form of a theoretical arrival time (GCRA). A reader waits
// until the tokens for its bytes are there, then reads.
class Throttle {
public:
    explicit Throttle(uint64_t rate) : rate_(static_cast<double>(rate)), tat_(Clock::now()) {}

    // When the caller may read `bytes`.
    Clock::time_point reserve(uint64_t bytes) {
        std::lock_guard lock(mutex_);
        const auto earliest =
            Clock::now() - std::chrono::duration_cast<Clock::duration>(throttle_depth);
        tat_ = std::max(tat_, earliest) + std::chrono::duration_cast<Clock::duration>(
                                              Seconds(static_cast<double>(bytes) / rate_));
        return tat_;
    }

private:
    std::mutex mutex_;
    double rate_;
    Clock::time_point tat_;
};

// A worker's block buffer, page-aligned so a source opened with O_DIRECT
// can read into it without a bounce buffer.
class BlockBuffer {
public:
    explicit BlockBuffer(size_t size)
        : data_(static_cast<unsigned char*>(::operator new (size, std::align_val_t{4096}))) {}
    ~BlockBuffer() { ::operator delete (data_, std::align_val_t{4096}); }
    BlockBuffer(const BlockBuffer&) = delete;
    BlockBuffer& operator=(const BlockBuffer&) = delete;
    unsigned char* data() const { return data_; }

private:
    unsigned char* data_;
};

bool all_zero(const unsigned char* p, size_t n) {
    return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0);
}

uint32_t zero_crc(uint64_t length) {
    static const std::vector<unsigned char> zeros(1u << 20, 0);
    uint32_t crc = 0;
    for (uint64_t done = 0; done < length;) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), length - done));
        crc = crc32c(zeros.data(), n, crc);
        done += n;
    }
    return crc;
}

void validate(const std::string& job_dir, const DevicePtr& view, const std::string& destination,
              const MaterializeOptions& o) {
    if (job_dir.empty())
        throw InvalidArgument("materialization: no job directory");
    if (!view)
        throw InvalidArgument("materialization: no view to copy");
    if (destination.empty())
        throw InvalidArgument("materialization: no destination");
    if (o.parallel < 1 || o.parallel > 64)
        throw InvalidArgument("materialization: parallel " + std::to_string(o.parallel) +
                              " is not between 1 and 64");
    if (o.block_size < (64u << 10) || o.block_size > (256u << 20) ||
        (o.block_size & (o.block_size - 1)) != 0)
        throw InvalidArgument("materialization: block size " + std::to_string(o.block_size) +
                              " is not a power of two from 64 KiB to 256 MiB");
    if (!(o.checkpoint_seconds > 0) || !std::isfinite(o.checkpoint_seconds))
        throw InvalidArgument("materialization: the checkpoint interval must be a positive "
                              "number of seconds");
}

enum class Phase { Copy, Verify };

} // namespace

struct Materialization::State {
    // Fixed at construction.
    std::string job_dir;
    std::string checkpoint_path;
    std::string destination;
    DevicePtr view;
    MaterializeOptions options;
    uint64_t size = 0;
    uint64_t block_count = 0;
    bool nbd = false;

    // Serializes the control methods; taken before `mutex`.
    std::mutex control_mutex;
    std::thread controller; // under control_mutex

    // Guards what follows, except the atomics.
    mutable std::mutex mutex;
    std::condition_variable changed; // any change of state, request or worker count
    JobState state = JobState::Paused;
    bool state_told = true; // on_change has been called since `state` last changed
    std::string phase;
    std::string error;
    bool started = false;
    bool stopped = false;
    bool controller_running = false;
    bool pause_requested = false;
    bool stop_requested = false;
    bool cancel_requested = false;
    std::string run_error;            // a worker's failure: the first one
    std::vector<uint64_t> mismatched; // verify: blocks that differ
    unsigned workers_running = 0;
    bool loaded = false;   // blocks/crcs hold the checkpoint
    std::string identity;  // the view's, as of the first load
    bool complete = false; // every block synced (and verified, if asked)
    std::vector<Block> blocks;
    std::vector<uint32_t> crcs; // of Written and Done blocks
    uint64_t bytes_resumed = 0;
    uint64_t bytes_checkpointed = 0;
    mutable std::deque<std::pair<Clock::time_point, uint64_t>> samples; // for the rate
    Seconds active_before{0}; // time spent in earlier runs
    Clock::time_point run_began;

    std::atomic<bool> halt{false}; // a request or a failure: workers take no more blocks
    std::atomic<uint64_t> next_block{0};
    std::atomic<uint64_t> bytes_done{0};
    std::atomic<uint64_t> bytes_copied{0};
    std::atomic<uint64_t> bytes_written{0};
    std::atomic<uint64_t> bytes_verified{0};
    std::atomic<int64_t> last_notify{0};

    std::mutex callback_mutex; // guards `callback`
    std::mutex calling_mutex;  // one call at a time
    std::function<void()> callback;

    // The current run's, used by the controller and its workers only.
    std::unique_ptr<Destination> dest;
    std::unique_ptr<Throttle> throttle;
    bool dest_suspect = false; // a sync failed: nothing may be recorded done any more
    uint32_t zero_crc_full = 0;
    uint32_t zero_crc_last = 0;

    uint64_t block_offset(uint64_t b) const { return b * options.block_size; }
    uint64_t block_length(uint64_t b) const {
        return std::min(options.block_size, size - block_offset(b));
    }

    // Control (the control lock held).
    void launch();

    // The controller.
    void run();
    void run_phases();
    bool load_and_open();
    void load();
    void start_over(const std::string& why);
    void run_workers(Phase kind);
    bool ended_by_request();
    void checkpoint(bool force);
    void finish_failed(const std::string& message);

    // Workers.
    void copy_worker(unsigned worker);
    void verify_worker(unsigned worker);
    bool copy_block(unsigned worker, uint64_t b, unsigned char* buf);
    void write_runs(unsigned worker, const unsigned char* buf, uint64_t offset, uint64_t length);
    bool wait_for_throttle(uint64_t bytes);
    void record_failure(const std::string& message);
    void worker_exit();

    // Reporting.
    void set_state(JobState s, const std::string& err = {});
    void set_phase(const std::string& p);
    void notify_progress();
    void call_callback();
    void sample(Clock::time_point now) const; // mutex held
    uint64_t done_bytes_locked() const;
    std::string describe() const { return view->name() + " to " + destination; }
};

// ---- control ---------------------------------------------------------------

void Materialization::State::launch() {
    if (controller.joinable())
        controller.join();
    {
        std::lock_guard lock(mutex);
        started = true;
        state = JobState::Running;
        phase.clear();
        error.clear();
        run_error.clear();
        mismatched.clear();
        pause_requested = stop_requested = cancel_requested = false;
        halt = false;
        controller_running = true;
        changed.notify_all();
    }
    try {
        controller = std::thread([this] { run(); });
    } catch (const std::exception& e) {
        {
            std::lock_guard lock(mutex);
            controller_running = false;
        }
        set_state(JobState::Failed, std::string("cannot start a thread: ") + e.what());
        return;
    }
    call_callback();
}

// ---- the controller --------------------------------------------------------

void Materialization::State::run() {
    run_began = Clock::now();
    try {
        run_phases();
    } catch (const std::exception& e) {
        finish_failed(e.what());
    }
    try {
        dest.reset();
    } catch (...) {
    }
    throttle.reset();
    {
        std::lock_guard lock(mutex);
        active_before += Clock::now() - run_began;
        controller_running = false;
        // Every way out sets the state, except stop (kept as it was) and
        // cancel (which cancel() finishes).
        if (state == JobState::Running && !stop_requested && !cancel_requested)
            state = JobState::Paused;
        changed.notify_all();
    }
}

void Materialization::State::run_phases() {
    if (!load_and_open())
        return;
    bool copy_needed = false;
    {
        std::lock_guard lock(mutex);
        copy_needed =
            std::any_of(blocks.begin(), blocks.end(), [](Block b) { return b != Block::Done; });
    }
    if (copy_needed) {
        set_phase("copying");
        run_workers(Phase::Copy);
        if (ended_by_request())
            return;
    }
    set_phase("syncing");
    checkpoint(false);
    if (ended_by_request())
        return;
    if (options.verify && !complete) {
        set_phase("verifying");
        run_workers(Phase::Verify);
        if (ended_by_request())
            return;
    }
    {
        std::lock_guard lock(mutex);
        complete = true;
    }
    // Recorded before the rename: after a crash between the two, a restart
    // finds DEST.part complete and renames it; after the rename, finds DEST
    // and reports Done.
    checkpoint(true);
    dest->commit();
    const double seconds = Seconds(active_before + (Clock::now() - run_began)).count();
    const uint64_t copied = bytes_copied;
    spdlog::info("materialized {}: {} in {:.1f} s ({}/s), {} written, {} resumed", describe(),
                 human_size(size), seconds,
                 human_size(seconds > 0
                                ? static_cast<uint64_t>(static_cast<double>(copied) / seconds)
                                : copied),
                 human_size(bytes_written), human_size(bytes_resumed));
    set_state(JobState::Done);
}

// Reads the checkpoint (first run only), checks the destination against it
// and opens it. False when there is nothing to run (already done).
bool Materialization::State::load_and_open() {
    if (!loaded)
        load();
    {
        std::lock_guard lock(mutex);
        // Writes not recorded in a checkpoint are not trusted.
        for (Block& b : blocks)
            if (b == Block::Written)
                b = Block::Pending;
        bytes_done = done_bytes_locked();
    }
    zero_crc_full = zero_crc(std::min(options.block_size, size));
    zero_crc_last = block_count ? zero_crc(block_length(block_count - 1)) : 0;
    dest_suspect = false;
    const unsigned workers = static_cast<unsigned>(
        std::max<uint64_t>(1, std::min<uint64_t>(options.parallel, block_count)));

    uint64_t resumed = 0;
    {
        std::lock_guard lock(mutex);
        resumed = done_bytes_locked();
    }
    if (nbd) {
        if (complete) {
            spdlog::info("materialization of {} was complete already", describe());
            set_state(JobState::Done);
            return false;
        }
        dest = open_nbd_destination(destination, size, workers);
    } else {
        const std::string part = partial_path(destination);
        std::error_code ec;
        const bool dest_exists =
            std::filesystem::exists(std::filesystem::symlink_status(destination, ec));
        const bool part_exists = std::filesystem::exists(std::filesystem::symlink_status(part, ec));
        if (complete && dest_exists && !part_exists) {
            spdlog::info("materialization of {} was complete already", describe());
            set_state(JobState::Done);
            return false;
        }
        if (dest_exists)
            throw Error(destination +
                            ": exists already; a materialization does not overwrite a file",
                        EEXIST);
        if (resumed > 0 && !part_exists) {
            spdlog::warn("materialization of {}: {} is gone, though the checkpoint lists {} as "
                         "copied; copying from the start",
                         describe(), part, human_size(resumed));
            start_over(part + " was gone");
            resumed = 0;
        }
        dest = open_file_destination(destination, size, resumed > 0, options.owner_uid,
                                         options.owner_gid);
    }
    if (resumed > 0)
        spdlog::info("resuming materialization of {}: {} of {} done at the last checkpoint",
                     describe(), human_size(resumed), human_size(size));
    else
        spdlog::info("materializing {} ({}): {} worker(s), blocks of {}, bandwidth {}", describe(),
                     human_size(size), options.parallel, human_size(options.block_size),
                     options.bandwidth ? human_size(options.bandwidth) + "/s" : "unlimited");
    return true;
}

void Materialization::State::load() {
    make_directories(job_dir);
    const std::string now_identity = view->identity();
    bool exists = false;
    const std::string text = read_small_file(checkpoint_path, &exists);
    std::vector<Block> b(block_count, Block::Pending);
    std::vector<uint32_t> c(block_count, 0);
    bool was_complete = false;
    if (exists) {
        const Checkpoint cp = decode(text, checkpoint_path);
        if (cp.view_size != size || cp.view_identity != json_text(now_identity))
            throw Error("the view changed since the job started: checkpoint " + checkpoint_path +
                            " was made for " + cp.view_identity + " (" +
                            std::to_string(cp.view_size) + " bytes), the view is now " +
                            now_identity + " (" + std::to_string(size) +
                            " bytes); cancel the job to copy the new view from the start",
                        ESTALE);
        if (cp.block_size != options.block_size)
            throw Error("checkpoint " + checkpoint_path + " was made with blocks of " +
                            std::to_string(cp.block_size) + " bytes, the job asks for " +
                            std::to_string(options.block_size),
                        EINVAL);
        if (cp.destination != json_text(destination))
            throw Error("checkpoint " + checkpoint_path + " is for destination " + cp.destination +
                            ", not " + destination,
                        EINVAL);
        size_t i = 0;
        for (const auto& [first, count] : cp.runs) {
            if (first >= block_count || count > block_count - first)
                throw Error(checkpoint_path +
                                ": not a usable materialization checkpoint: it "
                                "lists blocks up to " +
                                std::to_string(first + count - 1) + " of a disk of " +
                                std::to_string(block_count) + " blocks",
                            EINVAL);
            for (uint64_t k = first; k < first + count; ++k) {
                b[k] = Block::Done;
                c[k] = cp.crcs[i++];
            }
        }
        if (cp.complete && cp.crcs.size() != block_count)
            throw Error(checkpoint_path + ": not a usable materialization checkpoint: it says "
                                          "complete but lists blocks not done",
                        EINVAL);
        was_complete = cp.complete;
    }
    std::lock_guard lock(mutex);
    blocks = std::move(b);
    crcs = std::move(c);
    complete = was_complete;
    identity = now_identity;
    bytes_resumed = done_bytes_locked();
    bytes_checkpointed = bytes_resumed;
    loaded = true;
}

// Forgets every done block; the emptied checkpoint is durable before the
// caller makes DEST.part again, so a crash cannot pair the old list with a
// new file.
void Materialization::State::start_over(const std::string& why) {
    {
        std::lock_guard lock(mutex);
        std::fill(blocks.begin(), blocks.end(), Block::Pending);
        bytes_resumed = 0;
        bytes_checkpointed = 0;
        complete = false;
        bytes_done = 0;
    }
    Checkpoint cp;
    cp.view_size = size;
    cp.view_identity = identity;
    cp.view_name = view->name();
    cp.block_size = options.block_size;
    cp.destination = destination;
    replace_file(checkpoint_path, encode(cp));
    spdlog::debug("materialization of {}: checkpoint emptied ({})", describe(), why);
}

void Materialization::State::run_workers(Phase kind) {
    next_block = 0;
    if (kind == Phase::Verify)
        bytes_verified = 0;
    throttle.reset();
    if (kind == Phase::Copy && options.bandwidth)
        throttle = std::make_unique<Throttle>(options.bandwidth);
    const unsigned n = static_cast<unsigned>(std::min<uint64_t>(options.parallel, block_count));
    std::vector<std::thread> threads;
    for (unsigned w = 0; w < n; ++w) {
        {
            std::lock_guard lock(mutex);
            ++workers_running;
        }
        try {
            threads.emplace_back([this, w, kind] {
                if (kind == Phase::Copy)
                    copy_worker(w);
                else
                    verify_worker(w);
            });
        } catch (const std::exception& e) {
            record_failure(std::string("cannot start a worker thread: ") + e.what());
            std::lock_guard lock(mutex);
            --workers_running;
            changed.notify_all();
            break;
        }
    }
    const auto interval =
        std::chrono::duration_cast<Clock::duration>(Seconds(options.checkpoint_seconds));
    auto next_checkpoint = Clock::now() + interval;
    std::unique_lock lock(mutex);
    while (workers_running > 0) {
        auto wake = Clock::now() + notify_interval;
        if (kind == Phase::Copy)
            wake = std::min(wake, next_checkpoint);
        changed.wait_until(lock, wake);
        sample(Clock::now());
        if (workers_running == 0)
            break;
        if (kind == Phase::Copy && Clock::now() >= next_checkpoint && !halt) {
            lock.unlock();
            try {
                checkpoint(false);
            } catch (const std::exception& e) {
                record_failure(e.what());
            }
            lock.lock();
            next_checkpoint = Clock::now() + interval;
        }
    }
    lock.unlock();
    for (std::thread& t : threads)
        t.join();
}

// After a phase: true when a request ended the run (its state set), throws
// a worker's failure.
bool Materialization::State::ended_by_request() {
    bool cancel = false;
    bool stop = false;
    bool pause = false;
    std::string failure;
    std::vector<uint64_t> bad;
    {
        std::lock_guard lock(mutex);
        cancel = cancel_requested;
        stop = stop_requested;
        pause = pause_requested;
        failure = run_error;
        bad = mismatched;
    }
    if (cancel)
        return true; // cancel() removes what there is
    if (!bad.empty()) {
        std::sort(bad.begin(), bad.end());
        std::string message = "verification failed: destination " + dest->name() +
                              " differs at offset " + hex(block_offset(bad.front())) + " (block " +
                              std::to_string(bad.front()) + ")";
        if (bad.size() > 1)
            message += ", and " + std::to_string(bad.size() - 1) + " other block(s) differ";
        if (failure.empty())
            failure = message;
        else
            failure = message + "; " + failure;
    }
    if (!failure.empty())
        throw Error(failure);
    if (!stop && !pause)
        return false;
    checkpoint(false);
    if (stop) {
        std::lock_guard lock(mutex);
        phase.clear();
        spdlog::info("materialization of {} stopped at {} of {}; a restart resumes it", describe(),
                     human_size(bytes_done), human_size(size));
        return true;
    }
    spdlog::info("materialization of {} paused at {} of {}", describe(), human_size(bytes_done),
                 human_size(size));
    set_state(JobState::Paused);
    return true;
}

// The crash rules in materialize.h: note, sync, record. `force`: write the
// file even when no block became done (the complete flag, a block found bad).
void Materialization::State::checkpoint(bool force) {
    if (dest_suspect)
        throw Error(dest->name() + ": a sync failed earlier; nothing more is recorded as copied");
    std::vector<uint64_t> newly;
    {
        std::lock_guard lock(mutex);
        for (uint64_t b = 0; b < block_count; ++b)
            if (blocks[b] == Block::Written)
                newly.push_back(b);
    }
    if (newly.empty() && !force)
        return;
    try {
        dest->sync();
    } catch (...) {
        // After a failed fdatasync the kernel may have dropped the pages it
        // could not write, and a second one succeed: never trust this run's
        // writes again.
        dest_suspect = true;
        throw;
    }
    Checkpoint cp;
    cp.view_size = size;
    cp.view_identity = identity;
    cp.view_name = view->name();
    cp.block_size = options.block_size;
    cp.destination = destination;
    uint64_t recorded = 0;
    {
        std::lock_guard lock(mutex);
        for (const uint64_t b : newly)
            if (blocks[b] == Block::Written)
                blocks[b] = Block::Done;
        for (uint64_t b = 0; b < block_count; ++b) {
            if (blocks[b] == Block::Done) {
                cp.done.push_back(b);
                cp.crcs.push_back(crcs[b]);
                recorded += block_length(b);
            }
        }
        cp.complete = complete;
    }
    replace_file(checkpoint_path, encode(cp));
    {
        std::lock_guard lock(mutex);
        bytes_checkpointed = recorded;
    }
    spdlog::debug("materialization of {}: checkpoint at {} of {}", describe(), recorded, size);
    notify_progress();
}

void Materialization::State::finish_failed(const std::string& message) {
    try {
        // Keep what is safely copied for the retry, unless the destination
        // cannot be trusted to have kept it; and forget blocks found bad.
        if (dest && !dest_suspect)
            checkpoint(true);
    } catch (const std::exception& e) {
        spdlog::warn("materialization of {}: no checkpoint after the failure: {}", describe(),
                     e.what());
    }
    spdlog::error("materialization of {} failed: {}", describe(), message);
    set_state(JobState::Failed, message);
}

// ---- workers ---------------------------------------------------------------

void Materialization::State::copy_worker(unsigned worker) {
    try {
        BlockBuffer buf(static_cast<size_t>(std::min(options.block_size, size)));
        while (!halt) {
            const uint64_t b = next_block++;
            if (b >= block_count)
                break;
            {
                std::lock_guard lock(mutex);
                if (blocks[b] != Block::Pending)
                    continue;
            }
            if (!copy_block(worker, b, buf.data()))
                break;
            notify_progress();
        }
    } catch (const std::exception& e) {
        record_failure(e.what());
    } catch (...) {
        record_failure("unknown error in a copy worker");
    }
    worker_exit();
}

// False when a request stopped the worker before it read the block.
bool Materialization::State::copy_block(unsigned worker, uint64_t b, unsigned char* buf) {
    const uint64_t offset = block_offset(b);
    const uint64_t length = block_length(b);
    std::vector<Extent> extents;
    try {
        extents = view->extents(offset, length);
    } catch (const std::exception& e) {
        throw Error("reading the allocation of " + view->name() + " at " + hex(offset) +
                    " (block " + std::to_string(b) + ") failed: " + e.what());
    }
    // The bandwidth limit is charged what the source must deliver: the
    // block's data; its holes and zeros cost the source nothing to read.
    uint64_t data_bytes = 0;
    for (const Extent& e : extents)
        if (e.type == ExtentType::Data)
            data_bytes += e.length;
    uint32_t crc = 0;
    if (data_bytes == 0) {
        crc = length == options.block_size ? zero_crc_full : zero_crc_last;
        dest->write_zeros(worker, offset, length);
    } else {
        if (!wait_for_throttle(data_bytes))
            return false;
        try {
            view->read(buf, static_cast<size_t>(length), offset);
        } catch (const std::exception& e) {
            throw Error("reading " + view->name() + " at " + hex(offset) + " (" +
                        std::to_string(length) + " bytes, block " + std::to_string(b) +
                        ") failed: " + e.what());
        }
        crc = crc32c(buf, static_cast<size_t>(length));
        write_runs(worker, buf, offset, length);
    }
    std::lock_guard lock(mutex);
    blocks[b] = Block::Written;
    crcs[b] = crc;
    bytes_done += length;
    bytes_copied += length;
    return true;
}

// Writes a block's data, leaving out the runs of zeros (by the destination's
// granularity, from the block's start).
void Materialization::State::write_runs(unsigned worker, const unsigned char* buf, uint64_t offset,
                                        uint64_t length) {
    const uint64_t g = dest->granularity();
    const auto emit = [&](uint64_t from, uint64_t to, bool zero) {
        if (zero) {
            dest->write_zeros(worker, offset + from, to - from);
        } else {
            dest->write(worker, buf + from, static_cast<size_t>(to - from), offset + from);
            bytes_written += to - from;
        }
    };
    uint64_t run_start = 0;
    bool run_zero = false;
    for (uint64_t at = 0; at < length; at += g) {
        const bool zero = all_zero(buf + at, static_cast<size_t>(std::min(g, length - at)));
        if (at > 0 && zero != run_zero) {
            emit(run_start, at, run_zero);
            run_start = at;
        }
        run_zero = zero;
    }
    if (length > 0)
        emit(run_start, length, run_zero);
}

bool Materialization::State::wait_for_throttle(uint64_t bytes) {
    if (!throttle)
        return true;
    const auto until = throttle->reserve(bytes);
    std::unique_lock lock(mutex);
    return !changed.wait_until(lock, until, [this] { return halt.load(); });
}

void Materialization::State::verify_worker(unsigned worker) {
    try {
        BlockBuffer buf(static_cast<size_t>(std::min(options.block_size, size)));
        while (!halt) {
            const uint64_t b = next_block++;
            if (b >= block_count)
                break;
            const uint64_t offset = block_offset(b);
            const uint64_t length = block_length(b);
            dest->read(worker, buf.data(), static_cast<size_t>(length), offset);
            const uint32_t crc = crc32c(buf.data(), static_cast<size_t>(length));
            {
                std::lock_guard lock(mutex);
                if (crc != crcs[b]) {
                    // Not done any more: a retry copies it again.
                    if (blocks[b] == Block::Done) {
                        blocks[b] = Block::Pending;
                        bytes_done -= length;
                    }
                    mismatched.push_back(b);
                    continue;
                }
            }
            bytes_verified += length;
            notify_progress();
        }
    } catch (const std::exception& e) {
        record_failure(e.what());
    } catch (...) {
        record_failure("unknown error in a verify worker");
    }
    worker_exit();
}

void Materialization::State::record_failure(const std::string& message) {
    std::lock_guard lock(mutex);
    if (run_error.empty())
        run_error = message;
    halt = true;
    changed.notify_all();
}

void Materialization::State::worker_exit() {
    std::lock_guard lock(mutex);
    --workers_running;
    changed.notify_all();
}

// ---- reporting -------------------------------------------------------------

void Materialization::State::set_state(JobState s, const std::string& err) {
    {
        std::lock_guard lock(mutex);
        state = s;
        if (s != JobState::Running) {
            phase.clear();
            samples.clear();
        }
        if (s == JobState::Failed)
            error = err;
        else
            error.clear();
        state_told = false;
        changed.notify_all();
    }
    call_callback();
    std::lock_guard lock(mutex);
    if (state == s) {
        state_told = true;
        changed.notify_all();
    }
}

void Materialization::State::set_phase(const std::string& p) {
    {
        std::lock_guard lock(mutex);
        phase = p;
        samples.clear();
    }
    call_callback();
}

void Materialization::State::notify_progress() {
    const int64_t now = Clock::now().time_since_epoch().count();
    int64_t last = last_notify.load();
    if (now - last < std::chrono::duration_cast<Clock::duration>(notify_interval).count())
        return;
    if (!last_notify.compare_exchange_strong(last, now))
        return; // another thread is telling
    call_callback();
}

void Materialization::State::call_callback() {
    std::lock_guard calling(calling_mutex);
    std::function<void()> f;
    {
        std::lock_guard lock(callback_mutex);
        f = callback;
    }
    last_notify = Clock::now().time_since_epoch().count();
    if (!f)
        return;
    try {
        f();
    } catch (const std::exception& e) {
        spdlog::warn("materialization of {}: progress callback failed: {}", describe(), e.what());
    } catch (...) {
        spdlog::warn("materialization of {}: progress callback failed", describe());
    }
}

void Materialization::State::sample(Clock::time_point now) const {
    if (!samples.empty() && now - samples.back().first < std::chrono::milliseconds(100))
        return;
    samples.emplace_back(now, bytes_copied.load() + bytes_verified.load());
    while (samples.size() > 2 && now - samples[1].first >= rate_window)
        samples.pop_front();
}

uint64_t Materialization::State::done_bytes_locked() const {
    uint64_t n = 0;
    for (uint64_t b = 0; b < block_count; ++b)
        if (blocks[b] != Block::Pending)
            n += block_length(b);
    return n;
}

// ---- the public face -------------------------------------------------------

std::string to_string(JobState state) {
    switch (state) {
    case JobState::Running:
        return "running";
    case JobState::Paused:
        return "paused";
    case JobState::Done:
        return "done";
    case JobState::Failed:
        return "failed";
    case JobState::Cancelled:
        return "cancelled";
    }
    return "unknown";
}

std::optional<JobState> job_state_from_string(std::string_view text) {
    for (const JobState s : {JobState::Running, JobState::Paused, JobState::Done, JobState::Failed,
                             JobState::Cancelled})
        if (text == to_string(s))
            return s;
    return std::nullopt;
}

Materialization::Materialization(std::string job_dir, DevicePtr view, std::string destination,
                                 MaterializeOptions options)
    : state_(std::make_unique<State>()) {
    validate(job_dir, view, destination, options);
    State& s = *state_;
    s.job_dir = std::move(job_dir);
    s.checkpoint_path = (std::filesystem::path(s.job_dir) / "checkpoint").string();
    s.view = std::move(view);
    s.destination = std::move(destination);
    s.options = options;
    s.size = s.view->size();
    s.block_count = (s.size + options.block_size - 1) / options.block_size;
    s.nbd = is_nbd_uri(s.destination);
}

Materialization::~Materialization() {
    stop();
}

void Materialization::start() {
    State& s = *state_;
    std::lock_guard control(s.control_mutex);
    {
        std::lock_guard lock(s.mutex);
        if (s.started || s.stopped)
            return;
    }
    s.launch();
}

void Materialization::request_pause() {
    State& s = *state_;
    std::lock_guard lock(s.mutex);
    if (s.state != JobState::Running || !s.controller_running)
        return;
    s.pause_requested = true;
    s.halt = true;
    s.changed.notify_all();
}

void Materialization::pause() {
    State& s = *state_;
    std::lock_guard control(s.control_mutex);
    request_pause();
    {
        std::unique_lock lock(s.mutex);
        s.changed.wait(lock, [&] { return s.state != JobState::Running || !s.controller_running; });
    }
    if (s.controller.joinable())
        s.controller.join();
}

void Materialization::resume() {
    State& s = *state_;
    std::lock_guard control(s.control_mutex);
    {
        std::lock_guard lock(s.mutex);
        if (s.stopped || (s.state != JobState::Paused && s.state != JobState::Failed))
            return;
    }
    s.launch();
}

void Materialization::cancel() {
    State& s = *state_;
    std::lock_guard control(s.control_mutex);
    {
        std::lock_guard lock(s.mutex);
        if (s.stopped || s.state == JobState::Done || s.state == JobState::Cancelled)
            return;
        s.cancel_requested = true;
        s.halt = true;
        s.changed.notify_all();
    }
    if (s.controller.joinable())
        s.controller.join();
    {
        std::lock_guard lock(s.mutex);
        if (s.state == JobState::Done)
            return; // it finished first
    }
    if (!s.nbd) {
        try {
            remove_partial(s.destination, s.options.owner_uid >= 0 || s.options.owner_gid >= 0);
        } catch (const Error& e) {
            spdlog::warn("materialization of {}: {}", s.describe(), e.what());
        }
    }
    for (const std::string& f : {s.checkpoint_path, s.checkpoint_path + ".tmp"})
        if (::unlink(f.c_str()) != 0 && errno != ENOENT)
            spdlog::warn("materialization of {}: cannot remove {}: {}", s.describe(), f,
                         errno_text(errno));
    {
        std::lock_guard lock(s.mutex);
        s.loaded = false;
        s.complete = false;
    }
    spdlog::info("materialization of {} cancelled", s.describe());
    s.set_state(JobState::Cancelled);
}

void Materialization::stop() {
    State& s = *state_;
    std::lock_guard control(s.control_mutex);
    {
        std::lock_guard lock(s.mutex);
        if (s.stopped)
            return;
        s.stop_requested = true;
        s.halt = true;
        s.changed.notify_all();
    }
    if (s.controller.joinable())
        s.controller.join();
    std::lock_guard lock(s.mutex);
    s.stopped = true;
    s.changed.notify_all();
}

void Materialization::wait() {
    State& s = *state_;
    std::unique_lock lock(s.mutex);
    // Until the callback has been told, so that a caller of wait() finds
    // every notification delivered.
    s.changed.wait(lock, [&] {
        return s.stopped ||
               (s.state_told && (s.state == JobState::Done || s.state == JobState::Failed ||
                                 s.state == JobState::Cancelled));
    });
}

JobProgress Materialization::progress() const {
    const State& s = *state_;
    std::lock_guard lock(s.mutex);
    JobProgress p;
    p.state = s.state;
    p.phase = s.phase;
    p.bytes_total = s.size;
    p.bytes_done = s.bytes_done;
    p.bytes_copied = s.bytes_copied;
    p.bytes_resumed = s.bytes_resumed;
    p.bytes_written = s.bytes_written;
    p.bytes_checkpointed = s.bytes_checkpointed;
    p.bytes_verified = s.bytes_verified;
    p.error = s.error;
    p.rate = 0;
    p.eta_seconds = -1;
    if (s.state == JobState::Running && !s.phase.empty()) {
        s.sample(Clock::now());
        if (s.samples.size() >= 2) {
            const double dt = Seconds(s.samples.back().first - s.samples.front().first).count();
            if (dt >= 0.2)
                p.rate =
                    static_cast<double>(s.samples.back().second - s.samples.front().second) / dt;
        }
        uint64_t remaining = 0;
        bool known = true;
        if (s.phase == "copying")
            remaining = p.bytes_total - p.bytes_done;
        else if (s.phase == "verifying")
            remaining = p.bytes_total - p.bytes_verified;
        else
            known = false;
        if (known && remaining == 0)
            p.eta_seconds = 0;
        else if (known && p.rate > 0)
            p.eta_seconds = static_cast<double>(remaining) / p.rate;
    }
    return p;
}

void Materialization::on_change(std::function<void()> callback) {
    State& s = *state_;
    std::lock_guard lock(s.callback_mutex);
    s.callback = std::move(callback);
}

} // namespace p2vfs
