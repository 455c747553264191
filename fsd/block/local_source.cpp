#include "block/local_source.h"

#include "common/error.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <memory>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace p2vfs {
namespace {

std::string canonical_path(const std::string& path) {
    std::unique_ptr<char, decltype(&std::free)> p(::realpath(path.c_str(), nullptr), &std::free);
    return p ? std::string(p.get()) : path;
}

} // namespace

LocalSource::LocalSource(const std::string& path, LocalSourceOptions opts)
    : path_(path), direct_(opts.direct) {
    if (path.empty())
        throw InvalidArgument("source path is empty");
    // Checked before open(): opening a FIFO would block, and a directory
    // deserves a better message than EISDIR from read().
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
        throw Error(path + ": " + errno_text(errno), errno);
    if (S_ISDIR(st.st_mode))
        throw Error(path + ": is a directory, not a disk image or block device", EISDIR);
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        throw Error(path + ": not a regular file or block device", EINVAL);

    int flags = O_RDONLY | O_CLOEXEC | O_NOCTTY;
    if (direct_)
        flags |= O_DIRECT;
    fd_ = ::open(path.c_str(), flags);
    if (fd_ < 0) {
        const int err = errno;
        if (err == EINVAL && direct_)
            throw Error(path + ": O_DIRECT is not supported by this file system", err);
        throw Error(path + ": cannot open for reading: " + errno_text(err), err);
    }
    canonical_ = canonical_path(path);

    if (::fstat(fd_, &st) != 0) {
        const int err = errno;
        ::close(fd_);
        throw Error(path + ": " + errno_text(err), err);
    }
    block_device_ = S_ISBLK(st.st_mode);
    if (block_device_) {
        uint64_t bytes = 0;
        if (::ioctl(fd_, BLKGETSIZE64, &bytes) != 0) {
            const int err = errno;
            ::close(fd_);
            throw Error(path + ": cannot get block device size: " + errno_text(err), err);
        }
        size_ = bytes;
        int logical = 0;
        if (::ioctl(fd_, BLKSSZGET, &logical) == 0 && logical > 0)
            direct_align_ = std::max<uint32_t>(static_cast<uint32_t>(logical), 512);
    } else {
        size_ = static_cast<uint64_t>(st.st_size);
    }
    if (size_ == 0) {
        ::close(fd_);
        throw Error(path + ": is empty (0 bytes); there is no disk to show", EINVAL);
    }
}

LocalSource::~LocalSource() {
    if (fd_ >= 0)
        ::close(fd_);
}

std::string LocalSource::identity() const {
    return std::string(block_device_ ? "blockdev:" : "file:") + canonical_ +
           "|size=" + std::to_string(size_);
}

void LocalSource::read(void* buf, size_t length, uint64_t offset) {
    if (direct_) {
        read_direct(buf, length, offset);
        return;
    }
    auto* out = static_cast<unsigned char*>(buf);
    size_t done = 0;
    while (done < length) {
        const ssize_t n =
            ::pread(fd_, out + done, length - done, static_cast<off_t>(offset + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            const int err = errno;
            throw Error(path_ + ": read at " + hex(offset + done) + " failed: " + errno_text(err),
                        err);
        }
        if (n == 0)
            throw Error(path_ + ": read at " + hex(offset + done) +
                            " hit end of file: the source shrank below " + std::to_string(size_) +
                            " bytes",
                        EIO);
        done += static_cast<size_t>(n);
    }
}

void LocalSource::read_direct(void* buf, size_t length, uint64_t offset) {
    // O_DIRECT wants aligned offsets, lengths and memory: read the aligned
    // cover of the request into a bounce buffer, copy out the part asked for.
    const uint64_t a = direct_align_;
    const uint64_t start = offset / a * a;
    const uint64_t end =
        std::min<uint64_t>((offset + length + a - 1) / a * a, (size_ + a - 1) / a * a);
    const size_t span = static_cast<size_t>(end - start);
    void* raw = nullptr;
    if (::posix_memalign(&raw, a, span) != 0)
        throw Error(path_ + ": out of memory for a direct read of " + std::to_string(span) +
                        " bytes",
                    ENOMEM);
    std::unique_ptr<void, decltype(&std::free)> bounce(raw, &std::free);
    auto* p = static_cast<unsigned char*>(raw);
    size_t done = 0;
    while (done < span) {
        const ssize_t n = ::pread(fd_, p + done, span - done, static_cast<off_t>(start + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            const int err = errno;
            throw Error(path_ + ": read at " + hex(start + done) + " failed: " + errno_text(err),
                        err);
        }
        if (n == 0)
            break; // the file's last block is partial
        done += static_cast<size_t>(n);
    }
    if (start + done < offset + length)
        throw Error(path_ + ": read at " + hex(start + done) + " hit end of file", EIO);
    std::memcpy(buf, p + (offset - start), length);
}

std::vector<Extent> LocalSource::extents(uint64_t offset, uint64_t length) {
    std::vector<Extent> out;
    if (block_device_) {
        append_extent(out, {offset, length, ExtentType::Data});
        return out;
    }
    if (fiemap_works_.load(std::memory_order_relaxed) && extents_fiemap(offset, length, out))
        return out;
    out.clear();
    extents_seek(offset, length, out);
    return out;
}

bool LocalSource::extents_fiemap(uint64_t offset, uint64_t length, std::vector<Extent>& out) {
    // FIEMAP, not SEEK_DATA, decides allocation where the file system has it:
    // ext4 answers SEEK_DATA over preallocated (unwritten) extents from the
    // page cache, so the same file would give different view layouts
    // depending on who read it last. FIEMAP flags those extents UNWRITTEN
    // whatever is cached; they read as zeros and become Zero extents.
    // FIEMAP_FLAG_SYNC writes back dirty pages first, so data written but
    // not yet on disk is never mistaken for an unwritten (zero) extent.
    constexpr unsigned batch = 256;
    std::vector<unsigned char> mem(sizeof(struct fiemap) + batch * sizeof(struct fiemap_extent));
    auto* fm = reinterpret_cast<struct fiemap*>(mem.data());
    const uint64_t end = offset + length;
    uint64_t pos = offset;
    uint32_t flags = FIEMAP_FLAG_SYNC;
    while (pos < end) {
        const uint64_t batch_start = pos;
        std::memset(mem.data(), 0, mem.size());
        fm->fm_start = pos;
        fm->fm_length = end - pos;
        fm->fm_flags = flags;
        fm->fm_extent_count = batch;
        if (::ioctl(fd_, FS_IOC_FIEMAP, fm) != 0) {
            const int err = errno;
            if (err == EOPNOTSUPP || err == ENOTTY || err == EINVAL) {
                fiemap_works_.store(false, std::memory_order_relaxed);
                return false;
            }
            throw Error(path_ + ": FIEMAP at " + hex(pos) + " failed: " + errno_text(err), err);
        }
        flags = 0; // synced once is enough for this call
        if (fm->fm_mapped_extents == 0)
            break;
        bool last = false;
        for (uint32_t i = 0; i < fm->fm_mapped_extents; ++i) {
            const struct fiemap_extent& fe = fm->fm_extents[i];
            const uint64_t a = std::max<uint64_t>(fe.fe_logical, pos);
            const uint64_t b = std::min<uint64_t>(fe.fe_logical + fe.fe_length, end);
            if (fe.fe_flags & FIEMAP_EXTENT_LAST)
                last = true;
            if (a >= b)
                continue;
            if (a > pos)
                append_extent(out, {pos, a - pos, ExtentType::Hole});
            const bool unwritten =
                (fe.fe_flags & FIEMAP_EXTENT_UNWRITTEN) && !(fe.fe_flags & FIEMAP_EXTENT_DELALLOC);
            append_extent(out, {a, b - a, unwritten ? ExtentType::Zero : ExtentType::Data});
            pos = b;
        }
        if (last)
            break;
        if (pos <= batch_start)
            return false; // no progress: a malformed answer; use SEEK_DATA instead
    }
    // Past the last extent, up to `end`, is a hole.
    if (pos < end)
        append_extent(out, {pos, end - pos, ExtentType::Hole});
    return true;
}

void LocalSource::extents_seek(uint64_t offset, uint64_t length, std::vector<Extent>& out) {
    const uint64_t end = offset + length;
    uint64_t pos = offset;
    while (pos < end) {
        off_t data = ::lseek(fd_, static_cast<off_t>(pos), SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO) { // no data after pos: the rest is a hole
                append_extent(out, {pos, end - pos, ExtentType::Hole});
                break;
            }
            if (errno == EINVAL || errno == EOPNOTSUPP) { // no SEEK_DATA here: all data
                append_extent(out, {pos, end - pos, ExtentType::Data});
                break;
            }
            const int err = errno;
            throw Error(path_ + ": SEEK_DATA at " + hex(pos) + " failed: " + errno_text(err), err);
        }
        const uint64_t d = std::min<uint64_t>(static_cast<uint64_t>(data), end);
        if (d > pos)
            append_extent(out, {pos, d - pos, ExtentType::Hole});
        if (d >= end)
            break;
        off_t hole = ::lseek(fd_, static_cast<off_t>(d), SEEK_HOLE);
        if (hole < 0) {
            const int err = errno;
            throw Error(path_ + ": SEEK_HOLE at " + hex(d) + " failed: " + errno_text(err), err);
        }
        // SEEK_HOLE past d is always > d; anything else is treated as data
        // to the end rather than looping.
        uint64_t h = static_cast<uint64_t>(hole);
        h = h > d ? std::min(h, end) : end;
        append_extent(out, {d, h - d, ExtentType::Data});
        pos = h;
    }
}

std::optional<FdSpan> LocalSource::fd_span(uint64_t offset, size_t) {
    if (direct_)
        return std::nullopt; // splice would go through the page cache
    return FdSpan{fd_, offset};
}

} // namespace p2vfs
