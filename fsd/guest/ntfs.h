// NTFS volumes in process, through libntfs-3g, on a partition's range of a
// BlockDevice: the library is given a device-operations table of ours
// (ntfs.cpp) that reads and writes only [offset, offset+length) of the
// disk, so a lying boot sector cannot make it touch another partition, and
// every write goes to the BlockDevice it was given — for fixups, the
// overlay's fixups layer, never the source.
//
// Thread model: libntfs-3g keeps process-wide state (its log handler, among
// others), so every call into it is made under one process-wide mutex;
// volumes of different disks may be open at once and meet only there.
#pragma once

#include "block/block_device.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

struct _ntfs_volume;
struct ntfs_device;

namespace p2vfs::guest {

struct NtfsRange; // ntfs.cpp: what the device operations reach

struct NtfsEntry {
    bool directory = false;
    uint64_t size = 0; // of the unnamed data stream
};

class NtfsVolume {
public:
    // Opens the NTFS file system in [offset, offset+length) of `disk`.
    // `where` names it in messages ("partition 2"). Writable: `disk` must
    // take writes, and libntfs-3g refuses a volume Windows left unclean
    // (hibernated, Fast Startup, a journal to replay) — named as such.
    // Throws Error naming `where` and the reason.
    NtfsVolume(DevicePtr disk, uint64_t offset, uint64_t length, std::string where,
               bool writable = false);
    // Unmounts; a writable volume should be close()d first so that a failure
    // to write it is reported.
    ~NtfsVolume();
    NtfsVolume(const NtfsVolume&) = delete;
    NtfsVolume& operator=(const NtfsVolume&) = delete;

    const std::string& where() const { return where_; }

    // Paths are relative to the root, '/'-separated, matched without regard
    // to case ("Windows/System32/config/SYSTEM").

    // nullopt when `path` does not exist. Throws Error when the lookup fails
    // for any other reason (a damaged MFT record, an I/O error).
    std::optional<NtfsEntry> stat(const std::string& path);

    // Passes the first `length` bytes of the file (fewer when shorter) to
    // `sink`, in pieces. Throws Error naming the path when it is missing, a
    // directory, or cannot be read.
    void read(const std::string& path, uint64_t length,
              const std::function<void(const char*, size_t)>& sink);
    // The whole file; Error (EFBIG) naming its size when above `limit`.
    std::string read_file(const std::string& path, uint64_t limit);

    // Writable volumes only. Replaces the file's content with `bytes`
    // (made, with missing parent directories, when absent). Throws Error
    // naming the path.
    void write_file(const std::string& path, const std::string& bytes);
    void make_directories(const std::string& path);

    // Writes everything back and unmounts. Throws Error when libntfs-3g
    // cannot.
    void close();

private:
    std::string where_;
    std::unique_ptr<NtfsRange> range_;
    ::ntfs_device* dev_ = nullptr;
    ::_ntfs_volume* vol_ = nullptr;
};

// "Windows/System32/config/SYSTEM" -> "\Windows\System32\config\SYSTEM", as
// a Windows administrator would look for it.
std::string windows_path(const std::string& path);

} // namespace p2vfs::guest
