// The FUSE front end: serves folders of BlockDevices as read-only files.
//
// Thread model: libfuse's multithreaded loop calls the operations from up to
// `max_threads` worker threads at once. The tree of inodes is built before
// mounting and never changes, so operations share it without locks; the
// devices behind the files are safe for concurrent readers. The only lazily
// computed state, a file's allocated size, is guarded by a std::once_flag.
#pragma once

#include "block/block_device.h"

#include <memory>
#include <string>
#include <vector>

namespace p2vfs {

struct MountedFile {
    std::string name;
    DevicePtr device;
};

struct MountedFolder {
    std::string name;
    std::vector<MountedFile> files;
};

struct FuseOptions {
    std::string mount_point;
    bool splice = false;           // reply with splice when a read maps to one fd range
    unsigned max_threads = 8;      // worker threads of the FUSE loop
    unsigned read_ahead_kb = 1024; // raised on the mount's bdi after mounting
    bool debug = false;            // libfuse's own request trace
};

class FuseFrontend {
public:
    FuseFrontend(FuseOptions options, std::vector<MountedFolder> folders);
    ~FuseFrontend();
    FuseFrontend(const FuseFrontend&) = delete;
    FuseFrontend& operator=(const FuseFrontend&) = delete;

    // Mounts, serves until SIGINT/SIGTERM/SIGHUP or an external unmount,
    // then unmounts. Throws MountError when the mount fails.
    void run();

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

} // namespace p2vfs
