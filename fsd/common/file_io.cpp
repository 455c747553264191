#include "common/file_io.h"

#include "common/error.h"

#include <cerrno>
#include <fcntl.h>
#include <filesystem>
#include <sys/stat.h>
#include <unistd.h>

namespace p2vfs {

void UniqueFd::reset() {
    if (fd_ >= 0)
        ::close(fd_);
    fd_ = -1;
}

UniqueFd open_file(const std::string& path, int flags, unsigned mode) {
    const int fd = ::open(path.c_str(), flags | O_CLOEXEC, static_cast<mode_t>(mode));
    if (fd < 0) {
        const int err = errno;
        throw Error(path + ": cannot open: " + errno_text(err), err);
    }
    return UniqueFd(fd);
}

size_t pread_full(int fd, void* buf, size_t length, uint64_t offset, const std::string& path) {
    auto* p = static_cast<unsigned char*>(buf);
    size_t done = 0;
    while (done < length) {
        const ssize_t n = ::pread(fd, p + done, length - done, static_cast<off_t>(offset + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            const int err = errno;
            throw Error(path + ": read of " + std::to_string(length) + " bytes at " +
                            hex(offset + done) + " failed: " + errno_text(err),
                        err);
        }
        if (n == 0)
            break;
        done += static_cast<size_t>(n);
    }
    return done;
}

void pwrite_full(int fd, const void* buf, size_t length, uint64_t offset, const std::string& path) {
    const auto* p = static_cast<const unsigned char*>(buf);
    size_t done = 0;
    while (done < length) {
        const ssize_t n = ::pwrite(fd, p + done, length - done, static_cast<off_t>(offset + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            const int err = errno;
            throw Error(path + ": write of " + std::to_string(length) + " bytes at " +
                            hex(offset + done) + " failed: " + errno_text(err),
                        err);
        }
        done += static_cast<size_t>(n);
    }
}

void sync_data(int fd, const std::string& path) {
    if (::fdatasync(fd) != 0) {
        const int err = errno;
        throw Error(path + ": sync failed: " + errno_text(err), err);
    }
}

void sync_directory(const std::string& dir) {
    UniqueFd fd = open_file(dir, O_RDONLY | O_DIRECTORY);
    if (::fsync(fd.get()) != 0) {
        const int err = errno;
        throw Error(dir + ": sync of the directory failed: " + errno_text(err), err);
    }
}

void replace_file(const std::string& path, const std::string& content) {
    const std::string tmp = path + ".tmp";
    {
        UniqueFd fd = open_file(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        pwrite_full(fd.get(), content.data(), content.size(), 0, tmp);
        if (::fsync(fd.get()) != 0) {
            const int err = errno;
            throw Error(tmp + ": sync failed: " + errno_text(err), err);
        }
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const int err = errno;
        throw Error(path + ": cannot replace: " + errno_text(err), err);
    }
    sync_directory(std::filesystem::path(path).parent_path().string());
}

std::string read_small_file(const std::string& path, bool* exists) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        const int err = errno;
        if (err == ENOENT && exists) {
            *exists = false;
            return {};
        }
        throw Error(path + ": cannot open: " + errno_text(err), err);
    }
    UniqueFd owner(fd);
    if (exists)
        *exists = true;
    std::string out;
    char buf[4096];
    uint64_t offset = 0;
    while (true) {
        const size_t n = pread_full(fd, buf, sizeof buf, offset, path);
        out.append(buf, n);
        offset += n;
        if (n < sizeof buf)
            return out;
    }
}

void make_directories(const std::string& path, unsigned mode) {
    std::error_code ec;
    std::filesystem::path p(path);
    std::filesystem::path built;
    for (const auto& part : p) {
        built /= part;
        if (::mkdir(built.c_str(), static_cast<mode_t>(mode)) != 0 && errno != EEXIST) {
            const int err = errno;
            throw Error(built.string() + ": cannot make the directory: " + errno_text(err), err);
        }
    }
    if (!std::filesystem::is_directory(p, ec))
        throw Error(path + ": not a directory", ENOTDIR);
}

void remove_tree(const std::string& path) {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
    if (ec)
        throw Error(path + ": cannot remove: " + ec.message(), ec.value());
}

TemporaryFile::~TemporaryFile() {
    if (!path_.empty())
        ::unlink(path_.c_str());
}

void TemporaryFile::rename_to(const std::string& target) {
    if (::rename(path_.c_str(), target.c_str()) != 0) {
        const int err = errno;
        throw Error(target + ": cannot rename " + path_ + " into place: " + errno_text(err), err);
    }
    path_.clear();
}

} // namespace p2vfs
