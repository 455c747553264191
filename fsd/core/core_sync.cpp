// Sync jobs in the core: repeated syncs of a source into one target file and
// the cutover (fsd/jobs/sync.h). The job reads the source by its spec, on
// its own (fresh at every sync: no read cache), so it does not hold the
// source's folder: the source may be removed, or fixed up in its overlay,
// while the job waits between syncs.
#include "core/access.h"
#include "core/core_internal.h"
#include "jobs/destination.h"
#include "nbd-bridge/image_source.h"
#include "nbd-bridge/nbd_source.h"

#include <filesystem>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

namespace p2vfs {

namespace {

// What a sync reads: the live origin of a snapshot source (each sync is its
// own point in time), the spec itself otherwise.
std::string sync_spec_of(const std::string& uri) {
    if (uri.starts_with("snapshot:"))
        return uri.substr(9);
    return uri;
}

bool is_raw_file(const std::string& spec) {
    struct stat st{};
    return !is_nbd_uri(spec) && ::stat(spec.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
           probe_image_format(spec) == "raw";
}

} // namespace

std::string Core::start_sync(const Caller& caller, const std::string& source_name,
                             const std::string& destination, const SyncOptions& options,
                             const std::optional<FixupRequest>& fixups) {
    check_control(caller, "start jobs");
    check_absolute_path("destination", destination);
    if (destination.ends_with(".part"))
        throw InvalidArgument("destination '" + destination +
                              "': name the final file; the target is written as that name "
                              "with .part until the cutover");
    SyncOptions o = options;
    check_sync_options(o);
    if (fixups) {
        (void)fixups_hook(*fixups, source_name); // checks the request
        check_fixups_caller(caller, *fixups);
    }
    check_can_create(caller, destination);
    struct stat st{};
    if (::lstat(destination.c_str(), &st) == 0)
        throw AlreadyExists("destination " + destination + " exists already");
    if (::lstat((destination + ".part").c_str(), &st) == 0)
        throw AlreadyExists("destination " + destination +
                            ".part exists already (the target of another job?); remove it first");
    const auto s = find_source(source_name);
    const std::string spec = sync_spec_of(s->uri);
    if (o.detection == "auto" && o.bitmap.empty() && s->uri.starts_with("snapshot:") &&
        is_raw_file(spec))
        o.detection = "reflink";
    if ((o.detection == "dirty-bitmap" || (o.detection == "auto" && !o.bitmap.empty())) &&
        !is_nbd_uri(spec))
        throw InvalidArgument("source '" + source_name + "' is not an NBD export; dirty-bitmap "
                              "change detection reads the bitmap from the NBD server");
    if (o.detection == "reflink" && !is_raw_file(spec))
        throw InvalidArgument("source '" + source_name + "' (" + spec +
                              ") is not a raw image file; reflink change detection compares "
                              "reflink copies of one");
    // Two things reach beyond the destination, done by the daemon as root:
    // the quiesce commands it runs and the reflink copies it makes. A member
    // of the control group may ask only for what it could do itself.
    if (!caller.is_root()) {
        if (!o.quiesce_command.empty() || !o.unquiesce_command.empty())
            throw AccessDenied(caller.describe() +
                               " may not give quiesce commands: the daemon runs them as root "
                               "(only root may; quiesce-signal asks a source-side tool instead)");
        if (o.detection == "reflink")
            check_can_create(caller, (o.reflink_dir.empty()
                                          ? std::filesystem::path(spec).parent_path().string()
                                          : o.reflink_dir) +
                                         "/copy");
        o.owner_uid = caller.uid;
        o.owner_gid = caller.gid;
    }
    (void)open_destination_directory(destination, !caller.is_root()); // Error when missing
    auto job = std::make_shared<Job>();
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const auto& [id, other] : jobs_) {
            if (other->destination != destination)
                continue;
            const JobState js = other->progress().state;
            if (js == JobState::Running || js == JobState::Paused)
                throw Busy("job " + id + " writes to " + destination + " already");
        }
        job->id = std::to_string(next_job_++);
    }
    job->kind = sync_kind;
    job->source = source_name;
    job->view = o.format;
    job->destination = destination;
    job->source_uri = spec;
    job->sync_options = o;
    job->source_size = s->source->size();
    job->fixups = fixups;
    add_job(job, "sync '" + source_name + "' to " + destination + " (" + o.format + ", " +
                     o.detection + ")");
    return job->id;
}

std::shared_ptr<SyncJob> Core::sync_engine_locked(Job& job) {
    if (!job.engine) {
        SyncHooks hooks;
        SourceOptions so = options_.source_options;
        so.cache.capacity = 0; // every sync reads what the source holds now
        const std::string spec = job.source_uri;
        hooks.open_source = [spec, so] { return open_source(spec, so); };
        hooks.source_spec = spec;
        hooks.source_size = job.source_size;
        if (job.fixups)
            hooks.fixups = fixups_hook(*job.fixups, job.source);
        const std::string id = job.id;
        hooks.signal_quiesce = [this, id](bool quiesce) {
            CoreObserver* observer;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                observer = observer_;
            }
            if (observer)
                observer->job_quiesce(id, quiesce);
        };
        auto engine =
            std::make_shared<SyncJob>(job.dir, job.destination, std::move(hooks), job.sync_options);
        engine->on_change([this] { monitor_wake_.notify_all(); });
        job.engine = engine;
    }
    return std::dynamic_pointer_cast<SyncJob>(job.engine);
}

void Core::start_sync_engine(const std::shared_ptr<Job>& job) {
    std::shared_ptr<SyncJob> engine;
    try {
        std::lock_guard<std::mutex> lock(job->mutex);
        engine = sync_engine_locked(*job);
    } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(job->mutex);
        job->saved.state = JobState::Failed;
        job->saved.phase.clear();
        job->saved.error = e.what();
        spdlog::error("job {}: {}", job->id, e.what());
        monitor_wake_.notify_all();
        return;
    }
    engine->start();
    monitor_wake_.notify_all();
}

std::shared_ptr<SyncJob> Core::sync_job_of(const std::string& id) {
    const auto j = find_job(id);
    if (j->kind != sync_kind)
        throw InvalidArgument("job " + id + " is a " + j->kind + " job, not a sync job");
    std::lock_guard<std::mutex> lock(j->mutex);
    return sync_engine_locked(*j);
}

void Core::sync_now(const Caller& caller, const std::string& id) {
    check_control(caller, "sync jobs");
    sync_job_of(id)->request_sync();
    monitor_wake_.notify_all();
}

void Core::cutover(const Caller& caller, const std::string& id) {
    check_control(caller, "cut over jobs");
    sync_job_of(id)->request_cutover();
    monitor_wake_.notify_all();
}

void Core::retarget(const Caller& caller, const std::string& id, const std::string& destination) {
    check_control(caller, "retarget jobs");
    check_absolute_path("destination", destination);
    std::string final_name = destination;
    if (final_name.ends_with(".part"))
        final_name.resize(final_name.size() - 5);
    check_can_create(caller, final_name);
    const auto engine = sync_job_of(id);
    engine->retarget(final_name);
    const auto j = find_job(id);
    j->destination = final_name;
    save_job(*j);
    monitor_wake_.notify_all();
}

void Core::set_schedule(const Caller& caller, const std::string& id, double interval_minutes,
                        int64_t cutover_at) {
    check_control(caller, "schedule jobs");
    const auto engine = sync_job_of(id);
    engine->set_schedule(interval_minutes, cutover_at);
    const auto j = find_job(id);
    {
        std::lock_guard<std::mutex> lock(j->mutex);
        j->sync_options.interval_minutes = interval_minutes;
        j->sync_options.cutover_at = cutover_at;
    }
    save_job(*j);
    monitor_wake_.notify_all();
}

void Core::quiesce_ack(const Caller& caller, const std::string& id, bool ok,
                       const std::string& message) {
    check_control(caller, "answer quiesce requests");
    check_length("message", message, Limits::option_value);
    sync_job_of(id)->quiesce_ack(ok, message);
}

std::string Core::job_fixups_plan(const std::string& id) const {
    const auto j = find_job(id);
    if (j->kind != sync_kind)
        return {};
    std::lock_guard<std::mutex> lock(j->mutex);
    const auto engine = std::dynamic_pointer_cast<SyncJob>(j->engine);
    return engine ? engine->fixups_plan() : std::string();
}

} // namespace p2vfs
