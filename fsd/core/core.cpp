#include "core/core.h"

#include "common/file_io.h"
#include "core/core_internal.h"
#include "core/source_folder.h"
#include "formats/format.h"
#include "formats/prepared_view.h"
#include "nbd-bridge/nbd_source.h"
#include "overlay/overlay.h"

#include <algorithm>
#include <atomic>
#include <dirent.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

namespace p2vfs {

using json = nlohmann::json;

namespace {

constexpr const char* materialize_kind = "materialize";

std::string source_file(const std::string& state_dir, const std::string& name) {
    return state_dir + "/sources/" + name + ".json";
}

} // namespace

void check_length(const std::string& what, const std::string& value, size_t limit) {
    if (value.size() > limit)
        throw InvalidArgument(what + " is " + std::to_string(value.size()) +
                              " bytes long; the limit is " + std::to_string(limit));
}

void check_text(const std::string& what, const std::string& value) {
    for (unsigned char c : value)
        if (c < 0x20 || c == 0x7f)
            throw InvalidArgument(what + " contains a control character");
}

void check_file_name(const std::string& file) {
    check_length("file name", file, Limits::file);
    check_text("file name", file);
    if (file.empty() || file == "." || file == ".." || file.find('/') != std::string::npos)
        throw InvalidArgument("file name '" + file + "': not a plain file name");
}

// An absolute path without "." or ".." components.
void check_absolute_path(const std::string& what, const std::string& path) {
    check_length(what, path, Limits::uri);
    check_text(what, path);
    if (path.empty() || path[0] != '/')
        throw InvalidArgument(what + " '" + path + "': must be an absolute path");
    size_t start = 1;
    while (start <= path.size()) {
        const size_t end = std::min(path.find('/', start), path.size());
        const std::string_view part(path.data() + start, end - start);
        if (part == "." || part == "..")
            throw InvalidArgument(what + " '" + path + "': must not contain '" +
                                  std::string(part) + "'");
        start = end + 1;
    }
    if (path.size() > 1 && path.back() == '/')
        throw InvalidArgument(what + " '" + path + "': names a directory, not a file");
}

namespace {

std::vector<ViewSpec> specs_for(const CoreOptions& o, const AddSourceOptions& a) {
    std::vector<ViewSpec> specs;
    static const std::map<std::string, std::string> none;
    auto add_default = [&](const Format* f) {
        auto it = o.format_options.find(std::string(f->name));
        specs.push_back({f, {}, it == o.format_options.end() ? none : it->second, false});
    };
    const auto& formats = a.formats ? *a.formats : o.default_formats;
    if (a.formats || !o.default_formats.empty()) {
        for (const std::string& name : formats) {
            const Format* f = find_format(name);
            if (!f)
                throw UnknownFormat("unknown format '" + name + "' (p2vctl formats lists them)");
            add_default(f);
        }
    } else {
        for (const Format* f : format_table())
            add_default(f);
    }
    for (const ExposedView& v : a.views) {
        const Format* f = find_format(v.format);
        if (!f)
            throw UnknownFormat("unknown format '" + v.format + "' (p2vctl formats lists them)");
        specs.push_back({f, v.file, v.options, true});
    }
    return specs;
}

json progress_json(const JobProgress& p) {
    return {{"state", to_string(p.state)},
            {"bytes_total", p.bytes_total},
            {"bytes_done", p.bytes_done},
            {"bytes_verified", p.bytes_verified},
            {"error", p.error}};
}

} // namespace

nlohmann::json fixup_request_json(const FixupRequest& r) {
    json j = {{"profile", r.profile},     {"memory_mib", r.memory_mib}, {"cpus", r.cpus},
              {"firstboot", r.firstboot}, {"controller", r.controller}, {"firmware", r.firmware},
              {"os", r.os},               {"os_variant", r.os_variant}};
    if (!r.drivers_dir.empty())
        j["drivers_dir"] = r.drivers_dir;
    if (r.vendor_agents)
        j["vendor_agents"] = *r.vendor_agents;
    return j;
}

FixupRequest fixup_request_from(const nlohmann::json& fx) {
    FixupRequest r;
    r.profile = fx.at("profile").get<std::string>();
    r.memory_mib = fx.value("memory_mib", 2048u);
    r.cpus = fx.value("cpus", 2u);
    r.firstboot = fx.value("firstboot", true);
    r.controller = fx.value("controller", std::string());
    r.firmware = fx.value("firmware", std::string("bios"));
    r.os = fx.value("os", std::string("linux"));
    r.os_variant = fx.value("os_variant", std::string());
    r.drivers_dir = fx.value("drivers_dir", std::string());
    if (fx.contains("vendor_agents"))
        r.vendor_agents = fx.at("vendor_agents").get<std::vector<std::string>>();
    return r;
}

namespace {

std::string describe(const JobProgress& p) {
    // What observers see change: rate moves every tick, so it is left out.
    return to_string(p.state) + "|" + p.phase + "|" + std::to_string(p.bytes_done) + "|" +
           std::to_string(p.bytes_verified) + "|" + std::to_string(p.bytes_checkpointed) + "|" +
           p.error + "|" + std::to_string(p.generation) + "|" + p.next_event + "|" +
           std::to_string(p.next_event_time) + "|" + p.target + "|" + (p.bootable ? "b" : "");
}

// The source the daemon opened must be the very file the caller opened (a
// path can be changed between the caller's check and the daemon's open).
void check_same_file(const std::string& name, const UniqueFd& callers, const DevicePtr& source) {
    std::optional<FdSpan> span;
    if (source->size() > 0)
        span = source->fd_span(0, 1);
    struct stat a {}, b {};
    if (!span || ::fstat(callers.get(), &a) != 0 || ::fstat(span->fd, &b) != 0)
        throw AccessDenied("source '" + name + "': callers other than root may add raw files "
                           "and block devices read directly (not images read through qemu-nbd, "
                           "and not with --direct): the daemon cannot confirm this is the file "
                           "the caller may read");
    if (a.st_dev != b.st_dev || a.st_ino != b.st_ino)
        throw AccessDenied("source '" + name + "': the path changed while it was being added");
}

} // namespace

void check_source_name(const std::string& name) {
    if (name.empty() || name.size() > Limits::name || name[0] == '.')
        throw InvalidArgument("source name '" + name.substr(0, Limits::name) +
                              (name.size() > Limits::name ? "...' is too long" : "'") +
                              ": use 1-64 characters of A-Z a-z 0-9 . _ -, not starting with "
                              "a dot");
    for (char c : name)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-')
            throw InvalidArgument("source name '" + name +
                                  "': use only A-Z a-z 0-9 . _ - (no '/', '@' or spaces)");
}

Core::Core(CoreOptions options, MountTable& mount) : options_(std::move(options)), mount_(mount) {
    monitor_ = std::thread([this] { monitor(); });
}

Core::~Core() {
    stop();
    {
        std::lock_guard<std::mutex> lock(monitor_mutex_);
        monitor_stop_ = true;
    }
    monitor_wake_.notify_all();
    if (monitor_.joinable())
        monitor_.join();
}

void Core::set_observer(CoreObserver* observer) {
    std::lock_guard<std::mutex> lock(mutex_);
    observer_ = observer;
}

void Core::check_control(const Caller& caller, const char* what) const {
    if (!may_control(caller, options_.control_group))
        throw AccessDenied(caller.describe() + " may not " + what +
                           " (root and members of the daemon's control group may)");
}

// ---- sources ---------------------------------------------------------------

SourceInfo Core::add_source(const Caller& caller, const std::string& name, const std::string& uri,
                            AddSourceOptions options) {
    check_control(caller, "add sources");
    check_source_name(name);
    check_length("source URI", uri, Limits::uri);
    check_text("source URI", uri);
    if (uri.empty())
        throw InvalidArgument("source URI is empty");
    if (options.views.size() > Limits::options ||
        (options.formats && options.formats->size() > Limits::options))
        throw InvalidArgument("too many views");
    const auto path = local_path_of(uri);
    UniqueFd callers_file; // what the caller opened: the source must be that file
    if (path) {
        if (options.persist)
            check_absolute_path("source path", *path);
        if (!caller.is_root()) {
            // Images read through qemu-nbd, and snapshots, are opened by path
            // by another process (their backing files too): nothing ties what
            // it opens to what the caller may read.
            if (uri != *path && !uri.starts_with("raw:"))
                throw AccessDenied(caller.describe() + " may add plain files and devices only; "
                                   "images read through qemu-nbd and snapshots are for root");
            try {
                callers_file = open_as_caller(caller, *path);
            } catch (const AccessDenied&) {
                throw;
            } catch (const Error& e) {
                throw SourceFailed("source '" + name + "': " + e.what(), e.error_number());
            }
        }
    } else if (const auto q = uri.find("socket="); q != std::string::npos) {
        // nbd+unix://...?socket=PATH: the caller must be able to reach it.
        std::string socket = uri.substr(q + 7);
        socket = socket.substr(0, socket.find('&'));
        check_can_create(caller, socket); // search rights to the socket's directory
    }
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (sources_.count(name))
            throw AlreadyExists("a source named '" + name + "' exists already");
    }
    return open_and_mount(name, uri, options, options.persist,
                          callers_file ? &callers_file : nullptr);
}

SourceInfo Core::open_and_mount(const std::string& name, const std::string& uri,
                                const AddSourceOptions& options, bool persistent,
                                const UniqueFd* callers_file) {
    auto s = std::make_shared<Source>();
    s->name = name;
    s->uri = uri;
    s->persistent = persistent;
    s->formats = options.formats;
    s->exposed = options.views;
    s->writable = !options.writable_layer.empty();
    s->writable_layer = options.writable_layer;
    const auto specs = specs_for(options_, options);
    try {
        s->source = open_source(uri, options_.source_options);
    } catch (const InvalidArgument& e) {
        throw;
    } catch (const Error& e) {
        throw SourceFailed("source '" + name + "': " + e.what(), e.error_number());
    }
    if (callers_file)
        check_same_file(name, *callers_file, s->source);
    s->disk = s->source;
    try {
        // An overlay is opened for writing even when disk.raw is read-only:
        // fixups are written into its fixups layer.
        if (s->writable || Overlay::exists(options_.state_dir, name)) {
            s->overlay = Overlay::open(options_.state_dir, name, s->source, uri,
                                       OverlayOptions{.writable = true}, s->writable);
            s->disk = s->overlay->device(user_layer, options.writable_layer);
        }
    } catch (const InvalidArgument&) {
        throw;
    } catch (const Error& e) {
        throw SourceFailed("source '" + name + "': " + e.what(), e.error_number());
    }
    std::vector<MountedFolder> made;
    try {
        if (s->overlay) {
            made.push_back(build_overlay_folder(name, s->overlay, s->disk, specs, s->writable));
            made.push_back(build_folder(name + "@pristine", s->source, specs));
        } else {
            made.push_back(build_folder(name, s->source, specs));
        }
    } catch (const InvalidArgument& e) {
        throw InvalidArgument("source '" + name + "': " + e.what());
    } catch (const Error& e) {
        throw SourceFailed("source '" + name + "': " + e.what(), e.error_number());
    }
    try {
        for (const Extent& e : s->source->extents(0, s->source->size()))
            if (e.type != ExtentType::Hole)
                s->allocated += e.length;
    } catch (const Error& e) {
        spdlog::warn("source '{}': cannot map allocation ({}); counting it all", name, e.what());
        s->allocated = s->source->size();
    }
    s->files = made.front().files;
    s->fixups = options.fixups;
    for (MountedFile& f : guest_files(*s))
        made.front().files.push_back(std::move(f));
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (sources_.count(name))
            throw AlreadyExists("a source named '" + name + "' exists already");
        size_t added = 0;
        try {
            for (MountedFolder& f : made) {
                mount_.add_folder(std::move(f));
                ++added;
            }
        } catch (const InvalidArgument& e) {
            if (added > 0)
                mount_.remove_folder(name);
            throw AlreadyExists(e.what());
        }
        sources_[name] = s;
    }
    if (persistent)
        save_source(*s);
    start_inspection(s);
    spdlog::info("source '{}': {} ({}), view files: {}", name, s->source->name(),
                 human_size(s->source->size()), s->files.size());
    if (s->overlay) {
        std::string layers;
        for (const auto& l : s->overlay->layers()) {
            const auto info = l->info();
            layers += (layers.empty() ? "" : ", ") + l->name() + " " +
                      std::to_string(info.chunks) + " chunk(s)";
        }
        spdlog::info("source '{}': overlay {} ({}){}; the source itself in {}@pristine", name,
                     s->overlay->dir(), layers,
                     s->writable ? ", disk.raw writes to " + options.writable_layer : ", read-only",
                     name);
    }
    CoreObserver* observer;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        observer = observer_;
    }
    if (observer)
        observer->source_added(name);
    return source(name);
}

void Core::save_source(const Source& s) const {
    json views = json::array();
    for (const ExposedView& v : s.exposed)
        views.push_back({{"format", v.format}, {"file", v.file}, {"options", v.options}});
    json j = {{"name", s.name}, {"uri", s.uri}, {"views", views}};
    if (s.formats)
        j["formats"] = *s.formats;
    if (s.fixups)
        j["fixups"] = fixup_request_json(*s.fixups);
    make_directories(options_.state_dir + "/sources");
    replace_file(source_file(options_.state_dir, s.name), j.dump(2) + "\n");
}

void Core::ensure_writable_overlay(Source& s) {
    if (s.overlay)
        return;
    try {
        s.overlay = Overlay::open(options_.state_dir, s.name, s.source, s.uri,
                                  OverlayOptions{.writable = true}, true);
    } catch (const Error& e) {
        throw SourceFailed("source '" + s.name + "': " + e.what(), e.error_number());
    }
    s.disk = s.overlay->device(user_layer, s.writable_layer);
    AddSourceOptions o;
    o.formats = s.formats;
    o.views = s.exposed;
    const auto specs = specs_for(options_, o);
    std::vector<MountedFolder> made;
    made.push_back(build_overlay_folder(s.name, s.overlay, s.disk, specs, s.writable));
    made.push_back(build_folder(s.name + "@pristine", s.source, specs));
    std::lock_guard<std::mutex> lock(mutex_);
    s.files = made.front().files;
    for (MountedFile& f : guest_files(s))
        made.front().files.push_back(std::move(f));
    // The folder is made again over the overlay; opens of the old files read
    // on from the source.
    mount_.remove_folder(s.name);
    for (MountedFolder& f : made)
        mount_.add_folder(std::move(f));
    spdlog::info("source '{}': overlay {} made for fixups; the source itself in {}@pristine",
                 s.name, s.overlay->dir(), s.name);
}

std::shared_ptr<Core::Source> Core::find_source(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = sources_.find(name);
    if (it == sources_.end())
        throw NotFound("no source named '" + name.substr(0, Limits::name) + "'");
    return it->second;
}

void Core::check_no_running_job_locked(const std::string& name) const {
    for (const auto& [id, job] : jobs_) {
        // A sync job reads the source by its spec, on its own.
        if (job->source != name || job->kind == sync_kind)
            continue;
        const JobState st = job->progress().state;
        if (st == JobState::Running || st == JobState::Paused)
            throw Busy("source '" + name + "' is in use by job " + id + " (" + to_string(st) +
                       "); cancel it first");
    }
}

void Core::check_no_running_job(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mutex_);
    check_no_running_job_locked(name);
}

void Core::remove_source(const Caller& caller, const std::string& name) {
    check_control(caller, "remove sources");
    std::shared_ptr<Source> s;
    CoreObserver* observer;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        const auto it = sources_.find(name);
        if (it == sources_.end())
            throw NotFound("no source named '" + name.substr(0, Limits::name) + "'");
        check_no_running_job_locked(name);
        s = it->second;
        sources_.erase(it);
        observer = observer_;
    }
    mount_.remove_folder(name);
    if (s->overlay)
        mount_.remove_folder(name + "@pristine");
    if (s->persistent)
        ::unlink(source_file(options_.state_dir, name).c_str());
    spdlog::info("source '{}': removed", name);
    if (observer)
        observer->source_removed(name);
}

std::vector<SourceInfo> Core::sources() const {
    std::vector<std::string> names;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const auto& [name, s] : sources_)
            names.push_back(name);
    }
    std::vector<SourceInfo> out;
    for (const std::string& n : names) {
        try {
            out.push_back(source(n));
        } catch (const NotFound&) {
            // removed in between
        }
    }
    return out;
}

SourceInfo Core::source(const std::string& name) const {
    std::shared_ptr<Source> s;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        const auto it = sources_.find(name);
        if (it == sources_.end())
            throw NotFound("no source named '" + name.substr(0, Limits::name) + "'");
        s = it->second;
    }
    SourceInfo info;
    info.name = s->name;
    info.uri = s->uri;
    info.size = s->source->size();
    info.allocated = s->allocated;
    info.persistent = s->persistent;
    info.overlay = !s->overlay ? "none" : s->writable ? "writable" : "read-only";
    {
        std::lock_guard<std::mutex> guest_lock(s->guest_mutex);
        info.fixups = s->fixups ? s->fixups->profile : "";
    }
    if (s->overlay)
        for (const auto& layer : s->overlay->layers())
            info.overlay_bytes += layer->info().chunks * s->overlay->geometry().chunk_size;
    std::lock_guard<std::mutex> lock(mutex_);
    for (const MountedFile& f : s->files)
        info.views.push_back({f.name, f.format, options_.mount_point + "/" + s->name + "/" + f.name});
    return info;
}

ViewInfo Core::expose(const Caller& caller, const std::string& name, const ExposedView& view) {
    check_control(caller, "expose views");
    if (!view.file.empty())
        check_file_name(view.file);
    if (view.options.size() > Limits::options)
        throw InvalidArgument("too many options");
    for (const auto& [k, v] : view.options) {
        check_length("option " + k.substr(0, 64), k, Limits::name);
        check_length("option " + k.substr(0, 64), v, Limits::option_value);
        check_text("option " + k.substr(0, 64), k + v);
    }
    const Format* format = find_format(view.format);
    if (!format)
        throw UnknownFormat("unknown format '" + view.format.substr(0, 64) +
                            "' (p2vctl formats lists them)");
    std::shared_ptr<Source> s;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        const auto it = sources_.find(name);
        if (it == sources_.end())
            throw NotFound("no source named '" + name.substr(0, Limits::name) + "'");
        s = it->second;
    }
    const std::vector<ViewSpec> specs{{format, view.file, view.options, true}};
    MountedFolder folder;
    try {
        folder = s->overlay ? build_overlay_folder(name, s->overlay, s->disk, specs, s->writable)
                            : build_folder(name, s->source, specs);
    } catch (const InvalidArgument&) {
        throw;
    } catch (const Error& e) {
        throw Error(std::string(format->label) + " view of '" + name + "': " + e.what(),
                    e.error_number());
    }
    ViewInfo info;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const MountedFile& f : folder.files)
            for (const MountedFile& have : s->files)
                if (have.name == f.name)
                    throw AlreadyExists("source '" + name + "' has a file named '" + f.name +
                                        "' already");
        for (MountedFile& f : folder.files) {
            mount_.add_file(name, f);
            s->files.push_back(f);
        }
        s->exposed.push_back(view);
        info = {folder.files.front().name, std::string(format->name),
                options_.mount_point + "/" + name + "/" + folder.files.front().name};
    }
    if (s->persistent) {
        std::lock_guard<std::mutex> guest_lock(s->guest_mutex); // save_source reads s->fixups
        save_source(*s);
    }
    spdlog::info("source '{}': exposed {} as {}", name, format->name, info.file);
    CoreObserver* observer;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        observer = observer_;
    }
    if (observer)
        observer->source_changed(name);
    return info;
}

// ---- jobs ------------------------------------------------------------------

std::shared_ptr<Core::Job> Core::find_job(const std::string& id) const {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = jobs_.find(id);
    if (it == jobs_.end())
        throw NotFound("no job " + id.substr(0, 32));
    return it->second;
}

void Core::save_job(Job& job) const {
    const JobProgress p = job.progress();
    json j = {{"id", job.id},
              {"kind", job.kind},
              {"source", job.source},
              {"view", job.view},
              {"destination", job.destination},
              {"options",
               {{"parallel", job.options.parallel},
                {"bandwidth", job.options.bandwidth},
                {"verify", job.options.verify},
                {"block_size", job.options.block_size},
                {"owner_uid", job.options.owner_uid},
                {"owner_gid", job.options.owner_gid}}},
              {"progress", progress_json(p)}};
    if (job.fixups)
        j["fixups"] = fixup_request_json(*job.fixups);
    if (job.kind == sync_kind) {
        j["source_uri"] = job.source_uri;
        j["sync_options"] = to_json(job.sync_options);
        j["source_size"] = job.source_size;
    }
    {
        std::lock_guard<std::mutex> record(job.record_mutex);
        if (job.removed)
            return;
        replace_file(job.dir + "/job.json", j.dump(2) + "\n");
    }
    std::lock_guard<std::mutex> lock(job.mutex);
    job.persisted = p.state;
}

std::string Core::materialize(const Caller& caller, const std::string& source_name,
                              const std::string& view, const std::string& destination,
                              const MaterializeOptions& options) {
    check_control(caller, "start jobs");
    check_file_name(view);
    check_length("destination", destination, Limits::uri);
    check_text("destination", destination);
    const bool nbd = is_nbd_uri(destination);
    if (!nbd) {
        if (destination.find("://") != std::string::npos)
            throw InvalidArgument("destination '" + destination +
                                  "': not a path or an NBD URI (nbd://, nbds://, nbd+unix://)");
        check_absolute_path("destination", destination);
        // The caller's rights first: existence is not news to give about a
        // directory the caller cannot look into.
        check_can_create(caller, destination);
        struct stat st;
        if (::lstat(destination.c_str(), &st) == 0)
            throw AlreadyExists("destination " + destination + " exists already");

    } else if (const auto q = destination.find("socket="); q != std::string::npos) {
        std::string socket = destination.substr(q + 7);
        socket = socket.substr(0, socket.find('&'));
        check_can_create(caller, socket);
    }
    if (options.parallel < 1 || options.parallel > 64)
        throw InvalidArgument("parallel must be from 1 to 64");
    if (options.block_size < (64u << 10) || options.block_size > (64u << 20) ||
        (options.block_size & (options.block_size - 1)) != 0)
        throw InvalidArgument("block size must be a power of two from 64 KiB to 64 MiB");

    auto job = std::make_shared<Job>();
    {
        std::lock_guard<std::mutex> lock(mutex_);
        const auto it = sources_.find(source_name);
        if (it == sources_.end())
            throw NotFound("no source named '" + source_name.substr(0, Limits::name) + "'");
        const auto& files = it->second->files;
        if (std::none_of(files.begin(), files.end(),
                         [&](const MountedFile& f) { return f.name == view; }))
            throw NotFound("source '" + source_name + "' has no view file '" + view + "'");
        for (const auto& [id, other] : jobs_) {
            if (other->destination != destination)
                continue;
            const JobState st = other->progress().state;
            if (st == JobState::Running || st == JobState::Paused)
                throw Busy("job " + id + " writes to " + destination + " already");
        }
        struct stat st;
        if (!nbd && ::lstat((destination + ".part").c_str(), &st) == 0)
            throw AlreadyExists("destination " + destination + ".part exists already (a partial "
                                "copy from elsewhere?); remove it first");
        job->id = std::to_string(next_job_++);
    }
    job->source = source_name;
    job->view = view;
    job->destination = destination;
    job->options = options;
    // The copy belongs to whoever asked for it.
    if (!caller.is_root() && !nbd) {
        job->options.owner_uid = caller.uid;
        job->options.owner_gid = caller.gid;
    }
    add_job(job, "materialize " + view + " of '" + source_name + "' to " + destination);
    return job->id;
}

void Core::add_job(const std::shared_ptr<Job>& job, const std::string& description) {
    job->dir = options_.state_dir + "/jobs/" + job->id;
    make_directories(options_.state_dir + "/jobs");
    if (::mkdir(job->dir.c_str(), 0700) != 0)
        throw Error("job directory " + job->dir + ": " + errno_text(errno) +
                        " (left by a job whose record could not be read?)",
                    errno);
    job->saved.state = JobState::Running;
    save_job(*job);
    CoreObserver* observer;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        jobs_[job->id] = job;
        observer = observer_;
    }
    spdlog::info("job {}: {}", job->id, description);
    start_job(job);
    if (observer)
        observer->job_added(job->id);
}

// The device a job copies: the view file as the mount shows it now (a live
// file's current version), prepared first if its bytes are computed.
void Core::start_job(const std::shared_ptr<Job>& job) {
    if (job->kind == sync_kind) {
        start_sync_engine(job);
        return;
    }
    MountedFile file;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        const auto it = sources_.find(job->source);
        if (it != sources_.end())
            for (const MountedFile& f : it->second->files)
                if (f.name == job->view)
                    file = f;
    }
    std::thread previous;
    {
        std::lock_guard<std::mutex> lock(job->mutex);
        previous = std::move(job->starter);
    }
    if (previous.joinable())
        previous.join();
    // Makes the engine over `dev` and starts it; a failure fails the job.
    auto run = [this, job](DevicePtr dev) {
        try {
            if (prepared_view_of(*dev)) {
                const auto log = logged_progress("job " + job->id + ": " + job->view);
                dev = prepared(dev, [&](uint64_t done, uint64_t total) {
                    if (job->abandon)
                        throw Error("preparation stopped", ECANCELED);
                    log(done, total);
                });
            }
            auto engine = std::make_shared<Materialization>(job->dir, dev, job->destination,
                                                            job->options);
            engine->on_change([this] { monitor_wake_.notify_all(); });
            std::lock_guard<std::mutex> held(job->mutex);
            if (job->abandon)
                return;
            engine->start();
            job->engine = std::move(engine);
        } catch (const std::exception& e) {
            std::lock_guard<std::mutex> held(job->mutex);
            if (job->abandon)
                return;
            job->saved.state = JobState::Failed;
            job->saved.phase.clear();
            job->saved.error = e.what();
            spdlog::error("job {}: {}", job->id, e.what());
        }
        monitor_wake_.notify_all();
    };
    DevicePtr dev;
    try {
        if (!file.device)
            throw Error("source '" + job->source + "' or its view '" + job->view +
                        "' is not there (was the source removed?)");
        dev = file.live ? file.live->make() : file.device;
    } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(job->mutex);
        job->saved.state = JobState::Failed;
        job->saved.phase.clear();
        job->saved.error = e.what();
        monitor_wake_.notify_all();
        return;
    }
    {
        std::lock_guard<std::mutex> lock(job->mutex);
        job->abandon = false;
        job->saved.state = JobState::Running;
        job->saved.error.clear();
        job->saved.phase = prepared_view_of(*dev) ? "preparing" : "";
        // A view whose bytes are computed is prepared first, on a thread of
        // the job's own (a pass over the whole disk).
        if (prepared_view_of(*dev)) {
            job->starter = std::thread(run, dev);
            return;
        }
    }
    run(dev);
}

std::vector<JobInfo> Core::jobs() const {
    std::vector<std::shared_ptr<Job>> list;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const auto& [id, j] : jobs_)
            list.push_back(j);
    }
    std::sort(list.begin(), list.end(),
              [](const auto& a, const auto& b) { return std::stoull(a->id) < std::stoull(b->id); });
    std::vector<JobInfo> out;
    for (const auto& j : list)
        out.push_back({j->id, j->kind, j->source, j->view, j->destination, j->progress()});
    return out;
}

JobInfo Core::job(const std::string& id) const {
    const auto j = find_job(id);
    return {j->id, j->kind, j->source, j->view, j->destination, j->progress()};
}

void Core::pause_job(const Caller& caller, const std::string& id) {
    check_control(caller, "pause jobs");
    const auto j = find_job(id);
    std::shared_ptr<JobEngine> engine;
    {
        std::lock_guard<std::mutex> lock(j->mutex);
        JobState st;
        std::tie(engine, st) = j->engine_and_state_locked();
        if (st != JobState::Running)
            throw InvalidState("job " + id + " is " + to_string(st) + ", not running");
        if (!engine)
            throw InvalidState("job " + id + " is still preparing its view; pause it later");
    }
    engine->pause();
    monitor_wake_.notify_all();
}

void Core::resume_job(const Caller& caller, const std::string& id) {
    check_control(caller, "resume jobs");
    const auto j = find_job(id);
    std::shared_ptr<JobEngine> engine;
    {
        std::lock_guard<std::mutex> lock(j->mutex);
        JobState st;
        std::tie(engine, st) = j->engine_and_state_locked();
        if (st != JobState::Paused && st != JobState::Failed)
            throw InvalidState("job " + id + " is " + to_string(st) +
                               "; only paused and failed jobs resume");
    }
    if (engine)
        engine->resume();
    else
        start_job(j); // restored paused, or failed before its engine started
    monitor_wake_.notify_all();
}

void Core::cancel_job(const Caller& caller, const std::string& id) {
    check_control(caller, "cancel jobs");
    const auto j = find_job(id);
    std::shared_ptr<JobEngine> engine;
    {
        std::lock_guard<std::mutex> lock(j->mutex);
        JobState st;
        std::tie(engine, st) = j->engine_and_state_locked();
        if (st == JobState::Done || st == JobState::Cancelled)
            throw InvalidState("job " + id + " is " + to_string(st) + " already");
        j->abandon = true;
    }
    if (engine) {
        engine->cancel();
    } else {
        if (j->starter.joinable())
            j->starter.join();
        std::lock_guard<std::mutex> lock(j->mutex);
        if (j->engine) {
            j->engine->cancel();
        } else if (j->kind == sync_kind) {
            sync_engine_locked(*j)->cancel();
        } else {
            // Never started in this run: remove what a previous run left.
            if (!is_nbd_uri(j->destination))
                ::unlink((j->destination + ".part").c_str());
            ::unlink((j->dir + "/checkpoint").c_str());
            j->saved.state = JobState::Cancelled;
            j->saved.phase.clear();
        }
    }
    spdlog::info("job {}: cancelled", id);
    monitor_wake_.notify_all();
}

void Core::remove_job(const Caller& caller, const std::string& id) {
    check_control(caller, "remove jobs");
    const auto j = find_job(id);
    const JobState st = j->progress().state;
    if (st == JobState::Running || st == JobState::Paused)
        throw InvalidState("job " + id + " is " + to_string(st) + "; cancel it first");
    CoreObserver* observer;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        jobs_.erase(id);
        observer = observer_;
    }
    if (j->starter.joinable())
        j->starter.join();
    {
        std::lock_guard<std::mutex> lock(j->mutex);
        j->engine.reset();
    }
    {
        std::lock_guard<std::mutex> record(j->record_mutex);
        j->removed = true;
        remove_tree(j->dir);
    }
    if (observer)
        observer->job_removed(id);
}

// ---- persistence and monitoring --------------------------------------------

void Core::restore() {
    const std::string dir = options_.state_dir + "/sources";
    std::vector<std::string> files;
    if (DIR* d = ::opendir(dir.c_str())) {
        while (const dirent* e = ::readdir(d)) {
            const std::string n = e->d_name;
            if (n.size() > 5 && n.ends_with(".json"))
                files.push_back(n);
        }
        ::closedir(d);
    }
    std::sort(files.begin(), files.end());
    for (const std::string& f : files) {
        const std::string path = dir + "/" + f;
        try {
            const json j = json::parse(read_small_file(path));
            const std::string name = j.at("name").get<std::string>();
            check_source_name(name);
            if (name + ".json" != f)
                throw InvalidArgument("names source '" + name + "'");
            AddSourceOptions o;
            if (j.contains("formats"))
                o.formats = j.at("formats").get<std::vector<std::string>>();
            for (const json& v : j.at("views"))
                o.views.push_back({v.at("format").get<std::string>(), v.at("file").get<std::string>(),
                                   v.at("options").get<std::map<std::string, std::string>>()});
            if (j.contains("fixups"))
                o.fixups = fixup_request_from(j.at("fixups"));
            open_and_mount(name, j.at("uri").get<std::string>(), o, true);
        } catch (const std::exception& e) {
            spdlog::error("{}: cannot restore the source: {} (the record is kept)", path,
                          e.what());
        }
    }
    const std::string jobs_dir = options_.state_dir + "/jobs";
    std::vector<std::string> ids;
    if (DIR* d = ::opendir(jobs_dir.c_str())) {
        while (const dirent* e = ::readdir(d)) {
            const std::string n = e->d_name;
            if (!n.empty() && std::all_of(n.begin(), n.end(), ::isdigit) && n.size() < 19)
                ids.push_back(n);
        }
        ::closedir(d);
    }
    std::sort(ids.begin(), ids.end(),
              [](const std::string& a, const std::string& b) { return std::stoull(a) < std::stoull(b); });
    // Every job directory keeps its id, restored or not: a record that could
    // not be read now is not to be overwritten by a new job.
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const std::string& id : ids)
            next_job_ = std::max<uint64_t>(next_job_, std::stoull(id) + 1);
    }
    for (const std::string& id : ids)
        restore_job(jobs_dir + "/" + id);
}

void Core::restore_job(const std::string& dir) {
    auto job = std::make_shared<Job>();
    job->dir = dir;
    try {
        const json j = json::parse(read_small_file(dir + "/job.json"));
        job->id = j.at("id").get<std::string>();
        if (dir != options_.state_dir + "/jobs/" + job->id)
            throw InvalidArgument("its id " + job->id + " is not its directory's name");
        job->kind = j.at("kind").get<std::string>();
        if (job->kind != materialize_kind && job->kind != sync_kind)
            throw InvalidArgument("unknown kind '" + job->kind + "'");
        job->source_uri = j.value("source_uri", std::string());
        if (j.contains("fixups"))
            job->fixups = fixup_request_from(j.at("fixups"));
        if (job->kind == sync_kind) {
            job->sync_options = sync_options_from_json(j.at("sync_options"));
            job->source_size = j.at("source_size").get<uint64_t>();
        }
        job->source = j.at("source").get<std::string>();
        job->view = j.at("view").get<std::string>();
        job->destination = j.at("destination").get<std::string>();
        const json& o = j.at("options");
        job->options.parallel = o.at("parallel").get<unsigned>();
        job->options.bandwidth = o.at("bandwidth").get<uint64_t>();
        job->options.verify = o.at("verify").get<bool>();
        job->options.block_size = o.at("block_size").get<uint64_t>();
        job->options.owner_uid = o.value("owner_uid", int64_t{-1});
        job->options.owner_gid = o.value("owner_gid", int64_t{-1});
        const json& p = j.at("progress");
        const auto state = job_state_from_string(p.at("state").get<std::string>());
        if (!state)
            throw InvalidArgument("unknown state '" + p.at("state").get<std::string>() + "'");
        job->saved.state = *state;
        job->saved.bytes_total = p.at("bytes_total").get<uint64_t>();
        job->saved.bytes_done = p.at("bytes_done").get<uint64_t>();
        job->saved.bytes_verified = p.at("bytes_verified").get<uint64_t>();
        job->saved.error = p.at("error").get<std::string>();
        job->saved.eta_seconds = -1;
        job->persisted = *state;
    } catch (const std::exception& e) {
        spdlog::error("{}/job.json: cannot restore the job: {} (left as it is)", dir, e.what());
        return;
    }
    {
        std::lock_guard<std::mutex> lock(mutex_);
        next_job_ = std::max<uint64_t>(next_job_, std::stoull(job->id) + 1);
        jobs_[job->id] = job;
    }
    spdlog::info("job {}: {} ({} of '{}' to {})", job->id, to_string(job->saved.state), job->view,
                 job->source, job->destination);
    if (job->saved.state == JobState::Running)
        start_job(job);
}

void Core::stop() {
    std::vector<std::shared_ptr<Job>> list;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (stopped_)
            return;
        stopped_ = true;
        for (const auto& [id, j] : jobs_)
            list.push_back(j);
    }
    // The monitor must not record the stopped engines' state: on disk a
    // job stopped by the daemon's own stop is still running.
    {
        std::lock_guard<std::mutex> lock(monitor_mutex_);
        monitor_stop_ = true;
    }
    monitor_wake_.notify_all();
    if (monitor_.joinable())
        monitor_.join();
    for (const auto& j : list) {
        j->abandon = true;
        if (j->starter.joinable())
            j->starter.join();
        std::lock_guard<std::mutex> lock(j->mutex);
        if (j->engine) {
            const JobState st = j->engine->progress().state;
            j->engine->stop();
            if (st == JobState::Running)
                spdlog::info("job {}: stopped with a checkpoint; it resumes at the next start",
                             j->id);
        }
    }
}

void Core::monitor() {
    std::unique_lock<std::mutex> lock(monitor_mutex_);
    while (!monitor_stop_) {
        monitor_wake_.wait_for(lock, std::chrono::milliseconds(250));
        if (monitor_stop_)
            break;
        lock.unlock();
        std::vector<std::shared_ptr<Job>> list;
        CoreObserver* observer;
        {
            std::lock_guard<std::mutex> l(mutex_);
            for (const auto& [id, j] : jobs_)
                list.push_back(j);
            observer = observer_;
        }
        for (const auto& j : list) {
            const JobProgress p = j->progress();
            bool persist;
            {
                std::lock_guard<std::mutex> l(j->mutex);
                persist = p.state != j->persisted;
            }
            if (persist) {
                try {
                    save_job(*j);
                } catch (const Error& e) {
                    spdlog::error("job {}: cannot record its state: {}", j->id, e.what());
                }
                if (p.state == JobState::Done)
                    spdlog::info("job {}: done, {} to {}", j->id, human_size(p.bytes_total),
                                 j->destination);
                else if (p.state == JobState::Failed)
                    spdlog::error("job {}: failed: {}", j->id, p.error);
            }
            const std::string now = describe(p);
            bool changed;
            {
                std::lock_guard<std::mutex> l(j->mutex);
                changed = now != j->last_reported;
                j->last_reported = now;
            }
            if ((changed || p.state == JobState::Running) && observer)
                observer->job_changed(j->id);
        }
        lock.lock();
    }
}

} // namespace p2vfs
