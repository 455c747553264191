// p2vfs-overlay: lists, checkpoints, rolls back, discards and exports the
// overlays p2vfsd keeps in its state directory, while no daemon has them
// open (each overlay is locked by the process that has it).
//
//   p2vfs-overlay [--state-dir DIR] list [NAME]
//   p2vfs-overlay [--state-dir DIR] checkpoint NAME CHECKPOINT [--layer L]
//   p2vfs-overlay [--state-dir DIR] rollback NAME CHECKPOINT [--layer L]
//   p2vfs-overlay [--state-dir DIR] discard NAME [--layer L | --all]
//   p2vfs-overlay [--state-dir DIR] export NAME FILE.qcow2 [--layer L]
//
// Exit status: 0 done, 1 failure (one line on stderr), 2 bad command line.
#include "block/open_source.h"
#include "common/error.h"
#include "common/logging.h"
#include "overlay/export.h"
#include "overlay/overlay.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <getopt.h>
#include <spdlog/spdlog.h>
#include <string>
#include <vector>

namespace {

using namespace p2vfs;

const char* usage =
    "Usage: p2vfs-overlay [--state-dir DIR] COMMAND ...\n"
    "\n"
    "Works on the overlays p2vfsd keeps (DIR/overlays/NAME) while no daemon has them\n"
    "open. Each overlay has two layers, bottom to top: fixups (guest OS changes of a\n"
    "conversion) and user (writes through a writable disk.raw).\n"
    "\n"
    "  list [NAME]                       overlays, their layers and checkpoints\n"
    "  checkpoint NAME CHECKPOINT        remember the layer as it is now\n"
    "  rollback NAME CHECKPOINT          return the layer to a checkpoint; later\n"
    "                                    writes and checkpoints are dropped\n"
    "  discard NAME                      drop every change of the layer (--all: both)\n"
    "  export NAME FILE.qcow2            write the changes of the layers up to the\n"
    "                                    layer as a qcow2 file backed by the source\n"
    "\n"
    "  --state-dir DIR     the daemon's state directory (default /var/lib/p2vfs)\n"
    "  --snapshot-dir DIR  where snapshot sources keep their copies (default\n"
    "                      DIR/snapshots), to open a snapshot source for export\n"
    "  --layer LAYER       fixups or user (default user)\n"
    "  --all               discard: both layers\n"
    "  --log-level LEVEL   trace, debug, info, warn (default), error\n"
    "  -h, --help          this text\n"
    "\n"
    "Exit status: 0 done, 1 failure, 2 bad command line.\n";

// A command line that does not parse: the message gets "(see --help)".
class UsageError : public InvalidArgument {
public:
    using InvalidArgument::InvalidArgument;
};

struct Args {
    std::string state_dir = "/var/lib/p2vfs";
    std::string snapshot_dir;
    std::string layer = user_layer;
    bool all = false;
    std::string log_level = "warn";
    std::vector<std::string> words;
};

std::string time_text(int64_t t) {
    char buf[64];
    const time_t tt = static_cast<time_t>(t);
    struct tm tm {};
    ::gmtime_r(&tt, &tm);
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

// Opens overlay `name` over the source it was made over.
OverlayPtr open_overlay(const Args& a, const std::string& name, bool writable) {
    const std::string spec = Overlay::recorded_source(a.state_dir, name);
    SourceOptions so;
    so.snapshot_dir = a.snapshot_dir.empty() ? a.state_dir + "/snapshots" : a.snapshot_dir;
    DevicePtr source;
    try {
        source = open_source(spec, so);
    } catch (const Error& e) {
        throw Error("overlay of '" + name + "': its source " + spec + ": " + e.what(),
                    e.error_number());
    }
    return Overlay::open(a.state_dir, name, source, spec, OverlayOptions{.writable = writable},
                         false);
}

void print_overlay(const Args& a, const std::string& name) {
    const OverlayPtr o = open_overlay(a, name, false);
    std::printf("%s  source %s, %s, %u KiB chunks\n", name.c_str(),
                Overlay::recorded_source(a.state_dir, name).c_str(),
                human_size(o->geometry().disk_size).c_str(), o->geometry().chunk_size / 1024);
    for (const auto& l : o->layers()) {
        const auto info = l->info();
        std::printf("  layer %-7s %llu chunk(s), %s changed, %s on disk\n", info.name.c_str(),
                    static_cast<unsigned long long>(info.chunks),
                    human_size(info.chunks * o->geometry().chunk_size).c_str(),
                    human_size(info.disk_usage).c_str());
        for (const auto& c : info.checkpoints)
            std::printf("    checkpoint %s  %s\n", c.name.c_str(), time_text(c.time).c_str());
    }
}

int run(const Args& a) {
    if (a.words.empty())
        throw UsageError("a command is required (list, checkpoint, rollback, discard, export)");
    const std::string& cmd = a.words[0];
    auto need = [&](size_t n, const char* shape) {
        if (a.words.size() != n + 1)
            throw UsageError(cmd + ": expected " + shape);
    };
    if (cmd == "list") {
        if (a.words.size() > 2)
            throw UsageError("list: expected at most one NAME");
        if (a.words.size() == 2) {
            print_overlay(a, a.words[1]);
            return 0;
        }
        std::error_code ec;
        std::vector<std::string> names;
        for (const auto& e : std::filesystem::directory_iterator(a.state_dir + "/overlays", ec))
            if (Overlay::exists(a.state_dir, e.path().filename().string()))
                names.push_back(e.path().filename().string());
        std::sort(names.begin(), names.end());
        for (const std::string& n : names)
            print_overlay(a, n);
        if (names.empty())
            std::printf("no overlays in %s\n", a.state_dir.c_str());
        return 0;
    }
    if (cmd == "checkpoint" || cmd == "rollback") {
        need(2, "NAME CHECKPOINT");
        const OverlayPtr o = open_overlay(a, a.words[1], true);
        if (cmd == "checkpoint")
            o->layer(a.layer).checkpoint(a.words[2]);
        else
            o->layer(a.layer).rollback(a.words[2]);
        return 0;
    }
    if (cmd == "discard") {
        need(1, "NAME");
        const OverlayPtr o = open_overlay(a, a.words[1], true);
        if (a.all) {
            for (const auto& l : o->layers())
                l->discard();
        } else {
            o->layer(a.layer).discard();
        }
        return 0;
    }
    if (cmd == "export") {
        need(2, "NAME FILE.qcow2");
        const OverlayPtr o = open_overlay(a, a.words[1], false);
        const BackingFile backing =
            backing_file_of(Overlay::recorded_source(a.state_dir, a.words[1]), o->source());
        const auto s = export_qcow2(*o, a.layer, backing, a.words[2]);
        std::printf("%s: %s of changes in a %s qcow2 file backed by %s (%s)\n", a.words[2].c_str(),
                    human_size(s.changed_bytes).c_str(), human_size(s.file_bytes).c_str(),
                    backing.file.c_str(), backing.format.c_str());
        return 0;
    }
    throw UsageError("unknown command '" + cmd + "'");
}

} // namespace

int main(int argc, char** argv) {
    enum { opt_state_dir = 256, opt_snapshot_dir, opt_layer, opt_all, opt_log_level };
    static const struct option options[] = {
        {"state-dir", required_argument, nullptr, opt_state_dir},
        {"snapshot-dir", required_argument, nullptr, opt_snapshot_dir},
        {"layer", required_argument, nullptr, opt_layer},
        {"all", no_argument, nullptr, opt_all},
        {"log-level", required_argument, nullptr, opt_log_level},
        {"help", no_argument, nullptr, 'h'},
        {nullptr, 0, nullptr, 0},
    };
    Args a;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", options, nullptr)) != -1) {
        switch (c) {
        case opt_state_dir:
            a.state_dir = optarg;
            break;
        case opt_snapshot_dir:
            a.snapshot_dir = optarg;
            break;
        case opt_layer:
            a.layer = optarg;
            break;
        case opt_all:
            a.all = true;
            break;
        case opt_log_level:
            a.log_level = optarg;
            break;
        case 'h':
            std::fputs(usage, stdout);
            return 0;
        default:
            std::fprintf(stderr, "p2vfs-overlay: error: unknown option %s (see --help)\n",
                         argv[optind - 1]);
            return 2;
        }
    }
    while (optind < argc)
        a.words.push_back(argv[optind++]);
    try {
        setup_logging("p2vfs-overlay", a.log_level);
        if (a.layer != fixups_layer && a.layer != user_layer)
            throw UsageError("--layer " + a.layer + ": expected fixups or user");
        return run(a);
    } catch (const UsageError& e) {
        std::fprintf(stderr, "p2vfs-overlay: error: %s (see --help)\n", e.what());
        return 2;
    } catch (const InvalidArgument& e) {
        std::fprintf(stderr, "p2vfs-overlay: error: %s\n", e.what());
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "p2vfs-overlay: error: %s\n", e.what());
        return 1;
    }
}
