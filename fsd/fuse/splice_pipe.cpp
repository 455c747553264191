#include "fuse/splice_pipe.h"

#include "common/error.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <unistd.h>

namespace p2vfs {

SplicePipe::SplicePipe(size_t capacity) : wanted_(capacity) {
    open_pipe();
}

SplicePipe::~SplicePipe() {
    close_pipe();
}

void SplicePipe::open_pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
        spdlog::warn("cannot create a splice pipe ({}); replies will be copied", errno_text(errno));
        return;
    }
    read_fd_ = fds[0];
    write_fd_ = fds[1];
    // Beyond /proc/sys/fs/pipe-max-size (1 MiB by default) only root may
    // go: step down until the kernel agrees.
    int got = -1;
    for (size_t want = wanted_; want >= 65536 && got < 0; want /= 2)
        got = ::fcntl(write_fd_, F_SETPIPE_SZ, static_cast<int>(want));
    capacity_ =
        got > 0 ? static_cast<size_t>(got) : static_cast<size_t>(::fcntl(write_fd_, F_GETPIPE_SZ));
}

void SplicePipe::close_pipe() {
    if (read_fd_ >= 0)
        ::close(read_fd_);
    if (write_fd_ >= 0)
        ::close(write_fd_);
    read_fd_ = write_fd_ = -1;
    capacity_ = 0;
}

bool SplicePipe::fits(uint64_t offset, size_t length) const {
    static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    const uint64_t pages = (offset % page + length + page - 1) / page;
    return read_fd_ >= 0 && pages <= capacity_ / page;
}

bool SplicePipe::fill(int fd, uint64_t offset, size_t length) {
    size_t done = 0;
    while (done < length) {
        loff_t off = static_cast<loff_t>(offset + done);
        const ssize_t n = ::splice(fd, &off, write_fd_, nullptr, length - done,
                                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            done += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        const int err = n == 0 ? EIO : errno;
        // Drop what was moved so far: the pipe must be empty for the next reply.
        close_pipe();
        open_pipe();
        if (err == EAGAIN)
            return false; // the pipe is full: fits() was too hopeful
        if (n == 0)
            throw Error("source read at " + hex(offset + done) +
                            " hit end of file: the source shrank",
                        EIO);
        throw Error("source read at " + hex(offset + done) + " failed: " + errno_text(err), err);
    }
    return true;
}

void SplicePipe::reset_if_dirty() {
    int left = 0;
    if (read_fd_ >= 0 && ::ioctl(read_fd_, FIONREAD, &left) == 0 && left == 0)
        return;
    spdlog::debug("splice pipe held {} bytes after a reply; replacing it", left);
    close_pipe();
    open_pipe();
}

} // namespace p2vfs
