// Running a program and waiting for it: qemu-img, and the commands users
// configure (a sync job's quiesce step).
//
// A child starts with nothing of the daemon's but the environment: stdin is
// /dev/null, every descriptor above stderr is closed (the FUSE and D-Bus
// connections do not leak into it), the signal mask is empty and no signal
// is ignored (a daemon that blocks SIGTERM for its signalfd would otherwise
// hand a child that cannot be stopped). It leads its own process group, so
// a timeout kills what it started too, and a Ctrl-C at the daemon's
// terminal is not sent to it.
#pragma once

#include <csignal>
#include <string>
#include <sys/types.h>
#include <vector>

namespace p2vfs {

struct CommandResult {
    int status = -1; // exit status; -1 when killed by a signal or timed out
    bool timed_out = false;
    std::string output; // stdout and stderr together, the last 64 KiB
    int signal = 0;     // the signal that ended it, or 0
};

// Runs argv[0] (searched in PATH) with argv, stdin from /dev/null, the
// environment plus `env` ("NAME=value", replacing a variable of that name),
// killing it (SIGTERM, then SIGKILL after 5 s) and its process group after
// `timeout_seconds` (0: no limit). The child dies with this process
// (PR_SET_PDEATHSIG). Returns when the child has exited, even if something
// it left running in the background still holds its output open. Throws
// Error only when it cannot be started (fork failed, argv empty, an `env`
// entry without '='); a program that is missing gives status 127 and
// "cannot run NAME: REASON" in `output`.
CommandResult run_command(const std::vector<std::string>& argv, double timeout_seconds = 0,
                          const std::vector<std::string>& env = {});

// Starts argv as run_command() does, with stdout and stderr on `output_fd`,
// and returns its pid at once: the caller waits for it (waitpid). The child
// gets `death_signal` when the thread that called this ends (that is what
// PR_SET_PDEATHSIG follows), so a long-lived child must be started by a
// thread that outlives it. A program that cannot be run exits with status
// 127 after writing "cannot run NAME: REASON" to `output_fd`. Throws Error
// like run_command().
pid_t start_command(const std::vector<std::string>& argv, int output_fd,
                    const std::vector<std::string>& env = {}, int death_signal = SIGKILL);

// The last non-empty line of `output` (without surrounding blanks), for
// one-line error messages; empty when there is none.
std::string last_line(const std::string& output);

} // namespace p2vfs
