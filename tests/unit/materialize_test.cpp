// Materialization (fsd/jobs/materialize.h) of small test disks to files in a
// per-test directory, and to an nbdkit memory export: bytes, sparseness,
// resumption from checkpoints (which blocks are read again, counted per
// block by the test disk), pause, cancel, failures, verification and the
// bandwidth limit. Expected values come from the test disk's own layout.
#include "common/crc32c.h"
#include "common/error.h"
#include "jobs/destination.h"
#include "jobs/materialize.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <gtest/gtest.h>
#include <libnbd.h>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace p2vfs {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;
constexpr uint64_t block = 64 * KiB;

// A disk laid out by the test: Data runs (with pattern bytes, never zero,
// or with zeros), Zero runs, holes elsewhere. It counts reads per block
// (the engine reads whole blocks), can hold reads of blocks from a given one
// on until released, fail a read covering a given offset, and change its
// identity.
class TestDisk : public BlockDevice {
public:
    explicit TestDisk(uint64_t size) : bytes_(size, 0), reads_(size / block + 1, 0) {}

    void data(uint64_t offset, uint64_t length) {
        for (uint64_t x = offset; x < offset + length; ++x)
            bytes_[x] = static_cast<unsigned char>(((x * 2654435761u) >> 13) ^ (x >> 9)) | 1;
        layout_[offset] = {length, ExtentType::Data};
    }
    // Reported as data, holding zeros.
    void zero_data(uint64_t offset, uint64_t length) {
        layout_[offset] = {length, ExtentType::Data};
    }
    void zero(uint64_t offset, uint64_t length) { layout_[offset] = {length, ExtentType::Zero}; }

    std::string name() const override { return "test disk"; }
    std::string identity() const override {
        std::lock_guard lock(mutex_);
        return identity_;
    }
    uint64_t size() const override { return bytes_.size(); }

    void read(void* buf, size_t length, uint64_t offset) override {
        {
            std::unique_lock lock(mutex_);
            const uint64_t b = offset / block;
            ++reads_[b];
            if (b >= gate_from_) {
                const uint64_t my_round = round_;
                ++waiting_;
                changed_.notify_all();
                changed_.wait(lock, [&] { return round_ != my_round; });
                --waiting_;
            }
            if (fail_at_ >= offset && fail_at_ < offset + length)
                throw Error("injected read failure", EIO);
        }
        std::memcpy(buf, bytes_.data() + offset, length);
    }

    std::vector<Extent> extents(uint64_t offset, uint64_t length) override {
        std::vector<Extent> out;
        uint64_t pos = offset;
        const uint64_t end = offset + length;
        for (const auto& [off, run] : layout_) {
            const uint64_t a = std::max(off, pos);
            const uint64_t b = std::min(off + run.first, end);
            if (a >= b)
                continue;
            append_extent(out, {pos, a - pos, ExtentType::Hole});
            append_extent(out, {a, b - a, run.second});
            pos = b;
        }
        append_extent(out, {pos, end - pos, ExtentType::Hole});
        return out;
    }

    const std::vector<unsigned char>& bytes() const { return bytes_; }
    uint64_t blocks() const { return (bytes_.size() + block - 1) / block; }
    bool block_has_data(uint64_t b) const {
        for (const auto& [off, run] : layout_)
            if (run.second == ExtentType::Data && off < (b + 1) * block &&
                off + run.first > b * block)
                return true;
        return false;
    }

    // Reads of blocks >= b wait for release() (or open()).
    void hold_from(uint64_t b) {
        std::lock_guard lock(mutex_);
        gate_from_ = b;
    }
    void release() {
        std::lock_guard lock(mutex_);
        ++round_;
        changed_.notify_all();
    }
    void open() {
        std::lock_guard lock(mutex_);
        gate_from_ = UINT64_MAX;
        ++round_;
        changed_.notify_all();
    }
    // Until `n` reads are held.
    bool wait_held(unsigned n) {
        std::unique_lock lock(mutex_);
        return changed_.wait_for(lock, 10s, [&] { return waiting_ >= n; });
    }
    void fail_at(uint64_t offset) {
        std::lock_guard lock(mutex_);
        fail_at_ = offset;
    }
    void set_identity(std::string id) {
        std::lock_guard lock(mutex_);
        identity_ = std::move(id);
    }
    std::vector<int> reads() const {
        std::lock_guard lock(mutex_);
        return reads_;
    }

private:
    std::vector<unsigned char> bytes_;
    std::map<uint64_t, std::pair<uint64_t, ExtentType>> layout_;
    mutable std::mutex mutex_;
    std::condition_variable changed_;
    std::vector<int> reads_;
    uint64_t gate_from_ = UINT64_MAX;
    uint64_t round_ = 0;
    unsigned waiting_ = 0;
    uint64_t fail_at_ = UINT64_MAX;
    std::string identity_ = "test-disk:1";
};

// 4 MiB + 12 KiB (a short last block): data, holes, Zero extents, data that
// is all zeros, and runs that do not start or end on block boundaries.
// Returns the bytes of non-zero data. The last 12 KiB of data only on a disk
// that has them.
uint64_t lay_out_mixed(TestDisk& d) {
    d.data(0, 192 * KiB);
    d.data(256 * KiB + 4 * KiB, 8 * KiB);
    d.zero(512 * KiB, 512 * KiB);
    d.zero_data(1 * MiB, 128 * KiB);
    d.data(1 * MiB + 128 * KiB, 8 * KiB);
    d.zero_data(1 * MiB + 136 * KiB, 64 * KiB);
    d.data(3 * MiB, 320 * KiB);
    if (d.size() < 4 * MiB + 12 * KiB)
        return (192 + 8 + 8 + 320) * KiB;
    d.data(4 * MiB, 12 * KiB);
    return (192 + 8 + 8 + 320 + 12) * KiB;
}

std::shared_ptr<TestDisk> mixed_disk(uint64_t* data_bytes = nullptr) {
    auto d = std::make_shared<TestDisk>(4 * MiB + 12 * KiB);
    const uint64_t n = lay_out_mixed(*d);
    if (data_bytes)
        *data_bytes = n;
    return d;
}

// 4 MiB of data except two holes (blocks 6-7 and 40).
std::shared_ptr<TestDisk> full_disk() {
    auto d = std::make_shared<TestDisk>(4 * MiB);
    d->data(0, 6 * block);
    d->data(8 * block, 32 * block);
    d->data(41 * block, 23 * block);
    return d;
}

std::vector<unsigned char> file_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::vector<unsigned char>(std::istreambuf_iterator<char>(in), {});
}

// Runs `f` on another thread, releasing the disk's held reads until it
// returns: for stop() and cancel(), which wait for the reads in flight.
void call_releasing(TestDisk& disk, const std::function<void()>& f) {
    std::atomic<bool> finished{false};
    std::thread t([&] {
        f();
        finished = true;
    });
    while (!finished) {
        disk.release();
        std::this_thread::sleep_for(5ms);
    }
    t.join();
}

MaterializeOptions small_blocks(unsigned parallel) {
    MaterializeOptions o;
    o.parallel = parallel;
    o.block_size = block;
    o.checkpoint_seconds = 0.05;
    return o;
}

class MaterializeTest : public ::testing::Test {
protected:
    void SetUp() override {
        std::string tmpl = (fs::temp_directory_path() / "p2vfs-unit-materialize-XXXXXX").string();
        ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
        dir_ = tmpl;
        job_dir_ = dir_ + "/job";
        dest_ = dir_ + "/disk.raw";
        part_ = dest_ + ".part";
    }
    void TearDown() override {
        if (!dir_.empty())
            fs::remove_all(dir_);
    }

    std::unique_ptr<Materialization> job(DevicePtr view, MaterializeOptions o) {
        return std::make_unique<Materialization>(job_dir_, std::move(view), dest_, o);
    }

    // Pauses `j` once a worker is held at the disk's hold point (blocks
    // before it done and checkpointed), letting the held read go on.
    template <typename Disk> static void pause_at_hold(Disk& disk, Materialization& j) {
        ASSERT_TRUE(disk.wait_held(1));
        j.request_pause();
        disk.open();
        j.pause();
    }

    std::string dir_, job_dir_, dest_, part_;
};

TEST_F(MaterializeTest, SparseViewIsCopiedIdenticalAndSparse) {
    uint64_t data_bytes = 0;
    auto disk = mixed_disk(&data_bytes);
    auto j = job(disk, small_blocks(4));
    // The callback may ask for progress; it sees every phase, then Done.
    std::mutex seen_mutex;
    std::set<std::string> phases;
    std::vector<JobState> states;
    j->on_change([&] {
        const JobProgress now = j->progress();
        std::lock_guard lock(seen_mutex);
        if (!now.phase.empty())
            phases.insert(now.phase);
        if (states.empty() || states.back() != now.state)
            states.push_back(now.state);
    });
    j->start();
    j->wait();
    const JobProgress p = j->progress();
    ASSERT_EQ(p.state, JobState::Done) << p.error;
    {
        std::lock_guard lock(seen_mutex);
        EXPECT_EQ(phases, (std::set<std::string>{"copying", "syncing", "verifying"}));
        EXPECT_EQ(states, (std::vector<JobState>{JobState::Running, JobState::Done}));
    }
    EXPECT_EQ(p.phase, "");
    EXPECT_EQ(p.error, "");
    EXPECT_EQ(p.bytes_total, disk->size());
    EXPECT_EQ(p.bytes_done, disk->size());
    EXPECT_EQ(p.bytes_copied, disk->size());
    EXPECT_EQ(p.bytes_resumed, 0u);
    EXPECT_EQ(p.bytes_written, data_bytes);
    EXPECT_EQ(p.bytes_checkpointed, disk->size());
    EXPECT_EQ(p.bytes_verified, disk->size());

    EXPECT_FALSE(fs::exists(part_));
    ASSERT_TRUE(fs::exists(dest_));
    EXPECT_EQ(file_bytes(dest_), disk->bytes());
    struct stat st;
    ASSERT_EQ(::stat(dest_.c_str(), &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), disk->size());
    EXPECT_LE(static_cast<uint64_t>(st.st_blocks) * 512, data_bytes + 64 * KiB);

    // Blocks the extents show without data are not read; the others once.
    const std::vector<int> reads = disk->reads();
    for (uint64_t b = 0; b < disk->blocks(); ++b)
        EXPECT_EQ(reads[b], disk->block_has_data(b) ? 1 : 0) << "block " << b;
}

TEST_F(MaterializeTest, StoppedJobResumesWithoutRereadingDoneBlocks) {
    auto disk = full_disk();
    disk->hold_from(20);
    auto first = job(disk, small_blocks(3));
    first->start();
    ASSERT_TRUE(disk->wait_held(1));
    call_releasing(*disk, [&] { first->stop(); });
    const JobProgress p1 = first->progress();
    first.reset();
    // stop() keeps the state as it was: a restart resumes.
    EXPECT_EQ(p1.state, JobState::Running);
    EXPECT_EQ(p1.bytes_checkpointed, p1.bytes_done);
    EXPECT_GE(p1.bytes_done, 20 * block);
    EXPECT_LT(p1.bytes_done, disk->size());
    EXPECT_FALSE(fs::exists(dest_));
    EXPECT_TRUE(fs::exists(part_));
    EXPECT_TRUE(fs::exists(job_dir_ + "/checkpoint"));
    const std::vector<int> reads1 = disk->reads();

    disk->open();
    auto second = job(disk, small_blocks(3));
    second->start();
    second->wait();
    const JobProgress p2 = second->progress();
    ASSERT_EQ(p2.state, JobState::Done) << p2.error;
    EXPECT_EQ(p2.bytes_resumed, p1.bytes_checkpointed);
    EXPECT_EQ(p2.bytes_copied, disk->size() - p2.bytes_resumed);
    EXPECT_EQ(p2.bytes_done, disk->size());
    EXPECT_EQ(file_bytes(dest_), disk->bytes());

    // Every block with data was read exactly once over both runs: none that
    // the first run finished was read again.
    const std::vector<int> reads = disk->reads();
    uint64_t read_in_first = 0;
    for (uint64_t b = 0; b < disk->blocks(); ++b) {
        EXPECT_EQ(reads[b], disk->block_has_data(b) ? 1 : 0) << "block " << b;
        read_in_first += reads1[b];
    }
    EXPECT_GE(read_in_first, 20u - 2); // blocks 6 and 7 are holes
}

TEST_F(MaterializeTest, PausedJobResumesToAnIdenticalCopy) {
    auto disk = full_disk();
    disk->hold_from(20);
    auto j = job(disk, small_blocks(2));
    j->start();
    pause_at_hold(*disk, *j);
    if (HasFatalFailure())
        return;
    const JobProgress p = j->progress();
    EXPECT_EQ(p.state, JobState::Paused);
    EXPECT_EQ(p.phase, "");
    EXPECT_GE(p.bytes_done, 21 * block);
    EXPECT_LT(p.bytes_done, disk->size());
    EXPECT_EQ(p.bytes_checkpointed, p.bytes_done);
    EXPECT_FALSE(fs::exists(dest_));

    j->resume();
    j->wait();
    ASSERT_EQ(j->progress().state, JobState::Done) << j->progress().error;
    EXPECT_EQ(file_bytes(dest_), disk->bytes());
    EXPECT_FALSE(fs::exists(part_));
    const std::vector<int> reads = disk->reads();
    for (uint64_t b = 0; b < disk->blocks(); ++b)
        EXPECT_EQ(reads[b], disk->block_has_data(b) ? 1 : 0) << "block " << b;
}

TEST_F(MaterializeTest, CancelRemovesThePartialCopyAndTheCheckpoint) {
    auto disk = full_disk();
    disk->hold_from(20);
    auto j = job(disk, small_blocks(2));
    j->start();
    ASSERT_TRUE(disk->wait_held(1));
    ASSERT_TRUE(fs::exists(part_));
    call_releasing(*disk, [&] { j->cancel(); });
    j->wait();
    const JobProgress p = j->progress();
    EXPECT_EQ(p.state, JobState::Cancelled);
    EXPECT_EQ(p.phase, "");
    EXPECT_FALSE(fs::exists(dest_));
    EXPECT_FALSE(fs::exists(part_));
    EXPECT_FALSE(fs::exists(job_dir_ + "/checkpoint"));
    // A cancelled job stays cancelled.
    j->resume();
    EXPECT_EQ(j->progress().state, JobState::Cancelled);
}

TEST_F(MaterializeTest, ReadErrorFailsNamingTheOffsetAndRetryCompletes) {
    auto disk = full_disk();
    disk->fail_at(5 * block);
    auto j = job(disk, small_blocks(2));
    j->start();
    j->wait();
    JobProgress p = j->progress();
    ASSERT_EQ(p.state, JobState::Failed);
    EXPECT_NE(p.error.find("test disk"), std::string::npos) << p.error;
    EXPECT_NE(p.error.find("at 0x50000"), std::string::npos) << p.error;
    EXPECT_NE(p.error.find("injected read failure"), std::string::npos) << p.error;
    EXPECT_FALSE(fs::exists(dest_));
    EXPECT_TRUE(fs::exists(part_)); // kept for the retry

    // The retry copies the failed block and what was not reached; blocks
    // finished before the failure are not read again.
    disk->fail_at(UINT64_MAX);
    j->resume();
    j->wait();
    p = j->progress();
    ASSERT_EQ(p.state, JobState::Done) << p.error;
    EXPECT_EQ(p.error, "");
    EXPECT_EQ(file_bytes(dest_), disk->bytes());
    const std::vector<int> reads = disk->reads();
    for (uint64_t b = 0; b < disk->blocks(); ++b)
        EXPECT_EQ(reads[b], !disk->block_has_data(b) ? 0 : b == 5 ? 2 : 1) << "block " << b;
}

TEST_F(MaterializeTest, VerifyCatchesADestinationChangedAfterTheCopy) {
    auto disk = full_disk();
    // One worker: when the last block's read is held, every other block is
    // copied, and the pause lands between the copy and the verify pass.
    disk->hold_from(disk->blocks() - 1);
    auto j = job(disk, small_blocks(1));
    j->start();
    pause_at_hold(*disk, *j);
    if (HasFatalFailure())
        return;
    JobProgress p = j->progress();
    ASSERT_EQ(p.state, JobState::Paused);
    ASSERT_EQ(p.bytes_done, disk->size());
    EXPECT_EQ(p.bytes_verified, 0u);

    {
        const int fd = ::open(part_.c_str(), O_WRONLY);
        ASSERT_GE(fd, 0);
        const unsigned char changed = static_cast<unsigned char>(~disk->bytes()[10 * block + 100]);
        ASSERT_EQ(::pwrite(fd, &changed, 1, 10 * block + 100), 1);
        ::close(fd);
    }
    j->resume();
    j->wait();
    p = j->progress();
    ASSERT_EQ(p.state, JobState::Failed);
    EXPECT_EQ(p.error, "verification failed: destination " + part_ +
                           " differs at offset 0xa0000 (block 10)");
    EXPECT_FALSE(fs::exists(dest_));

    // The block that differed is no longer done: a retry copies it (and
    // only it) again, and verifies.
    j->resume();
    j->wait();
    p = j->progress();
    ASSERT_EQ(p.state, JobState::Done) << p.error;
    EXPECT_EQ(p.bytes_verified, disk->size());
    EXPECT_EQ(file_bytes(dest_), disk->bytes());
    const std::vector<int> reads = disk->reads();
    for (uint64_t b = 0; b < disk->blocks(); ++b)
        EXPECT_EQ(reads[b], !disk->block_has_data(b) ? 0 : b == 10 ? 2 : 1) << "block " << b;
}

TEST_F(MaterializeTest, ChangedViewIdentityFailsTheResume) {
    auto disk = full_disk();
    disk->hold_from(20);
    auto first = job(disk, small_blocks(2));
    first->start();
    pause_at_hold(*disk, *first);
    if (HasFatalFailure())
        return;
    first.reset();
    const std::vector<int> before = disk->reads();

    disk->set_identity("test-disk:2");
    auto second = job(disk, small_blocks(2));
    second->start();
    second->wait();
    const JobProgress p = second->progress();
    ASSERT_EQ(p.state, JobState::Failed);
    EXPECT_NE(p.error.find("the view changed since the job started"), std::string::npos) << p.error;
    EXPECT_NE(p.error.find("test-disk:1"), std::string::npos) << p.error;
    EXPECT_NE(p.error.find("test-disk:2"), std::string::npos) << p.error;
    EXPECT_EQ(disk->reads(), before);
    EXPECT_TRUE(fs::exists(part_));
    EXPECT_FALSE(fs::exists(dest_));
}

TEST_F(MaterializeTest, CheckpointRecordsDoneBlocksWithTheirChecksums) {
    auto disk = full_disk();
    disk->hold_from(20);
    auto j = job(disk, small_blocks(2));
    j->start();
    pause_at_hold(*disk, *j);
    if (HasFatalFailure())
        return;
    const JobProgress p = j->progress();

    std::ifstream in(job_dir_ + "/checkpoint");
    const nlohmann::json cp = nlohmann::json::parse(in);
    EXPECT_EQ(cp.at("format"), "p2vfs-materialize-checkpoint");
    EXPECT_EQ(cp.at("version"), 1);
    EXPECT_EQ(cp.at("view_size"), disk->size());
    EXPECT_EQ(cp.at("view_identity"), "test-disk:1");
    EXPECT_EQ(cp.at("block_size"), block);
    EXPECT_EQ(cp.at("destination"), dest_);
    EXPECT_EQ(cp.at("complete"), false);
    // Blocks are taken in order and the pause lets each finish: a prefix.
    const uint64_t done = p.bytes_checkpointed / block;
    EXPECT_EQ(cp.at("done"), nlohmann::json::parse("[[0, " + std::to_string(done) + "]]"));
    std::string crcs;
    for (uint64_t b = 0; b < done; ++b) {
        char hex8[9];
        std::snprintf(hex8, sizeof hex8, "%08x", crc32c(disk->bytes().data() + b * block, block));
        crcs += hex8;
    }
    EXPECT_EQ(cp.at("crc32c"), crcs);
    j->cancel();
}

TEST_F(MaterializeTest, CorruptCheckpointFailsNamingTheFile) {
    fs::create_directories(job_dir_);
    std::ofstream(job_dir_ + "/checkpoint") << "{\"format\": \"p2vfs-materialize-checkpoint\",";
    auto disk = full_disk();
    auto j = job(disk, small_blocks(2));
    j->start();
    j->wait();
    const JobProgress p = j->progress();
    ASSERT_EQ(p.state, JobState::Failed);
    EXPECT_EQ(p.error.rfind(job_dir_ + "/checkpoint: not a usable materialization checkpoint", 0),
              0u)
        << p.error;
    EXPECT_FALSE(fs::exists(dest_));
}

TEST_F(MaterializeTest, ExistingDestinationIsNotOverwritten) {
    std::ofstream(dest_) << "keep me";
    auto j = job(full_disk(), small_blocks(2));
    j->start();
    j->wait();
    const JobProgress p = j->progress();
    ASSERT_EQ(p.state, JobState::Failed);
    EXPECT_EQ(p.error, dest_ + ": exists already; a materialization does not overwrite a file");
    EXPECT_EQ(file_bytes(dest_), std::vector<unsigned char>({'k', 'e', 'e', 'p', ' ', 'm', 'e'}));
    EXPECT_FALSE(fs::exists(part_));
}

TEST_F(MaterializeTest, MissingPartialFileStartsOverFromZero) {
    auto disk = full_disk();
    disk->hold_from(20);
    auto first = job(disk, small_blocks(2));
    first->start();
    pause_at_hold(*disk, *first);
    if (HasFatalFailure())
        return;
    ASSERT_GT(first->progress().bytes_checkpointed, 0u);
    first.reset();
    ASSERT_TRUE(fs::remove(part_));

    auto second = job(disk, small_blocks(2));
    second->start();
    second->wait();
    const JobProgress p = second->progress();
    ASSERT_EQ(p.state, JobState::Done) << p.error;
    EXPECT_EQ(p.bytes_resumed, 0u);
    EXPECT_EQ(p.bytes_copied, disk->size());
    EXPECT_EQ(file_bytes(dest_), disk->bytes());
}

TEST_F(MaterializeTest, BandwidthLimitPacesTheCopy) {
    auto disk = std::make_shared<TestDisk>(2 * MiB);
    disk->data(0, 2 * MiB);
    MaterializeOptions o = small_blocks(4);
    o.bandwidth = 2 * MiB;
    o.verify = false;
    auto j = job(disk, o);
    const auto began = std::chrono::steady_clock::now();
    j->start();
    // Half way, the rate shown is the limit's (within a block's worth).
    std::this_thread::sleep_for(500ms);
    const JobProgress mid = j->progress();
    EXPECT_EQ(mid.phase, "copying");
    EXPECT_GT(mid.rate, 0.5 * MiB);
    EXPECT_LT(mid.rate, 2.5 * MiB);
    EXPECT_GT(mid.eta_seconds, 0);
    EXPECT_LT(mid.eta_seconds, 4);
    j->wait();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
    ASSERT_EQ(j->progress().state, JobState::Done) << j->progress().error;
    EXPECT_GE(seconds, 0.8);
    EXPECT_EQ(file_bytes(dest_), disk->bytes());
}

TEST(MaterializeOptionsTest, OutOfRangeOptionsAreRefused) {
    auto disk = std::make_shared<TestDisk>(MiB);
    MaterializeOptions o;
    o.block_size = 96 * KiB;
    EXPECT_THROW(Materialization("/nonexistent/job", disk, "/nonexistent/d", o), InvalidArgument);
    o = {};
    o.parallel = 0;
    EXPECT_THROW(Materialization("/nonexistent/job", disk, "/nonexistent/d", o), InvalidArgument);
    o = {};
    o.parallel = 65;
    EXPECT_THROW(Materialization("/nonexistent/job", disk, "/nonexistent/d", o), InvalidArgument);
    o = {};
    EXPECT_THROW(Materialization("/nonexistent/job", disk, "", o), InvalidArgument);
}

TEST(MaterializeStateTest, StateNamesRoundTrip) {
    for (const JobState s : {JobState::Running, JobState::Paused, JobState::Done, JobState::Failed,
                             JobState::Cancelled})
        EXPECT_EQ(job_state_from_string(to_string(s)), s);
    EXPECT_EQ(to_string(JobState::Cancelled), "cancelled");
    EXPECT_EQ(job_state_from_string("Running"), std::nullopt);
}

// ---- NBD destination --------------------------------------------------------

class MaterializeNbdTest : public MaterializeTest {
protected:
    void SetUp() override {
        if (std::system("command -v nbdkit >/dev/null 2>&1") != 0)
            GTEST_SKIP() << "nbdkit is not installed";
        MaterializeTest::SetUp();
    }
    void TearDown() override {
        if (pid_ > 0) {
            ::kill(pid_, SIGTERM);
            ::waitpid(pid_, nullptr, 0);
        }
        MaterializeTest::TearDown();
    }

    // nbdkit's memory plugin: a writable export of `size` bytes.
    std::string serve_memory(uint64_t size) {
        const std::string sock = dir_ + "/nbd.sock";
        std::vector<std::string> args{"nbdkit", "-f",     "--exit-with-parent", "-U",
                                      sock,     "memory", std::to_string(size)};
        std::vector<char*> argv;
        for (auto& a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        EXPECT_EQ(::posix_spawnp(&pid_, "nbdkit", nullptr, nullptr, argv.data(), environ), 0);
        for (int i = 0; i < 500 && !fs::exists(sock); ++i)
            std::this_thread::sleep_for(10ms);
        return "nbd+unix:///?socket=" + sock;
    }

    pid_t pid_ = -1;
};

TEST_F(MaterializeNbdTest, ViewIsCopiedToAnExportIncludingItsZeros) {
    auto disk = std::make_shared<TestDisk>(4 * MiB);
    const uint64_t data_bytes = lay_out_mixed(*disk);
    const std::string uri = serve_memory(disk->size());

    // The export starts full of 0xff, so zeros must really be written.
    nbd_handle* h = nbd_create();
    ASSERT_NE(h, nullptr);
    ASSERT_EQ(nbd_connect_uri(h, uri.c_str()), 0) << nbd_get_error();
    std::vector<unsigned char> ff(disk->size(), 0xff);
    ASSERT_EQ(nbd_pwrite(h, ff.data(), ff.size(), 0, 0), 0) << nbd_get_error();

    auto j = std::make_unique<Materialization>(job_dir_, disk, uri, small_blocks(4));
    j->start();
    j->wait();
    const JobProgress p = j->progress();
    ASSERT_EQ(p.state, JobState::Done) << p.error;
    EXPECT_EQ(p.bytes_written, data_bytes);
    EXPECT_EQ(p.bytes_verified, disk->size());

    std::vector<unsigned char> back(disk->size());
    ASSERT_EQ(nbd_pread(h, back.data(), back.size(), 0, 0), 0) << nbd_get_error();
    nbd_close(h);
    EXPECT_EQ(back, disk->bytes());

    // Cancelling a finished NBD job changes nothing.
    j->cancel();
    EXPECT_EQ(j->progress().state, JobState::Done);
}

TEST_F(MaterializeNbdTest, LostConnectionFailsNamingTheExportAndOffset) {
    auto disk = full_disk();
    const std::string uri = serve_memory(disk->size());
    // One worker, held at block 20: blocks 0-19 are written when the server
    // dies, and the write of block 20 is the first to notice.
    disk->hold_from(20);
    MaterializeOptions o = small_blocks(1);
    o.checkpoint_seconds = 600;
    auto j = std::make_unique<Materialization>(job_dir_, disk, uri, o);
    j->start();
    ASSERT_TRUE(disk->wait_held(1));
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
    disk->open();
    j->wait();
    const JobProgress p = j->progress();
    ASSERT_EQ(p.state, JobState::Failed);
    EXPECT_EQ(p.error.rfind("NBD destination " + uri + ": write of ", 0), 0u) << p.error;
    EXPECT_NE(p.error.find(" at 0x140000 failed: "), std::string::npos) << p.error;
}

} // namespace
} // namespace p2vfs
