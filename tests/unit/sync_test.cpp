// Sync jobs (fsd/jobs/sync.h) over a raw source file into raw and qcow2
// targets in a per-test directory: generations equal the source as it was,
// only changed blocks are counted and written, the target guard, retarget,
// pause and resume of an interrupted pass, quiesce steps, the cutover with
// fixups (a hook that edits the disk), and damaged records.
#include "block/filter_device.h"
#include "block/local_source.h"
#include "common/error.h"
#include "common/file_io.h"
#include "jobs/sync.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <random>
#include <thread>
#include <unistd.h>

namespace p2vfs {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;
constexpr uint64_t bs = 64 * KiB; // the tests' block size

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
}

void write_at(const std::string& path, uint64_t offset, const std::string& bytes) {
    UniqueFd fd = open_file(path, O_WRONLY);
    pwrite_full(fd.get(), bytes.data(), bytes.size(), offset, path);
}

std::string pattern(size_t length, unsigned seed) {
    std::mt19937 rng(seed);
    std::string s(length, '\0');
    for (char& c : s)
        c = static_cast<char>(rng() | 1);
    return s;
}

bool have(const char* tool) {
    const std::string cmd = std::string("command -v ") + tool + " >/dev/null 2>&1";
    return std::system(cmd.c_str()) == 0;
}

// A source that takes its time: a pass can be interrupted midway.
class SlowDevice : public FilterDevice {
public:
    using FilterDevice::FilterDevice;
    void read(void* buf, size_t length, uint64_t offset) override {
        std::this_thread::sleep_for(5ms);
        FilterDevice::read(buf, length, offset);
    }
};

class SyncTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/p2vfs-sync-test-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        source_ = dir_ + "/source.img";
        // 4 MiB + 12 KiB: the last block is short. Data in parts, holes elsewhere.
        {
            UniqueFd fd = open_file(source_, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(size_)), 0);
        }
        write_at(source_, 0, pattern(300 * KiB, 1));
        write_at(source_, 2 * MiB, pattern(bs, 2));
        write_at(source_, size_ - 5000, pattern(5000, 3));
        dest_ = dir_ + "/out/target.img";
        fs::create_directories(dir_ + "/out");
    }
    void TearDown() override {
        job_.reset();
        fs::remove_all(dir_);
    }

    SyncHooks hooks() const {
        SyncHooks h;
        const std::string src = source_;
        h.open_source = [src] { return std::make_shared<LocalSource>(src); };
        h.source_spec = source_;
        h.source_size = size_;
        return h;
    }
    SyncOptions options(const std::string& format = "raw") const {
        SyncOptions o;
        o.format = format;
        o.block_size = bs;
        o.parallel = 2;
        o.detection = "hash";
        o.checkpoint_seconds = 0.05;
        return o;
    }
    void make(SyncOptions o, SyncHooks h) {
        job_ = std::make_unique<SyncJob>(dir_ + "/job", dest_, std::move(h), std::move(o));
    }
    // Waits until the job has completed `generation` and waits for the
    // next request (or has ended).
    JobProgress wait_generation(uint64_t generation) {
        const auto until = std::chrono::steady_clock::now() + 60s;
        for (;;) {
            const JobProgress p = job_->progress();
            if (p.state == JobState::Failed)
                ADD_FAILURE() << "job failed: " << p.error;
            if (p.state != JobState::Running ||
                (p.generation >= generation && p.phase == "waiting"))
                return p;
            if (std::chrono::steady_clock::now() > until) {
                ADD_FAILURE() << "timed out at generation " << p.generation << " phase " << p.phase;
                return p;
            }
            std::this_thread::sleep_for(10ms);
        }
    }
    // An image target's guest bytes.
    std::string converted(const std::string& path) const {
        const std::string raw = dir_ + "/converted.raw";
        const std::string cmd = "qemu-img convert -O raw '" + path + "' '" + raw + "'";
        EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
        return read_all(raw);
    }

    const uint64_t size_ = 4 * MiB + 12 * KiB;
    std::string dir_, source_, dest_;
    std::unique_ptr<SyncJob> job_;
};

TEST_F(SyncTest, GenerationsEqualTheSourceAndCountOnlyChangedBlocks) {
    make(options(), hooks());
    job_->start();
    JobProgress p = wait_generation(1);
    ASSERT_EQ(p.generation, 1u);
    EXPECT_EQ(read_all(dest_ + ".part"), read_all(source_));
    EXPECT_FALSE(fs::exists(dest_));
    EXPECT_FALSE(p.bootable);
    // Data blocks: 0..4 (300 KiB), 32 (2 MiB), and the short last one.
    EXPECT_EQ(p.changed_bytes, 5 * bs + bs + 12 * KiB);

    // Three blocks changed, one rewritten with the bytes it had.
    const std::string before = read_all(source_);
    write_at(source_, 7 * bs + 100, pattern(4 * KiB, 9));       // a hole becomes data
    write_at(source_, 2 * MiB + 10, pattern(10, 10));          // data changes
    write_at(source_, 2 * MiB + 5000, pattern(10, 11));        // same block again
    write_at(source_, 40 * bs, pattern(bs + 1, 12));           // two blocks
    write_at(source_, 0, before.substr(0, 4096));              // the same bytes
    job_->request_sync();
    p = wait_generation(2);
    ASSERT_EQ(p.generation, 2u);
    EXPECT_EQ(p.changed_bytes, 4 * bs);
    EXPECT_EQ(p.written_bytes, 4 * bs);
    // Blocks with data now: 0-4, 7, 32, 40, 41 and the last; holes are not read.
    EXPECT_EQ(p.read_bytes, 9 * bs + 12 * KiB);
    EXPECT_EQ(p.detection, "hash");
    EXPECT_EQ(read_all(dest_ + ".part"), read_all(source_));

    // Data becoming zeros is written as zeros.
    write_at(source_, 2 * MiB, std::string(bs, '\0'));
    job_->request_sync();
    p = wait_generation(3);
    EXPECT_EQ(p.changed_bytes, bs);
    EXPECT_EQ(p.written_bytes, 0u);
    EXPECT_EQ(read_all(dest_ + ".part"), read_all(source_));
}

TEST_F(SyncTest, AQcow2TargetHoldsEachGeneration) {
    if (!have("qemu-img") || !have("qemu-nbd"))
        GTEST_SKIP() << "qemu-img and qemu-nbd are needed (apt-get install qemu-utils)";
    make(options("qcow2"), hooks());
    job_->start();
    wait_generation(1);
    EXPECT_EQ(converted(dest_ + ".part"), read_all(source_));
    write_at(source_, 3 * MiB, pattern(4096, 20));
    job_->request_sync();
    const JobProgress p = wait_generation(2);
    EXPECT_EQ(p.changed_bytes, bs);
    EXPECT_EQ(converted(dest_ + ".part"), read_all(source_));
}

TEST_F(SyncTest, ATargetWrittenByHandIsRefused) {
    make(options(), hooks());
    job_->start();
    wait_generation(1);
    write_at(dest_ + ".part", 3 * bs, "scribble");
    write_at(source_, 9 * bs, pattern(100, 30));
    job_->request_sync();
    job_->wait();
    const JobProgress p = job_->progress();
    ASSERT_EQ(p.state, JobState::Failed);
    EXPECT_NE(p.error.find("target " + dest_ + ".part was modified since sync 1"), std::string::npos)
        << p.error;
    EXPECT_NE(p.error.find("block 3 at offset 0x30000 differs"), std::string::npos) << p.error;
    // Nothing of the new sync was written.
    EXPECT_EQ(read_all(dest_ + ".part").substr(9 * bs, 100), std::string(100, '\0'));
}

TEST_F(SyncTest, AMovedTargetIsCheckedAndContinues) {
    make(options(), hooks());
    job_->start();
    wait_generation(1);
    job_->pause();
    EXPECT_EQ(job_->progress().state, JobState::Paused);
    fs::create_directories(dir_ + "/elsewhere");
    const std::string moved = dir_ + "/elsewhere/target.img";
    EXPECT_THROW(job_->retarget(moved), InvalidArgument); // not there yet
    fs::rename(dest_ + ".part", moved + ".part");
    job_->retarget(moved);
    EXPECT_EQ(job_->destination(), moved);
    write_at(source_, 11 * bs, pattern(100, 40));
    job_->request_sync();
    job_->resume();
    const JobProgress p = wait_generation(2);
    EXPECT_EQ(p.generation, 2u);
    EXPECT_EQ(p.changed_bytes, bs);
    EXPECT_EQ(read_all(moved + ".part"), read_all(source_));
    EXPECT_EQ(p.target, moved + ".part");
}

TEST_F(SyncTest, AnInterruptedPassResumesInANewJobObject) {
    SyncOptions o = options();
    o.parallel = 1;
    SyncHooks slow = hooks();
    const std::string src = source_;
    slow.open_source = [src] {
        return std::make_shared<SlowDevice>(std::make_shared<LocalSource>(src));
    };
    make(o, slow);
    job_->start();
    wait_generation(1);
    // Every block changes; stop in the middle of the pass.
    write_at(source_, 0, pattern(size_, 50));
    job_->request_sync();
    const auto until = std::chrono::steady_clock::now() + 30s;
    for (;;) {
        const JobProgress p = job_->progress();
        if ((p.phase == "syncing" && p.bytes_done >= 8 * bs) ||
            std::chrono::steady_clock::now() > until)
            break;
        std::this_thread::sleep_for(1ms);
    }
    job_->stop();
    EXPECT_EQ(job_->progress().generation, 1u);
    job_.reset();
    // Torn bytes in a block the record does not list as done.
    make(o, hooks());
    job_->start();
    const JobProgress p = wait_generation(2);
    EXPECT_EQ(p.generation, 2u);
    EXPECT_EQ(read_all(dest_ + ".part"), read_all(source_));
    // The next sync finds the target as recorded: not "modified".
    write_at(source_, 5 * bs, pattern(10, 51));
    job_->request_sync();
    EXPECT_EQ(wait_generation(3).changed_bytes, bs);
}

TEST_F(SyncTest, CutoverAppliesFixupsRenamesAndVerifies) {
    SyncHooks h = hooks();
    // A stand-in for the guest fixups: an edit at a known place.
    h.fixups = [](const DevicePtr& disk, const std::string& destination,
                  const std::string& format) {
        const std::string edit = "fixed";
        disk->write(edit.data(), edit.size(), 2 * MiB + 7);
        return SyncFixups{"{\"steps\":[\"test\"]}", "disk " + destination + " " + format + "\n",
                          ".xml"};
    };
    SyncOptions o = options();
    o.quiesce_command = "echo quiesced >> '" + dir_ + "/marks'";
    o.unquiesce_command = "echo resumed >> '" + dir_ + "/marks'";
    make(o, std::move(h));
    job_->start();
    wait_generation(1);
    write_at(source_, 13 * bs, pattern(100, 60));
    job_->request_cutover();
    job_->wait();
    const JobProgress p = job_->progress();
    ASSERT_EQ(p.state, JobState::Done) << p.error;
    EXPECT_TRUE(p.bootable);
    EXPECT_EQ(p.generation, 2u);
    EXPECT_FALSE(fs::exists(dest_ + ".part"));
    std::string expected = read_all(source_);
    expected.replace(2 * MiB + 7, 5, "fixed");
    EXPECT_EQ(read_all(dest_), expected);
    EXPECT_EQ(read_all(dir_ + "/marks"), "quiesced\nresumed\n");
    EXPECT_EQ(job_->fixups_plan(), "{\"steps\":[\"test\"]}");
    EXPECT_EQ(job_->description_file(), dir_ + "/out/target.xml");
    EXPECT_EQ(read_all(dir_ + "/out/target.xml"), "disk " + dest_ + " raw\n");
    EXPECT_THROW(job_->request_sync(), InvalidState);
    // A restarted daemon sees it done.
    job_.reset();
    make(options(), hooks());
    job_->start();
    EXPECT_EQ(job_->progress().state, JobState::Done);
}

TEST_F(SyncTest, AFailedQuiesceStopsTheCutoverAndNamesTheCommand) {
    SyncOptions o = options();
    o.quiesce_command = "echo 'database refuses' >&2; exit 3";
    make(o, hooks());
    job_->start();
    wait_generation(1);
    job_->request_cutover();
    job_->wait();
    const JobProgress p = job_->progress();
    ASSERT_EQ(p.state, JobState::Failed);
    EXPECT_NE(p.error.find("the quiesce command exited with status 3"), std::string::npos) << p.error;
    EXPECT_NE(p.error.find("database refuses"), std::string::npos) << p.error;
    EXPECT_TRUE(fs::exists(dest_ + ".part"));
    EXPECT_FALSE(fs::exists(dest_));
}

TEST_F(SyncTest, QuiesceBySignalWaitsForTheAnswer) {
    SyncOptions o = options();
    o.quiesce_signal = true;
    o.quiesce_timeout = 30;
    SyncHooks h = hooks();
    std::atomic<int> asked{0};
    SyncJob* self = nullptr;
    h.signal_quiesce = [&](bool on) {
        asked.fetch_add(1);
        // The source-side tool answers from elsewhere.
        std::thread([&self, on] { self->quiesce_ack(true, on ? "frozen" : "thawed"); }).detach();
    };
    make(o, std::move(h));
    self = job_.get();
    job_->start();
    wait_generation(1);
    job_->request_cutover();
    job_->wait();
    EXPECT_EQ(job_->progress().state, JobState::Done) << job_->progress().error;
    EXPECT_EQ(asked.load(), 2);
    EXPECT_EQ(read_all(dest_), read_all(source_));
}

TEST_F(SyncTest, ScheduledSyncsHappenWithoutRequests) {
    SyncOptions o = options();
    o.interval_minutes = 1.0 / 60; // a second
    make(o, hooks());
    job_->start();
    wait_generation(1);
    const JobProgress p1 = job_->progress();
    EXPECT_EQ(p1.next_event, "sync");
    write_at(source_, 17 * bs, pattern(10, 70));
    // Generation 3 begins a second after generation 2 ended: after the write.
    const JobProgress p = wait_generation(3);
    EXPECT_GE(p.generation, 3u);
    EXPECT_EQ(read_all(dest_ + ".part"), read_all(source_));
    job_->set_schedule(0, 4102444800); // 2100-01-01
    const JobProgress q = job_->progress();
    EXPECT_EQ(q.next_event, "cutover");
    EXPECT_EQ(q.next_event_time, 4102444800);
    EXPECT_THROW(job_->set_schedule(-1, 0), InvalidArgument);
}

TEST_F(SyncTest, ADamagedRecordIsNamed) {
    make(options(), hooks());
    job_->start();
    wait_generation(1);
    job_.reset();
    std::string text = read_all(dir_ + "/job/sync.json");
    const auto at = text.find("\"generation\": 1");
    ASSERT_NE(at, std::string::npos) << text;
    text.replace(at, 15, "\"generation\": 7");
    write_at(dir_ + "/job/sync.json", 0, text);
    try {
        make(options(), hooks());
        FAIL() << "a damaged record was accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("sync.json: its checksum does not match"),
                  std::string::npos)
            << e.what();
    }
}

TEST_F(SyncTest, OptionsOutOfRangeAreRefused) {
    SyncOptions o = options();
    o.block_size = 3 * MiB;
    EXPECT_THROW(make(o, hooks()), InvalidArgument);
    o = options("vhd2");
    EXPECT_THROW(make(o, hooks()), InvalidArgument);
    o = options();
    o.detection = "guess";
    EXPECT_THROW(make(o, hooks()), InvalidArgument);
    o = options();
    o.parallel = 0;
    EXPECT_THROW(make(o, hooks()), InvalidArgument);
}

} // namespace
} // namespace p2vfs
