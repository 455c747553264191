// Checks a mount point before mounting, and recovers one left stale.
//
// A daemon killed with SIGKILL leaves its FUSE mount behind: every access to
// the directory then fails with ENOTCONN until someone unmounts it. The next
// daemon detects that, detaches the dead mount and says so; a live mount of
// anything else is left alone and reported as busy.
#pragma once

#include "common/error.h"

#include <cstdint>
#include <optional>
#include <string>

namespace p2vfs {

class MountError : public Error {
public:
    explicit MountError(const std::string& what, int err = EBUSY) : Error(what, err) {}
};

// Throws MountError when `dir` cannot be used; detaches a stale FUSE mount.
void prepare_mount_point(const std::string& dir);

struct MountInfo {
    std::string fstype;
    unsigned major;
    unsigned minor;
};
// The mount at exactly `dir` (canonical path), from /proc/self/mountinfo.
std::optional<MountInfo> find_mount(const std::string& dir);

} // namespace p2vfs
