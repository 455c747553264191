#include "daemon/command_line.h"

#include "common/error.h"
#include "formats/format.h"

#include <getopt.h>
#include <set>

namespace p2vfs {
namespace {

bool valid_folder_name(const std::string& s) {
    if (s.empty() || s == "." || s == ".." || s.size() > 200)
        return false;
    for (char c : s)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
            return false;
    return true;
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
           "\n"
           "Shows each source disk as virtual disk files in DIR/NAME/, converted lazily.\n"
           "\n"
           "  -m, --mount DIR            where to mount (an empty directory)\n"
           "  -s, --source NAME=SPEC     a disk image file or block device, shown in DIR/NAME\n"
           "  -o, --option FMT.KEY=VAL   a format option, e.g. vmdk.adapter=lsilogic\n"
           "      --direct               read sources with O_DIRECT (bypass the page cache)\n"
           "      --no-splice            copy reads through memory instead of splicing\n"
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
        opt_threads,
        opt_log_level,
        opt_fuse_debug,
        opt_version
    };
    static const struct option long_options[] = {
        {"mount", required_argument, nullptr, 'm'},
        {"source", required_argument, nullptr, 's'},
        {"option", required_argument, nullptr, 'o'},
        {"direct", no_argument, nullptr, opt_direct},
        {"no-splice", no_argument, nullptr, opt_no_splice},
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
        case opt_direct:
            a.direct = true;
            break;
        case opt_no_splice:
            a.splice = false;
            break;
        case opt_threads: {
            char* end = nullptr;
            const unsigned long n = std::strtoul(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || n < 1 || n > 256)
                throw InvalidArgument(std::string("--threads ") + optarg +
                                      ": expected a number from 1 to 256");
            a.threads = static_cast<unsigned>(n);
            break;
        }
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
    if (a.sources.empty())
        throw InvalidArgument("at least one --source NAME=SPEC is required");
    return a;
}

} // namespace p2vfs
