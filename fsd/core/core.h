// The daemon core: the registry of sources, their views in the mount, and
// the jobs that copy views out. Front ends (the command line, D-Bus) call
// this API; it knows nothing of D-Bus, and of FUSE only the MountTable it
// puts folders in.
//
// State on disk, under the state directory:
//   sources/NAME.json   a source added with persist: its URI, default
//                       formats and the views exposed since
//   jobs/ID/job.json    a job: what it copies where, with which options,
//                       its last state (and its result once it has ended)
//   jobs/ID/checkpoint  the copy's progress (fsd/jobs/materialize.h)
//   overlays/NAME/      the source's overlay (fsd/overlay/overlay.h)
// Each file is replaced atomically. At start, restore() brings the sources
// back and resumes the jobs that were running from their checkpoints.
//
// Thread model: every method may be called from any thread. Observers are
// called from the thread that made the change, or from the core's monitor
// thread for job progress; they must not call back into the core while
// they hold locks of their own that the core's callers hold.
#pragma once

#include "block/open_source.h"
#include "core/access.h"
#include "fuse/fuse_frontend.h"
#include "jobs/materialize.h"
#include "jobs/sync.h"

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace p2vfs {

// Errors the front ends name (org.p2vfs.Error.NotFound, ...).
class NotFound : public Error {
public:
    explicit NotFound(const std::string& what) : Error(what, ENOENT) {}
};
class AlreadyExists : public Error {
public:
    explicit AlreadyExists(const std::string& what) : Error(what, EEXIST) {}
};
class Busy : public Error {
public:
    explicit Busy(const std::string& what) : Error(what, EBUSY) {}
};
class UnknownFormat : public InvalidArgument {
public:
    explicit UnknownFormat(const std::string& what) : InvalidArgument(what) {}
};
// The source could not be opened; the message says why.
class SourceFailed : public Error {
public:
    explicit SourceFailed(const std::string& what, int err = EIO) : Error(what, err) {}
};

// Where the core puts folders: the FUSE front end, or a test's table.
class MountTable {
public:
    virtual ~MountTable() = default;
    virtual void add_folder(MountedFolder folder) = 0;
    virtual void add_file(const std::string& folder, MountedFile file) = 0;
    virtual bool remove_folder(const std::string& folder) = 0;
    virtual bool remove_file(const std::string& folder, const std::string& name) = 0;
};

struct CoreOptions {
    std::string state_dir;
    std::string mount_point;        // for the paths reported; the mount is MountTable's
    SourceOptions source_options;   // how sources are opened
    std::vector<std::string> default_formats; // formats a source shows; empty: all
    std::map<std::string, std::map<std::string, std::string>> format_options;
    std::optional<gid_t> control_group; // its members may change things (with root)
};

// One view a source shows beyond its default formats.
struct ExposedView {
    std::string format;
    std::string file; // "" for the format's default name
    std::map<std::string, std::string> options;
};

// Fixups for a target (fsd/guest/fixups.h) and the machine it describes.
struct FixupRequest {
    std::string profile = "kvm";  // kvm, vmware, hyperv
    unsigned memory_mib = 2048;   // for the VM description
    unsigned cpus = 2;
    std::optional<std::vector<std::string>> vendor_agents; // default: the built-in list
    bool firstboot = true;        // install the firstboot initramfs rebuild
    // Windows: drivers Windows does not ship (virtio-win's layout); "": none.
    // An absolute path the daemon reads as root: only root callers give it.
    std::string drivers_dir;
    // Recorded when applied (the VM description is made from them).
    std::string controller;       // the chosen disk controller
    std::string firmware;         // "bios" or "uefi"
    std::string os = "linux";     // "linux" or "windows"
    std::string os_variant;       // "debian12", "win2k16"
};

struct AddSourceOptions {
    std::optional<std::vector<std::string>> formats; // default: the daemon's
    std::vector<ExposedView> views;                  // more views (--view)
    std::string writable_layer;                      // disk.raw writes go here; "": read-only
    bool persist = true;                             // remembered across restarts
    std::optional<FixupRequest> fixups;              // applied before (restore)
};

struct ViewInfo {
    std::string file;
    std::string format;
    std::string path; // in the mount
};

struct SourceInfo {
    std::string name;
    std::string uri;
    uint64_t size = 0;
    uint64_t allocated = 0;
    std::vector<ViewInfo> views;
    std::string overlay; // "none", "read-only", "writable"
    uint64_t overlay_bytes = 0;
    bool persistent = false;
    std::string fixups;  // the target whose fixups are applied; "" none
};


struct InspectResult {
    std::string inventory; // JSON (info.json)
    std::string report;    // text (report.txt)
};

struct FixupResult {
    std::string plan;    // JSON: the steps and their edits (fsd/guest/fixups.h)
    std::string preview; // text: each file's changed lines
    std::vector<std::string> files; // files added to the folder (apply)
};

struct JobInfo {
    std::string id;
    std::string kind; // "materialize", "sync"
    std::string source;
    std::string view; // the view copied; a sync job: its target's format
    std::string destination;
    JobProgress progress;
};

class CoreObserver {
public:
    virtual ~CoreObserver() = default;
    virtual void source_added(const std::string& /*name*/) {}
    virtual void source_removed(const std::string& /*name*/) {}
    virtual void source_changed(const std::string& /*name*/) {}
    virtual void job_added(const std::string& /*id*/) {}
    virtual void job_changed(const std::string& /*id*/) {}
    virtual void job_removed(const std::string& /*id*/) {}
    // A sync job asks the source-side tool to quiesce the source (true) or
    // let it run again (false); the answer is Core::quiesce_ack().
    virtual void job_quiesce(const std::string& /*id*/, bool /*quiesce*/) {}
};

// Limits on what callers may pass: names, paths and option lists.
struct Limits {
    static constexpr size_t name = 64;
    static constexpr size_t uri = 4096;
    static constexpr size_t file = 128;
    static constexpr size_t options = 64;
    static constexpr size_t option_value = 4096;
};

// Throws InvalidArgument unless `name` is 1-64 of A-Z a-z 0-9 . _ - and does
// not start with a dot.
void check_source_name(const std::string& name);

class Core {
public:
    Core(CoreOptions options, MountTable& mount);
    ~Core(); // stops jobs like stop()
    Core(const Core&) = delete;
    Core& operator=(const Core&) = delete;

    void set_observer(CoreObserver* observer);
    const CoreOptions& options() const { return options_; }

    // Brings back the sources and jobs of the state directory. A source that
    // cannot be opened now is logged and left out (its record stays); jobs
    // that were running resume from their checkpoints.
    void restore();

    // Checkpoints and stops the running jobs (their state on disk stays
    // "running", so the next start resumes them). Idempotent.
    void stop();

    SourceInfo add_source(const Caller& caller, const std::string& name, const std::string& uri,
                          AddSourceOptions options);
    void remove_source(const Caller& caller, const std::string& name);
    std::vector<SourceInfo> sources() const;
    SourceInfo source(const std::string& name) const; // NotFound

    // Shows one more view file in the source's folder; returns it.
    ViewInfo expose(const Caller& caller, const std::string& source, const ExposedView& view);

    // Starts copying view file `view` of `source` to `destination` (a path
    // or an NBD URI). Returns the job's id.
    std::string materialize(const Caller& caller, const std::string& source,
                            const std::string& view, const std::string& destination,
                            const MaterializeOptions& options);

    // The guest on the disk as the views show it (info.json, report.txt).
    // Inspected when the source is added, again after fixups change it, and
    // here when the disk changed since (or `refresh`, for callers who may
    // control the daemon: it costs a full inspection). NotFound.
    InspectResult inspect(const Caller& caller, const std::string& source, bool refresh = false);
    // The fixups a target needs, not applied. InvalidArgument for an unknown
    // profile.
    FixupResult plan_fixups(const Caller& caller, const std::string& source,
                            const FixupRequest& request);
    // Plans and applies them into the overlay's fixups layer (made if the
    // source has no overlay yet), then shows the target's disk view and VM
    // description in the folder. InvalidState when the plan refuses (the
    // reason given) or the fixups layer holds changes already; Busy while a
    // job copies from the source.
    FixupResult apply_fixups(const Caller& caller, const std::string& source,
                             const FixupRequest& request);
    // Drops the fixups layer (the views show the pristine bytes again) and
    // the files the fixups added.
    void discard_fixups(const Caller& caller, const std::string& source);

    // Starts a sync job (fsd/jobs/sync.h): source `source` kept in step
    // with the image file `destination` (written as DEST.part until the
    // cutover) in options.format. `fixups`: the target profile applied at
    // cutover (none: the target is the source's bytes). Returns the job's id.
    // InvalidArgument for bad options, Busy when another job writes there.
    std::string start_sync(const Caller& caller, const std::string& source,
                           const std::string& destination, const SyncOptions& options,
                           const std::optional<FixupRequest>& fixups);
    // Sync jobs only (InvalidArgument for another kind): a sync now, the
    // cutover, a moved target (paused jobs), the schedule, and the answer of
    // a source-side tool to job_quiesce(). InvalidState as SyncJob says.
    void sync_now(const Caller& caller, const std::string& id);
    void cutover(const Caller& caller, const std::string& id);
    void retarget(const Caller& caller, const std::string& id, const std::string& destination);
    void set_schedule(const Caller& caller, const std::string& id, double interval_minutes,
                      int64_t cutover_at);
    void quiesce_ack(const Caller& caller, const std::string& id, bool ok,
                     const std::string& message);
    // The fixups plan a sync job applied at cutover (JSON), "" before.
    std::string job_fixups_plan(const std::string& id) const;

    std::vector<JobInfo> jobs() const;
    JobInfo job(const std::string& id) const; // NotFound
    void pause_job(const Caller& caller, const std::string& id);
    void resume_job(const Caller& caller, const std::string& id);
    void cancel_job(const Caller& caller, const std::string& id);
    void remove_job(const Caller& caller, const std::string& id);

    struct Source;
    struct Job;

private:
    void check_control(const Caller& caller, const char* what) const;
    SourceInfo open_and_mount(const std::string& name, const std::string& uri,
                              const AddSourceOptions& options, bool persistent,
                              const UniqueFd* callers_file = nullptr);
    void save_source(const Source& s) const; // s.guest_mutex held, or s not shared yet
    std::shared_ptr<Source> find_source(const std::string& name) const;
    void check_no_running_job(const std::string& source) const; // Busy
    void check_no_running_job_locked(const std::string& source) const; // mutex_ held
    // core_guest.cpp
    void start_inspection(const std::shared_ptr<Source>& s);
    void refresh_inspection(Source& s); // with s.guest_mutex held
    std::vector<MountedFile> guest_files(Source& s);
    void show_fixup_files(Source& s, bool add_to_mount);
    void ensure_writable_overlay(Source& s);
    std::shared_ptr<Job> find_job(const std::string& id) const;
    // core_sync.cpp
    void start_sync_engine(const std::shared_ptr<Job>& job);
    std::shared_ptr<SyncJob> sync_engine_locked(Job& job); // job.mutex held; made if missing
    std::shared_ptr<SyncJob> sync_job_of(const std::string& id);
    // The cutover's fixups (SyncHooks::fixups) for `request`, describing the
    // machine as `vm_name`. Checks the request first (InvalidArgument).
    std::function<SyncFixups(const DevicePtr&, const std::string&, const std::string&)>
    fixups_hook(const FixupRequest& request, const std::string& vm_name) const;
    void save_job(Job& job) const;
    void start_job(const std::shared_ptr<Job>& job);
    // Makes the job's directory and record, lists it, starts it, tells the observer.
    void add_job(const std::shared_ptr<Job>& job, const std::string& description);
    void monitor();
    void restore_job(const std::string& dir);

    CoreOptions options_;
    MountTable& mount_;
    CoreObserver* observer_ = nullptr;

    mutable std::mutex mutex_; // sources_, jobs_, next_job_
    std::map<std::string, std::shared_ptr<Source>> sources_;
    std::map<std::string, std::shared_ptr<Job>, std::less<>> jobs_;
    uint64_t next_job_ = 1;

    // Watches job progress, persists state changes, tells the observer.
    std::mutex monitor_mutex_;
    std::condition_variable monitor_wake_;
    bool monitor_stop_ = false;
    bool stopped_ = false;
    std::thread monitor_;
};

} // namespace p2vfs
