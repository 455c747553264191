// The D-Bus front end: serves the daemon core as org.p2vfs1 on a bus.
//
// Objects (the contract is the interface XML beside this file):
//   /org/p2vfs1                   org.freedesktop.DBus.ObjectManager
//   /org/p2vfs1/Manager           org.p2vfs1.Manager
//   /org/p2vfs1/sources/NAME      org.p2vfs1.Source, one per source
//   /org/p2vfs1/jobs/ID           org.p2vfs1.Job, one per job
//
// Thread model: one thread owns the connection (sd-bus is not thread-safe)
// and runs its own poll loop: it serves calls, and runs the tasks other
// threads post — the core's observer callbacks arrive on any thread and
// only post. Calls into the core from here are short: opening a source is
// the longest (an NBD connection), copies run on the jobs' own threads.
#pragma once

#include "core/core.h"

#include <memory>
#include <string>

namespace p2vfs {

inline constexpr const char* dbus_name = "org.p2vfs1";
inline constexpr const char* dbus_root_path = "/org/p2vfs1";
inline constexpr const char* dbus_error_prefix = "org.p2vfs.Error.";

// The object path of a source: NAME with every byte other than A-Z a-z 0-9
// written as _XX (its hex code).
inline std::string source_object_path(const std::string& name) {
    static const char digits[] = "0123456789abcdef";
    std::string path = std::string(dbus_root_path) + "/sources/";
    for (unsigned char c : name) {
        const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (plain) {
            path += static_cast<char>(c);
        } else {
            path += '_';
            path += digits[c >> 4];
            path += digits[c & 15];
        }
    }
    return path;
}
inline std::string job_object_path(const std::string& id) {
    return std::string(dbus_root_path) + "/jobs/" + id;
}

class DbusService {
public:
    // Connects to `bus` ("system", "session" or an address), takes the name
    // org.p2vfs1 and publishes the core's objects. Throws Error naming the
    // bus when it cannot (another p2vfsd owns the name, no bus there).
    DbusService(Core& core, const std::string& bus);
    ~DbusService(); // stops serving and gives the name up

    DbusService(const DbusService&) = delete;
    DbusService& operator=(const DbusService&) = delete;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

} // namespace p2vfs
