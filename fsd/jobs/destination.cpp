#include "jobs/destination.h"

#include "common/error.h"
#include "common/file_io.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <libnbd.h>
#include <linux/openat2.h>
#include <mutex>
#include <spdlog/spdlog.h>
#include <stdio.h> // renameat2, RENAME_NOREPLACE
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <vector>

namespace p2vfs {
void Destination::write_zeros_as_data(unsigned worker, uint64_t offset, uint64_t length) {
    static const std::vector<unsigned char> zeros(1u << 20, 0);
    for (uint64_t at = offset; at < offset + length;) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), offset + length - at));
        write(worker, zeros.data(), n, at);
        at += n;
    }
}

namespace {

constexpr uint64_t page = 4096;

std::string base_name(const std::string& path) {
    return std::filesystem::path(path).filename().string();
}

class FileDestination : public Destination {
public:
    FileDestination(std::string destination, uint64_t size, bool keep_content, int64_t uid,
                    int64_t gid)
        : destination_(std::move(destination)), part_(partial_path(destination_)),
          base_(base_name(destination_)), fresh_(!keep_content) {
        // Everything happens relative to the directory opened once: a
        // directory swapped for a symlink later cannot move the copy.
        const bool for_caller = uid >= 0 || gid >= 0;
        dir_ = open_destination_directory(destination_, for_caller);
        // O_NOFOLLOW: a symlink planted at DEST.part is not written through;
        // one link only: nor is a hard link to someone else's file.
        const int fd = ::openat(dir_.get(), (base_ + ".part").c_str(),
                                O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0) {
            const int err = errno;
            throw Error(part_ + ": cannot open: " +
                            (err == ELOOP ? std::string("it is a symlink") : errno_text(err)),
                        err);
        }
        fd_ = UniqueFd(fd);
        struct stat st;
        if (::fstat(fd_.get(), &st) != 0)
            throw Error(part_ + ": cannot stat: " + errno_text(errno), errno);
        if (!S_ISREG(st.st_mode))
            throw Error(part_ + ": not a regular file", EINVAL);
        if (st.st_nlink != 1)
            throw Error(part_ + ": has " + std::to_string(st.st_nlink) +
                            " links; a partial copy must have one",
                        EINVAL);
        if (!keep_content && ::ftruncate(fd_.get(), 0) != 0)
            throw Error(part_ + ": cannot truncate: " + errno_text(errno), errno);
        if ((uid >= 0 || gid >= 0) &&
            ::fchown(fd_.get(), static_cast<uid_t>(uid), static_cast<gid_t>(gid)) != 0) {
            const int err = errno;
            throw Error(part_ + ": cannot give it to uid " + std::to_string(uid) + ": " +
                            errno_text(err),
                        err);
        }
        if (::ftruncate(fd_.get(), static_cast<off_t>(size)) != 0) {
            const int err = errno;
            throw Error(part_ + ": cannot set the size to " + std::to_string(size) +
                            " bytes: " + errno_text(err),
                        err);
        }
    }

    std::string name() const override { return part_; }
    uint64_t granularity() const override { return page; }

    void write(unsigned, const void* buf, size_t length, uint64_t offset) override {
        pwrite_full(fd_.get(), buf, length, offset, part_);
    }

    void write_zeros(unsigned worker, uint64_t offset, uint64_t length) override {
        // A file this run created or truncated is one hole except where this
        // run wrote data, and this run writes each range once.
        if (fresh_)
            return;
        if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        static_cast<off_t>(offset), static_cast<off_t>(length)) == 0)
            return;
        const int err = errno;
        if (err != EOPNOTSUPP && err != ENOSYS) {
            throw Error(part_ + ": cannot punch a hole of " + std::to_string(length) +
                            " bytes at " + hex(offset) + ": " + errno_text(err),
                        err);
        }
        write_zeros_as_data(worker, offset, length); // no hole punching here
    }

    void read(unsigned, void* buf, size_t length, uint64_t offset) override {
        // A range that is one hole reads as zeros without reading: the
        // file system says so (and verification of a sparse copy is then
        // about as fast as its data).
        const off_t data = ::lseek(fd_.get(), static_cast<off_t>(offset), SEEK_DATA);
        if ((data < 0 && errno == ENXIO) ||
            (data >= 0 && static_cast<uint64_t>(data) >= offset + length)) {
            if (offset + length > file_size())
                throw Error(part_ + ": read of " + std::to_string(length) + " bytes at " +
                                hex(offset) + " goes past its end: the file is shorter than the copy",
                            EIO);
            std::memset(buf, 0, length);
            return;
        }
        if (read_direct(buf, length, offset))
            return;
        // The pages were synced, so they are clean: dropping them makes the
        // read come from the storage, not from what this process just wrote.
        (void)::posix_fadvise(fd_.get(), static_cast<off_t>(offset), static_cast<off_t>(length),
                              POSIX_FADV_DONTNEED);
        const size_t n = pread_full(fd_.get(), buf, length, offset, part_);
        if (n != length)
            throw Error(part_ + ": read of " + std::to_string(length) + " bytes at " + hex(offset) +
                            " ended after " + std::to_string(n) +
                            " bytes: the file is shorter than the copy",
                        EIO);
    }

    void sync() override { sync_data(fd_.get(), part_); }

    uint64_t file_size() const {
        struct stat st {};
        if (::fstat(fd_.get(), &st) != 0)
            throw Error(part_ + ": cannot stat: " + errno_text(errno), errno);
        return static_cast<uint64_t>(st.st_size);
    }

    // Reads from the storage with O_DIRECT (no page cache filled or
    // dropped) into an aligned buffer. False where the file system or the
    // range does not allow it: the caller reads the ordinary way.
    bool read_direct(void* buf, size_t length, uint64_t offset) {
        constexpr size_t align = 4096;
        if (offset % align != 0)
            return false;
        {
            std::lock_guard<std::mutex> lock(direct_mutex_);
            if (!direct_tried_) {
                direct_tried_ = true;
                const int fd = ::openat(dir_.get(), (base_ + ".part").c_str(),
                                        O_RDONLY | O_DIRECT | O_NOFOLLOW | O_CLOEXEC);
                if (fd >= 0)
                    direct_fd_ = UniqueFd(fd);
            }
        }
        if (!direct_fd_)
            return false;
        const size_t rounded = (length + align - 1) / align * align;
        struct Free {
            void operator()(void* p) const { std::free(p); }
        };
        thread_local std::unique_ptr<void, Free> bounce;
        thread_local size_t bounce_size = 0;
        if (bounce_size < rounded) {
            void* p = nullptr;
            if (::posix_memalign(&p, align, rounded) != 0)
                return false;
            bounce.reset(p);
            bounce_size = rounded;
        }
        size_t done = 0;
        while (done < rounded) {
            const ssize_t n = ::pread(direct_fd_.get(), static_cast<char*>(bounce.get()) + done,
                                      rounded - done, static_cast<off_t>(offset + done));
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EINVAL && done == 0)
                    return false; // alignment the device will not take
                throw Error(part_ + ": read of " + std::to_string(length) + " bytes at " +
                                hex(offset) + ": " + errno_text(errno),
                            errno);
            }
            if (n == 0)
                break;
            done += static_cast<size_t>(n);
        }
        if (done < length)
            throw Error(part_ + ": read of " + std::to_string(length) + " bytes at " + hex(offset) +
                            " ended after " + std::to_string(done) +
                            " bytes: the file is shorter than the copy",
                        EIO);
        std::memcpy(buf, bounce.get(), length);
        return true;
    }

    void commit() override {
        sync_data(fd_.get(), part_);
        // RENAME_NOREPLACE: a DEST made by someone else while the copy ran is
        // not overwritten. Where the file system lacks it, link + unlink does
        // the same (link never replaces).
        const std::string part_name = base_ + ".part";
        if (::renameat2(dir_.get(), part_name.c_str(), dir_.get(), base_.c_str(),
                        RENAME_NOREPLACE) != 0) {
            int err = errno;
            if (err == EINVAL || err == ENOSYS) {
                if (::linkat(dir_.get(), part_name.c_str(), dir_.get(), base_.c_str(), 0) == 0) {
                    ::unlinkat(dir_.get(), part_name.c_str(), 0);
                    err = 0;
                } else {
                    err = errno;
                }
            }
            if (err == EEXIST) {
                const std::string why = ": exists already (made while the copy ran); the copy "
                                        "stays in ";
                throw Error(destination_ + why + part_, err);
            }
            if (err != 0)
                throw Error(
                    destination_ + ": cannot rename " + part_ + " to it: " + errno_text(err), err);
        }
        fd_.reset();
        const int d = ::openat(dir_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (d < 0 || ::fsync(d) != 0) {
            const int err = errno;
            if (d >= 0)
                ::close(d);
            throw Error(destination_ + ": cannot sync its directory: " + errno_text(err), err);
        }
        ::close(d);
    }

private:
    std::string destination_;
    std::string part_;
    std::string base_;
    bool fresh_;
    UniqueFd dir_;
    UniqueFd fd_;
    std::mutex direct_mutex_;
    bool direct_tried_ = false;
    UniqueFd direct_fd_; // for verification reads; opened on the first one
};

std::string nbd_error_text() {
    const char* e = nbd_get_error();
    return e && *e ? e : "unknown libnbd error";
}

int nbd_errno_or(int fallback) {
    const int err = nbd_get_errno();
    return err ? err : fallback;
}

class NbdDestination : public Destination {
public:
    NbdDestination(std::string uri, uint64_t size, unsigned connections) : uri_(std::move(uri)) {
        for (unsigned i = 0; i < std::max(connections, 1u); ++i)
            handles_.list.push_back(connect(i));
        nbd_handle* h = handles_.list.front();
        if (nbd_is_read_only(h) == 1)
            throw Error("NBD destination " + uri_ + ": the export is read-only", EROFS);
        const int64_t export_size = nbd_get_size(h);
        if (export_size < 0)
            throw Error("NBD destination " + uri_ + ": " + nbd_error_text(), nbd_errno_or(EIO));
        if (static_cast<uint64_t>(export_size) < size)
            throw Error("NBD destination " + uri_ + ": the export holds " +
                            human_size(static_cast<uint64_t>(export_size)) + " (" +
                            std::to_string(export_size) + " bytes), less than the disk's " +
                            std::to_string(size) + " bytes",
                        ENOSPC);
        if (static_cast<uint64_t>(export_size) > size)
            spdlog::warn("NBD destination {}: the export holds {} bytes, more than the disk's "
                         "{}; the rest is left as it is",
                         uri_, export_size, size);
        can_zero_ = nbd_can_zero(h) == 1;
        can_flush_ = nbd_can_flush(h) == 1;
        if (!can_flush_)
            spdlog::warn("NBD destination {}: the server cannot flush; checkpoints trust it to "
                         "keep what it acknowledged",
                         uri_);
        const int64_t min_block = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
        const int64_t max_block = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
        granularity_ =
            std::max<uint64_t>(page, min_block > 0 ? static_cast<uint64_t>(min_block) : 1);
        // The NBD specification's default maximum is 32 MiB.
        max_request_ = std::min<uint64_t>(
            32u << 20, max_block > 0 ? static_cast<uint64_t>(max_block) : 32u << 20);
        max_request_ = std::max<uint64_t>(max_request_ / granularity_ * granularity_, granularity_);
    }

    std::string name() const override { return uri_; }
    uint64_t granularity() const override { return granularity_; }

    void write(unsigned worker, const void* buf, size_t length, uint64_t offset) override {
        nbd_handle* h = handle(worker);
        const auto* p = static_cast<const unsigned char*>(buf);
        for (uint64_t done = 0; done < length;) {
            const size_t n = static_cast<size_t>(std::min<uint64_t>(max_request_, length - done));
            if (nbd_pwrite(h, p + done, n, offset + done, 0) == -1)
                fail("write", n, offset + done);
            done += n;
        }
    }

    void write_zeros(unsigned worker, uint64_t offset, uint64_t length) override {
        nbd_handle* h = handle(worker);
        if (!can_zero_) {
            write_zeros_as_data(worker, offset, length); // write() splits to max_request_
            return;
        }
        // Without LIBNBD_CMD_FLAG_NO_HOLE the server may trim the range.
        // Requests carry 32-bit lengths: a few, aligned, for a long range.
        const uint64_t most = (1ull << 30);
        for (uint64_t at = offset; at < offset + length;) {
            const uint64_t n = std::min(most, offset + length - at);
            if (nbd_zero(h, n, at, 0) == -1)
                fail("write-zeroes", n, at);
            at += n;
        }
    }

    void read(unsigned worker, void* buf, size_t length, uint64_t offset) override {
        nbd_handle* h = handle(worker);
        auto* p = static_cast<unsigned char*>(buf);
        for (uint64_t done = 0; done < length;) {
            const size_t n = static_cast<size_t>(std::min<uint64_t>(max_request_, length - done));
            if (nbd_pread(h, p + done, n, offset + done, 0) == -1)
                fail("read", n, offset + done);
            done += n;
        }
    }

    void sync() override {
        if (!can_flush_)
            return;
        // A flush covers the writes completed on its own connection (across
        // connections only with multi-conn): flush every one.
        for (nbd_handle* h : handles_.list) {
            if (nbd_flush(h, 0) == -1) {
                const std::string message = nbd_error_text();
                throw Error("NBD destination " + uri_ + ": flush failed: " + message,
                            nbd_errno_or(EIO));
            }
        }
    }

    void commit() override {}

private:
    nbd_handle* connect(unsigned index) {
        nbd_handle* h = nbd_create();
        if (!h)
            throw Error("NBD destination " + uri_ + ": " + nbd_error_text());
        const std::string name = "p2vfs-materialize-" + std::to_string(index);
        if (nbd_set_handle_name(h, name.c_str()) == -1 ||
            nbd_set_uri_allow_local_file(h, true) == -1 || nbd_connect_uri(h, uri_.c_str()) == -1) {
            const std::string message = nbd_error_text();
            const int err = nbd_errno_or(EIO);
            nbd_close(h);
            throw Error("NBD destination " + uri_ + ": cannot connect: " + message, err);
        }
        return h;
    }

    nbd_handle* handle(unsigned worker) const {
        return handles_.list[worker % handles_.list.size()];
    }

    [[noreturn]] void fail(const char* what, uint64_t length, uint64_t offset) const {
        const std::string message = nbd_error_text();
        const int err = nbd_errno_or(EIO);
        throw Error("NBD destination " + uri_ + ": " + what + " of " + std::to_string(length) +
                        " bytes at " + hex(offset) + " failed: " + message,
                    err);
    }

    // Disconnected and closed however the constructor ends.
    struct Handles {
        std::vector<nbd_handle*> list;
        Handles() = default;
        Handles(const Handles&) = delete;
        Handles& operator=(const Handles&) = delete;
        ~Handles() {
            for (nbd_handle* h : list) {
                (void)nbd_shutdown(h, 0);
                nbd_close(h);
            }
        }
    };

    std::string uri_;
    Handles handles_;
    bool can_zero_ = false;
    bool can_flush_ = false;
    uint64_t granularity_ = page;
    uint64_t max_request_ = 32u << 20;
};

} // namespace

std::string partial_path(const std::string& destination) {
    return destination + ".part";
}

UniqueFd open_destination_directory(const std::string& destination, bool no_symlinks) {
    std::string dir = std::filesystem::path(destination).parent_path().string();
    if (dir.empty())
        dir = ".";
    struct open_how how {};
    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    // For a caller other than root, no symlink anywhere in the path: the
    // caller's access was checked by path, and a symlink it controls could
    // point the daemon's writes elsewhere between the check and the open.
    how.resolve = no_symlinks ? RESOLVE_NO_SYMLINKS : 0;
    const long fd = ::syscall(SYS_openat2, AT_FDCWD, dir.c_str(), &how, sizeof how);
    if (fd < 0) {
        const int err = errno;
        throw Error(destination + ": cannot open its directory " + dir + ": " +
                        (err == ELOOP ? std::string("the path has a symlink, which a copy for "
                                                    "another user may not go through")
                                      : errno_text(err)),
                    err);
    }
    return UniqueFd(static_cast<int>(fd));
}

void remove_partial(const std::string& destination, bool no_symlinks) {
    const UniqueFd dir = open_destination_directory(destination, no_symlinks);
    const std::string name = base_name(destination) + ".part";
    if (::unlinkat(dir.get(), name.c_str(), 0) != 0 && errno != ENOENT)
        throw Error(partial_path(destination) + ": cannot remove: " + errno_text(errno), errno);
}

std::unique_ptr<Destination> open_file_destination(const std::string& destination, uint64_t size,
                                                   bool keep_content, int64_t uid, int64_t gid) {
    return std::make_unique<FileDestination>(destination, size, keep_content, uid, gid);
}

std::unique_ptr<Destination> open_nbd_destination(const std::string& uri, uint64_t size,
                                                  unsigned connections) {
    return std::make_unique<NbdDestination>(uri, size, connections);
}

} // namespace p2vfs
