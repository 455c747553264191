#include "nbd-bridge/image_source.h"

#include "block/filter_device.h"
#include "common/error.h"

#include <array>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <spdlog/spdlog.h>
#include <sstream>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace p2vfs {
namespace {

constexpr std::array<const char*, 5> image_formats{"qcow2", "vmdk", "vpc", "vhdx", "vdi"};
constexpr auto start_timeout = std::chrono::seconds(30);
constexpr auto stop_timeout = std::chrono::seconds(5);

bool starts_with(const std::vector<char>& buf, size_t at, std::string_view magic) {
    return buf.size() >= at + magic.size() &&
           std::memcmp(buf.data() + at, magic.data(), magic.size()) == 0;
}

// A qemu-nbd child serving one image on a socket in a private directory.
class QemuNbdServer {
public:
    QemuNbdServer(const std::string& path, const std::string& format, unsigned connections);
    ~QemuNbdServer() { stop(); }
    QemuNbdServer(const QemuNbdServer&) = delete;
    QemuNbdServer& operator=(const QemuNbdServer&) = delete;

    std::string uri() const { return "nbd+unix:///?socket=" + socket_; }

    // Waits until the socket exists; throws with qemu-nbd's own words if it
    // exits first.
    void wait_ready();
    // qemu-nbd makes its socket before it opens the image: when a connection
    // fails, this says whether it is exiting, and why.
    void fail_if_exits(std::chrono::milliseconds within);
    [[noreturn]] void fail(const std::string& why);

private:
    void stop();
    std::string log_text() const;

    std::string image_;
    std::string dir_;
    std::string socket_;
    std::string log_;
    pid_t pid_ = -1;
};

QemuNbdServer::QemuNbdServer(const std::string& path, const std::string& format,
                             unsigned connections)
    : image_(path) {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/p2vfs-qemu-nbd-XXXXXX";
    if (!mkdtemp(templ.data()))
        throw Error(path + ": cannot make a directory for qemu-nbd's socket in " + templ + ": " +
                        errno_text(errno),
                    errno);
    dir_ = templ;
    socket_ = dir_ + "/sock";
    log_ = dir_ + "/qemu-nbd.log";

    const std::string shared = std::to_string(connections);
    std::vector<std::string> args{"qemu-nbd",           "--read-only",        "--persistent",
                                  "--format=" + format, "--shared=" + shared, "--socket=" + socket_,
                                  "--cache=writeback",  "--aio=threads",      path};
    std::vector<char*> argv;
    for (auto& a : args)
        argv.push_back(a.data());
    argv.push_back(nullptr);

    const int log_fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (log_fd == -1)
        throw Error(path + ": cannot create " + log_ + ": " + errno_text(errno), errno);
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ == -1) {
        const int e = errno;
        ::close(log_fd);
        throw Error(path + ": cannot start qemu-nbd: fork: " + errno_text(e), e);
    }
    if (pid_ == 0) {
        // The child: only async-signal-safe calls until exec.
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
        const int null_fd = ::open("/dev/null", O_RDONLY);
        if (null_fd != -1)
            dup2(null_fd, 0);
        dup2(log_fd, 1);
        dup2(log_fd, 2);
        execvp("qemu-nbd", argv.data());
        const char msg[] = "exec qemu-nbd failed: not installed? (package qemu-utils)\n";
        [[maybe_unused]] ssize_t n = ::write(2, msg, sizeof msg - 1);
        _exit(127);
    }
    ::close(log_fd);
}

std::string QemuNbdServer::log_text() const {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
        text.pop_back();
    for (char& c : text)
        if (c == '\n')
            c = ';';
    return text.empty() ? "no message" : text;
}

void QemuNbdServer::fail_if_exits(std::chrono::milliseconds within) {
    const auto deadline = std::chrono::steady_clock::now() + within;
    do {
        int status = 0;
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            const std::string code = WIFEXITED(status)
                                         ? "exit status " + std::to_string(WEXITSTATUS(status))
                                         : "signal " + std::to_string(WTERMSIG(status));
            fail("qemu-nbd could not serve it (" + code + "): " + log_text());
        }
        if (within.count() > 0)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
    } while (std::chrono::steady_clock::now() < deadline);
}

// Whether a unix socket at `path` accepts connections. qemu-nbd binds its
// socket (the file appears) a moment before it listens on it; a connection
// in between is refused.
static bool accepts_connections(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path)
        return false;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    const bool ok = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    return ok;
}

void QemuNbdServer::wait_ready() {
    const auto deadline = std::chrono::steady_clock::now() + start_timeout;
    while (!accepts_connections(socket_)) {
        fail_if_exits(std::chrono::milliseconds(0));
        if (std::chrono::steady_clock::now() > deadline)
            fail("qemu-nbd did not accept connections on its socket within " +
                 std::to_string(start_timeout.count()) + " s: " + log_text());
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

void QemuNbdServer::fail(const std::string& why) {
    const std::string message = image_ + ": " + why;
    stop();
    throw Error(message);
}

void QemuNbdServer::stop() {
    if (pid_ > 0) {
        ::kill(pid_, SIGTERM);
        const auto deadline = std::chrono::steady_clock::now() + stop_timeout;
        while (waitpid(pid_, nullptr, WNOHANG) == 0) {
            if (std::chrono::steady_clock::now() > deadline) {
                spdlog::warn("{}: qemu-nbd (pid {}) ignored SIGTERM; killing it", image_, pid_);
                ::kill(pid_, SIGKILL);
                waitpid(pid_, nullptr, 0);
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        pid_ = -1;
    }
    if (!dir_.empty()) {
        ::unlink(socket_.c_str());
        ::unlink(log_.c_str());
        ::rmdir(dir_.c_str());
        dir_.clear();
    }
}

// The image as a device: the NBD source over the server, which outlives it.
class ImageSource : public FilterDevice {
public:
    ImageSource(std::unique_ptr<QemuNbdServer> server, DevicePtr nbd, std::string path,
                std::string format)
        : FilterDevice(std::move(nbd)), server_(std::move(server)), path_(std::move(path)),
          format_(std::move(format)) {
        char* real = ::realpath(path_.c_str(), nullptr);
        canonical_ = real ? real : path_;
        std::free(real);
    }
    ~ImageSource() override {
        next_.reset(); // disconnect before the server stops
        server_.reset();
    }

    std::string name() const override { return path_ + " (" + format_ + " image)"; }
    std::string identity() const override {
        return "image:" + format_ + ":" + canonical_ + "|size=" + std::to_string(size());
    }

private:
    std::unique_ptr<QemuNbdServer> server_;
    std::string path_;
    std::string format_;
    std::string canonical_;
};

} // namespace

bool is_image_format(const std::string& name) {
    for (const char* f : image_formats)
        if (name == f)
            return true;
    return false;
}

std::string probe_image_format(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return "raw";
    std::vector<char> head(512);
    const ssize_t n = ::pread(fd, head.data(), head.size(), 0);
    head.resize(n > 0 ? static_cast<size_t>(n) : 0);
    std::vector<char> tail(512);
    struct stat st;
    bool have_tail = false;
    if (::fstat(fd, &st) == 0 && st.st_size >= 1024)
        have_tail = ::pread(fd, tail.data(), tail.size(), st.st_size - 512) == 512;
    ::close(fd);

    if (starts_with(head, 0, "QFI\xfb"))
        return "qcow2";
    if (starts_with(head, 0, "KDMV") || starts_with(head, 0, "COWD") ||
        starts_with(head, 0, "# Disk DescriptorFile"))
        return "vmdk";
    if (starts_with(head, 0, "vhdxfile"))
        return "vhdx";
    // VDI: a text pre-header, then the signature 0xbeda107f at 0x40.
    if (starts_with(head, 0x40, std::string_view("\x7f\x10\xda\xbe", 4)))
        return "vdi";
    // VHD: a dynamic disk starts with a copy of its footer; a fixed one has
    // only the footer, in its last 512 bytes.
    if (starts_with(head, 0, "conectix") || (have_tail && starts_with(tail, 0, "conectix")))
        return "vpc";
    return "raw";
}

DevicePtr open_image_source(const std::string& path, const std::string& format,
                            const NbdOptions& options) {
    if (!is_image_format(format))
        throw InvalidArgument(path + ": '" + format + "' is not an image format qemu-nbd serves");
    if (::access(path.c_str(), R_OK) != 0)
        throw Error(path + ": " + errno_text(errno), errno);
    auto server = std::make_unique<QemuNbdServer>(path, format, options.connections);
    server->wait_ready();
    DevicePtr nbd;
    try {
        nbd = std::make_shared<NbdSource>(server->uri(), options);
    } catch (const Error& e) {
        server->fail_if_exits(std::chrono::seconds(5));
        server->fail(std::string("cannot read qemu-nbd's export: ") + e.what());
    }
    spdlog::debug("{}: {} image served by qemu-nbd at {}", path, format, server->uri());
    return std::make_shared<ImageSource>(std::move(server), std::move(nbd), path, format);
}

} // namespace p2vfs
