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
#include "block/open_source.h"
#include "common/error.h"
#include "formats/format.h"
#include "formats/prepared_view.h"

#include <cerrno>
#include <cstdio>
#include <fcntl.h>
#include <map>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

using namespace p2vfs;

void write_all(int fd, const unsigned char* p, size_t n, uint64_t offset, const std::string& path) {
    while (n > 0) {
        const ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(offset));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            throw Error(path + ": write at " + hex(offset) + " failed: " + errno_text(errno));
        p += w;
        n -= static_cast<size_t>(w);
        offset += static_cast<uint64_t>(w);
    }
}

void write_file(BlockDevice& dev, const std::string& path) {
    const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0)
        throw Error(path + ": " + errno_text(errno));
    std::vector<unsigned char> buf(1 << 20);
    try {
        for (const Extent& e : dev.extents(0, dev.size())) {
            if (e.type == ExtentType::Hole)
                continue; // left unwritten: a hole in the file too
            for (uint64_t at = e.offset; at < e.offset + e.length;) {
                const size_t n =
                    static_cast<size_t>(std::min<uint64_t>(buf.size(), e.offset + e.length - at));
                dev.read(buf.data(), n, at);
                write_all(fd, buf.data(), n, at, path);
                at += n;
            }
        }
        if (::ftruncate(fd, static_cast<off_t>(dev.size())) != 0)
            throw Error(path + ": truncate failed: " + errno_text(errno));
    } catch (...) {
        ::close(fd);
        throw;
    }
    if (::close(fd) != 0)
        throw Error(path + ": close failed: " + errno_text(errno));
}

} // namespace

int main(int argc, char** argv) {
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
            write_file(*dev, std::string(argv[3]) + "/" + file.name);
        }
    } catch (const Error& e) {
        std::fprintf(stderr, "write_view: %s\n", e.what());
        return 1;
    }
    return 0;
}
