#include "common/command.h"

#include "common/error.h"
#include "common/file_io.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <string_view>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char** environ;

namespace p2vfs {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t output_limit = 64 * 1024;
constexpr auto kill_grace = std::chrono::seconds(5);
// How long the parent sleeps at most between looks at a child whose output
// is still open: a background process it left may hold the pipe forever.
constexpr auto reap_interval = std::chrono::milliseconds(100);

// The environment with `extra` added, an entry of `extra` replacing one of
// the same name.
std::vector<std::string> merged_environment(const std::vector<std::string>& extra) {
    auto name_of = [](std::string_view entry) { return entry.substr(0, entry.find('=')); };
    for (const auto& e : extra)
        if (e.find('=') == std::string::npos || e.front() == '=')
            throw InvalidArgument("environment entry '" + e + "' is not NAME=value");
    std::vector<std::string> merged;
    for (char** e = environ; e && *e; ++e) {
        const std::string_view entry(*e);
        const bool replaced = std::any_of(extra.begin(), extra.end(), [&](const std::string& x) {
            return name_of(x) == name_of(entry);
        });
        if (!replaced)
            merged.emplace_back(entry);
    }
    merged.insert(merged.end(), extra.begin(), extra.end());
    return merged;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
    std::vector<char*> list;
    list.reserve(strings.size() + 1);
    for (auto& s : strings)
        list.push_back(s.data());
    list.push_back(nullptr);
    return list;
}

void write_all(int fd, const char* text, size_t length) {
    while (length > 0) {
        const ssize_t n = ::write(fd, text, length);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        text += n;
        length -= static_cast<size_t>(n);
    }
}

// The child between fork and exec: async-signal-safe calls only (the
// daemon has other threads, whose locks the child inherits held).
[[noreturn]] void exec_child(char* const* argv, char* const* envp, int null_fd, int output_fd,
                             int death_signal, pid_t parent, int max_fd) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, death_signal);
    // The parent may have died before prctl() took effect.
    if (::getppid() != parent)
        ::_exit(127);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; ++s)
        ::sigaction(s, &dfl, nullptr); // ignored signals would stay ignored across exec
    // Copies above the standard three first: either descriptor may be one
    // of them in a daemon started with stdio closed.
    const int out = ::fcntl(output_fd, F_DUPFD, 3);
    const int in = ::fcntl(null_fd, F_DUPFD, 3);
    if (out < 0 || in < 0 || ::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(out, 2) < 0)
        ::_exit(127);
    if (::close_range(3, ~0u, 0) != 0)
        for (int fd = 3; fd < max_fd; ++fd)
            ::close(fd);
    ::execvpe(argv[0], argv, envp);
    const int err = errno;
    // strerrordesc_np: no locale, no allocation.
    const char* reason = ::strerrordesc_np(err);
    if (!reason)
        reason = "unknown error";
    for (const char* part : {"cannot run ", static_cast<const char*>(argv[0]), ": ", reason, "\n"})
        write_all(2, part, std::strlen(part));
    ::_exit(127);
}

// Whether `pid` has exited, without reaping it (its pid, and so its process
// group, stays reserved until waitpid()).
bool has_exited(pid_t pid) {
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0)
        return errno != EINTR; // ECHILD: someone else reaped it
    return info.si_pid == pid;
}

void append_bounded(std::string& output, const char* data, size_t length) {
    output.append(data, length);
    // Trimmed in batches, not on every read.
    if (output.size() > 2 * output_limit)
        output.erase(0, output.size() - output_limit);
}

} // namespace

pid_t start_command(const std::vector<std::string>& argv, int output_fd,
                    const std::vector<std::string>& env, int death_signal) {
    if (argv.empty() || argv.front().empty())
        throw InvalidArgument("cannot run a command: no program given");
    // Everything the child needs is made here: it may not allocate.
    std::vector<std::string> args = argv;
    std::vector<std::string> environment = merged_environment(env);
    std::vector<char*> arg_list = pointers(args);
    std::vector<char*> env_list = pointers(environment);
    const UniqueFd null_fd = open_file("/dev/null", O_RDONLY);
    struct rlimit files {};
    const int max_fd = ::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY
                           ? static_cast<int>(std::min<rlim_t>(files.rlim_cur, 1 << 20))
                           : 1 << 16;
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
        const int err = errno;
        throw Error("cannot run " + argv.front() + ": fork failed: " + errno_text(err), err);
    }
    if (pid == 0)
        exec_child(arg_list.data(), env_list.data(), null_fd.get(), output_fd, death_signal, parent,
                   max_fd);
    // Also here, so that the group exists before the caller may signal it.
    (void)::setpgid(pid, pid);
    return pid;
}

CommandResult run_command(const std::vector<std::string>& argv, double timeout_seconds,
                          const std::vector<std::string>& env) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
        const int err = errno;
        throw Error("cannot run " + (argv.empty() ? std::string("a command") : argv.front()) +
                        ": pipe failed: " + errno_text(err),
                    err);
    }
    const UniqueFd read_end(fds[0]);
    UniqueFd write_end(fds[1]);
    const pid_t pid = start_command(argv, write_end.get(), env, SIGKILL);
    write_end.reset(); // the child's copy is the only writer: EOF when it is done

    CommandResult result;
    const auto start = Clock::now();
    const bool limited = timeout_seconds > 0;
    const auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(limited ? timeout_seconds : 0));
    Clock::time_point kill_at{};
    bool term_sent = false;
    bool kill_sent = false;
    bool eof = false;
    auto idle = std::chrono::milliseconds(1);
    char buf[16384];

    while (!has_exited(pid)) {
        const auto now = Clock::now();
        if (limited && !term_sent && now >= deadline) {
            result.timed_out = true;
            term_sent = true;
            ::kill(-pid, SIGTERM);
            kill_at = now + kill_grace;
        }
        if (term_sent && !kill_sent && now >= kill_at) {
            kill_sent = true;
            ::kill(-pid, SIGKILL);
        }
        auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(reap_interval);
        if (limited && !term_sent)
            wait = std::min(wait, std::chrono::ceil<std::chrono::milliseconds>(deadline - now));
        if (term_sent && !kill_sent)
            wait = std::min(wait, std::chrono::ceil<std::chrono::milliseconds>(kill_at - now));
        if (eof) {
            // The output is closed but the child has not exited yet (it is
            // exiting, or closed its stdout on purpose): look again soon.
            std::this_thread::sleep_for(std::min(wait, idle));
            idle = std::min(idle * 2, std::chrono::milliseconds(reap_interval));
            continue;
        }
        pollfd p{read_end.get(), POLLIN, 0};
        const int ready = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(wait.count(), 0)));
        if (ready <= 0)
            continue; // a timeout, or EINTR
        const ssize_t n = ::read(read_end.get(), buf, sizeof buf);
        if (n > 0)
            append_bounded(result.output, buf, static_cast<size_t>(n));
        else if (n == 0 || (errno != EINTR && errno != EAGAIN))
            eof = true;
    }

    // What the child wrote before it exited is in the pipe; a process it
    // left behind may keep the pipe open, so nothing here waits for EOF.
    if (!eof) {
        (void)::fcntl(read_end.get(), F_SETFL, O_NONBLOCK);
        for (;;) {
            const ssize_t n = ::read(read_end.get(), buf, sizeof buf);
            if (n > 0)
                append_bounded(result.output, buf, static_cast<size_t>(n));
            else if (!(n < 0 && errno == EINTR))
                break;
        }
    }
    if (result.output.size() > output_limit)
        result.output.erase(0, result.output.size() - output_limit);

    // A timed-out command's group goes entirely, while its pid is still
    // reserved (not yet reaped), so the signal cannot reach a stranger.
    if (term_sent)
        ::kill(-pid, SIGKILL);
    int status = 0;
    pid_t reaped;
    while ((reaped = ::waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
    }
    if (reaped != pid)
        return result; // reaped elsewhere (a SIGCHLD handler): the status is lost
    if (WIFEXITED(status) && !result.timed_out)
        result.status = WEXITSTATUS(status);
    else if (WIFSIGNALED(status))
        result.signal = WTERMSIG(status);
    return result;
}

std::string last_line(const std::string& output) {
    constexpr std::string_view blanks = " \t\r\n";
    size_t end = output.size();
    while (end > 0) {
        const size_t newline = output.rfind('\n', end - 1);
        const size_t begin = newline == std::string::npos ? 0 : newline + 1;
        const std::string_view line(output.data() + begin, end - begin);
        const size_t first = line.find_first_not_of(blanks);
        if (first != std::string_view::npos) {
            const size_t last = line.find_last_not_of(blanks);
            return std::string(line.substr(first, last - first + 1));
        }
        if (newline == std::string::npos)
            break;
        end = newline;
    }
    return {};
}

} // namespace p2vfs
