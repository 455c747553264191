#include "dbus/service.h"

#include "formats/format.h"
#include "p2vfs/job_adaptor.h"
#include "p2vfs/manager_adaptor.h"
#include "p2vfs/source_adaptor.h"

#include <cmath>
#include <csignal>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <poll.h>
#include <sdbus-c++/sdbus-c++.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <thread>
#include <unistd.h>

namespace p2vfs {

namespace {

using Options = std::map<std::string, sdbus::Variant>;

// Runs a method's body, turning the core's errors into org.p2vfs.Error.*.
template <typename Body> auto answer(const char* method, Body body) -> decltype(body()) {
    auto fail = [&](const char* name, const std::string& message) -> sdbus::Error {
        spdlog::debug("D-Bus {}: {}{}: {}", method, dbus_error_prefix, name, message);
        return sdbus::Error(std::string(dbus_error_prefix) + name, message);
    };
    try {
        return body();
    } catch (const AccessDenied& e) {
        throw fail("AccessDenied", e.what());
    } catch (const NotFound& e) {
        throw fail("NotFound", e.what());
    } catch (const AlreadyExists& e) {
        throw fail("AlreadyExists", e.what());
    } catch (const Busy& e) {
        throw fail("Busy", e.what());
    } catch (const InvalidState& e) {
        throw fail("InvalidState", e.what());
    } catch (const UnknownFormat& e) {
        throw fail("UnknownFormat", e.what());
    } catch (const InvalidArgument& e) {
        throw fail("InvalidArgument", e.what());
    } catch (const SourceFailed& e) {
        throw fail("SourceFailed", e.what());
    } catch (const sdbus::Error& e) {
        // A variant of the wrong type, read in an options dictionary.
        throw fail("InvalidArgument", e.getMessage());
    } catch (const std::exception& e) {
        throw fail("Failed", e.what());
    }
}

template <typename T>
T option(const Options& options, const std::string& key, const char* type, T fallback) {
    const auto it = options.find(key);
    if (it == options.end())
        return fallback;
    if (!it->second.containsValueOfType<T>())
        throw InvalidArgument("option '" + key + "' must be of D-Bus type " + type + ", not " +
                              it->second.peekValueType());
    return it->second.get<T>();
}

void check_known(const Options& options, const std::vector<const char*>& known) {
    if (options.size() > Limits::options)
        throw InvalidArgument("too many options");
    for (const auto& [key, value] : options) {
        bool ok = false;
        for (const char* k : known)
            ok = ok || key == k;
        if (!ok) {
            std::string list;
            for (const char* k : known)
                list += (list.empty() ? "" : ", ") + std::string(k);
            throw InvalidArgument("unknown option '" + key.substr(0, Limits::name) +
                                  "' (known: " + list + ")");
        }
    }
}

// A string option, at most Limits::option_value bytes.
std::string text_option(const Options& options, const std::string& key, std::string fallback = {}) {
    std::string value = option<std::string>(options, key, "s", std::move(fallback));
    if (value.size() > Limits::option_value)
        throw InvalidArgument("option '" + key + "' is " + std::to_string(value.size()) +
                              " bytes long; the limit is " + std::to_string(Limits::option_value));
    return value;
}

// The schedule's values, as the XML describes them: numbers a caller sends
// are checked here so that none reaches a clock as NaN or years of minutes.
constexpr double max_interval_minutes = 525600; // a year
constexpr int64_t max_unix_time = 253402300799; // 9999-12-31T23:59:59Z

void check_interval(const std::string& what, double minutes) {
    if (!std::isfinite(minutes) || minutes < 0 || minutes > max_interval_minutes)
        throw InvalidArgument(what + " must be from 0 to " +
                              std::to_string(static_cast<int>(max_interval_minutes)) +
                              " minutes (0: only when asked), not " + std::to_string(minutes));
}

void check_time(const std::string& what, int64_t unix_seconds) {
    if (unix_seconds < 0 || unix_seconds > max_unix_time)
        throw InvalidArgument(what + " must be Unix seconds from 0 (none) to " +
                              std::to_string(max_unix_time) + ", not " +
                              std::to_string(unix_seconds));
}

// An absolute path given as an option (the core checks the paths it takes
// as arguments itself).
void check_absolute(const std::string& what, const std::string& path) {
    if (path.size() > Limits::uri)
        throw InvalidArgument(what + " is " + std::to_string(path.size()) +
                              " bytes long; the limit is " + std::to_string(Limits::uri));
    if (!path.starts_with("/"))
        throw InvalidArgument(what + " '" + path + "': must be an absolute path");
}

// What the caller of the call being served may do.
Caller caller_of(const sdbus::IObject& object) {
    const sdbus::Message* m = object.getCurrentlyProcessedMessage();
    if (!m)
        throw AccessDenied("the caller cannot be identified");
    return Caller::from_uid(m->getCredsUid());
}

} // namespace

// ---- objects ---------------------------------------------------------------

namespace {

class RootObject : public sdbus::AdaptorInterfaces<sdbus::ObjectManager_adaptor> {
public:
    RootObject(sdbus::IConnection& c) : AdaptorInterfaces(c, dbus_root_path) { registerAdaptor(); }
    ~RootObject() { unregisterAdaptor(); }
};

class ManagerObject
    : public sdbus::AdaptorInterfaces<org::p2vfs1::Manager_adaptor, sdbus::ManagedObject_adaptor,
                                      sdbus::Properties_adaptor> {
public:
    ManagerObject(sdbus::IConnection& c, Core& core)
        : AdaptorInterfaces(c, std::string(dbus_root_path) + "/Manager"), core_(core) {
        registerAdaptor();
    }
    virtual ~ManagerObject() { unregisterAdaptor(); }

private:
    sdbus::ObjectPath AddSource(const std::string& name, const std::string& uri,
                                const Options& options) override {
        return answer("AddSource", [&] {
            check_known(options, {"views", "persist"});
            AddSourceOptions o;
            if (options.count("views"))
                o.formats = option<std::vector<std::string>>(options, "views", "as", {});
            o.persist = option<bool>(options, "persist", "b", true);
            const SourceInfo info = core_.add_source(caller_of(getObject()), name, uri, o);
            return sdbus::ObjectPath(source_object_path(info.name));
        });
    }
    void RemoveSource(const std::string& name, const Options& options) override {
        answer("RemoveSource", [&] {
            check_known(options, {});
            core_.remove_source(caller_of(getObject()), name);
        });
    }
    std::vector<sdbus::ObjectPath> ListSources() override {
        return answer("ListSources", [&] {
            std::vector<sdbus::ObjectPath> out;
            for (const SourceInfo& s : core_.sources())
                out.emplace_back(source_object_path(s.name));
            return out;
        });
    }
    std::vector<sdbus::ObjectPath> ListJobs() override {
        return answer("ListJobs", [&] {
            std::vector<sdbus::ObjectPath> out;
            for (const JobInfo& j : core_.jobs())
                out.emplace_back(job_object_path(j.id));
            return out;
        });
    }
    std::vector<sdbus::Struct<std::string, std::string, std::string>> ListFormats() override {
        std::vector<sdbus::Struct<std::string, std::string, std::string>> out;
        for (const Format* f : format_table())
            out.emplace_back(std::string(f->name), std::string(f->file_name),
                             std::string(f->description));
        return out;
    }
    std::string Version() override { return P2VFS_VERSION; }
    std::string MountPoint() override { return core_.options().mount_point; }
    std::string StateDirectory() override { return core_.options().state_dir; }

    Core& core_;
};

class SourceObject
    : public sdbus::AdaptorInterfaces<org::p2vfs1::Source_adaptor, sdbus::ManagedObject_adaptor,
                                      sdbus::Properties_adaptor> {
public:
    SourceObject(sdbus::IConnection& c, Core& core, std::string name)
        : AdaptorInterfaces(c, source_object_path(name)), core_(core), name_(std::move(name)) {
        registerAdaptor();
        try {
            emitInterfacesAddedSignal({org::p2vfs1::Source_adaptor::INTERFACE_NAME});
        } catch (const sdbus::Error& e) {
            spdlog::debug("D-Bus: {}", e.getMessage());
        }
    }
    virtual ~SourceObject() {
        // The bus may be gone (the daemon stopping after it lost it).
        try {
            emitInterfacesRemovedSignal({org::p2vfs1::Source_adaptor::INTERFACE_NAME});
        } catch (const sdbus::Error& e) {
            spdlog::debug("D-Bus: {}", e.getMessage());
        }
        unregisterAdaptor();
    }
    void views_changed() {
        emitPropertiesChangedSignal(org::p2vfs1::Source_adaptor::INTERFACE_NAME, {"Views"});
    }

private:
    SourceInfo info() {
        return answer("Get", [&] { return core_.source(name_); });
    }
    std::string Expose(const std::string& format, const std::string& file,
                       const std::map<std::string, std::string>& options) override {
        return answer("Expose", [&] {
            return core_.expose(caller_of(getObject()), name_, {format, file, options}).path;
        });
    }
    sdbus::ObjectPath Materialize(const std::string& view, const std::string& destination,
                                  const Options& options) override {
        return answer("Materialize", [&] {
            check_known(options, {"parallel", "bandwidth", "verify", "block-size"});
            MaterializeOptions o;
            o.parallel = option<uint32_t>(options, "parallel", "u", o.parallel);
            o.bandwidth = option<uint64_t>(options, "bandwidth", "t", o.bandwidth);
            o.verify = option<bool>(options, "verify", "b", o.verify);
            o.block_size = option<uint64_t>(options, "block-size", "t", o.block_size);
            const std::string id =
                core_.materialize(caller_of(getObject()), name_, view, destination, o);
            return sdbus::ObjectPath(job_object_path(id));
        });
    }
    // The fixups' options of PlanFixups and ApplyFixups, also given to
    // StartSync among its own (each caller checks for unknown ones).
    static inline const std::vector<const char*> fixup_option_names = {
        "memory-mib", "cpus", "vendor-agents", "firstboot", "drivers"};
    static FixupRequest read_fixup_request(const std::string& profile, const Options& options) {
        FixupRequest r;
        r.profile = profile;
        r.memory_mib = option<uint32_t>(options, "memory-mib", "u", r.memory_mib);
        r.cpus = option<uint32_t>(options, "cpus", "u", r.cpus);
        r.firstboot = option<bool>(options, "firstboot", "b", r.firstboot);
        if (options.count("vendor-agents"))
            r.vendor_agents = option<std::vector<std::string>>(options, "vendor-agents", "as", {});
        r.drivers_dir = option<std::string>(options, "drivers", "s", "");
        return r;
    }
    static FixupRequest fixup_request(const std::string& profile, const Options& options) {
        check_known(options, fixup_option_names);
        return read_fixup_request(profile, options);
    }
    sdbus::ObjectPath StartSync(const std::string& destination, const std::string& format,
                                const Options& options) override {
        return answer("StartSync", [&] {
            std::vector<const char*> known = {
                "block-size",        "parallel",         "detection",       "bitmap",
                "reflink-dir",       "interval-minutes", "cutover-at",      "quiesce-command",
                "unquiesce-command", "quiesce-signal",   "quiesce-timeout", "profile"};
            known.insert(known.end(), fixup_option_names.begin(), fixup_option_names.end());
            check_known(options, known);
            SyncOptions o;
            if (format.size() > Limits::name)
                throw InvalidArgument("format '" + format.substr(0, Limits::name) +
                                      "...' is too long");
            if (!format.empty())
                o.format = format;
            o.block_size = option<uint64_t>(options, "block-size", "t", o.block_size);
            o.parallel = option<uint32_t>(options, "parallel", "u", o.parallel);
            if (o.parallel < 1 || o.parallel > 16)
                throw InvalidArgument("option 'parallel' must be from 1 to 16, not " +
                                      std::to_string(o.parallel));
            o.detection = text_option(options, "detection", o.detection);
            if (o.detection != "auto" && o.detection != "hash" && o.detection != "dirty-bitmap" &&
                o.detection != "reflink")
                throw InvalidArgument("option 'detection' must be auto, hash, dirty-bitmap or "
                                      "reflink, not '" +
                                      o.detection.substr(0, Limits::name) + "'");
            o.bitmap = text_option(options, "bitmap");
            o.reflink_dir = text_option(options, "reflink-dir");
            if (!o.reflink_dir.empty())
                check_absolute("option 'reflink-dir'", o.reflink_dir);
            o.interval_minutes = option<double>(options, "interval-minutes", "d", 0);
            check_interval("option 'interval-minutes'", o.interval_minutes);
            o.cutover_at = option<int64_t>(options, "cutover-at", "x", 0);
            check_time("option 'cutover-at'", o.cutover_at);
            o.quiesce_command = text_option(options, "quiesce-command");
            o.unquiesce_command = text_option(options, "unquiesce-command");
            o.quiesce_signal = option<bool>(options, "quiesce-signal", "b", false);
            o.quiesce_timeout = option<double>(options, "quiesce-timeout", "d", o.quiesce_timeout);
            if (!std::isfinite(o.quiesce_timeout) || o.quiesce_timeout <= 0 ||
                o.quiesce_timeout > 86400)
                throw InvalidArgument("option 'quiesce-timeout' must be over 0 and at most "
                                      "86400 seconds, not " +
                                      std::to_string(o.quiesce_timeout));
            std::optional<FixupRequest> fixups;
            if (options.count("profile")) {
                fixups = read_fixup_request(text_option(options, "profile"), options);
            } else {
                for (const char* key : fixup_option_names)
                    if (options.count(key))
                        throw InvalidArgument("option '" + std::string(key) +
                                              "' needs option 'profile' (the fixups' target)");
            }
            const Caller caller = caller_of(getObject());
            const std::string id = core_.start_sync(caller, name_, destination, o, fixups);
            return sdbus::ObjectPath(job_object_path(id));
        });
    }
    std::tuple<std::string, std::string> Inspect(const bool& refresh) override {
        return answer("Inspect", [&] {
            const InspectResult r = core_.inspect(caller_of(getObject()), name_, refresh);
            return std::tuple<std::string, std::string>{r.inventory, r.report};
        });
    }
    std::tuple<std::string, std::string> PlanFixups(const std::string& profile,
                                                    const Options& options) override {
        return answer("PlanFixups", [&] {
            const FixupResult r =
                core_.plan_fixups(caller_of(getObject()), name_, fixup_request(profile, options));
            return std::tuple<std::string, std::string>{r.plan, r.preview};
        });
    }
    std::tuple<std::string, std::string, std::vector<std::string>>
    ApplyFixups(const std::string& profile, const Options& options) override {
        return answer("ApplyFixups", [&] {
            const FixupResult r =
                core_.apply_fixups(caller_of(getObject()), name_, fixup_request(profile, options));
            return std::tuple<std::string, std::string, std::vector<std::string>>{r.plan, r.preview,
                                                                                  r.files};
        });
    }
    void DiscardFixups() override {
        answer("DiscardFixups", [&] { core_.discard_fixups(caller_of(getObject()), name_); });
    }
    std::string Fixups() override { return info().fixups; }
    std::string Name() override { return name_; }
    std::string URI() override { return info().uri; }
    uint64_t Size() override { return info().size; }
    uint64_t AllocatedBytes() override { return info().allocated; }
    std::vector<sdbus::Struct<std::string, std::string, std::string>> Views() override {
        std::vector<sdbus::Struct<std::string, std::string, std::string>> out;
        for (const ViewInfo& v : info().views)
            out.emplace_back(v.file, v.format, v.path);
        return out;
    }
    std::string Overlay() override { return info().overlay; }
    uint64_t OverlayBytes() override { return info().overlay_bytes; }
    bool Persistent() override { return info().persistent; }

    Core& core_;
    std::string name_;
};

class JobObject
    : public sdbus::AdaptorInterfaces<org::p2vfs1::Job_adaptor, sdbus::ManagedObject_adaptor,
                                      sdbus::Properties_adaptor> {
public:
    JobObject(sdbus::IConnection& c, Core& core, std::string id)
        : AdaptorInterfaces(c, job_object_path(id)), core_(core), id_(std::move(id)) {
        try {
            sync_ = core_.job(id_).kind == "sync";
            if (sync_)
                fixups_plan_ = core_.job_fixups_plan(id_);
        } catch (const std::exception& e) {
            spdlog::debug("D-Bus: job {}: {}", id_, e.what()); // removed meanwhile
        }
        registerAdaptor();
        try {
            emitInterfacesAddedSignal({org::p2vfs1::Job_adaptor::INTERFACE_NAME});
        } catch (const sdbus::Error& e) {
            spdlog::debug("D-Bus: {}", e.getMessage());
        }
    }
    virtual ~JobObject() {
        // The bus may be gone (the daemon stopping after it lost it).
        try {
            emitInterfacesRemovedSignal({org::p2vfs1::Job_adaptor::INTERFACE_NAME});
        } catch (const sdbus::Error& e) {
            spdlog::debug("D-Bus: {}", e.getMessage());
        }
        unregisterAdaptor();
    }
    void moved() {
        std::vector<std::string> names = {
            "State",         "Phase",        "BytesTotal",   "BytesDone",
            "BytesCopied",   "BytesResumed", "BytesWritten", "BytesCheckpointed",
            "BytesVerified", "Rate",         "ETA",          "Error"};
        if (sync_) {
            names.insert(names.end(),
                         {"Destination", "Generation", "ChangedBytes", "WrittenBytes", "ReadBytes",
                          "Detection", "NextEvent", "NextEventTime", "Bootable", "Target"});
            // The plan is large and set once, at the cutover: sent when it
            // changes, not with every move.
            const std::string plan = core_.job_fixups_plan(id_);
            if (plan != fixups_plan_) {
                fixups_plan_ = plan;
                names.push_back("FixupsPlan");
            }
        }
        emitPropertiesChangedSignal(org::p2vfs1::Job_adaptor::INTERFACE_NAME, names);
    }
    void quiesce_requested(bool quiesce) { emitQuiesceRequested(quiesce); }

private:
    JobInfo info() {
        return answer("Get", [&] { return core_.job(id_); });
    }
    void Pause() override {
        answer("Pause", [&] { core_.pause_job(caller_of(getObject()), id_); });
    }
    void Resume() override {
        answer("Resume", [&] { core_.resume_job(caller_of(getObject()), id_); });
    }
    void Cancel() override {
        answer("Cancel", [&] { core_.cancel_job(caller_of(getObject()), id_); });
    }
    void Remove() override {
        answer("Remove", [&] { core_.remove_job(caller_of(getObject()), id_); });
    }
    void Sync() override {
        answer("Sync", [&] { core_.sync_now(caller_of(getObject()), id_); });
    }
    void Cutover() override {
        answer("Cutover", [&] { core_.cutover(caller_of(getObject()), id_); });
    }
    void Retarget(const std::string& destination) override {
        answer("Retarget", [&] { core_.retarget(caller_of(getObject()), id_, destination); });
    }
    void SetSchedule(const double& interval_minutes, const int64_t& cutover_at) override {
        answer("SetSchedule", [&] {
            check_interval("interval_minutes", interval_minutes);
            check_time("cutover_at", cutover_at);
            core_.set_schedule(caller_of(getObject()), id_, interval_minutes, cutover_at);
        });
    }
    void AckQuiesce(const bool& ok, const std::string& message) override {
        answer("AckQuiesce", [&] { core_.quiesce_ack(caller_of(getObject()), id_, ok, message); });
    }
    std::string Id() override { return id_; }
    std::string Kind() override { return info().kind; }
    sdbus::ObjectPath Source() override { return source_object_path(info().source); }
    std::string SourceName() override { return info().source; }
    std::string View() override { return info().view; }
    std::string Destination() override { return info().destination; }
    std::string State() override { return to_string(info().progress.state); }
    std::string Phase() override { return info().progress.phase; }
    uint64_t BytesTotal() override { return info().progress.bytes_total; }
    uint64_t BytesDone() override { return info().progress.bytes_done; }
    uint64_t BytesCopied() override { return info().progress.bytes_copied; }
    uint64_t BytesResumed() override { return info().progress.bytes_resumed; }
    uint64_t BytesWritten() override { return info().progress.bytes_written; }
    uint64_t BytesCheckpointed() override { return info().progress.bytes_checkpointed; }
    uint64_t BytesVerified() override { return info().progress.bytes_verified; }
    double Rate() override { return info().progress.rate; }
    double ETA() override { return info().progress.eta_seconds; }
    std::string Error() override { return info().progress.error; }
    uint64_t Generation() override { return info().progress.generation; }
    uint64_t ChangedBytes() override { return info().progress.changed_bytes; }
    uint64_t WrittenBytes() override { return info().progress.written_bytes; }
    uint64_t ReadBytes() override { return info().progress.read_bytes; }
    std::string Detection() override { return info().progress.detection; }
    std::string NextEvent() override { return info().progress.next_event; }
    int64_t NextEventTime() override { return info().progress.next_event_time; }
    bool Bootable() override { return info().progress.bootable; }
    std::string Target() override { return info().progress.target; }
    std::string FixupsPlan() override {
        if (!sync_)
            return {};
        return answer("Get", [&] { return core_.job_fixups_plan(id_); });
    }

    Core& core_;
    std::string id_;
    bool sync_ = false;       // a sync job: moved() sends its properties too
    std::string fixups_plan_; // as last sent
};

} // namespace

// ---- the service -----------------------------------------------------------

struct DbusService::Impl : CoreObserver {
    Core& core;
    std::unique_ptr<sdbus::IConnection> connection;
    std::unique_ptr<RootObject> root;
    std::unique_ptr<ManagerObject> manager;
    std::map<std::string, std::unique_ptr<SourceObject>> sources;
    std::map<std::string, std::unique_ptr<JobObject>> jobs;

    int wake_fd = -1;
    std::mutex tasks_mutex;
    std::deque<std::function<void()>> tasks;
    bool stopping = false;
    std::thread thread;

    explicit Impl(Core& c) : core(c) {}

    void post(std::function<void()> task) {
        {
            std::lock_guard<std::mutex> lock(tasks_mutex);
            tasks.push_back(std::move(task));
        }
        const uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(wake_fd, &one, sizeof one);
    }

    void run_tasks() {
        for (;;) {
            std::function<void()> task;
            {
                std::lock_guard<std::mutex> lock(tasks_mutex);
                if (tasks.empty())
                    return;
                task = std::move(tasks.front());
                tasks.pop_front();
            }
            try {
                task();
            } catch (const std::exception& e) {
                spdlog::warn("D-Bus: {}", e.what());
            }
        }
    }

    void loop() {
        for (;;) {
            {
                std::lock_guard<std::mutex> lock(tasks_mutex);
                if (stopping)
                    return;
            }
            try {
                do
                    run_tasks();
                while (connection->processPendingRequest());
                const auto pd = connection->getEventLoopPollData();
                struct pollfd fds[2] = {{pd.fd, pd.events, 0}, {wake_fd, POLLIN, 0}};
                int timeout = -1;
                if (pd.timeout_usec != UINT64_MAX) {
                    struct timespec now {};
                    ::clock_gettime(CLOCK_MONOTONIC, &now);
                    const uint64_t now_usec = static_cast<uint64_t>(now.tv_sec) * 1000000 +
                                              static_cast<uint64_t>(now.tv_nsec) / 1000;
                    timeout = pd.timeout_usec <= now_usec
                                  ? 0
                                  : static_cast<int>(std::min<uint64_t>(
                                        (pd.timeout_usec - now_usec + 999) / 1000, 60000));
                }
                if (::poll(fds, 2, timeout) < 0 && errno != EINTR)
                    throw Error("poll: " + errno_text(errno));
                if (fds[1].revents & POLLIN) {
                    uint64_t n;
                    [[maybe_unused]] auto r = ::read(wake_fd, &n, sizeof n);
                }
            } catch (const std::exception& e) {
                // The bus is gone (dbus-daemon restarted, connection
                // dropped): the daemon cannot be controlled any more, so it
                // stops as on SIGTERM, checkpointing its jobs.
                spdlog::error("D-Bus connection lost: {}; stopping", e.what());
                ::kill(::getpid(), SIGTERM);
                return;
            }
        }
    }

    // CoreObserver: called on any thread; the objects live on the loop's.
    void source_added(const std::string& name) override {
        post([this, name] { sources[name] = std::make_unique<SourceObject>(*connection, core, name); });
    }
    void source_removed(const std::string& name) override {
        post([this, name] { sources.erase(name); });
    }
    void source_changed(const std::string& name) override {
        post([this, name] {
            if (auto it = sources.find(name); it != sources.end())
                it->second->views_changed();
        });
    }
    void job_added(const std::string& id) override {
        post([this, id] {
            if (!jobs.count(id))
                jobs[id] = std::make_unique<JobObject>(*connection, core, id);
        });
    }
    void job_changed(const std::string& id) override {
        post([this, id] {
            if (auto it = jobs.find(id); it != jobs.end())
                it->second->moved();
        });
    }
    void job_removed(const std::string& id) override {
        post([this, id] { jobs.erase(id); });
    }
    void job_quiesce(const std::string& id, bool quiesce) override {
        post([this, id, quiesce] {
            if (auto it = jobs.find(id); it != jobs.end())
                it->second->quiesce_requested(quiesce);
            else
                spdlog::warn("D-Bus: job {} asks for quiesce, but has no object", id);
        });
    }
};

DbusService::DbusService(Core& core, const std::string& bus) : impl_(std::make_unique<Impl>(core)) {
    Impl& impl = *impl_;
    try {
        if (bus == "system")
            impl.connection = sdbus::createSystemBusConnection();
        else if (bus == "session")
            impl.connection = sdbus::createSessionBusConnection();
        else
            impl.connection = sdbus::createSessionBusConnectionWithAddress(bus);
        impl.connection->requestName(dbus_name);
    } catch (const sdbus::Error& e) {
        throw Error("D-Bus " + bus + ": cannot take the name " + dbus_name + ": " + e.getMessage() +
                        " (" + e.getName() + ")",
                    EIO);
    }
    impl.wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (impl.wake_fd < 0)
        throw Error("eventfd: " + errno_text(errno));
    impl.root = std::make_unique<RootObject>(*impl.connection);
    impl.manager = std::make_unique<ManagerObject>(*impl.connection, core);
    for (const SourceInfo& s : core.sources())
        impl.sources[s.name] = std::make_unique<SourceObject>(*impl.connection, core, s.name);
    for (const JobInfo& j : core.jobs())
        impl.jobs[j.id] = std::make_unique<JobObject>(*impl.connection, core, j.id);
    core.set_observer(&impl);
    impl.thread = std::thread([&impl] { impl.loop(); });
    spdlog::info("D-Bus: serving {} on the {} bus", dbus_name,
                 bus == "system" || bus == "session" ? bus : "given");
}

DbusService::~DbusService() {
    Impl& impl = *impl_;
    impl.core.set_observer(nullptr);
    {
        std::lock_guard<std::mutex> lock(impl.tasks_mutex);
        impl.stopping = true;
    }
    const uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(impl.wake_fd, &one, sizeof one);
    if (impl.thread.joinable())
        impl.thread.join();
    impl.jobs.clear();
    impl.sources.clear();
    impl.manager.reset();
    impl.root.reset();
    try {
        impl.connection->releaseName(dbus_name);
    } catch (const sdbus::Error&) {
        // the bus is gone already
    }
    ::close(impl.wake_fd);
}

} // namespace p2vfs
