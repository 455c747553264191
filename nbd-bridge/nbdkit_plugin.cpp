// nbdkit plugin: serves a source, or one file of a view of it, over NBD.
//
//   nbdkit --readonly p2vfs source=/dev/sdb format=vmdk adapter=lsilogic
//
// nbdkit speaks the protocol and owns sockets, TLS and connections; this
// file maps its callbacks onto one read-only BlockDevice: the view file the
// configuration names, made by the same format table as the FUSE mount's
// files, so the bytes served are the bytes of the mount's file.
//
// Life cycle (see nbdkit-plugin(3) for the order of the callbacks):
//   config, config_complete  keys are collected; the format and its option
//                            keys are checked against the format table, so a
//                            typo fails before anything is opened.
//   get_ready                the source is opened and the view made, then
//                            dropped again: a trial that makes a bad source,
//                            option value or file name fail the start.
//   after_fork               the source is opened and the view made for good,
//                            and a prepared view (streamOptimized VMDK) is
//                            prepared, so clients see its final size.
// Why twice: nbdkit forks into the background between get_ready and
// after_fork (unless run with -f), and threads do not survive a fork. NBD
// sources run I/O threads from the moment they are opened (and images read
// through qemu-nbd add a child process), and a device whose threads are
// gone can neither serve nor be destroyed (its destructor would join them).
// So the device that serves is made after the fork, where nbdkit's own
// plugins start their threads, and the trial made before it is destroyed
// while its threads still exist. Opening a local source twice costs two
// open(2) calls and two extent maps, not a pass over its data.
//
// Thread model: NBDKIT_THREAD_MODEL_PARALLEL. Every connection and request
// reads the one device; BlockDevice reads and extents are safe for
// concurrent callers (block_device.h). The device is published in
// after_fork, before nbdkit accepts a connection, and not changed again
// until unload, after the last connection has closed.
#define NBDKIT_API_VERSION 2
#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL
#include "block/open_source.h"
#include "common/error.h"
#include "formats/format.h"
#include "formats/prepared_view.h"

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <nbdkit-plugin.h>
#include <set>
#include <spdlog/details/null_mutex.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <string>

// Set with `nbdkit -v -D p2vfs.trace=1 ...`: the engine's trace-level
// messages (libnbd's own debug output, for an NBD source) go to nbdkit's
// debug output as well. Off by default: they are many.
extern "C" NBDKIT_DLL_PUBLIC int p2vfs_debug_trace;
NBDKIT_DLL_PUBLIC int p2vfs_debug_trace = 0;

namespace p2vfs {
namespace {

struct ExportConfig {
    std::string source;                         // source=SPEC, as p2vfsd --source takes it
    const Format* format = nullptr;             // format=NAME; raw when not given
    std::string file;                           // file=NAME; empty: the view's main file
    SourceOptions source_options;               // direct=BOOL
    std::map<std::string, std::string> options; // every other KEY=VALUE
};

ExportConfig config;
std::string format_name = "raw";

// What clients read: set in after_fork, reset in unload.
DevicePtr served;

// The engine logs through spdlog; inside nbdkit its lines belong in nbdkit's
// log, which goes to stderr or syslog as nbdkit was told, with nbdkit's
// prefix. Debug and info lines are nbdkit debug output (shown with -v);
// warnings and errors are always shown, and nbdkit has only nbdkit_error
// for that. nbdkit_debug and nbdkit_error are thread-safe and the payload
// needs no formatting, so the sink needs no lock.
class NbdkitLogSink : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        const int len = static_cast<int>(msg.payload.size());
        const char* text = msg.payload.data();
        if (msg.level >= spdlog::level::err)
            nbdkit_error("%.*s", len, text);
        else if (msg.level == spdlog::level::warn)
            nbdkit_error("warning: %.*s", len, text);
        else
            nbdkit_debug("%.*s", len, text);
    }
    void flush_() override {}
};

std::string format_names() {
    std::string names;
    for (const Format* f : format_table())
        names += (names.empty() ? "" : ", ") + std::string(f->name);
    return names;
}

std::string make_config_help() {
    std::string help =
        "source=SPEC      (required) the disk to serve, as p2vfsd --source takes it: an\n"
        "                 image file or block device, a qcow2/VMDK/VHD/VHDX/VDI image\n"
        "                 (probed, or FORMAT:PATH), or an NBD URI\n"
        "format=FMT       the view to serve (default raw): " +
        format_names() +
        "\n"
        "file=NAME        which file of a view of several files (default: the first,\n"
        "                 e.g. disk-esx.vmdk; file=disk-esx-flat.vmdk for its extent)\n"
        "direct=BOOL      read the source with O_DIRECT (default false)\n"
        "KEY=VALUE        an option of the format (defaults shown):\n";
    for (const Format* f : format_table())
        for (const FormatOption& o : f->options)
            help += "                   " + std::string(f->name) + ": " + std::string(o.name) +
                    "=" + std::string(o.default_value) + "  " + std::string(o.help) + "\n";
    return help;
}

// The file names of a view's files, for messages.
std::string file_names(const std::vector<ViewFile>& files) {
    std::string names;
    for (const ViewFile& f : files)
        names += (names.empty() ? "" : ", ") + f.name;
    return names;
}

// Opens the source and makes the configured file of its view; prepares it
// when `prepare` is set. Throws Error naming the source, view or file.
DevicePtr make_served_device(bool prepare) {
    DevicePtr source = open_source(config.source, config.source_options);
    std::vector<ViewFile> files;
    try {
        files = make_view_files(*config.format, source, config.options);
    } catch (const Error& e) {
        throw Error(format_name + " view of " + config.source + ": " + e.what(), e.error_number());
    }
    DevicePtr device;
    if (config.file.empty()) {
        device = files.front().device;
    } else {
        for (const ViewFile& f : files)
            if (f.name == config.file)
                device = f.device;
        if (!device)
            throw InvalidArgument(format_name + " view of " + config.source + ": no file named '" +
                                  config.file + "' (its files: " + file_names(files) + ")");
    }
    if (prepare && prepared_view_of(*device)) {
        try {
            device = prepared(device, logged_progress(device->name()));
        } catch (const Error& e) {
            throw Error(device->name() + ": cannot prepare the view: " + e.what(),
                        e.error_number());
        }
    }
    return device;
}

// Reports the exception being handled as nbdkit expects from a failed
// callback: the message, and the errno for the client.
void report_current_exception(const std::string& context) {
    try {
        throw;
    } catch (const Error& e) {
        nbdkit_error("%s%s", context.c_str(), e.what());
        nbdkit_set_error(e.error_number() ? e.error_number() : EIO);
    } catch (const std::bad_alloc&) {
        nbdkit_error("%sout of memory", context.c_str());
        nbdkit_set_error(ENOMEM);
    } catch (const std::exception& e) {
        nbdkit_error("%s%s", context.c_str(), e.what());
        nbdkit_set_error(EIO);
    }
}

// ---------------------------------------------------------------- callbacks

void plugin_load() {
    auto logger = std::make_shared<spdlog::logger>("p2vfs", std::make_shared<NbdkitLogSink>());
    logger->set_level(spdlog::level::debug);
    spdlog::set_default_logger(std::move(logger));
}

void plugin_unload() {
    served.reset();
    // Our sink's code goes away with this library: no logger may keep it.
    spdlog::shutdown();
}

int plugin_config(const char* key, const char* value) {
    static std::set<std::string> given;
    const std::string k = key;
    const std::string v = value;
    if (!given.insert(k).second) {
        nbdkit_error("%s=%s: %s is already given; each key may be given once", key, value, key);
        return -1;
    }
    if (k == "source") {
        if (v.empty()) {
            nbdkit_error("source=: empty; expected an image file, block device or NBD URI");
            return -1;
        }
        config.source = v;
    } else if (k == "format") {
        format_name = v;
    } else if (k == "file") {
        config.file = v;
    } else if (k == "direct") {
        if (v == "true" || v == "on" || v == "yes" || v == "1")
            config.source_options.direct = true;
        else if (v == "false" || v == "off" || v == "no" || v == "0")
            config.source_options.direct = false;
        else {
            nbdkit_error("direct=%s: expected true or false", value);
            return -1;
        }
    } else {
        config.options.emplace(k, v);
    }
    return 0;
}

int plugin_config_complete() {
    if (config.source.empty()) {
        nbdkit_error("source=SPEC is required: the disk to serve (an image file, block device "
                     "or NBD URI)");
        return -1;
    }
    config.format = find_format(format_name);
    if (!config.format) {
        nbdkit_error("format=%s: no such format (formats: %s)", format_name.c_str(),
                     format_names().c_str());
        return -1;
    }
    try {
        resolve_options(*config.format, config.options);
    } catch (...) {
        report_current_exception("");
        return -1;
    }
    return 0;
}

int plugin_get_ready() {
    if (p2vfs_debug_trace)
        spdlog::set_level(spdlog::level::trace);
    try {
        const DevicePtr trial = make_served_device(false);
        nbdkit_debug("%s: made as a trial; made again to serve in after_fork",
                     trial->name().c_str());
    } catch (...) {
        report_current_exception("");
        return -1;
    }
    return 0;
}

int plugin_after_fork() {
    try {
        served = make_served_device(true);
    } catch (...) {
        report_current_exception("");
        return -1;
    }
    nbdkit_debug("serving %s: %" PRIu64 " bytes", served->name().c_str(), served->size());
    return 0;
}

void* plugin_open(int /*readonly*/) {
    // One device serves every connection: no per-connection state.
    return NBDKIT_HANDLE_NOT_NEEDED;
}

int64_t plugin_get_size(void*) {
    return static_cast<int64_t>(served->size());
}

const char* plugin_export_description(void*) {
    return nbdkit_strdup_intern(served->name().c_str());
}

int plugin_can_write(void*) {
    return 0;
}

int plugin_can_multi_conn(void*) {
    // Read-only and the same bytes on every connection.
    return 1;
}

int plugin_can_extents(void*) {
    return 1;
}

int plugin_pread(void*, void* buf, uint32_t count, uint64_t offset, uint32_t /*flags*/) {
    try {
        served->read(buf, count, offset);
        return 0;
    } catch (...) {
        report_current_exception(served->name() + ": read of " + std::to_string(count) +
                                 " bytes at " + hex(offset) + " failed: ");
        return -1;
    }
}

uint32_t extent_type_flags(ExtentType type) {
    switch (type) {
    case ExtentType::Hole:
        return NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO;
    case ExtentType::Zero:
        return NBDKIT_EXTENT_ZERO;
    case ExtentType::Data:
        break;
    }
    return 0;
}

int plugin_extents(void*, uint32_t count, uint64_t offset, uint32_t flags,
                   struct nbdkit_extents* extents) {
    try {
        for (const Extent& e : served->extents(offset, count)) {
            if (nbdkit_add_extent(extents, e.offset, e.length, extent_type_flags(e.type)) == -1)
                return -1; // nbdkit has set the error
            if (flags & NBDKIT_FLAG_REQ_ONE)
                break;
        }
        return 0;
    } catch (...) {
        report_current_exception(served->name() + ": allocation of " + std::to_string(count) +
                                 " bytes at " + hex(offset) + " failed: ");
        return -1;
    }
}

void plugin_dump() {
    std::printf("p2vfs_formats=%s\n", format_names().c_str());
}

} // namespace
} // namespace p2vfs

namespace {

// The plugin's table. nbdkit copies it when it registers the plugin, before
// calling load, so everything, the help text too, is filled in here: on the
// first call, from plugin_init, once every static initialiser of this
// library has run (the format table lives in other translation units,
// initialised in no defined order). NBDKIT_REGISTER_PLUGIN names it several
// times; it is built once. Assigned field by field rather than with
// designated initialisers, which would have to list every field of the
// struct to pass -Wmissing-field-initializers; the rest stay null.
struct nbdkit_plugin& registered_plugin() {
    static struct nbdkit_plugin plugin = [] {
        static const std::string help = p2vfs::make_config_help();
        struct nbdkit_plugin p {};
        p.name = "p2vfs";
        p.longname = "p2vfs virtual disk views";
        p.version = P2VFS_VERSION;
        p.description = "Serves a disk as a VHD, VHDX, VMDK, qcow2, VDI or raw view, "
                        "converted lazily";
        p.load = p2vfs::plugin_load;
        p.unload = p2vfs::plugin_unload;
        p.config = p2vfs::plugin_config;
        p.config_complete = p2vfs::plugin_config_complete;
        p.config_help = help.c_str();
        p.magic_config_key = "source";
        p.dump_plugin = p2vfs::plugin_dump;
        p.get_ready = p2vfs::plugin_get_ready;
        p.after_fork = p2vfs::plugin_after_fork;
        p.open = p2vfs::plugin_open;
        p.get_size = p2vfs::plugin_get_size;
        p.export_description = p2vfs::plugin_export_description;
        p.can_write = p2vfs::plugin_can_write;
        p.can_multi_conn = p2vfs::plugin_can_multi_conn;
        p.can_extents = p2vfs::plugin_can_extents;
        p.pread = p2vfs::plugin_pread;
        p.extents = p2vfs::plugin_extents;
        return p;
    }();
    return plugin;
}

} // namespace

NBDKIT_REGISTER_PLUGIN(registered_plugin())
