// Errors that carry what failed and where.
//
// The engine throws; each front end turns an Error into the value its boundary
// understands (errno at FUSE, an exit code and one line at the command line).
#pragma once

#include <cerrno>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace p2vfs {

class Error : public std::runtime_error {
public:
    // `err` is the errno a FUSE reader should see for this failure.
    explicit Error(const std::string& what, int err = EIO)
        : std::runtime_error(what), errno_(err) {}
    int error_number() const noexcept { return errno_; }

private:
    int errno_;
};

// A request the layer cannot honour by design (a write to a read-only layer...).
class UnsupportedError : public Error {
public:
    explicit UnsupportedError(const std::string& what, int err = EROFS) : Error(what, err) {}
};

// Options or a source that cannot make a view (size over a format's limit...).
class InvalidArgument : public Error {
public:
    explicit InvalidArgument(const std::string& what) : Error(what, EINVAL) {}
};

// A request that the object's state does not allow now (a job that has
// ended, fixups over a file system that changed since they were planned).
class InvalidState : public Error {
public:
    explicit InvalidState(const std::string& what) : Error(what, EINVAL) {}
};

// "0x1f400000" — offsets in messages are hexadecimal, as in dd/hexdump output.
std::string hex(uint64_t value);

// "2.1 TiB", "512 B" — sizes in messages read as a person would say them.
std::string human_size(uint64_t bytes);

// "256M", "8MiB", "4096", "1G" -> bytes (binary units). Throws InvalidArgument
// naming `what` ("--cache-size") for anything else.
uint64_t parse_size(const std::string& text, const std::string& what);

// strerror() that is thread-safe.
std::string errno_text(int err);

} // namespace p2vfs
