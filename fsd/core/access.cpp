#include "core/access.h"

#include "common/file_io.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>

namespace p2vfs {
namespace {

std::string user_name(uid_t uid) {
    struct passwd pw {};
    struct passwd* found = nullptr;
    std::vector<char> buf(16384);
    if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found)
        return found->pw_name;
    return {};
}

// Runs `check` on a thread with the caller's file system identity and
// returns the errno it gives (0: allowed). The raw system calls change only
// the calling thread's credentials (glibc's wrappers would change every
// thread's); the thread and its credentials end with the check. Changing
// the fsuid from 0 drops the file system capabilities of that thread.
template <typename Check> int as_caller(const Caller& caller, Check check) {
    int result = 0;
    std::thread t([&] {
        if (::syscall(SYS_setgroups, caller.groups.size(), caller.groups.data()) != 0) {
            result = errno;
            return;
        }
        ::syscall(SYS_setfsgid, caller.gid);
        ::syscall(SYS_setfsuid, caller.uid);
        if (static_cast<uid_t>(::syscall(SYS_setfsuid, -1)) != caller.uid ||
            static_cast<gid_t>(::syscall(SYS_setfsgid, -1)) != caller.gid) {
            result = EPERM; // could not take the identity: refuse
            return;
        }
        result = check();
    });
    t.join();
    return result;
}

std::string parent_directory(const std::string& path) {
    const auto slash = path.find_last_of('/');
    if (slash == std::string::npos)
        return ".";
    return slash == 0 ? "/" : path.substr(0, slash);
}

} // namespace

std::string Caller::describe() const {
    const std::string name = user_name(uid);
    return "uid " + std::to_string(uid) + (name.empty() ? "" : " (" + name + ")");
}

Caller Caller::from_uid(uid_t uid) {
    Caller c;
    c.uid = uid;
    struct passwd pw {};
    struct passwd* found = nullptr;
    std::vector<char> buf(16384);
    if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) != 0 || !found) {
        c.gid = static_cast<gid_t>(-1);
        return c;
    }
    c.gid = found->pw_gid;
    int n = 64;
    for (int attempt = 0; attempt < 4; ++attempt) {
        c.groups.resize(static_cast<size_t>(n));
        int count = n;
        if (::getgrouplist(found->pw_name, found->pw_gid, c.groups.data(), &count) >= 0) {
            c.groups.resize(static_cast<size_t>(count));
            return c;
        }
        n = count > n ? count : n * 4;
    }
    c.groups.assign(1, found->pw_gid);
    return c;
}

bool may_control(const Caller& caller, std::optional<gid_t> control_group) {
    if (caller.is_root())
        return true;
    if (!control_group)
        return false;
    if (caller.gid == *control_group)
        return true;
    for (gid_t g : caller.groups)
        if (g == *control_group)
            return true;
    return false;
}

void check_can_read(const Caller& caller, const std::string& path) {
    if (caller.is_root())
        return;
    const int err = as_caller(caller, [&] {
        // O_NONBLOCK: a FIFO or a device must not hold the check up.
        const int fd = ::open(path.c_str(), O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
            return errno;
        ::close(fd);
        return 0;
    });
    if (err == EACCES || err == EPERM)
        throw AccessDenied(caller.describe() + " cannot read " + path);
    // Other failures (no such file) are the opening's to report.
}

UniqueFd open_as_caller(const Caller& caller, const std::string& path) {
    const int flags = O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC;
    int fd = -1;
    const int err = caller.is_root() ? 0 : as_caller(caller, [&] {
        fd = ::open(path.c_str(), flags);
        return fd < 0 ? errno : 0;
    });
    if (caller.is_root()) {
        fd = ::open(path.c_str(), flags);
        if (fd < 0)
            throw Error(path + ": " + errno_text(errno), errno);
    }
    if (err == EACCES || err == EPERM)
        throw AccessDenied(caller.describe() + " cannot read " + path);
    if (err != 0)
        throw Error(path + ": " + errno_text(err), err);
    return UniqueFd(fd);
}

void check_can_create(const Caller& caller, const std::string& path) {
    if (caller.is_root())
        return;
    const std::string dir = parent_directory(path);
    const int err = as_caller(caller, [&] {
        return ::faccessat(AT_FDCWD, dir.c_str(), W_OK | X_OK, AT_EACCESS) == 0 ? 0 : errno;
    });
    if (err == EACCES || err == EPERM || err == EROFS)
        throw AccessDenied(caller.describe() + " cannot create files in " + dir);
    if (err != 0)
        throw Error("destination directory " + dir + ": " + errno_text(err), err);
}

std::optional<gid_t> group_id(const std::string& name) {
    struct group gr {};
    struct group* found = nullptr;
    std::vector<char> buf(16384);
    if (::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found) == 0 && found)
        return found->gr_gid;
    return std::nullopt;
}

} // namespace p2vfs
