#include "jobs/sync.h"

#include "block/local_source.h"
#include "common/command.h"
#include "common/crc32c.h"
#include "common/error.h"
#include "common/file_io.h"
#include "jobs/image_target.h"
#include "jobs/reflink_generations.h"
#include "nbd-bridge/dirty_bitmap.h"
#include "overlay/overlay.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <xxhash.h>

namespace p2vfs {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using Hash = std::array<uint8_t, 16>;
using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;

constexpr const char* record_format = "p2vfs-sync";
constexpr uint64_t record_version = 1;
constexpr auto notify_interval = std::chrono::milliseconds(250);

Hash hash_bytes(const void* data, size_t length) {
    const XXH128_hash_t h = XXH3_128bits(data, length);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    Hash out;
    std::memcpy(out.data(), c.digest, out.size());
    return out;
}

int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string partial_name(const std::string& destination) { return destination + ".part"; }

// What identifies the target file's content from outside: a write through
// the file system moves mtime and ctime, a rename moves ctime, neither can be
// set back by a user (ctime).
struct FileStamp {
    uint64_t dev = 0, ino = 0, size = 0;
    int64_t mtime_ns = 0, ctime_ns = 0;
    bool operator==(const FileStamp&) const = default;
};

std::optional<FileStamp> stamp_of(const std::string& path) {
    struct stat st{};
    if (::stat(path.c_str(), &st) != 0) {
        if (errno == ENOENT)
            return std::nullopt;
        throw Error("target " + path + ": " + errno_text(errno));
    }
    FileStamp s;
    s.dev = st.st_dev;
    s.ino = st.st_ino;
    s.size = static_cast<uint64_t>(st.st_size);
    s.mtime_ns = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    s.ctime_ns = st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec;
    return s;
}

json stamp_json(const FileStamp& s) {
    return {{"dev", s.dev}, {"ino", s.ino}, {"size", s.size}, {"mtime_ns", s.mtime_ns},
            {"ctime_ns", s.ctime_ns}};
}

FileStamp stamp_from(const json& j) {
    FileStamp s;
    s.dev = j.at("dev").get<uint64_t>();
    s.ino = j.at("ino").get<uint64_t>();
    s.size = j.at("size").get<uint64_t>();
    s.mtime_ns = j.at("mtime_ns").get<int64_t>();
    s.ctime_ns = j.at("ctime_ns").get<int64_t>();
    return s;
}

struct GenerationInfo {
    uint64_t number = 0;
    std::string detection;
    int64_t started = 0, finished = 0;
    uint64_t changed = 0, written = 0, read = 0;
};

// sync.json (layout: sync.h).
struct Record {
    uint64_t source_size = 0;
    std::string destination; // the final name; the target is DEST.part until cutover
    SyncOptions options;
    uint64_t generation = 0;
    std::vector<GenerationInfo> history;
    std::optional<FileStamp> target_stamp;
    // The step in progress.
    bool pass = false;            // a sync pass of generation+1
    int64_t pass_started = 0;
    std::string pass_detection;
    std::string pass_copy;        // reflink: this pass's copy
    std::vector<uint64_t> done;   // blocks of the pass done (ascending)
    std::string cutover;          // "" or the cutover's phase
    std::string reflink_copy;     // reflink: generation's copy
    std::string fixups_plan;
    std::string description;      // the VM's, written beside DEST at the end
    std::string description_file;
    bool bootable = false;
};

} // namespace

json to_json(const SyncOptions& o) {
    return {{"format", o.format},
            {"block_size", o.block_size},
            {"parallel", o.parallel},
            {"detection", o.detection},
            {"bitmap", o.bitmap},
            {"reflink_dir", o.reflink_dir},
            {"interval_minutes", o.interval_minutes},
            {"cutover_at", o.cutover_at},
            {"quiesce_command", o.quiesce_command},
            {"unquiesce_command", o.unquiesce_command},
            {"quiesce_signal", o.quiesce_signal},
            {"quiesce_timeout", o.quiesce_timeout},
            {"checkpoint_seconds", o.checkpoint_seconds},
            {"owner_uid", o.owner_uid},
            {"owner_gid", o.owner_gid}};
}

SyncOptions sync_options_from_json(const json& j) {
    SyncOptions o;
    o.format = j.at("format").get<std::string>();
    o.block_size = j.at("block_size").get<uint64_t>();
    o.parallel = j.at("parallel").get<unsigned>();
    o.detection = j.at("detection").get<std::string>();
    o.bitmap = j.at("bitmap").get<std::string>();
    o.reflink_dir = j.at("reflink_dir").get<std::string>();
    o.interval_minutes = j.at("interval_minutes").get<double>();
    o.cutover_at = j.at("cutover_at").get<int64_t>();
    o.quiesce_command = j.at("quiesce_command").get<std::string>();
    o.unquiesce_command = j.at("unquiesce_command").get<std::string>();
    o.quiesce_signal = j.at("quiesce_signal").get<bool>();
    o.quiesce_timeout = j.at("quiesce_timeout").get<double>();
    o.checkpoint_seconds = j.at("checkpoint_seconds").get<double>();
    o.owner_uid = j.at("owner_uid").get<int64_t>();
    o.owner_gid = j.at("owner_gid").get<int64_t>();
    return o;
}

namespace {

json runs_json(const std::vector<uint64_t>& blocks) {
    json runs = json::array();
    for (size_t i = 0; i < blocks.size();) {
        size_t k = i + 1;
        while (k < blocks.size() && blocks[k] == blocks[k - 1] + 1)
            ++k;
        runs.push_back(json::array({blocks[i], static_cast<uint64_t>(k - i)}));
        i = k;
    }
    return runs;
}

std::string encode(const Record& r) {
    json j;
    j["format"] = record_format;
    j["version"] = record_version;
    j["source_size"] = r.source_size;
    j["destination"] = r.destination;
    j["options"] = to_json(r.options);
    j["generation"] = r.generation;
    json history = json::array();
    for (const GenerationInfo& g : r.history)
        history.push_back({{"generation", g.number}, {"detection", g.detection},
                           {"started", g.started}, {"finished", g.finished},
                           {"changed_bytes", g.changed}, {"written_bytes", g.written},
                           {"read_bytes", g.read}});
    j["history"] = std::move(history);
    j["target_stamp"] = r.target_stamp ? stamp_json(*r.target_stamp) : json();
    j["pass"] = r.pass;
    j["pass_started"] = r.pass_started;
    j["pass_detection"] = r.pass_detection;
    j["pass_copy"] = r.pass_copy;
    j["done"] = runs_json(r.done);
    j["cutover"] = r.cutover;
    j["reflink_copy"] = r.reflink_copy;
    j["fixups_plan"] = r.fixups_plan;
    j["description"] = r.description;
    j["description_file"] = r.description_file;
    j["bootable"] = r.bootable;
    const std::string body = j.dump();
    j["checksum"] = crc32c(body.data(), body.size());
    return j.dump(1) + "\n";
}

Record decode(const std::string& path) {
    const std::string text = read_small_file(path);
    try {
        json j = json::parse(text);
        if (j.at("format") != record_format || j.at("version") != record_version)
            throw Error("not a version 1 p2vfs sync record");
        const uint32_t sum = j.at("checksum").get<uint32_t>();
        j.erase("checksum");
        const std::string body = j.dump();
        if (crc32c(body.data(), body.size()) != sum)
            throw Error("its checksum does not match (damaged)");
        Record r;
        r.source_size = j.at("source_size").get<uint64_t>();
        r.destination = j.at("destination").get<std::string>();
        r.options = sync_options_from_json(j.at("options"));
        r.generation = j.at("generation").get<uint64_t>();
        for (const json& g : j.at("history"))
            r.history.push_back({g.at("generation").get<uint64_t>(),
                                 g.at("detection").get<std::string>(),
                                 g.at("started").get<int64_t>(), g.at("finished").get<int64_t>(),
                                 g.at("changed_bytes").get<uint64_t>(),
                                 g.at("written_bytes").get<uint64_t>(),
                                 g.at("read_bytes").get<uint64_t>()});
        if (!j.at("target_stamp").is_null())
            r.target_stamp = stamp_from(j.at("target_stamp"));
        r.pass = j.at("pass").get<bool>();
        r.pass_started = j.at("pass_started").get<int64_t>();
        r.pass_detection = j.at("pass_detection").get<std::string>();
        r.pass_copy = j.at("pass_copy").get<std::string>();
        for (const json& run : j.at("done")) {
            const uint64_t first = run.at(0).get<uint64_t>(), count = run.at(1).get<uint64_t>();
            if (count > (uint64_t{1} << 40) || (!r.done.empty() && first <= r.done.back()))
                throw Error("its list of done blocks is not ascending");
            for (uint64_t b = first; b < first + count; ++b)
                r.done.push_back(b);
        }
        r.cutover = j.at("cutover").get<std::string>();
        r.reflink_copy = j.at("reflink_copy").get<std::string>();
        r.fixups_plan = j.at("fixups_plan").get<std::string>();
        r.description = j.at("description").get<std::string>();
        r.description_file = j.at("description_file").get<std::string>();
        r.bootable = j.at("bootable").get<bool>();
        return r;
    } catch (const json::exception& e) {
        throw Error("sync record " + path + " cannot be read: " + e.what());
    } catch (const Error& e) {
        throw Error("sync record " + path + ": " + e.what());
    }
}

} // namespace

void check_sync_options(const SyncOptions& o) {
    (void)qemu_format_name(o.format);
    if (o.block_size < (64u << 10) || o.block_size > (64u << 20) ||
        (o.block_size & (o.block_size - 1)) != 0)
        throw InvalidArgument("block size " + std::to_string(o.block_size) +
                              " is not a power of two from 64 KiB to 64 MiB");
    if (o.parallel < 1 || o.parallel > 16)
        throw InvalidArgument("parallel must be 1 to 16, not " + std::to_string(o.parallel));
    if (o.detection != "auto" && o.detection != "hash" && o.detection != "dirty-bitmap" &&
        o.detection != "reflink")
        throw InvalidArgument("change detection '" + o.detection +
                              "' is not one of auto, hash, dirty-bitmap, reflink");
    if (o.detection == "dirty-bitmap" && o.bitmap.empty())
        throw InvalidArgument("dirty-bitmap change detection needs the bitmap's name");
    if (!(o.interval_minutes >= 0) || o.interval_minutes > 525600)
        throw InvalidArgument("the sync interval must be 0 to 525600 minutes");
    if (o.cutover_at < 0)
        throw InvalidArgument("the cutover time must be Unix seconds, or 0 for none");
    if (!(o.quiesce_timeout > 0) || o.quiesce_timeout > 86400)
        throw InvalidArgument("the quiesce timeout must be more than 0 and at most 86400 s");
    if (!(o.checkpoint_seconds > 0))
        throw InvalidArgument("the checkpoint interval must be positive");
}

namespace {

// Raised when the job is asked to pause or stop in the middle of a step.
struct Interrupted {};

// A device reading a Destination (worker 0, serialized): the target's bytes
// as the base of the cutover's fixups overlay.
class TargetDevice : public BlockDevice {
public:
    TargetDevice(Destination& d, uint64_t size, std::string path)
        : dest_(d), size_(size), path_(std::move(path)) {}
    std::string name() const override { return path_; }
    std::string identity() const override { return "sync-target:" + path_; }
    uint64_t size() const override { return size_; }
    // Image targets take whole 512-byte sectors; the guest code reads any
    // range (a partition table's 440 bytes).
    void read(void* buf, size_t length, uint64_t offset) override {
        std::lock_guard<std::mutex> lock(mutex_);
        const uint64_t start = offset & ~uint64_t{511};
        const uint64_t end = std::min(size_, (offset + length + 511) & ~uint64_t{511});
        if (start == offset && end == offset + length) {
            dest_.read(0, buf, length, offset);
            return;
        }
        bounce_.resize(end - start);
        dest_.read(0, bounce_.data(), bounce_.size(), start);
        std::memcpy(buf, bounce_.data() + (offset - start), length);
    }
    std::vector<Extent> extents(uint64_t offset, uint64_t length) override {
        return {{offset, length, ExtentType::Data}};
    }

private:
    Destination& dest_;
    uint64_t size_;
    std::string path_;
    std::mutex mutex_;
    std::vector<uint8_t> bounce_;
};

} // namespace

struct SyncJob::State {
    std::string dir;
    std::string id; // the job directory's name
    SyncHooks hooks;

    mutable std::mutex control; // start, pause, resume, cancel, stop
    mutable std::mutex mutex;   // everything below
    std::condition_variable wake;
    Record record;
    bool have_record = false;
    JobProgress progress;
    bool pause_requested = false;
    bool stop_requested = false;
    bool stopped = false;
    bool sync_requested = false;
    bool cutover_requested = false;
    bool fresh_pass = false; // the pass in the record was begun by this process
    bool first_step = true;
    std::optional<std::pair<bool, std::string>> quiesce_answer;
    std::thread controller;
    std::function<void()> callback;
    std::mutex callback_mutex;
    Clock::time_point last_notify{};
    // Rate over the current pass.
    Clock::time_point pass_clock{};

    std::string target_path() const {
        return record.cutover == "verify" || record.cutover == "done"
                   ? record.destination
                   : partial_name(record.destination);
    }
    uint64_t blocks() const {
        return (record.source_size + record.options.block_size - 1) / record.options.block_size;
    }
    uint64_t block_length(uint64_t b) const {
        return std::min(record.options.block_size, record.source_size - b * record.options.block_size);
    }

    void save() { replace_file(dir + "/sync.json", encode(record)); }
    std::string hashes_file(uint64_t generation) const {
        return dir + "/hashes." + std::to_string(generation);
    }

    void notify(bool force) {
        {
            std::lock_guard<std::mutex> lock(mutex);
            const auto now = Clock::now();
            if (!force && now - last_notify < notify_interval)
                return;
            last_notify = now;
        }
        std::lock_guard<std::mutex> lock(callback_mutex);
        if (callback) {
            try {
                callback();
            } catch (const std::exception& e) {
                spdlog::warn("sync job {}: progress callback: {}", id, e.what());
            }
        }
    }
    void set_phase(const std::string& phase) {
        {
            std::lock_guard<std::mutex> lock(mutex);
            progress.phase = phase;
        }
        notify(true);
    }
    // Throws Interrupted when a pause or stop was asked for.
    void check_interrupt() {
        std::lock_guard<std::mutex> lock(mutex);
        if (pause_requested || stop_requested)
            throw Interrupted{};
    }

    void update_schedule_locked() {
        const SyncOptions& o = record.options;
        progress.next_event.clear();
        progress.next_event_time = 0;
        if (record.bootable || !record.cutover.empty())
            return;
        int64_t next_sync = 0;
        if (o.interval_minutes > 0 && record.generation > 0) {
            const int64_t last = record.history.empty() ? unix_now() : record.history.back().finished;
            next_sync = last + static_cast<int64_t>(o.interval_minutes * 60);
        }
        if (o.cutover_at > 0 && (next_sync == 0 || o.cutover_at <= next_sync)) {
            progress.next_event = "cutover";
            progress.next_event_time = o.cutover_at;
        } else if (next_sync > 0) {
            progress.next_event = "sync";
            progress.next_event_time = next_sync;
        }
    }
    void publish_record_locked() {
        progress.generation = record.generation;
        progress.bootable = record.bootable;
        progress.target = target_path();
        if (!record.history.empty()) {
            const GenerationInfo& g = record.history.back();
            progress.changed_bytes = g.changed;
            progress.written_bytes = g.written;
            progress.read_bytes = g.read;
            progress.detection = g.detection;
        }
        update_schedule_locked();
    }

    void run();
    void step();
    void do_pass();
    void begin_pass();
    bool target_changed() const;
    void guard_target(Destination& dest);
    void do_cutover();
    void quiesce(bool on);
    std::unique_ptr<Destination> open_target(bool create);
    std::vector<Hash> load_hashes(uint64_t generation) const;
    void write_hashes(uint64_t generation, const std::vector<Hash>& hashes) const;
    std::string reflink_copy_name(uint64_t generation) const;
    void remove_copy(const std::string& copy) const;
    void verify_target(Destination& dest, const std::vector<Hash>& expected, const char* what);
};

SyncJob::SyncJob(std::string job_dir, std::string destination, SyncHooks hooks, SyncOptions options)
    : state_(std::make_unique<State>()) {
    State& s = *state_;
    s.dir = std::move(job_dir);
    s.id = std::filesystem::path(s.dir).filename().string();
    s.hooks = std::move(hooks);
    if (destination.ends_with(".part"))
        destination.resize(destination.size() - 5);
    if (destination.empty() || destination[0] != '/')
        throw InvalidArgument("the target must be an absolute path, not '" + destination + "'");
    make_directories(s.dir);
    bool exists = false;
    (void)read_small_file(s.dir + "/sync.json", &exists);
    if (exists) {
        s.record = decode(s.dir + "/sync.json");
        if (s.record.destination != destination)
            spdlog::info("sync job {}: target recorded at {}", s.id, s.record.destination);
    } else {
        check_sync_options(options);
        if (options.detection == "auto")
            options.detection = options.bitmap.empty() ? "hash" : "dirty-bitmap";
        if (s.hooks.source_size == 0)
            throw InvalidArgument("the source of a sync job must not be empty");
        s.record.source_size = s.hooks.source_size;
        s.record.destination = destination;
        s.record.options = options;
        s.save();
    }
    s.progress.state = JobState::Paused;
    s.publish_record_locked();
}

SyncJob::~SyncJob() { stop(); }

std::string SyncJob::destination() const {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->record.destination;
}

std::string SyncJob::description_file() const {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->record.description.empty() ? std::string() : state_->record.description_file;
}

std::string SyncJob::fixups_plan() const {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->record.fixups_plan;
}

void SyncJob::on_change(std::function<void()> callback) {
    std::lock_guard<std::mutex> lock(state_->callback_mutex);
    state_->callback = std::move(callback);
}

JobProgress SyncJob::progress() const {
    std::lock_guard<std::mutex> lock(state_->mutex);
    JobProgress p = state_->progress;
    if (p.phase == "syncing") {
        const double secs =
            std::chrono::duration<double>(Clock::now() - state_->pass_clock).count();
        p.rate = secs > 0.5 ? static_cast<double>(p.bytes_done) / secs : 0;
        p.eta_seconds = p.rate > 0 ? static_cast<double>(p.bytes_total - p.bytes_done) / p.rate : -1;
    }
    return p;
}

void SyncJob::start() {
    State& s = *state_;
    std::lock_guard<std::mutex> control(s.control);
    {
        std::lock_guard<std::mutex> lock(s.mutex);
        if (s.stopped || s.controller.joinable() || s.progress.state == JobState::Done ||
            s.progress.state == JobState::Cancelled)
            return;
        if (s.record.bootable) {
            s.progress.state = JobState::Done;
            return;
        }
        s.progress.state = JobState::Running;
        s.progress.error.clear();
        s.pause_requested = false;
    }
    s.controller = std::thread([&s] { s.run(); });
    s.notify(true);
}

void SyncJob::request_pause() {
    std::lock_guard<std::mutex> lock(state_->mutex);
    if (state_->progress.state == JobState::Running) {
        state_->pause_requested = true;
        state_->wake.notify_all();
    }
}

void SyncJob::pause() {
    State& s = *state_;
    std::lock_guard<std::mutex> control(s.control);
    request_pause();
    if (s.controller.joinable())
        s.controller.join();
}

void SyncJob::resume() {
    State& s = *state_;
    {
        std::lock_guard<std::mutex> control(s.control);
        if (s.controller.joinable())
            s.controller.join(); // a failed or paused run's thread
        std::lock_guard<std::mutex> lock(s.mutex);
        if (s.progress.state != JobState::Paused && s.progress.state != JobState::Failed)
            return;
        s.progress.state = JobState::Paused;
    }
    start();
}

void SyncJob::stop() {
    State& s = *state_;
    std::lock_guard<std::mutex> control(s.control);
    {
        std::lock_guard<std::mutex> lock(s.mutex);
        s.stop_requested = true;
        s.stopped = true;
        s.wake.notify_all();
    }
    if (s.controller.joinable())
        s.controller.join();
}

void SyncJob::wait() {
    State& s = *state_;
    std::unique_lock<std::mutex> lock(s.mutex);
    s.wake.wait(lock, [&] {
        const JobState st = s.progress.state;
        return s.stopped || st == JobState::Done || st == JobState::Failed ||
               st == JobState::Cancelled;
    });
}

void SyncJob::cancel() {
    State& s = *state_;
    {
        std::lock_guard<std::mutex> control(s.control);
        {
            std::lock_guard<std::mutex> lock(s.mutex);
            if (s.progress.state == JobState::Done || s.record.bootable)
                return;
            s.stop_requested = true;
            s.wake.notify_all();
        }
        if (s.controller.joinable())
            s.controller.join();
        std::lock_guard<std::mutex> lock(s.mutex);
        ::unlink(partial_name(s.record.destination).c_str());
        s.remove_copy(s.record.reflink_copy);
        s.remove_copy(s.record.pass_copy);
        remove_tree(s.dir + "/overlays");
        for (uint64_t g = 0; g <= s.record.generation + 1; ++g)
            ::unlink(s.hashes_file(g).c_str());
        ::unlink((s.dir + "/hashes.final").c_str());
        ::unlink((s.dir + "/sync.json").c_str());
        s.progress.state = JobState::Cancelled;
        s.progress.phase.clear();
        s.progress.next_event.clear();
        s.progress.next_event_time = 0;
        s.stopped = true;
        s.wake.notify_all();
    }
    spdlog::info("sync job {}: cancelled; {} removed", s.id, partial_name(s.record.destination));
    s.notify(true);
}

void SyncJob::request_sync() {
    State& s = *state_;
    std::lock_guard<std::mutex> lock(s.mutex);
    const JobState st = s.progress.state;
    if (s.record.bootable || !s.record.cutover.empty() || s.cutover_requested)
        throw InvalidState("job " + s.id + " is cutting over or cut over already; no more syncs");
    if (st != JobState::Running && st != JobState::Paused)
        throw InvalidState("job " + s.id + " is " + to_string(st) + "; resume it first");
    s.sync_requested = true;
    s.wake.notify_all();
}

void SyncJob::request_cutover() {
    State& s = *state_;
    std::lock_guard<std::mutex> lock(s.mutex);
    const JobState st = s.progress.state;
    if (s.record.bootable || !s.record.cutover.empty())
        throw InvalidState("job " + s.id + " is cutting over or cut over already");
    if (st != JobState::Running && st != JobState::Paused)
        throw InvalidState("job " + s.id + " is " + to_string(st) + "; resume it first");
    s.cutover_requested = true;
    s.wake.notify_all();
}

void SyncJob::retarget(const std::string& destination) {
    State& s = *state_;
    std::string d = destination;
    if (d.ends_with(".part"))
        d.resize(d.size() - 5);
    if (d.empty() || d[0] != '/')
        throw InvalidArgument("the new target must be an absolute path, not '" + destination + "'");
    std::lock_guard<std::mutex> control(s.control);
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.progress.state != JobState::Paused && s.progress.state != JobState::Failed)
        throw InvalidState("job " + s.id + " is " + to_string(s.progress.state) +
                           "; pause it before moving its target");
    if (s.record.bootable || (!s.record.cutover.empty() && s.record.cutover != "quiesce"))
        throw InvalidState("job " + s.id + " is cutting over; its target cannot move now");
    if (!stamp_of(partial_name(d)))
        throw InvalidArgument("no target at " + partial_name(d) + " (move " +
                              partial_name(s.record.destination) + " there first)");
    spdlog::info("sync job {}: target moved from {} to {}; it is checked when the job resumes",
                 s.id, partial_name(s.record.destination), partial_name(d));
    s.record.destination = d;
    s.save();
    s.progress.target = s.target_path();
}

void SyncJob::set_schedule(double interval_minutes, int64_t cutover_at) {
    State& s = *state_;
    std::lock_guard<std::mutex> lock(s.mutex);
    SyncOptions o = s.record.options;
    o.interval_minutes = interval_minutes;
    o.cutover_at = cutover_at;
    check_sync_options(o);
    s.record.options = o;
    s.save();
    s.update_schedule_locked();
    s.wake.notify_all();
}

void SyncJob::quiesce_ack(bool ok, const std::string& message) {
    State& s = *state_;
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.progress.phase != "quiescing" && s.progress.phase != "unquiescing")
        throw InvalidState("job " + s.id + " is not waiting for the source to quiesce");
    s.quiesce_answer = {ok, message.substr(0, 1024)};
    s.wake.notify_all();
}

// ---- the controller ----------------------------------------------------------

void SyncJob::State::run() {
    try {
        for (;;) {
            step();
            std::lock_guard<std::mutex> lock(mutex);
            if (record.bootable) {
                progress.state = JobState::Done;
                progress.phase.clear();
                publish_record_locked();
                wake.notify_all();
                break;
            }
        }
    } catch (const Interrupted&) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!stop_requested)
            progress.state = JobState::Paused;
        progress.phase.clear();
        pause_requested = false;
        wake.notify_all();
    } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(mutex);
        progress.state = JobState::Failed;
        progress.phase.clear();
        progress.error = e.what();
        spdlog::error("sync job {}: {}", id, e.what());
        wake.notify_all();
    }
    notify(true);
}

// One thing to do, or a wait for the next.
void SyncJob::State::step() {
    {
        std::unique_lock<std::mutex> lock(mutex);
        publish_record_locked();
        for (;;) {
            if (pause_requested || stop_requested)
                throw Interrupted{};
            if (record.pass || !record.cutover.empty())
                break;
            if (record.generation == 0 || sync_requested) {
                sync_requested = false;
                lock.unlock();
                begin_pass();
                lock.lock();
                break;
            }
            const int64_t now = unix_now();
            if (cutover_requested ||
                (record.options.cutover_at > 0 && now >= record.options.cutover_at)) {
                cutover_requested = false;
                record.cutover = "quiesce";
                save();
                spdlog::info("sync job {}: cutover begins", id);
                break;
            }
            if (progress.next_event == "sync" && now >= progress.next_event_time) {
                lock.unlock();
                begin_pass();
                lock.lock();
                break;
            }
            progress.phase = "waiting";
            lock.unlock();
            notify(true);
            lock.lock();
            if (progress.next_event_time > 0)
                wake.wait_for(lock, std::chrono::seconds(
                                        std::clamp<int64_t>(progress.next_event_time - now, 1, 60)));
            else
                wake.wait_for(lock, std::chrono::seconds(60));
            update_schedule_locked();
        }
    }
    if (first_step && record.pass && record.cutover == "final-sync") {
        // The source was quiesced by an earlier run of the daemon; whether it
        // still is, nobody knows: again (quiesce steps must be idempotent).
        quiesce(true);
    }
    first_step = false;
    if (record.pass)
        do_pass();
    else if (!record.cutover.empty())
        do_cutover();
}

std::vector<Hash> SyncJob::State::load_hashes(uint64_t generation) const {
    const uint64_t n = blocks();
    std::vector<Hash> out(n);
    if (generation == 0) {
        // The empty target: every block reads as zeros.
        std::vector<uint8_t> zeros(record.options.block_size, 0);
        const Hash full = hash_bytes(zeros.data(), zeros.size());
        for (uint64_t b = 0; b < n; ++b)
            out[b] = block_length(b) == zeros.size() ? full : hash_bytes(zeros.data(), block_length(b));
        return out;
    }
    const std::string path = hashes_file(generation);
    UniqueFd fd = open_file(path, O_RDONLY);
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0 || static_cast<uint64_t>(st.st_size) != n * sizeof(Hash))
        throw Error("block hashes " + path + " are not " + std::to_string(n) + " entries long");
    pread_full(fd.get(), out.data(), n * sizeof(Hash), 0, path);
    return out;
}

void SyncJob::State::write_hashes(uint64_t generation, const std::vector<Hash>& hashes) const {
    const std::string path = generation == ~uint64_t{0} ? dir + "/hashes.final" : hashes_file(generation);
    const std::string tmp = path + ".tmp";
    UniqueFd fd = open_file(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pwrite_full(fd.get(), hashes.data(), hashes.size() * sizeof(Hash), 0, tmp);
    sync_data(fd.get(), tmp);
    if (::rename(tmp.c_str(), path.c_str()) != 0)
        throw Error("cannot rename " + tmp + ": " + errno_text(errno));
    sync_directory(dir);
}

std::string SyncJob::State::reflink_copy_name(uint64_t generation) const {
    const std::string origin = hooks.source_spec;
    const std::filesystem::path p(origin);
    const std::string where =
        record.options.reflink_dir.empty() ? p.parent_path().string() : record.options.reflink_dir;
    return where + "/." + p.filename().string() + ".p2vfs-sync-" + id + "." +
           std::to_string(generation);
}

void SyncJob::State::remove_copy(const std::string& copy) const {
    if (!copy.empty() && ::unlink(copy.c_str()) != 0 && errno != ENOENT)
        spdlog::warn("sync job {}: cannot remove {}: {}", id, copy, errno_text(errno));
}

std::unique_ptr<Destination> SyncJob::State::open_target(bool create) {
    const std::string path = target_path();
    return open_image_target(path, record.options.format, record.source_size,
                             record.options.parallel, create, record.options.owner_uid,
                             record.options.owner_gid, dir);
}

// Starts generation+1: records the pass before any byte is written.
void SyncJob::State::begin_pass() {
    if (record.options.detection == "dirty-bitmap" && record.generation == 0)
        // The bitmap must be there from the first sync on, or changes made
        // before it was made would be missed: asked now, not at sync 2.
        (void)nbd_dirty_ranges(hooks.source_spec, record.options.bitmap, record.source_size);
    std::lock_guard<std::mutex> lock(mutex);
    progress.bytes_done = progress.bytes_total = 0;
    record.pass = true;
    fresh_pass = true;
    record.pass_started = unix_now();
    record.done.clear();
    record.pass_detection = record.options.detection;
    record.pass_copy.clear();
    if (record.pass_detection == "reflink") {
        record.pass_copy = reflink_copy_name(record.generation + 1);
        remove_copy(record.pass_copy);
        take_reflink_copy(hooks.source_spec, record.pass_copy);
    }
    save();
}

// Reads the whole target and compares it with `expected`; throws naming the
// first block that differs.
void SyncJob::State::verify_target(Destination& dest, const std::vector<Hash>& expected,
                                   const char* what) {
    const uint64_t n = blocks(), bs = record.options.block_size;
    std::atomic<uint64_t> next{0}, first_bad{~uint64_t{0}}, bad{0};
    std::atomic<bool> interrupted{false};
    std::exception_ptr failure;
    std::mutex failure_mutex;
    {
        std::lock_guard<std::mutex> lock(mutex);
        progress.bytes_total = record.source_size;
        progress.bytes_done = 0;
        progress.bytes_verified = 0;
        pass_clock = Clock::now();
    }
    auto worker = [&](unsigned w) {
        std::vector<uint8_t> buf(bs);
        try {
            for (;;) {
                const uint64_t b = next.fetch_add(1);
                if (b >= n || interrupted)
                    return;
                const uint64_t len = block_length(b);
                dest.read(w, buf.data(), len, b * bs);
                if (hash_bytes(buf.data(), len) != expected[b]) {
                    bad.fetch_add(1);
                    uint64_t cur = first_bad.load();
                    while (b < cur && !first_bad.compare_exchange_weak(cur, b)) {
                    }
                }
                std::lock_guard<std::mutex> lock(mutex);
                progress.bytes_done += len;
                progress.bytes_verified += len;
                if (pause_requested || stop_requested)
                    interrupted = true;
            }
        } catch (...) {
            std::lock_guard<std::mutex> lock(failure_mutex);
            if (!failure)
                failure = std::current_exception();
            interrupted = true;
        }
    };
    std::vector<std::thread> workers;
    for (unsigned w = 0; w < record.options.parallel; ++w)
        workers.emplace_back(worker, w);
    for (std::thread& t : workers)
        t.join();
    if (failure)
        std::rethrow_exception(failure);
    if (interrupted)
        throw Interrupted{};
    if (bad > 0)
        throw InvalidState(std::string(what) + ": block " + std::to_string(first_bad.load()) +
                           " at offset " + hex(first_bad.load() * bs) + " differs" +
                           (bad > 1 ? " (and " + std::to_string(bad - 1) + " more blocks)" : ""));
    notify(true);
}

// Whether the target file moved or was written since the last step ended
// (asked before the target is opened: qemu updates some formats' headers on
// every writable open).
bool SyncJob::State::target_changed() const {
    if (record.generation == 0 && !record.target_stamp)
        return false;
    const std::optional<FileStamp> now = stamp_of(target_path());
    if (!now)
        throw InvalidState("the target " + target_path() +
                           " is gone (moved? pause the job and retarget it)");
    return !record.target_stamp || *now != *record.target_stamp;
}

// Before a step writes to the target that changed (target_changed()): is it
// still what the records say?
void SyncJob::State::guard_target(Destination& dest) {
    const std::string path = target_path();
    spdlog::info("sync job {}: {} changed since generation {} was recorded (written, or moved); "
                 "reading it back to check it",
                 id, path, record.generation);
    set_phase("checking-target");
    const std::vector<Hash> expected = load_hashes(record.generation);
    verify_target(dest, expected,
                  ("target " + path + " was modified since sync " +
                   std::to_string(record.generation) +
                   "; refusing to sync onto it (restore it, or cancel the job and start a new "
                   "one)").c_str());
    spdlog::info("sync job {}: {} reads as generation {}: continuing", id, path, record.generation);
}

// One sync pass: generation+1, resumable from record.done.
void SyncJob::State::do_pass() {
    const uint64_t gen = record.generation + 1;
    const uint64_t n = blocks(), bs = record.options.block_size;
    const std::string detection = record.pass_detection;
    // A pass this process did not begin was interrupted: blocks not
    // recorded done may hold torn writes, so they are compared with the
    // target's own bytes rather than the records.
    const bool resumed = !fresh_pass;
    fresh_pass = false;
    spdlog::info("sync job {}: sync {} ({}){}", id, gen, detection,
                 record.done.empty() ? "" : ", resumed after " + std::to_string(record.done.size()) + " blocks");
    set_phase("syncing");

    // The target: made at the first pass (a crash before it was first
    // recorded makes it again).
    const bool create = record.generation == 0 && (!resumed || !stamp_of(target_path()));
    const bool check = !resumed && target_changed();
    std::unique_ptr<Destination> dest = open_target(create);
    if (check) {
        try {
            guard_target(*dest);
        } catch (const InvalidState&) {
            // Refused: the pass never began, so a retry checks again rather
            // than trusting the target as a resumed pass would.
            std::lock_guard<std::mutex> lock(mutex);
            record.pass = false;
            remove_copy(record.pass_copy);
            record.pass_copy.clear();
            save();
            throw;
        }
    }
    set_phase("syncing");

    DevicePtr src;
    if (detection == "reflink")
        src = std::make_shared<LocalSource>(record.pass_copy);
    else
        src = hooks.open_source();
    if (src->size() != record.source_size)
        throw Error("the source is now " + std::to_string(src->size()) + " bytes, not " +
                    std::to_string(record.source_size) +
                    " as when the job began; a sync cannot follow a resized disk");

    // Which blocks to look at.
    std::vector<uint64_t> candidates;
    std::vector<bool> is_done(n, false);
    for (const uint64_t b : record.done)
        if (b < n)
            is_done[b] = true;
    auto add_ranges = [&](const Ranges& ranges) {
        for (const auto& [off, len] : ranges) {
            if (len == 0)
                continue;
            for (uint64_t b = off / bs; b <= (off + len - 1) / bs && b < n; ++b)
                if (candidates.empty() || candidates.back() < b)
                    candidates.push_back(b);
        }
    };
    if (detection == "hash" || record.generation == 0) {
        for (uint64_t b = 0; b < n; ++b)
            candidates.push_back(b);
    } else if (detection == "dirty-bitmap") {
        add_ranges(nbd_dirty_ranges(hooks.source_spec, record.options.bitmap, record.source_size));
    } else if (detection == "reflink") {
        if (record.reflink_copy.empty() || !stamp_of(record.reflink_copy)) {
            spdlog::warn("sync job {}: the previous generation's copy is gone; comparing every "
                         "block by hash", id);
            for (uint64_t b = 0; b < n; ++b)
                candidates.push_back(b);
        } else {
            add_ranges(reflink_changed_ranges(record.reflink_copy, record.pass_copy,
                                              record.source_size));
        }
    }
    std::erase_if(candidates, [&](uint64_t b) { return is_done[b]; });
    // Blocks the source's allocation says read as zeros are not read.
    std::vector<bool> has_data(n, false);
    for (const Extent& e : src->extents(0, record.source_size))
        if (e.type == ExtentType::Data && e.length > 0)
            for (uint64_t b = e.offset / bs; b <= (e.offset + e.length - 1) / bs && b < n; ++b)
                has_data[b] = true;

    // The hashes: generation's, updated in place into hashes.gen as blocks
    // are done.
    std::vector<Hash> prev = load_hashes(record.generation);
    std::vector<Hash> next_hashes = prev;
    if (!record.done.empty()) {
        bool exists = false;
        (void)read_small_file(hashes_file(gen) + ".partial", &exists);
        if (!exists)
            throw Error("sync record lists done blocks but " + hashes_file(gen) +
                        ".partial is missing");
        const std::string path = hashes_file(gen) + ".partial";
        UniqueFd fd = open_file(path, O_RDONLY);
        pread_full(fd.get(), next_hashes.data(), n * sizeof(Hash), 0, path);
    } else {
        const std::string path = hashes_file(gen) + ".partial";
        UniqueFd fd = open_file(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        pwrite_full(fd.get(), next_hashes.data(), n * sizeof(Hash), 0, path);
        sync_data(fd.get(), path);
    }
    const std::string partial_path = hashes_file(gen) + ".partial";
    UniqueFd hash_fd = open_file(partial_path, O_WRONLY);

    uint64_t changed = 0, written = 0, read_bytes = 0;
    {
        std::lock_guard<std::mutex> lock(mutex);
        progress.bytes_total = candidates.size() * bs;
        progress.bytes_done = 0;
        progress.bytes_copied = 0;
        progress.bytes_written = 0;
        progress.detection = detection;
        pass_clock = Clock::now();
        // Totals so far of an interrupted pass are not known: they restart.
    }

    std::atomic<size_t> next{0};
    std::atomic<bool> interrupted{false};
    std::exception_ptr failure;
    std::mutex pass_mutex; // written_blocks, failure, counters
    std::vector<uint64_t> written_blocks;
    std::condition_variable pass_wake;
    unsigned running = record.options.parallel;

    auto worker = [&](unsigned w) {
        std::vector<uint8_t> buf(bs), old(resumed ? bs : 0);
        try {
            for (;;) {
                if (interrupted)
                    break;
                const size_t i = next.fetch_add(1);
                if (i >= candidates.size())
                    break;
                const uint64_t b = candidates[i];
                const uint64_t off = b * bs, len = block_length(b);
                bool zero = !has_data[b];
                uint64_t did_read = 0;
                if (zero) {
                    std::memset(buf.data(), 0, len);
                } else {
                    src->read(buf.data(), len, off);
                    did_read = len;
                    zero = std::all_of(buf.begin(), buf.begin() + static_cast<ptrdiff_t>(len),
                                       [](uint8_t c) { return c == 0; });
                }
                const Hash h = hash_bytes(buf.data(), len);
                // A block an interrupted pass may have half written: what
                // the target holds now, not what the records say.
                Hash expected = prev[b];
                if (resumed) {
                    dest->read(w, old.data(), len, off);
                    expected = hash_bytes(old.data(), len);
                }
                uint64_t did_write = 0, did_change = 0;
                if (h != prev[b])
                    did_change = len;
                if (h != expected) {
                    if (zero) {
                        dest->write_zeros(w, off, len);
                    } else {
                        dest->write(w, buf.data(), len, off);
                        did_write = len;
                    }
                }
                std::lock_guard<std::mutex> lock(pass_mutex);
                next_hashes[b] = h;
                written_blocks.push_back(b);
                changed += did_change;
                written += did_write;
                read_bytes += did_read;
                std::lock_guard<std::mutex> plock(mutex);
                progress.bytes_done += len;
                progress.bytes_copied += did_read;
                progress.bytes_written += did_write;
                if (pause_requested || stop_requested)
                    interrupted = true;
            }
        } catch (...) {
            std::lock_guard<std::mutex> lock(pass_mutex);
            if (!failure)
                failure = std::current_exception();
            interrupted = true;
        }
        std::lock_guard<std::mutex> lock(pass_mutex);
        --running;
        pass_wake.notify_all();
    };

    // Makes the blocks written so far durable and recorded.
    auto checkpoint = [&] {
        std::vector<uint64_t> blocks_now;
        {
            std::lock_guard<std::mutex> lock(pass_mutex);
            blocks_now.swap(written_blocks);
        }
        if (blocks_now.empty())
            return;
        dest->sync();
        std::sort(blocks_now.begin(), blocks_now.end());
        {
            std::lock_guard<std::mutex> lock(pass_mutex);
            for (const uint64_t b : blocks_now)
                pwrite_full(hash_fd.get(), next_hashes[b].data(), sizeof(Hash), b * sizeof(Hash),
                            partial_path);
        }
        sync_data(hash_fd.get(), partial_path);
        std::lock_guard<std::mutex> lock(mutex);
        std::vector<uint64_t> merged;
        merged.reserve(record.done.size() + blocks_now.size());
        std::merge(record.done.begin(), record.done.end(), blocks_now.begin(), blocks_now.end(),
                   std::back_inserter(merged));
        record.done = std::move(merged);
        save();
    };

    std::vector<std::thread> workers;
    for (unsigned w = 0; w < record.options.parallel; ++w)
        workers.emplace_back(worker, w);
    {
        std::unique_lock<std::mutex> lock(pass_mutex);
        while (running > 0) {
            pass_wake.wait_for(lock, std::chrono::duration<double>(record.options.checkpoint_seconds));
            if (running == 0)
                break;
            lock.unlock();
            try {
                checkpoint();
            } catch (...) {
                std::lock_guard<std::mutex> held(pass_mutex);
                if (!failure)
                    failure = std::current_exception();
                interrupted = true;
            }
            notify(false);
            lock.lock();
        }
    }
    for (std::thread& t : workers)
        t.join();
    try {
        checkpoint(); // what was written is kept, failed or not
    } catch (...) {
        if (!failure)
            failure = std::current_exception();
    }
    if (failure)
        std::rethrow_exception(failure);
    if (interrupted || next < candidates.size())
        throw Interrupted{};

    // The generation is complete: its hashes, then the record names it.
    dest->sync();
    dest.reset(); // closes an image target cleanly
    hash_fd.reset();
    write_hashes(gen, next_hashes);
    ::unlink(partial_path.c_str());
    GenerationInfo info;
    info.number = gen;
    info.detection = detection;
    info.started = record.pass_started;
    info.finished = unix_now();
    info.changed = changed;
    info.written = written;
    info.read = read_bytes;
    {
        std::lock_guard<std::mutex> lock(mutex);
        const std::string old_copy = record.reflink_copy;
        record.generation = gen;
        record.history.push_back(info);
        record.pass = false;
        record.done.clear();
        if (!record.pass_copy.empty()) {
            record.reflink_copy = record.pass_copy;
            record.pass_copy.clear();
        }
        record.target_stamp = stamp_of(target_path());
        save();
        if (old_copy != record.reflink_copy)
            remove_copy(old_copy);
        if (gen >= 2)
            ::unlink(hashes_file(gen - 1).c_str());
        publish_record_locked();
    }
    spdlog::info("sync job {}: sync {} done: {} changed, {} written, {} read ({})", id, gen,
                 human_size(changed), human_size(written), human_size(read_bytes), detection);
    notify(true);
}

void SyncJob::State::quiesce(bool on) {
    const SyncOptions& o = record.options;
    const std::string& command = on ? o.quiesce_command : o.unquiesce_command;
    const char* what = on ? "quiesce" : "unquiesce";
    if (!command.empty()) {
        set_phase(on ? "quiescing" : "unquiescing");
        spdlog::info("sync job {}: {} command: {}", id, what, command);
        const CommandResult r =
            run_command({"/bin/sh", "-c", command}, o.quiesce_timeout,
                        {"P2VFS_JOB=" + id, "P2VFS_TARGET=" + target_path(),
                         std::string("P2VFS_STEP=") + what});
        if (r.timed_out)
            throw Error(std::string("the ") + what + " command did not finish within " +
                        std::to_string(static_cast<int>(o.quiesce_timeout)) + " s: " + command);
        if (r.status != 0)
            throw Error(std::string("the ") + what + " command exited with status " +
                        std::to_string(r.status) + ": " + command +
                        (r.output.empty() ? "" : " (" + last_line(r.output) + ")"));
    }
    if (o.quiesce_signal) {
        if (!hooks.signal_quiesce)
            throw Error("quiesce by signal needs the D-Bus service");
        {
            std::lock_guard<std::mutex> lock(mutex);
            quiesce_answer.reset();
            progress.phase = on ? "quiescing" : "unquiescing";
        }
        notify(true);
        hooks.signal_quiesce(on);
        std::unique_lock<std::mutex> lock(mutex);
        const bool answered = wake.wait_for(
            lock, std::chrono::duration<double>(o.quiesce_timeout),
            [&] { return quiesce_answer.has_value() || pause_requested || stop_requested; });
        if (pause_requested || stop_requested)
            throw Interrupted{};
        if (!answered)
            throw Error(std::string("no answer to the ") + what + " request within " +
                        std::to_string(static_cast<int>(o.quiesce_timeout)) +
                        " s (the source-side tool answers with AckQuiesce)");
        if (!quiesce_answer->first)
            throw Error(std::string("the source-side tool could not ") + what + " the source: " +
                        quiesce_answer->second);
    }
}

void SyncJob::State::do_cutover() {
    auto advance = [&](const std::string& phase) {
        std::lock_guard<std::mutex> lock(mutex);
        record.cutover = phase;
        save();
    };
    const std::string phase = record.cutover;
    if (phase == "quiesce") {
        quiesce(true);
        {
            std::lock_guard<std::mutex> lock(mutex);
            record.cutover = "final-sync";
        }
        begin_pass(); // saves
        return;
    }
    if (phase == "final-sync") {
        // The pass itself is run by step() while record.pass is set; here it
        // is over.
        if (record.pass)
            return;
        quiesce(false);
        advance("fixups");
        return;
    }
    if (phase == "fixups") {
        set_phase("fixups");
        const bool check = target_changed();
        std::unique_ptr<Destination> dest = open_target(false);
        if (check)
            guard_target(*dest);
        remove_tree(dir + "/overlays");
        if (hooks.fixups) {
            auto base = std::make_shared<TargetDevice>(*dest, record.source_size, target_path());
            OverlayOptions oo;
            oo.writable = true;
            auto overlay = Overlay::open(dir, "fixups", base, "sync-target", oo, true);
            const SyncFixups made = hooks.fixups(overlay->device(fixups_layer, fixups_layer),
                                                 record.destination, record.options.format);
            overlay->sync();
            std::lock_guard<std::mutex> lock(mutex);
            record.fixups_plan = made.plan;
            record.description = made.description;
            if (!made.description.empty()) {
                // DEST without its extension, unless that would be DEST.
                const std::filesystem::path d(record.destination);
                std::string file = (d.parent_path() / d.stem()).string() + made.suffix;
                if (file == record.destination)
                    file = record.destination + made.suffix;
                record.description_file = file;
            }
        }
        advance("write-fixups");
        return;
    }
    if (phase == "write-fixups") {
        set_phase("writing-fixups");
        std::unique_ptr<Destination> dest = open_target(false);
        std::vector<Hash> expected = load_hashes(record.generation);
        if (std::filesystem::exists(Overlay::directory(dir, "fixups"))) {
            auto base = std::make_shared<TargetDevice>(*dest, record.source_size, target_path());
            auto overlay = Overlay::open(dir, "fixups", base, "sync-target", OverlayOptions{}, false);
            const DevicePtr fixed = overlay->device(fixups_layer);
            const DevicePtr delta = overlay->delta(fixups_layer);
            const uint64_t bs = record.options.block_size;
            std::vector<uint8_t> buf;
            std::vector<uint64_t> touched;
            for (const Extent& e : delta->extents(0, record.source_size)) {
                if (e.type != ExtentType::Data)
                    continue;
                buf.resize(e.length);
                fixed->read(buf.data(), e.length, e.offset);
                dest->write(0, buf.data(), e.length, e.offset);
                for (uint64_t b = e.offset / bs; b <= (e.offset + e.length - 1) / bs; ++b)
                    if (touched.empty() || touched.back() != b)
                        touched.push_back(b);
            }
            dest->sync();
            buf.resize(bs);
            for (const uint64_t b : touched) {
                fixed->read(buf.data(), block_length(b), b * bs);
                expected[b] = hash_bytes(buf.data(), block_length(b));
            }
            spdlog::info("sync job {}: fixups written to {} ({} blocks)", id, target_path(),
                         touched.size());
        }
        dest.reset();
        write_hashes(~uint64_t{0}, expected);
        advance("finalize");
        return;
    }
    if (phase == "finalize") {
        set_phase("finalizing");
        const std::string part = partial_name(record.destination);
        if (stamp_of(part)) {
            check_image_target(part, record.options.format);
            if (stamp_of(record.destination))
                throw Error("cannot finish the cutover: " + record.destination +
                            " exists already (move it away, then resume the job)");
            if (::rename(part.c_str(), record.destination.c_str()) != 0)
                throw Error("cannot rename " + part + " to " + record.destination + ": " +
                            errno_text(errno));
            sync_directory(std::filesystem::path(record.destination).parent_path().string());
        } else if (!stamp_of(record.destination)) {
            throw Error("the target is gone: neither " + part + " nor " + record.destination +
                        " exists");
        }
        advance("verify");
        return;
    }
    if (phase == "verify") {
        set_phase("verifying");
        std::unique_ptr<Destination> dest = open_image_target(
            record.destination, record.options.format, record.source_size,
            record.options.parallel, false, -1, -1, dir);
        const std::string hashes = dir + "/hashes.final";
        std::vector<Hash> expected(blocks());
        {
            UniqueFd fd = open_file(hashes, O_RDONLY);
            pread_full(fd.get(), expected.data(), expected.size() * sizeof(Hash), 0, hashes);
        }
        verify_target(*dest, expected,
                      ("verification of " + record.destination + " after the cutover failed").c_str());
        dest.reset();
        if (!record.description.empty()) {
            const std::string& file = record.description_file;
            replace_file(file, record.description);
            if ((record.options.owner_uid >= 0 || record.options.owner_gid >= 0) &&
                ::chown(file.c_str(), static_cast<uid_t>(record.options.owner_uid),
                        static_cast<gid_t>(record.options.owner_gid)) != 0)
                spdlog::warn("sync job {}: cannot give {} to its owner: {}", id, file,
                             errno_text(errno));
            spdlog::info("sync job {}: the VM's description is {}", id, file);
        }
        {
            std::lock_guard<std::mutex> lock(mutex);
            record.cutover = "done";
            record.bootable = true;
            record.target_stamp = stamp_of(record.destination);
            save();
            remove_copy(record.reflink_copy);
            publish_record_locked();
        }
        spdlog::info("sync job {}: cutover done; {} is bootable", id, record.destination);
        return;
    }
    throw Error("sync record names an unknown cutover phase '" + phase + "'");
}

} // namespace p2vfs
