#include "block/copy_to_file.h"

#include "common/error.h"
#include "common/file_io.h"

#include <algorithm>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <unistd.h>
#include <vector>

namespace p2vfs {

void copy_to_file(BlockDevice& dev, const std::string& path,
                  const std::function<void(uint64_t, uint64_t)>& progress) {
    const std::string part = path + ".part";
    UniqueFd fd = open_file(part, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    try {
        std::vector<unsigned char> buf(1 << 20);
        const uint64_t size = dev.size();
        for (const Extent& e : dev.extents(0, size)) {
            if (e.type != ExtentType::Hole) {
                for (uint64_t at = e.offset; at < e.offset + e.length;) {
                    const size_t n = static_cast<size_t>(
                        std::min<uint64_t>(buf.size(), e.offset + e.length - at));
                    dev.read(buf.data(), n, at);
                    pwrite_full(fd.get(), buf.data(), n, at, part);
                    at += n;
                    if (progress)
                        progress(at, size);
                }
            }
            if (progress)
                progress(e.offset + e.length, size);
        }
        if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0)
            throw Error(part + ": cannot set the size: " + errno_text(errno), errno);
        if (::fsync(fd.get()) != 0)
            throw Error(part + ": sync failed: " + errno_text(errno), errno);
        fd.reset();
        if (::rename(part.c_str(), path.c_str()) != 0)
            throw Error(path + ": cannot rename " + part + " to it: " + errno_text(errno), errno);
    } catch (...) {
        fd.reset();
        ::unlink(part.c_str());
        throw;
    }
    const std::string dir = std::filesystem::path(path).parent_path().string();
    sync_directory(dir.empty() ? "." : dir);
}

} // namespace p2vfs
