// Synchronized cutover: a target disk kept in step with a live source by
// repeated syncs, then a final sync from a quiesced source, the fixups of a
// target profile, and the target made bootable.
//
// The target is one image file in a chosen format (raw, qcow2, vmdk, vhd,
// vhdx, vdi). Until the cutover it is kept as DEST.part, so nothing boots a
// half-synced disk by its final name; the cutover renames it to DEST. A raw
// target is written directly; the other formats through a qemu-nbd of ours
// serving DEST.part writable (jobs/image_target.h), which keeps the
// format's tables. The target is addressed in guest-disk offsets, cut into
// blocks of `block_size` (the unit of change detection).
//
// Generations. Generation 0 is the empty target (it reads as zeros).
// Generation N+1 is a sync: every block whose content differs from
// generation N is written (zeros as write-zeroes), the rest is not touched.
// What differs is found, per sync, by
//   hash          the whole source is read and each block's XXH3-128 hash
//                 compared with generation N's; only changed blocks are
//                 written. Works for every source.
//   dirty-bitmap  an NBD source whose server offers the meta context
//                 qemu:dirty-bitmap:NAME (qemu-nbd -B NAME of a qcow2 with a
//                 persistent bitmap, or a QEMU export): only blocks the
//                 bitmap marks dirty are read (and then compared by hash, as
//                 the bitmap counts every write since it was made). The bitmap
//                 must have been made before the job's first sync; one the
//                 server no longer offers fails the sync, naming it.
//   reflink       a local image file on a file system with reflinks: each
//                 sync takes a reflink copy (an atomic point in time) beside
//                 the origin, and only ranges whose FIEMAP physical extents
//                 differ from the previous copy's are read.
// "auto" picks dirty-bitmap when a bitmap is named, else hash.
//
// Records, in JOB_DIR:
//   sync.json        the job's state (replaced atomically; a checksum field
//                    as in the materialization checkpoint): source size,
//                    block size, target path and format, the last complete
//                    generation and each generation's history, the target
//                    file's identity and times after the last step, the step
//                    in progress (sync or cutover, its phase and the runs of
//                    blocks done), the schedule.
//   hashes.N         generation N's block hashes: 16 bytes per block.
//   overlays/fixups  the cutover's fixups, an overlay over the target
//                    (fsd/overlay/overlay.h) written back at its end.
//
// Crash rules (the materialization's): a block is recorded done only after
// the target was synced with its write; hashes.N+1 is synced before
// sync.json names it. A step interrupted at any point resumes from sync.json:
// a sync goes on from its done blocks (a block not recorded done may hold a
// torn write, so for those the target's own block is read and compared with
// the source, not trusted); a cutover goes on from its phase.
//
// Guarding the target. After each step the target file's device, inode,
// size, mtime and ctime are recorded. Before the next, they are compared: if
// any differs (the file was written, or moved: a rename changes its ctime),
// the whole target is read and checked against generation N's hashes. A
// mismatch fails the step, naming the first differing block, rather than
// syncing onto a disk that is no longer what the hashes say. A moved target
// (retarget) that reads as recorded is accepted and its new identity noted.
//
// Cutover: [quiesce] -> final sync -> [unquiesce] -> fixups (planned on the
// target's own bytes, applied into the job's overlay, written back) ->
// flush, close, qemu-img check for image formats -> DEST.part renamed to DEST
// -> the target read back in full and compared with the expected hashes ->
// done, bootable. Quiesce: a command (run with /bin/sh -c, environment
// P2VFS_JOB, P2VFS_TARGET, P2VFS_STEP=quiesce|unquiesce; must exit 0 within
// the timeout) or a hook that signals a source-side tool and waits for its
// answer (quiesce_ack()).
//
// Thread model: as Materialization: one controller thread runs the steps
// (and waits for the schedule between them), with `parallel` workers per
// pass. All methods may be called from any thread.
#pragma once

#include "block/block_device.h"
#include "jobs/job_engine.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace p2vfs {

struct SyncOptions {
    std::string format = "qcow2";   // raw, qcow2, vmdk, vhd, vhdx, vdi
    uint64_t block_size = 1 << 20;  // power of two, 64 KiB .. 64 MiB
    unsigned parallel = 2;          // workers per pass (1..16)
    std::string detection = "auto"; // auto, hash, dirty-bitmap, reflink
    std::string bitmap;             // dirty-bitmap: the bitmap's name
    std::string reflink_dir;        // reflink: where the copies go (the origin's
                                    // file system); "": the origin's directory
    double interval_minutes = 0;    // a sync every so often; 0: only when asked
    int64_t cutover_at = 0;         // Unix seconds; 0: only when asked
    std::string quiesce_command;    // "" none
    std::string unquiesce_command;  // "" none
    bool quiesce_signal = false;    // ask a source-side tool (quiesce hook)
    double quiesce_timeout = 300;   // seconds for either
    double checkpoint_seconds = 2;
    int64_t owner_uid = -1;         // the target file's owner, when >= 0
    int64_t owner_gid = -1;
};

// What the fixups of a cutover made.
struct SyncFixups {
    std::string plan;        // JSON
    // The VM's description (a libvirt domain, a .vmx, a Hyper-V summary),
    // written beside the target as DEST without its extension + `suffix`
    // at the cutover's end; "" when there is none.
    std::string description;
    std::string suffix;      // ".xml", ".vmx", ".hyperv.txt"
};

// What the job needs from the daemon.
struct SyncHooks {
    // A fresh reader of the source for one sync: nothing cached from an
    // earlier one (no read cache, no block-status map). `spec` is what it was
    // opened from (an NBD URI for dirty-bitmap, a file for reflink).
    std::function<DevicePtr()> open_source;
    std::string source_spec;
    // The source's size when the job is made; a sync refuses a source of
    // another size (a resized disk cannot be followed block by block).
    uint64_t source_size = 0;
    // Applies the target profile's fixups to `disk` (writable: an overlay
    // over the target) that will be `destination` in `format`; returns the
    // plan and the VM's description. Throws to refuse, saying why. Empty:
    // the cutover applies no fixups.
    std::function<SyncFixups(const DevicePtr& disk, const std::string& destination,
                             const std::string& format)>
        fixups;
    // quiesce_signal: asks the source-side tool to quiesce (true) or resume
    // (false); the answer comes through quiesce_ack().
    std::function<void(bool quiesce)> signal_quiesce;
};

class SyncJob : public JobEngine {
public:
    // `destination`: the final file name (DEST); the target lives at
    // DEST.part until the cutover. Throws InvalidArgument for bad options.
    SyncJob(std::string job_dir, std::string destination, SyncHooks hooks, SyncOptions options);
    ~SyncJob() override;
    SyncJob(const SyncJob&) = delete;
    SyncJob& operator=(const SyncJob&) = delete;

    // Starts the controller: an interrupted step resumes; a new job makes its
    // initial copy (generation 1) at once; then it waits for requests and
    // the schedule.
    void start() override;
    void request_pause() override;
    void pause() override;
    void resume() override;
    void cancel() override; // removes DEST.part and the records
    void stop() override;
    void wait() override;
    JobProgress progress() const override;
    void on_change(std::function<void()> callback) override;

    // A sync now (queued behind a running one). InvalidState unless the job
    // is running or paused (a paused job syncs when resumed) and not cut
    // over.
    void request_sync();
    // The cutover, after any sync in progress. InvalidState as request_sync.
    void request_cutover();
    // Paused only: the target was moved to `destination` (its DEST.part or
    // DEST, as before); checked when the job resumes.
    void retarget(const std::string& destination);
    // Replaces the schedule (interval_minutes, cutover_at). InvalidArgument
    // for negative values.
    void set_schedule(double interval_minutes, int64_t cutover_at);
    // The source-side tool's answer to signal_quiesce.
    void quiesce_ack(bool ok, const std::string& message);

    std::string destination() const;
    // Where the VM's description was written at cutover, "" if nowhere.
    std::string description_file() const;
    // The fixups' plan applied at cutover (JSON), "" before.
    std::string fixups_plan() const;

private:
    struct State;
    std::unique_ptr<State> state_;
};

// InvalidArgument naming the option that is out of range.
void check_sync_options(const SyncOptions& options);

// The options as JSON and back (the daemon's job record). Throws
// nlohmann::json::exception for a malformed object.
nlohmann::json to_json(const SyncOptions& options);
SyncOptions sync_options_from_json(const nlohmann::json& j);

} // namespace p2vfs
