// The FUSE front end: serves folders of BlockDevices as files.
//
// Files are read-only unless marked writable (a writable disk.raw, whose
// writes go into an overlay). A file may be "live": its device is remade
// when what lies below it changes (a view over an overlay that takes
// writes). Each open of a file gets the device current at that moment and
// keeps it until it is closed, so the layout of an open file never changes
// mid-read; the next open sees the new layout. The attributes of live files
// are never cached by the kernel (timeout 0), their mtime is the time the
// current device was made, and each open drops the kernel's cached pages.
//
// Thread model: libfuse's multithreaded loop calls the operations from up to
// `max_threads` worker threads at once. The tree of inodes changes only when
// folders or files are added or removed (a reader-writer lock); the devices
// behind the files are safe for concurrent readers. What changes —
// a file's current device, made at the first open (a view to prepare) or
// when a live file's generation moves — is guarded by a mutex per file.
#pragma once

#include "block/block_device.h"

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace p2vfs {

// A file whose device is remade when the layers below it change.
class LiveFile {
public:
    virtual ~LiveFile() = default;
    // Changes whenever make() would give a device of another layout.
    virtual uint64_t generation() const = 0;
    // The device for the generation now (may be a view still to prepare).
    virtual DevicePtr make() = 0;
};

struct MountedFile {
    std::string name;
    DevicePtr device;              // the device at mount time
    std::shared_ptr<LiveFile> live = {}; // set: remade on open when its generation moves
    bool writable = false;         // opens for writing are allowed; writes go to device
    std::string format = {};       // the view format that made it, for listings
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
    // Called once mounted, before the first request is served (from run()'s
    // thread); an exception unmounts and leaves run() with it.
    std::function<void()> on_ready = {};
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

    // The tree may change before and while run() serves, from any thread.
    // A folder's name is unique in the root, a file's in its folder; a
    // clash throws InvalidArgument. The kernel is told to forget the names
    // it may have cached. Files still open in a removed folder keep reading
    // from what they opened.
    void add_folder(MountedFolder folder);
    void add_file(const std::string& folder, MountedFile file);
    bool remove_folder(const std::string& folder); // false: no such folder
    // Takes one file out of a folder; an open of it reads on. false: no such file.
    bool remove_file(const std::string& folder, const std::string& name);
    const std::string& mount_point() const;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

} // namespace p2vfs
