#include "daemon/command_line.h"

#include "common/error.h"
#include "formats/format.h"

#include <getopt.h>
#include <set>

namespace p2vfs {
namespace {

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    size_t start = 0;
    while (true) {
        const size_t at = s.find(sep, start);
        out.push_back(s.substr(start, at - start));
        if (at == std::string::npos)
            return out;
        start = at + 1;
    }
}

bool valid_folder_name(const std::string& s) {
    if (s.empty() || s == "." || s == ".." || s.size() > 200)
        return false;
    for (char c : s)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
            return false;
    return true;
}

unsigned long number_arg(const char* option, const char* value, unsigned long min,
                         unsigned long max) {
    char* end = nullptr;
    errno = 0;
    const unsigned long n = std::strtoul(value, &end, 10);
    if (*value == '\0' || *value == '-' || *end != '\0' || errno || n < min || n > max)
        throw InvalidArgument(std::string(option) + " " + value + ": expected a number from " +
                              std::to_string(min) + " to " + std::to_string(max));
    return n;
}

} // namespace

std::string usage_text() {
    std::string formats;
    for (const Format* f : format_table()) {
        formats += "  " + std::string(f->name) + " (" + std::string(f->file_name) +
                   "): " + std::string(f->description) + "\n";
        for (const FormatOption& o : f->options)
            formats += "      " + std::string(f->name) + "." + std::string(o.name) + "=" +
                       std::string(o.default_value) + "  " + std::string(o.help) + "\n";
    }
    return "Usage: p2vfsd --mount DIR --source NAME=SPEC [--source NAME=SPEC ...] [OPTIONS]\n"
           "       p2vfsd --mount DIR --bus BUS [--source NAME=SPEC ...] [OPTIONS]\n"
           "\n"
           "Shows each source disk as virtual disk files in DIR/NAME/, converted lazily.\n"
           "With --bus, serves the org.p2vfs1 D-Bus API too (p2vctl): sources added over\n"
           "it and materialization jobs persist in the state directory and come back at\n"
           "the next start.\n"
           "\n"
           "  -m, --mount DIR            where to mount (an empty directory)\n"
           "  -s, --source NAME=SPEC     a source disk, shown in DIR/NAME. SPEC is one of:\n"
           "                               a raw image file or block device;\n"
           "                               a qcow2, VMDK, VHD, VHDX or VDI image (its backing\n"
           "                               chain included), read through qemu-nbd;\n"
           "                               FORMAT:PATH to name the image format (raw, qcow2,\n"
           "                               vmdk, vpc, vhdx, vdi) instead of probing it;\n"
           "                               an NBD URI: nbd://HOST[:PORT]/EXPORT, nbds://...,\n"
           "                               nbd+unix:///EXPORT?socket=PATH, with TLS as\n"
           "                               ?tls-psk-file=FILE or ?tls-certificates=DIR;\n"
           "                               snapshot:PATH (or snapshot:FORMAT:PATH): a\n"
           "                               reflink copy of the image file, taken once and\n"
           "                               kept in --snapshot-dir\n"
           "  -o, --option FMT.KEY=VAL   a format option for every source, e.g.\n"
           "                             vmdk.adapter=lsilogic\n"
           "      --views FMT,FMT...     formats every source shows (default: all; 'none')\n"
           "      --view NAME/FILE=FMT[,KEY=VAL...]\n"
           "                             one more view file of source NAME with its own\n"
           "                             options, e.g. pc1/azure.vhd=vhd-fixed,round=mib\n"
           "      --state-dir DIR        where overlays and snapshots persist (default\n"
           "                             /var/lib/p2vfs)\n"
           "      --writable NAME[:LAYER]\n"
           "                             disk.raw of source NAME takes writes: into the user\n"
           "                             layer of its overlay (or LAYER: fixups), never into\n"
           "                             the source\n"
           "      --snapshot-dir DIR     where snapshot sources keep their copies (default\n"
           "                             STATE-DIR/snapshots, on the origin's file system)\n"
           "      --bus BUS              serve the D-Bus API on BUS: system, session or a\n"
           "                             D-Bus address (unix:path=/run/x); the name is\n"
           "                             org.p2vfs1\n"
           "      --control-group GROUP  members of GROUP may call methods, as root may\n"
           "                             (default p2vfs); others may only read\n"
           "      --direct               read sources with O_DIRECT (bypass the page cache)\n"
           "      --nbd-connections N    connections per NBD source when the server allows\n"
           "                             multi-conn (default 4)\n"
           "      --retry-timeout SECS   how long reads wait for a lost NBD server to come\n"
           "                             back before failing (default 60)\n"
           "      --cache-size SIZE      read cache of each NBD source, lz4-compressed bytes\n"
           "                             (default 256M; 0: none)\n"
           "      --readahead SIZE       largest readahead window of that cache (default 32M)\n"
           "      --splice               splice reads that map to one source range instead\n"
           "                             of copying them (no faster here, more memory)\n"
           "      --no-splice            copy reads through memory (the default)\n"
           "      --threads N            FUSE worker threads (default 8)\n"
           "      --log-level LEVEL      trace, debug, info (default), warn, error\n"
           "      --fuse-debug           print every FUSE request\n"
           "  -h, --help                 this text\n"
           "      --version              the version\n"
           "\n"
           "Formats and their options (defaults shown):\n" +
           formats +
           "\n"
           "Exit status: 0 unmounted cleanly, 1 runtime failure, 2 bad command line or option,\n"
           "3 a source cannot be used, 4 the mount point cannot be used.\n";
}

DaemonArgs parse_command_line(int argc, char** argv) {
    enum {
        opt_direct = 256,
        opt_no_splice,
        opt_splice,
        opt_threads,
        opt_log_level,
        opt_fuse_debug,
        opt_version,
        opt_views,
        opt_view,
        opt_nbd_connections,
        opt_retry_timeout,
        opt_cache_size,
        opt_readahead,
        opt_state_dir,
        opt_writable,
        opt_snapshot_dir,
        opt_bus,
        opt_control_group
    };
    static const struct option long_options[] = {
        {"mount", required_argument, nullptr, 'm'},
        {"source", required_argument, nullptr, 's'},
        {"option", required_argument, nullptr, 'o'},
        {"views", required_argument, nullptr, opt_views},
        {"view", required_argument, nullptr, opt_view},
        {"state-dir", required_argument, nullptr, opt_state_dir},
        {"writable", required_argument, nullptr, opt_writable},
        {"snapshot-dir", required_argument, nullptr, opt_snapshot_dir},
        {"bus", required_argument, nullptr, opt_bus},
        {"control-group", required_argument, nullptr, opt_control_group},
        {"direct", no_argument, nullptr, opt_direct},
        {"nbd-connections", required_argument, nullptr, opt_nbd_connections},
        {"retry-timeout", required_argument, nullptr, opt_retry_timeout},
        {"cache-size", required_argument, nullptr, opt_cache_size},
        {"readahead", required_argument, nullptr, opt_readahead},
        {"no-splice", no_argument, nullptr, opt_no_splice},
        {"splice", no_argument, nullptr, opt_splice},
        {"threads", required_argument, nullptr, opt_threads},
        {"log-level", required_argument, nullptr, opt_log_level},
        {"fuse-debug", no_argument, nullptr, opt_fuse_debug},
        {"help", no_argument, nullptr, 'h'},
        {"version", no_argument, nullptr, opt_version},
        {nullptr, 0, nullptr, 0},
    };
    DaemonArgs a;
    std::set<std::string> names;
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, ":m:s:o:h", long_options, nullptr)) != -1) {
        switch (c) {
        case 'm':
            a.mount_point = optarg;
            break;
        case 's': {
            const std::string v = optarg;
            const auto eq = v.find('=');
            if (eq == std::string::npos || eq == 0 || eq + 1 == v.size())
                throw InvalidArgument("--source " + v + ": expected NAME=SPEC");
            SourceArg s{v.substr(0, eq), v.substr(eq + 1)};
            if (!valid_folder_name(s.name))
                throw InvalidArgument("--source " + v +
                                      ": NAME may hold only letters, digits, "
                                      "'.', '_' and '-'");
            if (!names.insert(s.name).second)
                throw InvalidArgument("--source " + v + ": NAME '" + s.name + "' given twice");
            a.sources.push_back(std::move(s));
            break;
        }
        case 'o': {
            const std::string v = optarg;
            const auto dot = v.find('.');
            const auto eq = v.find('=');
            if (dot == std::string::npos || eq == std::string::npos || dot > eq || dot == 0 ||
                dot + 1 == eq)
                throw InvalidArgument("--option " + v + ": expected FORMAT.KEY=VALUE");
            const std::string format = v.substr(0, dot);
            if (!find_format(format))
                throw InvalidArgument("--option " + v + ": no format named '" + format + "'");
            a.format_options[format][v.substr(dot + 1, eq - dot - 1)] = v.substr(eq + 1);
            break;
        }
        case opt_views: {
            a.default_formats_given = true;
            a.default_formats.clear();
            const std::string v = optarg;
            if (v == "none")
                break;
            for (const std::string& f : split(v, ',')) {
                if (!find_format(f))
                    throw InvalidArgument("--views " + v + ": no format named '" + f + "'");
                a.default_formats.push_back(f);
            }
            break;
        }
        case opt_view: {
            // NAME/FILE=FORMAT[,KEY=VALUE...]
            const std::string v = optarg;
            const auto slash = v.find('/');
            const auto eq = v.find('=');
            if (slash == std::string::npos || eq == std::string::npos || slash > eq)
                throw InvalidArgument("--view " + v + ": expected NAME/FILE=FORMAT[,KEY=VALUE...]");
            ViewArg view{v.substr(0, slash), v.substr(slash + 1, eq - slash - 1), {}, {}};
            const auto parts = split(v.substr(eq + 1), ',');
            view.format = parts[0];
            if (!find_format(view.format))
                throw InvalidArgument("--view " + v + ": no format named '" + view.format + "'");
            if (!valid_folder_name(view.file))
                throw InvalidArgument("--view " + v +
                                      ": FILE may hold only letters, digits, '.', "
                                      "'_' and '-'");
            for (size_t i = 1; i < parts.size(); ++i) {
                const auto kv = parts[i].find('=');
                if (kv == std::string::npos || kv == 0)
                    throw InvalidArgument("--view " + v + ": expected KEY=VALUE, got '" + parts[i] +
                                          "'");
                view.options[parts[i].substr(0, kv)] = parts[i].substr(kv + 1);
            }
            a.views.push_back(std::move(view));
            break;
        }
        case opt_state_dir:
            if (*optarg == '\0')
                throw InvalidArgument("--state-dir: expected a directory");
            a.state_dir = optarg;
            break;
        case opt_writable: {
            // NAME or NAME:LAYER
            const std::string v = optarg;
            const auto colon = v.find(':');
            const std::string layer = colon == std::string::npos ? "user" : v.substr(colon + 1);
            if (layer != "user" && layer != "fixups")
                throw InvalidArgument("--writable " + v + ": LAYER is user or fixups");
            a.writable[v.substr(0, colon)] = layer;
            break;
        }
        case opt_snapshot_dir:
            if (*optarg == '\0')
                throw InvalidArgument("--snapshot-dir: expected a directory");
            a.source_options.snapshot_dir = optarg;
            break;
        case opt_bus:
            if (*optarg == '\0')
                throw InvalidArgument("--bus: expected system, session or a D-Bus address");
            a.bus = optarg;
            break;
        case opt_control_group:
            a.control_group = optarg;
            break;
        case opt_direct:
            a.source_options.direct = true;
            break;
        case opt_nbd_connections:
            a.source_options.nbd.connections =
                static_cast<unsigned>(number_arg("--nbd-connections", optarg, 1, 16));
            break;
        case opt_retry_timeout:
            a.source_options.nbd.retry_timeout =
                std::chrono::seconds(number_arg("--retry-timeout", optarg, 0, 86400));
            break;
        case opt_cache_size:
            a.source_options.cache.capacity = parse_size(optarg, "--cache-size");
            break;
        case opt_readahead:
            a.source_options.cache.readahead_max = parse_size(optarg, "--readahead");
            break;
        case opt_no_splice:
            a.splice = false;
            break;
        case opt_splice:
            a.splice = true;
            break;
        case opt_threads:
            a.threads = static_cast<unsigned>(number_arg("--threads", optarg, 1, 256));
            break;
        case opt_log_level:
            a.log_level = optarg;
            break;
        case opt_fuse_debug:
            a.fuse_debug = true;
            break;
        case 'h':
            a.help = true;
            return a;
        case opt_version:
            a.version = true;
            return a;
        case ':':
            throw InvalidArgument(std::string("option ") + argv[optind - 1] + " needs a value");
        default:
            throw InvalidArgument(std::string("unknown option ") + argv[optind - 1]);
        }
    }
    if (optind < argc)
        throw InvalidArgument(std::string("unexpected argument '") + argv[optind] + "'");
    if (a.mount_point.empty())
        throw InvalidArgument("--mount DIR is required");
    if (a.sources.empty() && a.bus.empty())
        throw InvalidArgument("at least one --source NAME=SPEC is required (or --bus, to take "
                              "sources over D-Bus)");
    if (a.source_options.snapshot_dir.empty())
        a.source_options.snapshot_dir = a.state_dir + "/snapshots";
    validate(a.source_options);
    for (const auto& [w, layer] : a.writable)
        if (!names.count(w))
            throw InvalidArgument("--writable " + w + ": no --source named '" + w + "'");
    for (const ViewArg& v : a.views)
        if (!names.count(v.source))
            throw InvalidArgument("--view " + v.source + "/" + v.file + ": no --source named '" +
                                  v.source + "'");
    return a;
}

} // namespace p2vfs
