// Materialization: copying a virtual disk view out to a destination, a
// regular file or an NBD export (fsd/jobs/destination.h), resumably.
//
// The view is cut into blocks of `block_size` bytes (the last may be
// shorter). Workers take blocks in order from a shared counter; a block the
// view's extents() report as all Hole/Zero is not read, and within a block
// that is, runs of zeros are not written: a file keeps them as holes, an NBD
// export gets write-zeroes requests. The CRC-32C of each block's bytes as
// read from the view (zeros for an unread block) is kept; the verify pass
// reads the destination back and compares, without reading the view again.
// A file destination is written as DEST.part and renamed to DEST only after
// the last sync and a successful verification.
//
// The checkpoint, JOB_DIR/checkpoint: one JSON object (nlohmann-json):
//   format       "p2vfs-materialize-checkpoint"
//   version      1
//   view_size, view_identity, view_name, block_size, destination
//   done         runs of done blocks, [[first, count], ...], ascending
//   crc32c       8 hex digits per done block, in block order: the CRC-32C
//                of the block's bytes as read from the view
//   complete     true once every block was synced (and verified, when
//                asked); written just before a file destination is renamed
//                into place, so a restart after the rename reports Done
//   checksum     CRC-32C of the object's compact dump without this field
//
// Crash rules. A checkpoint is written every `checkpoint_seconds` while
// copying, at pause and stop, after a failure and after the final sync:
//   1. the blocks whose writes have returned are noted (in memory);
//   2. the destination is synced (fdatasync; nbd_flush on every connection);
//   3. those blocks are recorded done, and the checkpoint file is replaced
//      atomically (temporary file, fsync, rename, directory fsync).
// So a block listed done was durable on the destination before the listing
// was. After a crash, blocks not listed may hold anything (partly written
// data): they are copied again, and their runs of zeros are punched out of
// a reused DEST.part, since they may hold stale bytes. A checkpoint that
// does not parse or fails its checksum, or that names another view size,
// view identity, block size or destination, is never used silently: the job
// fails, saying which. Done blocks listed with DEST.part gone: the copy
// starts over from zero (logged as a warning), and the emptied checkpoint
// is written before DEST.part is made again. The verify pass also reads the
// resumed blocks, against the checksums in the checkpoint, so a destination
// changed behind the job's back is caught there.
//
// Thread model: one controller thread per run (start or resume, until
// paused, failed, done, cancelled or stopped) opens the destination, starts
// `parallel` workers per phase, writes checkpoints and moves the state. All
// methods may be called from any thread at any time; the control methods
// (start, pause, resume, cancel, stop) are serialized with one another. Lock
// order: the control lock, then the state lock; on_change callbacks run with
// neither held, one at a time.
#pragma once

#include "block/block_device.h"
#include "jobs/job_engine.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace p2vfs {

struct MaterializeOptions {
    unsigned parallel = 4; // worker threads (1..64)
    // Bytes per second read from the view, over all workers (a shared token
    // bucket charged for the data extents read; holes cost nothing); 0 =
    // unlimited.
    uint64_t bandwidth = 0;
    bool verify = true; // read back what was written and compare checksums
    // The unit of work, checkpoint and checksum: a power of two from 64 KiB
    // to 256 MiB. Each worker holds one block in memory.
    uint64_t block_size = 4 << 20;
    double checkpoint_seconds = 2; // how often progress is made durable (> 0)
    // A file destination is given this owner (fchown) when >= 0: the daemon
    // runs as root and writes copies for the callers who asked for them.
    int64_t owner_uid = -1;
    int64_t owner_gid = -1;
};

class Materialization : public JobEngine {
public:
    // `job_dir`: this job's own directory (made if missing), where the
    // checkpoint lives. `view`: what is copied. `destination`: a file name
    // or an NBD URI (is_nbd_uri() in nbd-bridge/nbd_source.h). Nothing
    // happens until start(); the state is Paused until then. Throws
    // InvalidArgument for options out of range or an empty destination.
    Materialization(std::string job_dir, DevicePtr view, std::string destination,
                    MaterializeOptions options);
    // Stops like stop().
    ~Materialization() override;
    Materialization(const Materialization&) = delete;
    Materialization& operator=(const Materialization&) = delete;

    // Starts the job, resuming from job_dir's checkpoint when there is one
    // (see the crash rules above: a checkpoint that does not match fails the
    // job). Returns at once; the work runs on its own threads. Failures,
    // including a DEST that already exists, end in state Failed with an
    // error. A second call does nothing.
    void start() override;

    // Asks the workers to stop after their current block and returns at
    // once; when they have, a checkpoint is written and the state becomes
    // Paused (on_change tells). Does nothing unless Running.
    void request_pause() override;

    // request_pause(), then waits until the job is no longer Running: Paused,
    // or Done/Failed if it ended first.
    void pause() override;

    // Paused or Failed -> Running: a new run from what is done (a retry
    // after a failure: from the last checkpoint). On a job never started,
    // the same as start().
    void resume() override;

    // Stops the workers (a block being read or written is finished, no
    // other is taken, no checkpoint is written), then removes DEST.part (not
    // for NBD: the export keeps what was written) and the checkpoint; state
    // Cancelled. Also for a job never started here (one restored from its
    // job_dir). A Done job stays Done, its DEST untouched.
    void cancel() override;

    // For daemon shutdown: stops the workers after their current block,
    // writes a checkpoint and joins every thread. The state is left as it
    // was (no state change is reported), so a new Materialization over the
    // same job_dir resumes. Afterwards only progress() answers; the control
    // methods do nothing.
    void stop() override;

    // Returns when the job is Done, Failed or Cancelled (and on_change has
    // been called for that state), or has been stopped.
    void wait() override;

    JobProgress progress() const override;

    // `callback` is called whenever progress moves (at most about 4 times a
    // second) and on every state and phase change, from worker, controller
    // or calling threads, one call at a time, with no lock of the job held:
    // it may call progress() and request_pause(), but not the methods that
    // wait (pause, cancel, stop, wait), which would wait for its own thread;
    // nor may a caller of those hold a lock the callback takes. Exceptions
    // it throws are logged and dropped. Replaces any earlier one.
    void on_change(std::function<void()> callback) override;

private:
    struct State;
    std::unique_ptr<State> state_;
};

} // namespace p2vfs
