// An ext2/3/4 file system inside a disk, read and edited in process with
// libext2fs, through the disk's BlockDevice: the source (read-only) for
// inspection, the overlay's fixups layer for fixups. The file system is
// never mounted, so nothing of the guest runs and the kernel never sees it.
//
// libext2fs reaches the disk through an io_manager of ours (ext_fs.cpp)
// that reads and writes the partition's range of the device; a request
// outside the range is refused, so a lying superblock cannot make the
// library touch another partition.
//
// Paths are resolved from the file system's root, symlinks included (an
// absolute link resolves inside the guest, never on the host); a loop of
// links is an error naming the path.
//
// Not thread-safe: one ExtFs is used by one thread at a time.
#pragma once

#include "block/block_device.h"
#include "common/error.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

struct struct_ext2_filsys;

namespace p2vfs::guest {

struct ExtStat {
    uint32_t inode = 0;
    uint32_t mode = 0;   // type and permission bits (S_IFREG | 0644)
    uint64_t size = 0;
    uint32_t uid = 0;
    uint32_t gid = 0;
    bool is_dir() const { return (mode & 0170000) == 0040000; }
    bool is_file() const { return (mode & 0170000) == 0100000; }
    bool is_link() const { return (mode & 0170000) == 0120000; }
};

class ExtFs {
public:
    // Opens the file system at [offset, offset+length) of `disk`. `where`
    // names it in messages ("partition 1"). Throws Error naming `where` and
    // libext2fs's reason when it is not a file system the library can open,
    // and, for `writable`, when its journal needs recovery (editing around
    // an unreplayed journal would lose either the edit or the journal).
    ExtFs(DevicePtr disk, uint64_t offset, uint64_t length, bool writable, std::string where);
    ~ExtFs(); // closes; a writable one is flushed (errors are logged; call close() to see them)
    ExtFs(const ExtFs&) = delete;
    ExtFs& operator=(const ExtFs&) = delete;

    // Flushes the superblock, group descriptors and bitmaps (writable) and
    // closes. Throws Error when the flush fails.
    void close();

    const std::string& where() const { return where_; }
    std::string uuid() const;
    std::string label() const;
    bool needs_recovery() const;

    // nullopt when the path (or a directory on the way) does not exist.
    // `follow`: resolve a symlink at the end too.
    std::optional<ExtStat> stat(const std::string& path, bool follow = true);
    // The bytes of a regular file (symlinks followed). Throws Error naming
    // the path when it is missing, not a regular file, or larger than `limit`.
    std::string read_file(const std::string& path, uint64_t limit = 1 << 20);
    std::optional<std::string> read_file_if_exists(const std::string& path, uint64_t limit = 1 << 20);
    std::string read_link(const std::string& path);
    // Names in a directory, without "." and "..", sorted. Empty when missing.
    std::vector<std::string> list(const std::string& dir);

    // Writable only. Replaces the content of `path` (made, owned by root with
    // `mode`, if it does not exist; its directory must), keeping an existing
    // file's owner and mode.
    void write_file(const std::string& path, const std::string& content, uint32_t mode = 0644);
    // Makes a symlink (replacing an existing symlink of that name).
    void symlink(const std::string& path, const std::string& target);
    // Removes a file or symlink; no-op when missing.
    void remove(const std::string& path);
    // Makes a directory (and its parents) owned by root, mode 0755.
    void make_directories(const std::string& path);

private:
    struct_ext2_filsys* fs_ = nullptr;
    std::string where_;
    std::string channel_name_;
    bool writable_ = false;

    [[noreturn]] void fail(const std::string& what, long code) const;
    uint32_t lookup(const std::string& path, bool follow, bool* missing);
    std::pair<uint32_t, std::string> parent_of(const std::string& path);
};

} // namespace p2vfs::guest
