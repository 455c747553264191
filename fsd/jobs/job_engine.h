// What every long job of the daemon offers its controller (fsd/core):
// Materialization (fsd/jobs/materialize.h), a one-off copy of a view, and
// SyncJob (fsd/jobs/sync.h), repeated syncs of a live source and a cutover.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace p2vfs {

// Running: working, or about to (pause and stop requests are honoured at
// block boundaries). Paused: no thread runs; also the state of a job made
// but not started. Done, Failed, Cancelled: the run has ended; Failed can be
// resumed (retried from the checkpoint).
enum class JobState { Running, Paused, Done, Failed, Cancelled };

// "running", "paused", "done", "failed", "cancelled".
std::string to_string(JobState state);
// The inverse of to_string(); nullopt for any other text.
std::optional<JobState> job_state_from_string(std::string_view text);

// A consistent snapshot of a job (see Materialization::progress()).
struct JobProgress {
    JobState state = JobState::Paused;
    std::string phase;               // "copying", "syncing", "verifying"; "" when not running
    uint64_t bytes_total = 0;        // the view's size
    uint64_t bytes_done = 0;         // bytes of the view finished (copied or resumed)
    uint64_t bytes_copied = 0;       // bytes of the view handled by this process: read, or known
                                     // zero from its extents (not counting resumed ones)
    uint64_t bytes_resumed = 0;      // bytes found done in the checkpoint at start
    uint64_t bytes_written = 0;      // data bytes written to the destination by this process
                                     // (holes and zeros not counted)
    uint64_t bytes_checkpointed = 0; // bytes_done as of the last durable checkpoint
    uint64_t bytes_verified = 0;     // bytes read back and matched in the current verify pass
    double rate = 0;                 // bytes/s of the current phase over the last 5 seconds
    double eta_seconds = -1;         // until the current phase ends at that rate; -1 unknown
    std::string error;               // Failed: the reason, naming what and where

    // Sync jobs only (fsd/jobs/sync.h); zero or empty for others.
    uint64_t generation = 0;         // syncs completed (the initial copy is generation 1)
    uint64_t changed_bytes = 0;      // bytes of the source found changed by the last sync
    uint64_t written_bytes = 0;      // data bytes the last sync wrote to the target
    uint64_t read_bytes = 0;         // bytes the last sync read from the source
    std::string detection;           // how the last sync found changes: "hash",
                                     // "dirty-bitmap", "reflink"
    std::string next_event;          // "sync", "cutover" or "" (nothing scheduled)
    int64_t next_event_time = 0;     // its time, Unix seconds (0: none)
    bool bootable = false;           // the cutover finished: the target may be booted
    std::string target;              // where the target file is now
};

class JobEngine {
public:
    virtual ~JobEngine() = default;
    virtual void start() = 0;
    virtual void request_pause() = 0;
    virtual void pause() = 0;
    virtual void resume() = 0;
    virtual void cancel() = 0;
    virtual void stop() = 0;
    virtual void wait() = 0;
    virtual JobProgress progress() const = 0;
    virtual void on_change(std::function<void()> callback) = 0;
};

} // namespace p2vfs
