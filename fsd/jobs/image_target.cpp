#include "jobs/image_target.h"

#include "common/command.h"
#include "common/error.h"
#include "common/file_io.h"
#include "nbd-bridge/image_source.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fcntl.h>
#include <fstream>
#include <libnbd.h>
#include <mutex>
#include <spdlog/spdlog.h>
#include <sstream>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <sys/un.h>
#include <unistd.h>
#include <vector>

namespace p2vfs {
namespace {

constexpr uint64_t page = 4096;
constexpr uint64_t sector = 512;
constexpr double create_timeout_seconds = 600;
constexpr double check_timeout_seconds = 3600;
constexpr auto start_timeout = std::chrono::seconds(30);
constexpr auto stop_timeout = std::chrono::seconds(5);
// How long after a failed request qemu-nbd is looked at for having exited.
constexpr auto died_within = std::chrono::milliseconds(250);

struct TargetFormat {
    const char* name;
    const char* qemu;
    const char* create_options; // qemu-img create -o
};

// Dynamic (sparse) variants all: a target starts as zeros and grows with
// what is written. vpc's force_size=on records the exact size in the footer
// (creator "qem2", read back as current_size) instead of rounding it up to
// a CHS geometry, which would make the disk larger than the source.
constexpr std::array<TargetFormat, 6> target_formats{{
    {"raw", "raw", ""},
    {"qcow2", "qcow2", ""}, // qemu's default compat=1.1
    {"vmdk", "vmdk", "subformat=monolithicSparse"},
    {"vhd", "vpc", "subformat=dynamic,force_size=on"},
    {"vhdx", "vhdx", "subformat=dynamic"},
    {"vdi", "vdi", "static=off"},
}};

const TargetFormat& find_format(const std::string& name) {
    for (const auto& f : target_formats)
        if (name == f.name)
            return f;
    throw InvalidArgument("unknown target format '" + name +
                          "': raw, qcow2, vmdk, vhd, vhdx or vdi");
}

// Our name for one of qemu's format names, for messages.
std::string format_name_of(const std::string& qemu) {
    for (const auto& f : target_formats)
        if (qemu == f.qemu)
            return f.name;
    return qemu;
}

// `path` as qemu's tools must be given it: a relative name with a colon
// ("pc1:old.qcow2") would be taken for a protocol prefix.
std::string qemu_path(const std::string& path) {
    return !path.empty() && path.front() != '/' ? "./" + path : path;
}

// How a qemu tool failed, in one line.
std::string failure_text(const CommandResult& r, const std::string& tool) {
    if (r.timed_out)
        return tool + " did not finish in time and was killed";
    std::string how = r.signal ? "killed by signal " + std::to_string(r.signal)
                               : "exit status " + std::to_string(r.status);
    std::string said = last_line(r.output);
    if (r.status == 127)
        said += " (package qemu-utils)";
    return said.empty() ? tool + " failed (" + how + ")" : said + " (" + tool + ", " + how + ")";
}

// Gives a target file its mode (a made one: 0600, as a raw one is created)
// and owner. Through a descriptor opened without following a symlink.
void set_owner(const std::string& path, int fd, bool made, int64_t uid, int64_t gid) {
    if (made && ::fchmod(fd, 0600) != 0)
        throw Error(path + ": cannot set its mode: " + errno_text(errno), errno);
    if ((uid >= 0 || gid >= 0) &&
        ::fchown(fd, static_cast<uid_t>(uid), static_cast<gid_t>(gid)) != 0) {
        const int err = errno;
        throw Error(path + ": cannot give it to " + std::to_string(uid) + ":" +
                        std::to_string(gid) + ": " + errno_text(err),
                    err);
    }
}

UniqueFd open_regular(const std::string& path, int flags, unsigned mode = 0600) {
    const int fd = ::open(path.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        const int err = errno;
        throw Error(path + ": cannot open the target: " +
                        (err == ELOOP ? std::string("it is a symlink") : errno_text(err)),
                    err);
    }
    UniqueFd file(fd);
    struct stat st {};
    if (::fstat(fd, &st) != 0)
        throw Error(path + ": cannot stat: " + errno_text(errno), errno);
    if (!S_ISREG(st.st_mode))
        throw Error(path + ": the target is not a regular file", EINVAL);
    return file;
}

// The raw target: the file itself, shared by all workers (pwrite/pread).
class RawTarget : public Destination {
public:
    RawTarget(std::string path, uint64_t size, bool create, int64_t uid, int64_t gid)
        : path_(std::move(path)), size_(size) {
        fd_ = open_regular(path_, O_RDWR | (create ? O_CREAT | O_TRUNC : 0));
        if (create) {
            if (::ftruncate(fd_.get(), static_cast<off_t>(size)) != 0) {
                const int err = errno;
                throw Error(path_ + ": cannot set the size to " + std::to_string(size) +
                                " bytes: " + errno_text(err),
                            err);
            }
        } else {
            struct stat st {};
            if (::fstat(fd_.get(), &st) != 0)
                throw Error(path_ + ": cannot stat: " + errno_text(errno), errno);
            if (static_cast<uint64_t>(st.st_size) != size)
                throw Error(path_ + ": the raw target holds " + std::to_string(st.st_size) +
                                " bytes, not the disk's " + std::to_string(size),
                            EINVAL);
        }
        set_owner(path_, fd_.get(), false, uid, gid);
    }

    std::string name() const override { return path_; }
    uint64_t granularity() const override { return page; }

    void write(unsigned, const void* buf, size_t length, uint64_t offset) override {
        check_range("write", length, offset);
        pwrite_full(fd_.get(), buf, length, offset, path_);
    }

    void write_zeros(unsigned worker, uint64_t offset, uint64_t length) override {
        check_range("write-zeroes", length, offset);
        // Unlike a materialization's fresh file, a sync target holds the
        // previous generation: the range may hold data, so it is punched.
        if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        static_cast<off_t>(offset), static_cast<off_t>(length)) == 0)
            return;
        const int err = errno;
        if (err != EOPNOTSUPP && err != ENOSYS)
            throw Error(path_ + ": cannot punch a hole of " + std::to_string(length) +
                            " bytes at " + hex(offset) + ": " + errno_text(err),
                        err);
        write_zeros_as_data(worker, offset, length); // no hole punching here
    }

    void read(unsigned, void* buf, size_t length, uint64_t offset) override {
        check_range("read", length, offset);
        const size_t n = pread_full(fd_.get(), buf, length, offset, path_);
        if (n != length)
            throw Error(path_ + ": read of " + std::to_string(length) + " bytes at " + hex(offset) +
                            " ended after " + std::to_string(n) +
                            " bytes: the file is shorter than the disk",
                        EIO);
    }

    void sync() override { sync_data(fd_.get(), path_); }
    void commit() override {}

private:
    // A write past the end would grow the file silently, and the next open
    // would refuse it for its size.
    void check_range(const char* what, uint64_t length, uint64_t offset) const {
        if (offset > size_ || length > size_ - offset)
            throw Error(path_ + ": " + what + " of " + std::to_string(length) + " bytes at " +
                            hex(offset) + " goes past the disk's end (" + std::to_string(size_) +
                            " bytes)",
                        EINVAL);
    }

    std::string path_;
    uint64_t size_;
    UniqueFd fd_;
};

std::string nbd_error_text() {
    const char* e = nbd_get_error();
    return e && *e ? e : "unknown libnbd error";
}

// Our qemu-nbd serving one image writable on a socket in a private
// directory. Its output goes to a log file there (a pipe nobody reads could
// fill and stall it), which its error messages quote.
class QemuNbdServer {
public:
    QemuNbdServer(std::string path, const std::string& qemu_format, unsigned connections,
                  const std::string& work_dir)
        : path_(std::move(path)) {
        // A socket path must fit in sockaddr_un (108 bytes).
        std::string dir = work_dir + "/qemu-nbd";
        if (!work_dir.empty() && dir.size() + 6 < sizeof(sockaddr_un::sun_path)) {
            remove_tree(dir); // left by a daemon that was killed
            if (::mkdir(dir.c_str(), 0700) != 0)
                throw Error(path_ + ": cannot make a directory for qemu-nbd's socket (" + dir +
                                "): " + errno_text(errno),
                            errno);
        } else {
            const char* tmp = std::getenv("TMPDIR");
            dir = std::string(tmp && *tmp ? tmp : "/tmp") + "/p2vfs-target-XXXXXX";
            if (!::mkdtemp(dir.data()))
                throw Error(path_ + ": cannot make a directory for qemu-nbd's socket (" + dir +
                                "): " + errno_text(errno),
                            errno);
        }
        dir_ = dir;
        socket_ = dir_ + "/sock";
        log_ = dir_ + "/qemu-nbd.log";
        try {
            const UniqueFd log = open_file(log_, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            pid_ = start_command({"qemu-nbd", "--format=" + qemu_format, "--persistent",
                                  "--shared=" + std::to_string(std::max(connections, 1u)),
                                  "--cache=writeback", "--aio=threads", "--discard=unmap",
                                  "--detect-zeroes=unmap", "--socket=" + socket_, qemu_path(path_)},
                                 log.get(), {},
                                 // SIGTERM: qemu-nbd flushes and closes the image
                                 SIGTERM);
        } catch (...) {
            stop();
            throw;
        }
    }
    ~QemuNbdServer() { stop(); }
    QemuNbdServer(const QemuNbdServer&) = delete;
    QemuNbdServer& operator=(const QemuNbdServer&) = delete;

    std::string uri() const { return "nbd+unix:///?socket=" + socket_; }

    // Waits until the export answers and returns its size. Throws with
    // qemu-nbd's own words if it exits first.
    uint64_t served_size() {
        const auto deadline = std::chrono::steady_clock::now() + start_timeout;
        std::string last_error;
        for (;;) {
            if (!running())
                fail("qemu-nbd could not serve it");
            nbd_handle* h = nbd_create();
            if (!h)
                throw Error(path_ + ": " + nbd_error_text());
            int64_t size = -1;
            if (nbd_connect_uri(h, uri().c_str()) == 0) {
                size = nbd_get_size(h);
                if (size < 0)
                    last_error = nbd_error_text();
                (void)nbd_shutdown(h, 0);
            } else {
                last_error = nbd_error_text();
            }
            nbd_close(h);
            if (size >= 0)
                return static_cast<uint64_t>(size);
            if (std::chrono::steady_clock::now() > deadline)
                fail("qemu-nbd did not serve it within " + std::to_string(start_timeout.count()) +
                     " s: " + last_error);
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }

    // Stops qemu-nbd and throws Error naming the image with `why` and, when
    // qemu-nbd has exited, how and its output.
    [[noreturn]] void fail(const std::string& why,
                           std::chrono::milliseconds within = std::chrono::milliseconds(0)) {
        std::string message = path_ + ": " + why + exit_note(within);
        stop();
        throw Error(message);
    }

    // " (qemu-nbd exited ...: OUTPUT)" once it has, else empty. A request
    // that failed because qemu-nbd died can fail a moment before its exit
    // can be seen (its socket closes first): `within` allows for that.
    std::string exit_note(std::chrono::milliseconds within = std::chrono::milliseconds(0)) {
        const auto deadline = std::chrono::steady_clock::now() + within;
        while (running()) {
            if (std::chrono::steady_clock::now() >= deadline)
                return {};
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        std::lock_guard lock(mutex_);
        return " (qemu-nbd " + ended_ + ": " + log_text() + ")";
    }

    // SIGTERM: qemu-nbd flushes and closes the image; SIGKILL when it has
    // not within stop_timeout. Then the socket directory goes.
    void stop() {
        std::lock_guard lock(mutex_);
        if (pid_ > 0) {
            ::kill(pid_, SIGTERM);
            const auto deadline = std::chrono::steady_clock::now() + stop_timeout;
            int status = 0;
            pid_t reaped;
            while ((reaped = ::waitpid(pid_, &status, WNOHANG)) == 0) {
                if (std::chrono::steady_clock::now() > deadline) {
                    spdlog::warn("{}: qemu-nbd (pid {}) did not stop within {} s of SIGTERM; "
                                 "killing it: the image may not have been closed cleanly",
                                 path_, pid_, stop_timeout.count());
                    ::kill(pid_, SIGKILL);
                    reaped = ::waitpid(pid_, &status, 0);
                    break;
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(5));
            }
            if (reaped == pid_ && !(WIFEXITED(status) && WEXITSTATUS(status) == 0) &&
                !(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM))
                spdlog::warn("{}: qemu-nbd ended with {}: {}", path_, how_ended(status),
                             log_text());
            pid_ = -1;
        }
        if (!dir_.empty()) {
            ::unlink(socket_.c_str());
            ::unlink(log_.c_str());
            ::rmdir(dir_.c_str());
            dir_.clear();
        }
    }

private:
    bool running() {
        std::lock_guard lock(mutex_);
        if (pid_ <= 0)
            return false;
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) != pid_)
            return true;
        pid_ = -1;
        ended_ = "exited with " + how_ended(status);
        return false;
    }

    static std::string how_ended(int status) {
        return WIFEXITED(status) ? "status " + std::to_string(WEXITSTATUS(status))
                                 : "signal " + std::to_string(WTERMSIG(status));
    }

    // The log in one line.
    std::string log_text() const {
        std::ifstream in(log_);
        std::stringstream ss;
        ss << in.rdbuf();
        std::string text;
        std::string line;
        while (std::getline(ss, line)) {
            if (line.empty())
                continue;
            if (!text.empty())
                text += "; ";
            text += line;
        }
        return text.empty() ? "no message" : text;
    }

    std::mutex mutex_; // pid_, ended_ and dir_: workers ask about it while it may stop
    std::string path_;
    std::string dir_;
    std::string socket_;
    std::string log_;
    pid_t pid_ = -1;
    std::string ended_ = "stopped";
};

// An image target: the NBD destination over our qemu-nbd, named by the file.
class ImageTarget : public Destination {
public:
    ImageTarget(std::string path, std::unique_ptr<QemuNbdServer> server,
                std::unique_ptr<Destination> nbd)
        : path_(std::move(path)), server_(std::move(server)), nbd_(std::move(nbd)) {}
    ~ImageTarget() override {
        nbd_.reset(); // disconnect first: qemu-nbd then closes the image
        server_->stop();
    }

    std::string name() const override { return path_; }
    uint64_t granularity() const override { return nbd_->granularity(); }

    void write(unsigned worker, const void* buf, size_t length, uint64_t offset) override {
        check_sectors("write", length, offset);
        through([&] { nbd_->write(worker, buf, length, offset); });
    }
    void write_zeros(unsigned worker, uint64_t offset, uint64_t length) override {
        check_sectors("write-zeroes", length, offset);
        through([&] { nbd_->write_zeros(worker, offset, length); });
    }
    void read(unsigned worker, void* buf, size_t length, uint64_t offset) override {
        check_sectors("read", length, offset);
        through([&] { nbd_->read(worker, buf, length, offset); });
    }
    void sync() override {
        through([&] { nbd_->sync(); });
    }
    void commit() override {}

private:
    // qemu-nbd takes byte-granular requests for most formats but only whole
    // sectors for vhdx (its NBD minimum block size is 512): one rule for all
    // image formats, so that a caller's misaligned request fails the same way
    // whatever the format, and says why.
    void check_sectors(const char* what, uint64_t length, uint64_t offset) const {
        if (offset % sector != 0 || length % sector != 0)
            throw InvalidArgument(path_ + ": " + what + " of " + std::to_string(length) +
                                  " bytes at " + hex(offset) +
                                  ": an image target is written and read in whole 512-byte "
                                  "sectors");
    }

    template <class Operation> void through(Operation&& operation) {
        try {
            operation();
        } catch (const Error& e) {
            throw Error(path_ + ": " + e.what() + server_->exit_note(died_within),
                        e.error_number());
        }
    }

    std::string path_;
    std::unique_ptr<QemuNbdServer> server_;
    std::unique_ptr<Destination> nbd_;
};

std::unique_ptr<Destination> open_served_image(const std::string& path, const TargetFormat& format,
                                               uint64_t size, unsigned connections, bool create,
                                               int64_t uid, int64_t gid,
                                               const std::string& work_dir) {
    if (size % sector != 0)
        throw InvalidArgument(path + ": a " + format.name + " image holds whole 512-byte " +
                              "sectors; " + std::to_string(size) + " bytes is not a multiple");
    if (create) {
        if (::unlink(path.c_str()) != 0 && errno != ENOENT)
            throw Error(path + ": cannot remove the old file: " + errno_text(errno), errno);
        std::vector<std::string> args{"qemu-img", "create", "-q", "-f", format.qemu};
        if (*format.create_options) {
            args.emplace_back("-o");
            args.emplace_back(format.create_options);
        }
        args.push_back(qemu_path(path));
        args.push_back(std::to_string(size));
        const CommandResult made = run_command(args, create_timeout_seconds);
        if (made.status != 0)
            throw Error(path + ": cannot create the " + format.name +
                        " image: " + failure_text(made, "qemu-img create"));
    }
    {
        const UniqueFd file = open_regular(path, O_RDONLY);
        if (!create) {
            const std::string found = probe_image_format(path);
            if (found != format.qemu)
                throw Error(path + ": not a " + format.name + " image: its magic is " +
                                (found == "raw" ? std::string("none of an image format's")
                                                : "a " + format_name_of(found) + " image's"),
                            EINVAL);
        }
        set_owner(path, file.get(), create, uid, gid);
    }

    auto server = std::make_unique<QemuNbdServer>(path, format.qemu, connections, work_dir);
    const uint64_t served = server->served_size();
    if (served != size)
        server->fail("the " + std::string(format.name) + " image's virtual size is " +
                     std::to_string(served) + " bytes, not the disk's " + std::to_string(size));
    std::unique_ptr<Destination> nbd;
    try {
        nbd = open_nbd_destination(server->uri(), size, connections);
    } catch (const Error& e) {
        server->fail(std::string("cannot write through qemu-nbd: ") + e.what(), died_within);
    }
    spdlog::debug("{}: {} target served by qemu-nbd at {}", path, format.name, server->uri());
    return std::make_unique<ImageTarget>(path, std::move(server), std::move(nbd));
}

// qemu-img check's findings in one line: its summary ("3 errors were found
// on the image", "2 leaked clusters were found ...") and one example.
std::string check_findings(const CommandResult& r) {
    if (r.timed_out || r.signal)
        return failure_text(r, "qemu-img check");
    std::istringstream in(r.output);
    std::string line;
    std::string summary;
    std::string example;
    while (std::getline(in, line)) {
        if (line.find("were found on the image") != std::string::npos ||
            line.find("internal errors have occurred") != std::string::npos) {
            while (!line.empty() && (line.back() == '.' || line.back() == ' '))
                line.pop_back();
            summary += (summary.empty() ? "" : "; ") + line;
        } else if (example.empty() &&
                   (line.rfind("ERROR", 0) == 0 || line.rfind("Leaked cluster", 0) == 0))
            example = line;
    }
    if (summary.empty())
        return failure_text(r, "qemu-img check");
    return summary + (example.empty() ? "" : " (e.g. " + example + ")");
}

} // namespace

std::string qemu_format_name(const std::string& format) {
    return find_format(format).qemu;
}

std::unique_ptr<Destination> open_image_target(const std::string& path, const std::string& format,
                                               uint64_t size, unsigned connections, bool create,
                                               int64_t uid, int64_t gid,
                                               const std::string& work_dir) {
    const TargetFormat& f = find_format(format);
    if (std::string(f.qemu) == "raw")
        return std::make_unique<RawTarget>(path, size, create, uid, gid);
    return open_served_image(path, f, size, connections, create, uid, gid, work_dir);
}

void check_image_target(const std::string& path, const std::string& format) {
    const std::string qemu = qemu_format_name(format);
    if (qemu == "raw" || qemu == "vpc")
        return; // qemu-img has no check for them
    const CommandResult r =
        run_command({"qemu-img", "check", "-f", qemu, qemu_path(path)}, check_timeout_seconds);
    if (r.status != 0)
        throw Error("qemu-img check of " + path + ": " + check_findings(r));
}

} // namespace p2vfs
