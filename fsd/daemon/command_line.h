// p2vfsd's command line.
#pragma once

#include "block/open_source.h"

#include <map>
#include <set>
#include <string>
#include <vector>

namespace p2vfs {

struct SourceArg {
    std::string name; // folder name in the mount
    std::string spec; // a path, FORMAT:PATH, snapshot:PATH, or an NBD URI
};

// A view file asked for with --view NAME/FILE=FORMAT[,KEY=VALUE...].
struct ViewArg {
    std::string source; // folder name
    std::string file;   // file name in the folder
    std::string format;
    std::map<std::string, std::string> options;
};

struct DaemonArgs {
    std::string mount_point;
    std::vector<SourceArg> sources;
    // format name -> option -> value, from --option FORMAT.KEY=VALUE
    std::map<std::string, std::map<std::string, std::string>> format_options;
    // Formats every source shows under their default file names (--views);
    // empty: all formats.
    std::vector<std::string> default_formats;
    bool default_formats_given = false;
    std::vector<ViewArg> views;   // extra views (--view)
    SourceOptions source_options; // --direct, --nbd-*, --cache-*, --readahead, --snapshot-dir
    // Where overlays (and, unless --snapshot-dir says otherwise, snapshots)
    // persist between runs.
    std::string state_dir = "/var/lib/p2vfs";
    // Sources whose disk.raw takes writes -> the overlay layer they go to
    // (user, or fixups for repair and tests).
    std::map<std::string, std::string> writable;
    // D-Bus: "system", "session" or an address; empty: no D-Bus API.
    std::string bus;
    std::string control_group = "p2vfs";
    // Copying is the default: at 1 MiB requests splicing measured no faster
    // (0.97-1.02x, tools/bench) and held ~40 MiB more resident memory.
    bool splice = false;
    unsigned threads = 8;
    std::string log_level = "info";
    bool fuse_debug = false;
    bool help = false;
    bool version = false;
};

// Throws InvalidArgument with a one-line message on a bad command line.
DaemonArgs parse_command_line(int argc, char** argv);
std::string usage_text();

} // namespace p2vfs
