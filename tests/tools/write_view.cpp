// write_view: writes the files of one view of a source image to a directory,
// without a FUSE mount. Tests use it for views the mount cannot serve yet,
// and to look at a view's bytes with tools that want a plain file.
//
//   write_view FORMAT SOURCE OUTDIR [KEY=VALUE...]
//
// Every file of the view (a VMDK flat pair has two) is written to OUTDIR
// under its own name; holes of the view stay holes in the file. A view that
// must be prepared first (a stream-optimized VMDK) is prepared, with progress
// on stderr. Exit status: 0 done, 1 failure (one line on stderr), 2 usage.
#include "block/copy_to_file.h"
#include "block/open_source.h"
#include "common/error.h"
#include "formats/format.h"
#include "formats/prepared_view.h"

#include <cstdio>
#include <map>
#include <string>

int main(int argc, char** argv) {
    using namespace p2vfs;
    if (argc < 4) {
        std::fprintf(stderr, "usage: write_view FORMAT SOURCE OUTDIR [KEY=VALUE...]\n");
        return 2;
    }
    const Format* format = find_format(argv[1]);
    if (!format) {
        std::fprintf(stderr, "write_view: no format named '%s'\n", argv[1]);
        return 2;
    }
    std::map<std::string, std::string> options;
    for (int i = 4; i < argc; ++i) {
        const std::string kv = argv[i];
        const auto eq = kv.find('=');
        if (eq == std::string::npos || eq == 0) {
            std::fprintf(stderr, "write_view: expected KEY=VALUE, got '%s'\n", argv[i]);
            return 2;
        }
        options[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    try {
        const DevicePtr source = open_source(argv[2], SourceOptions{});
        for (ViewFile& file : make_view_files(*format, source, options)) {
            int last_percent = -10;
            const DevicePtr dev = prepared(file.device, [&](uint64_t done, uint64_t total) {
                const int percent = total ? static_cast<int>(done * 100 / total) : 100;
                if (percent / 10 != last_percent / 10)
                    std::fprintf(stderr, "write_view: %s: prepared %d%%\n", file.name.c_str(),
                                 percent);
                last_percent = percent;
            });
            copy_to_file(*dev, std::string(argv[3]) + "/" + file.name);
        }
    } catch (const Error& e) {
        std::fprintf(stderr, "write_view: %s\n", e.what());
        return 1;
    }
    return 0;
}
