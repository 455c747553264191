#include "fuse/mount_point.h"

#include <fstream>
#include <spdlog/spdlog.h>
#include <sstream>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace p2vfs {
namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_mountinfo(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 3 < s.size()) {
            const std::string oct = s.substr(i + 1, 3);
            if (oct.size() == 3 && oct.find_first_not_of("01234567") == std::string::npos) {
                out += static_cast<char>(std::stoi(oct, nullptr, 8));
                i += 3;
                continue;
            }
        }
        out += s[i];
    }
    return out;
}

bool run_fusermount_detach(const std::string& dir) {
    const pid_t pid = ::fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        ::execlp("fusermount3", "fusermount3", "-u", "-z", "-q", dir.c_str(), nullptr);
        ::_exit(127);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

} // namespace

std::optional<MountInfo> find_mount(const std::string& dir) {
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    std::optional<MountInfo> found;
    while (std::getline(in, line)) {
        // id parent major:minor root mountpoint options ... - fstype source superopts
        std::istringstream fields(line);
        std::string id, parent, devno, root, mountpoint;
        fields >> id >> parent >> devno >> root >> mountpoint;
        if (unescape_mountinfo(mountpoint) != dir)
            continue;
        std::string tok;
        while (fields >> tok && tok != "-") {
        }
        MountInfo info{};
        fields >> info.fstype;
        if (std::sscanf(devno.c_str(), "%u:%u", &info.major, &info.minor) != 2)
            continue;
        found = info; // the last one listed is the one on top
    }
    return found;
}

void prepare_mount_point(const std::string& dir) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) {
        const int err = errno;
        if (err != ENOTCONN)
            throw MountError("mount point " + dir + ": " + errno_text(err), err);
        // A FUSE file system whose daemon is gone.
        spdlog::warn("mount point {}: stale FUSE mount left by a daemon that exited without "
                     "unmounting; detaching it",
                     dir);
        if (::umount2(dir.c_str(), MNT_DETACH) != 0 && !run_fusermount_detach(dir))
            throw MountError("mount point " + dir +
                                 ": stale FUSE mount could not be detached (try: fusermount3 -uz " +
                                 dir + ")",
                             ENOTCONN);
        if (::stat(dir.c_str(), &st) != 0) {
            const int e = errno;
            throw MountError(
                "mount point " + dir + " after detaching a stale mount: " + errno_text(e), e);
        }
        spdlog::info("mount point {}: stale mount detached", dir);
    }
    if (!S_ISDIR(st.st_mode))
        throw MountError("mount point " + dir + ": not a directory", ENOTDIR);
    char* real = ::realpath(dir.c_str(), nullptr);
    const std::string canonical = real ? real : dir;
    std::free(real);
    if (auto m = find_mount(canonical))
        throw MountError("mount point " + dir + " is busy: a " + m->fstype +
                         " file system is already mounted there");
}

} // namespace p2vfs
