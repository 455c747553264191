// Who is asking, and whether they may: the daemon's own access checks.
//
// The D-Bus policy decides who may call methods at all; these checks decide
// what a caller may name. A caller may add as a source only a path it could
// open for reading itself, and materialize only where it could create the
// file itself: the daemon runs as root and must not lend its reach.
//
// The checks run on a short-lived thread that takes the caller's file
// system identity (setfsuid, setfsgid, setgroups: per thread on Linux) and
// asks the kernel, so permission bits, ACLs and directory search rights all
// count exactly as they would for the caller.
#pragma once

#include "common/error.h"
#include "common/file_io.h"

#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace p2vfs {

class AccessDenied : public Error {
public:
    explicit AccessDenied(const std::string& what) : Error(what, EACCES) {}
};

struct Caller {
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups; // supplementary groups
    bool is_root() const { return uid == 0; }
    std::string describe() const; // "uid 1000 (alice)"

    // The caller with uid `uid`, its primary and supplementary groups from
    // the user database (a uid without an entry: no groups).
    static Caller from_uid(uid_t uid);
};

// Root, or a member of `control_group`, may change things.
bool may_control(const Caller& caller, std::optional<gid_t> control_group);

// Throws AccessDenied ("uid 1000 (alice) cannot read /dev/sda") unless the
// caller could open `path` for reading. Root passes.
void check_can_read(const Caller& caller, const std::string& path);

// Opens `path` for reading as the caller would (O_RDONLY|O_NONBLOCK), so
// that what the daemon opens afterwards can be compared with it (fstat):
// a path checked and then opened again could have changed in between.
// Throws AccessDenied as check_can_read, Error for other failures. Root
// gets an fd opened the ordinary way.
UniqueFd open_as_caller(const Caller& caller, const std::string& path);

// Throws AccessDenied unless the caller could create `path` (write and
// search rights on its directory). Root passes.
void check_can_create(const Caller& caller, const std::string& path);

// The gid of group `name`, if there is one.
std::optional<gid_t> group_id(const std::string& name);

} // namespace p2vfs
