// p2vfsd: shows source disks as lazily converted virtual disk files in a
// FUSE mount. See README.md for usage and docs/ARCHITECTURE.md for the design.
#include "common/error.h"
#include "common/logging.h"
#include "core/access.h"
#include "core/core.h"
#include "daemon/command_line.h"
#include "dbus/service.h"
#include "fuse/fuse_frontend.h"
#include "fuse/mount_point.h"

#include <csignal>
#include <cstdio>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

namespace {

enum ExitCode { exit_ok = 0, exit_failure = 1, exit_usage = 2, exit_source = 3, exit_mount = 4 };

// Before logging is set up (a bad --log-level), errors still read the same.
int early_error(const std::string& message, int code) {
    std::fprintf(stderr, "p2vfsd: error: %s\n", message.c_str());
    return code;
}

// The core puts its folders in the FUSE front end.
struct FuseMountTable : p2vfs::MountTable {
    std::unique_ptr<p2vfs::FuseFrontend> frontend;
    void add_folder(p2vfs::MountedFolder folder) override { frontend->add_folder(std::move(folder)); }
    void add_file(const std::string& folder, p2vfs::MountedFile file) override {
        frontend->add_file(folder, std::move(file));
    }
    bool remove_folder(const std::string& folder) override { return frontend->remove_folder(folder); }
    bool remove_file(const std::string& folder, const std::string& name) override {
        return frontend->remove_file(folder, name);
    }
};

} // namespace

int main(int argc, char** argv) {
    using namespace p2vfs;
    // A server that goes away mid-request must cost a reconnection, not the
    // process (libfuse would ignore SIGPIPE too, but only once mounted).
    std::signal(SIGPIPE, SIG_IGN);
    DaemonArgs args;
    try {
        args = parse_command_line(argc, argv);
        if (args.help) {
            std::fputs(usage_text().c_str(), stdout);
            return exit_ok;
        }
        if (args.version) {
            std::puts("p2vfsd " P2VFS_VERSION);
            return exit_ok;
        }
        setup_logging("p2vfsd", args.log_level);
    } catch (const Error& e) {
        return early_error(std::string(e.what()) + " (see p2vfsd --help)", exit_usage);
    }

    std::optional<gid_t> control_gid = group_id(args.control_group);
    if (!control_gid && !args.bus.empty())
        spdlog::warn("no group named '{}': only root may call methods over D-Bus",
                     args.control_group);
    FuseMountTable table;
    FuseOptions fuse_options{args.mount_point, args.splice, args.threads, 1024, args.fuse_debug};
    std::unique_ptr<DbusService> service;
    std::unique_ptr<Core> core;
    // Once mounted: the D-Bus name, then systemd hears the daemon is ready.
    fuse_options.on_ready = [&] {
        if (!args.bus.empty())
            service = std::make_unique<DbusService>(*core, args.bus);
        ::sd_notify(0, "READY=1");
    };
    try {
        table.frontend = std::make_unique<FuseFrontend>(fuse_options, std::vector<MountedFolder>{});
        core = std::make_unique<Core>(
            CoreOptions{args.state_dir, args.mount_point, args.source_options,
                        args.default_formats_given ? args.default_formats
                                                   : std::vector<std::string>{},
                        args.format_options, control_gid},
            table);
    } catch (const Error& e) {
        spdlog::error("{}", e.what());
        return exit_failure;
    }
    const Caller self = Caller::from_uid(::geteuid());
    for (const SourceArg& s : args.sources) {
        AddSourceOptions o;
        if (args.default_formats_given)
            o.formats = args.default_formats;
        for (const ViewArg& v : args.views)
            if (v.source == s.name)
                o.views.push_back({v.format, v.file, v.options});
        if (const auto w = args.writable.find(s.name); w != args.writable.end())
            o.writable_layer = w->second;
        o.persist = false;
        try {
            core->add_source(self, s.name, s.spec, o);
        } catch (const InvalidArgument& e) {
            spdlog::error("source '{}': {}", s.name, e.what());
            return exit_usage;
        } catch (const Error& e) {
            spdlog::error("source '{}': {}", s.name, e.what());
            return exit_source;
        }
    }
    if (!args.bus.empty())
        core->restore();

    int rc = exit_ok;
    try {
        prepare_mount_point(args.mount_point);
        table.frontend->run();
    } catch (const MountError& e) {
        spdlog::error("{}", e.what());
        rc = exit_mount;
    } catch (const std::exception& e) {
        spdlog::error("{}", e.what());
        rc = exit_failure;
    }
    ::sd_notify(0, "STOPPING=1");
    core->stop();
    service.reset();
    core.reset();
    return rc;
}
