// Small, careful wrappers over POSIX file I/O for state that must survive a
// crash: full reads and writes (retrying short counts and EINTR), syncs that
// report what failed, and whole-file replacement by rename.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace p2vfs {

// An owned file descriptor, closed on destruction.
class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    ~UniqueFd() { reset(); }
    UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    UniqueFd& operator=(UniqueFd&& o) noexcept {
        if (this != &o) {
            reset();
            fd_ = std::exchange(o.fd_, -1);
        }
        return *this;
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;

    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }
    void reset();

private:
    int fd_ = -1;
};

// open(2); throws Error "WHAT PATH: cannot open: REASON" on failure.
UniqueFd open_file(const std::string& path, int flags, unsigned mode = 0644);

// Reads exactly `length` bytes at `offset`; returns the number read, which
// is less only at end of file. Throws Error naming `path` on an I/O error.
size_t pread_full(int fd, void* buf, size_t length, uint64_t offset, const std::string& path);

// Writes all of buf at `offset`. Throws Error naming `path` (ENOSPC keeps
// its errno, so a FUSE writer sees "No space left on device").
void pwrite_full(int fd, const void* buf, size_t length, uint64_t offset, const std::string& path);

// fdatasync/fsync; throw Error naming `path`.
void sync_data(int fd, const std::string& path);
void sync_directory(const std::string& dir);

// Replaces `path` by a file holding `content`: written to a temporary name
// beside it, synced, renamed over `path`, the directory synced. After a
// crash `path` holds either the old content or the new, never a mix.
void replace_file(const std::string& path, const std::string& content);

// The whole file, or nullopt-like empty result with `exists` false.
std::string read_small_file(const std::string& path, bool* exists = nullptr);

// mkdir -p with `mode` for the directories it makes; throws Error naming
// the directory that cannot be made.
void make_directories(const std::string& path, unsigned mode = 0700);

// rm -r of a directory tree (no symlinks followed); missing is fine.
void remove_tree(const std::string& path);

// A file being made under a temporary name: removed when the object goes,
// unless rename_to() moved it into place (Error "TARGET: cannot rename PATH
// into place: why" when it cannot).
class TemporaryFile {
public:
    explicit TemporaryFile(std::string path) : path_(std::move(path)) {}
    ~TemporaryFile();
    TemporaryFile(const TemporaryFile&) = delete;
    TemporaryFile& operator=(const TemporaryFile&) = delete;
    void rename_to(const std::string& target);

private:
    std::string path_;
};

} // namespace p2vfs
