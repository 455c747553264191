// A per-thread pipe that FUSE read replies are spliced through.
//
// libfuse can splice straight from a source descriptor, but then a failed
// source read is only seen inside libfuse: the reader gets EIO and nobody can
// log the offset. So the daemon splices source -> this pipe itself (errors
// surface here, with their offset), then hands the pipe to fuse_reply_data,
// which moves the pages on to /dev/fuse. No byte is copied either way.
//
// Thread model: one instance per FUSE worker thread (thread_local); never shared.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unistd.h>

namespace p2vfs {

class SplicePipe {
public:
    explicit SplicePipe(size_t capacity);
    ~SplicePipe();
    SplicePipe(const SplicePipe&) = delete;
    SplicePipe& operator=(const SplicePipe&) = delete;

    // Whether `length` bytes at `offset` of a file fit. A pipe holds pages,
    // not bytes: 1 MiB from an offset that is not page-aligned takes 257.
    bool fits(uint64_t offset, size_t length) const;

    // Moves `length` bytes at `offset` of `fd` into the pipe. Returns false,
    // with the pipe empty, if the pipe filled up before all were moved (the
    // caller copies instead; a splice never blocks). Throws Error (with the
    // errno and the offset) on a failed read, leaving the pipe empty.
    bool fill(int fd, uint64_t offset, size_t length);

    int read_end() const { return read_fd_; }

    // After a reply: if anything is left in the pipe (the reply failed part
    // way), the pipe is replaced so stale bytes never reach another reply.
    void reset_if_dirty();

private:
    void open_pipe();
    void close_pipe();

    int read_fd_ = -1;
    int write_fd_ = -1;
    size_t capacity_ = 0;
    size_t wanted_;
};

} // namespace p2vfs
