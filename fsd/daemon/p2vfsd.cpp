// p2vfsd: shows source disks as lazily converted virtual disk files in a
// FUSE mount. See README.md for usage and docs/ARCHITECTURE.md for the design.
#include "block/open_source.h"
#include "common/error.h"
#include "common/logging.h"
#include "daemon/command_line.h"
#include "daemon/source_folder.h"
#include "formats/format.h"
#include "fuse/fuse_frontend.h"
#include "fuse/mount_point.h"
#include "overlay/overlay.h"

#include <csignal>
#include <cstdio>
#include <spdlog/spdlog.h>

namespace {

enum ExitCode { exit_ok = 0, exit_failure = 1, exit_usage = 2, exit_source = 3, exit_mount = 4 };

// Before logging is set up (a bad --log-level), errors still read the same.
int early_error(const std::string& message, int code) {
    std::fprintf(stderr, "p2vfsd: error: %s\n", message.c_str());
    return code;
}

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

    std::vector<MountedFolder> folders;
    for (const SourceArg& s : args.sources) {
        DevicePtr source;
        try {
            source = open_source(s.spec, args.source_options);
        } catch (const Error& e) {
            spdlog::error("source '{}': {}", s.name, e.what());
            return exit_source;
        }
        // An overlay when the source takes writes, or has one from before
        // (fixups, earlier writes): then the folder shows the overlaid disk,
        // and NAME@pristine the source as it is.
        OverlayPtr overlay;
        DevicePtr disk = source;
        const auto w = args.writable.find(s.name);
        const bool writable = w != args.writable.end();
        try {
            if (writable || Overlay::exists(args.state_dir, s.name)) {
                overlay = Overlay::open(args.state_dir, s.name, source, s.spec,
                                        OverlayOptions{.writable = writable}, writable);
                disk = overlay->device(user_layer, writable ? w->second : "");
            }
        } catch (const Error& e) {
            spdlog::error("source '{}': {}", s.name, e.what());
            return exit_source;
        }
        const auto specs = view_specs_for(args, s.name);
        std::vector<MountedFolder> made;
        try {
            if (overlay) {
                made.push_back(build_overlay_folder(s.name, overlay, disk, specs, writable));
                made.push_back(build_folder(s.name + "@pristine", source, specs));
            } else {
                made.push_back(build_folder(s.name, source, specs));
            }
        } catch (const InvalidArgument& e) {
            spdlog::error("source '{}': {}", s.name, e.what());
            return exit_usage;
        } catch (const Error& e) {
            spdlog::error("source '{}': {}", s.name, e.what());
            return exit_source;
        }
        spdlog::info("source '{}': {} ({}), view files: {}", s.name, source->name(),
                     human_size(source->size()), made.front().files.size());
        if (overlay) {
            std::string layers;
            for (const auto& l : overlay->layers()) {
                const auto info = l->info();
                layers += (layers.empty() ? "" : ", ") + l->name() + " " +
                          std::to_string(info.chunks) + " chunk(s)";
            }
            spdlog::info("source '{}': overlay {} ({}){}; the source itself in {}@pristine",
                         s.name, overlay->dir(), layers,
                         writable ? ", disk.raw writes to " + w->second : ", read-only", s.name);
        }
        for (MountedFolder& f : made)
            folders.push_back(std::move(f));
    }

    try {
        prepare_mount_point(args.mount_point);
        FuseFrontend frontend(
            FuseOptions{args.mount_point, args.splice, args.threads, 1024, args.fuse_debug},
            std::move(folders));
        frontend.run();
    } catch (const MountError& e) {
        spdlog::error("{}", e.what());
        return exit_mount;
    } catch (const std::exception& e) {
        spdlog::error("{}", e.what());
        return exit_failure;
    }
    return exit_ok;
}
