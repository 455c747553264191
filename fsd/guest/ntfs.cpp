#include "guest/ntfs.h"

#include "common/error.h"

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <mutex>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <vector>

// libntfs-3g's headers use NULL, va_list and time() without including their
// headers (hence <cstddef>, <cstdarg>, <ctime> above), and its support.h
// defines min() and max() as macros, which would break <chrono> and
// std::min: so they come after every C++ header, and the macros go.
extern "C" {
#include <ntfs-3g/attrib.h>
#include <ntfs-3g/device.h>
#include <ntfs-3g/dir.h>
#include <ntfs-3g/inode.h>
#include <ntfs-3g/logging.h>
#include <ntfs-3g/types.h>
#include <ntfs-3g/unistr.h>
#include <ntfs-3g/volume.h>
}
#undef min
#undef max

namespace p2vfs::guest {

std::string windows_path(const std::string& path) {
    std::string out = "\\" + path;
    for (char& c : out)
        if (c == '/')
            c = '\\';
    return out;
}

struct NtfsRange {
    DevicePtr disk;
    uint64_t offset;
    uint64_t length;
    bool writable;
    uint64_t position = 0; // for seek(), read() and write()
    std::string io_error;  // the first read or write that failed or was refused
};

namespace {

constexpr size_t io_chunk = 1 << 20;

// ---- libntfs-3g: process-wide state ----------------------------------------

// Guards every call into libntfs-3g and `ntfs_log_text`. Lock order: taken
// alone; nothing else is locked while it is held.
std::mutex ntfs_mutex;

// What the library reported as errors during the current call: it explains
// its failures there (which record, which attribute), not in errno.
std::string ntfs_log_text;

int log_to_text(const char* /*function*/, const char* /*file*/, int /*line*/, u32 level,
                void* /*data*/, const char* format, va_list args) {
    const int saved = errno;
    char buf[512];
    std::vsnprintf(buf, sizeof buf, format, args);
    std::string text = buf;
    while (!text.empty() && (text.back() == '\n' || text.back() == '.'))
        text.pop_back();
    if (level & NTFS_LOG_LEVEL_PERROR)
        text += ": " + errno_text(saved);
    if (level & (NTFS_LOG_LEVEL_ERROR | NTFS_LOG_LEVEL_PERROR | NTFS_LOG_LEVEL_CRITICAL)) {
        // The first messages name the damage; later ones only the callers that gave up.
        if (ntfs_log_text.empty())
            ntfs_log_text = text;
        else if (ntfs_log_text.find("; ") == std::string::npos)
            ntfs_log_text += "; " + text;
    }
    spdlog::debug("libntfs-3g: {}", text);
    errno = saved;
    return 0;
}

// ---- the device: a partition's range of a BlockDevice ----------------------

NtfsRange& range_of(ntfs_device* dev) {
    return *static_cast<NtfsRange*>(dev->d_private);
}

s64 fail_io(NtfsRange& r, const std::string& what, int err) {
    if (r.io_error.empty())
        r.io_error = what;
    errno = err;
    return -1;
}

int dev_open(ntfs_device* dev, int flags) {
    NtfsRange& r = range_of(dev);
    if ((flags & O_ACCMODE) != O_RDONLY && !r.writable) {
        errno = EROFS;
        return -1;
    }
    NDevSetOpen(dev);
    if (!r.writable)
        NDevSetReadOnly(dev);
    return 0;
}

int dev_close(ntfs_device* dev) {
    NDevClearOpen(dev);
    return 0;
}

// Whether [at, at+count) lies in the partition; sets errno and the range's
// io_error when not.
bool in_range(NtfsRange& r, s64 count, s64 at, const char* what) {
    if (count < 0 || at < 0) {
        errno = EINVAL;
        return false;
    }
    const auto n = static_cast<uint64_t>(count);
    const auto pos = static_cast<uint64_t>(at);
    if (n > r.length || pos > r.length - n) {
        fail_io(r,
                std::string("a ") + what + " of " + std::to_string(n) + " bytes at " + hex(pos) +
                    " lies past the end of the partition (" + human_size(r.length) + ")",
                EIO);
        return false;
    }
    return true;
}

s64 dev_pread(ntfs_device* dev, void* buf, s64 count, s64 at) {
    NtfsRange& r = range_of(dev);
    if (!in_range(r, count, at, "read"))
        return -1;
    try {
        r.disk->read(buf, static_cast<size_t>(count), r.offset + static_cast<uint64_t>(at));
    } catch (const Error& e) {
        return fail_io(r, e.what(), e.error_number() ? e.error_number() : EIO);
    }
    return count;
}

s64 dev_pwrite(ntfs_device* dev, const void* buf, s64 count, s64 at) {
    NtfsRange& r = range_of(dev);
    if (!r.writable) {
        errno = EROFS;
        return -1;
    }
    if (!in_range(r, count, at, "write"))
        return -1;
    try {
        r.disk->write(buf, static_cast<size_t>(count), r.offset + static_cast<uint64_t>(at));
    } catch (const Error& e) {
        return fail_io(r, e.what(), e.error_number() ? e.error_number() : EIO);
    }
    return count;
}

s64 dev_read(ntfs_device* dev, void* buf, s64 count) {
    NtfsRange& r = range_of(dev);
    const s64 n = dev_pread(dev, buf, count, static_cast<s64>(r.position));
    if (n > 0)
        r.position += static_cast<uint64_t>(n);
    return n;
}

s64 dev_write(ntfs_device* dev, const void* buf, s64 count) {
    NtfsRange& r = range_of(dev);
    const s64 n = dev_pwrite(dev, buf, count, static_cast<s64>(r.position));
    if (n > 0)
        r.position += static_cast<uint64_t>(n);
    return n;
}

s64 dev_seek(ntfs_device* dev, s64 offset, int whence) {
    NtfsRange& r = range_of(dev);
    s64 base = 0;
    if (whence == SEEK_CUR)
        base = static_cast<s64>(r.position);
    else if (whence == SEEK_END)
        base = static_cast<s64>(r.length);
    else if (whence != SEEK_SET) {
        errno = EINVAL;
        return -1;
    }
    if ((offset < 0 && -offset > base) || (offset > 0 && offset > INT64_MAX - base)) {
        errno = EINVAL;
        return -1;
    }
    r.position = static_cast<uint64_t>(base + offset);
    return base + offset;
}

int dev_sync(ntfs_device* dev) {
    NtfsRange& r = range_of(dev);
    if (!r.writable)
        return 0;
    try {
        r.disk->flush();
    } catch (const Error& e) {
        return static_cast<int>(fail_io(r, e.what(), e.error_number() ? e.error_number() : EIO));
    }
    return 0;
}

int dev_stat(ntfs_device* dev, struct stat* st) {
    NtfsRange& r = range_of(dev);
    std::memset(st, 0, sizeof *st);
    st->st_mode = S_IFREG | (r.writable ? 0644 : 0444);
    st->st_size = static_cast<off_t>(r.length);
    return 0;
}

// Geometry, sector size and the like: the library falls back to the boot
// sector's values, which is what a disk image should be judged by anyway.
int dev_ioctl(ntfs_device*, unsigned long, void*) {
    errno = ENOTTY;
    return -1;
}

ntfs_device_operations range_operations = {
    dev_open,  dev_close,  dev_seek, dev_read, dev_write,
    dev_pread, dev_pwrite, dev_sync, dev_stat, dev_ioctl,
};

struct InodeClose {
    void operator()(ntfs_inode* ni) const { ntfs_inode_close(ni); }
};
struct AttrClose {
    void operator()(ntfs_attr* na) const { ntfs_attr_close(na); }
};
using InodePtr = std::unique_ptr<ntfs_inode, InodeClose>;
using AttrPtr = std::unique_ptr<ntfs_attr, AttrClose>;

// Caller holds ntfs_mutex. Forgets what earlier calls logged, so that a
// message names only the damage its own call met.
void begin_call(NtfsRange& r) {
    ntfs_log_text.clear();
    r.io_error.clear();
}

// errno, with what the library logged and the device saw: "Input/output
// error (Failed to load $MFT: ...; a read of 4096 bytes at 0x...)".
std::string reason(const NtfsRange& r, int err) {
    std::string out = errno_text(err ? err : EIO);
    std::string detail = ntfs_log_text;
    if (!r.io_error.empty())
        detail += (detail.empty() ? "" : "; ") + r.io_error;
    if (!detail.empty())
        out += " (" + detail + ")";
    return out;
}

std::pair<std::string, std::string> split_parent(const std::string& path) {
    const size_t slash = path.rfind('/');
    if (slash == std::string::npos)
        return {"", path};
    return {path.substr(0, slash), path.substr(slash + 1)};
}

} // namespace

// ---- NtfsVolume ------------------------------------------------------------

namespace {

// Caller holds ntfs_mutex. nullptr when the path does not exist; a lookup
// that fails on damage (the library logged why) throws.
InodePtr open_path(ntfs_volume* vol, NtfsRange& r, const std::string& where,
                   const std::string& path) {
    begin_call(r);
    errno = 0;
    InodePtr ni(ntfs_pathname_to_inode(vol, nullptr, path.empty() ? "/" : path.c_str()));
    if (!ni) {
        const int err = errno;
        if (err == ENOENT && ntfs_log_text.empty())
            return nullptr;
        throw Error(where + ": cannot look up " + windows_path(path) + ": " + reason(r, err), EIO);
    }
    return ni;
}

AttrPtr open_data(ntfs_inode* ni, NtfsRange& r, const std::string& where,
                  const std::string& path) {
    begin_call(r);
    AttrPtr na(ntfs_attr_open(ni, AT_DATA, AT_UNNAMED, 0));
    if (!na)
        throw Error(where + ": " + windows_path(path) + " has no readable data: " +
                        reason(r, errno),
                    EIO);
    if (na->data_size < 0)
        throw Error(where + ": " + windows_path(path) + " claims a negative size", EIO);
    return na;
}

// Caller holds ntfs_mutex. Makes `name` (a file or directory) in `dir`.
InodePtr create_in(ntfs_inode* dir, NtfsRange& r, const std::string& where,
                   const std::string& path, const std::string& name, mode_t type) {
    ntfschar* u = nullptr;
    const int len = ntfs_mbstoucs(name.c_str(), &u);
    if (len <= 0 || len > 255) {
        std::free(u);
        throw Error(where + ": cannot make " + windows_path(path) + ": its name is not valid",
                    EINVAL);
    }
    begin_call(r);
    InodePtr ni(ntfs_create(dir, const_cpu_to_le32(0), u, static_cast<u8>(len), type));
    const int err = errno;
    std::free(u);
    if (!ni)
        throw Error(where + ": cannot make " + windows_path(path) + ": " + reason(r, err), EIO);
    return ni;
}

} // namespace

NtfsVolume::NtfsVolume(DevicePtr disk, uint64_t offset, uint64_t length, std::string where,
                       bool writable)
    : where_(std::move(where)) {
    if (writable && !disk->writable())
        throw InvalidState(where_ + ": the NTFS file system cannot be written: " + disk->name() +
                           " takes no writes");
    range_ = std::make_unique<NtfsRange>(NtfsRange{std::move(disk), offset, length, writable, 0, {}});
    std::lock_guard<std::mutex> lock(ntfs_mutex);
    static std::once_flag handler_once;
    std::call_once(handler_once, [] { ntfs_log_set_handler(log_to_text); });
    begin_call(*range_);
    dev_ = ntfs_device_alloc(where_.c_str(), 0, &range_operations, range_.get());
    if (!dev_)
        throw Error(where_ + ": cannot allocate an NTFS device", ENOMEM);
    vol_ = ntfs_device_mount(dev_, writable ? NTFS_MNT_NONE : NTFS_MNT_RDONLY);
    if (!vol_) {
        const int err = errno;
        NDevClearOpen(dev_);
        ntfs_device_free(dev_);
        dev_ = nullptr;
        std::string why = reason(*range_, err);
        if (writable && err == EPERM)
            why += "; Windows left it hibernated, with Fast Startup, or with changes in its "
                   "journal: start Windows and shut it down fully (Fast Startup off) first";
        throw Error(where_ + ": the NTFS file system cannot be opened" +
                        (writable ? " for writing: " : ": ") + why,
                    EIO);
    }
    // Windows looks names up without regard to case ("WINDOWS\system32").
    if (ntfs_set_ignore_case(vol_))
        spdlog::warn("{}: NTFS names are matched case-sensitively: {}", where_, ntfs_log_text);
}

NtfsVolume::~NtfsVolume() {
    if (!vol_)
        return;
    std::lock_guard<std::mutex> lock(ntfs_mutex);
    ntfs_umount(vol_, FALSE); // frees dev_ too
}

void NtfsVolume::close() {
    if (!vol_)
        return;
    std::lock_guard<std::mutex> lock(ntfs_mutex);
    begin_call(*range_);
    ntfs_volume* vol = vol_;
    vol_ = nullptr;
    if (ntfs_umount(vol, FALSE) != 0)
        throw Error(where_ + ": the NTFS file system cannot be written back: " +
                        reason(*range_, errno),
                    EIO);
    if (!range_->io_error.empty())
        throw Error(where_ + ": the NTFS file system was not written back whole: " +
                        range_->io_error,
                    EIO);
}

std::optional<NtfsEntry> NtfsVolume::stat(const std::string& path) {
    std::lock_guard<std::mutex> lock(ntfs_mutex);
    InodePtr ni = open_path(vol_, *range_, where_, path);
    if (!ni)
        return std::nullopt;
    NtfsEntry e;
    e.directory = (ni->mrec->flags & MFT_RECORD_IS_DIRECTORY) != 0;
    if (!e.directory) {
        AttrPtr na = open_data(ni.get(), *range_, where_, path);
        e.size = static_cast<uint64_t>(na->data_size);
    }
    return e;
}

void NtfsVolume::read(const std::string& path, uint64_t length,
                      const std::function<void(const char*, size_t)>& sink) {
    std::lock_guard<std::mutex> lock(ntfs_mutex);
    InodePtr ni = open_path(vol_, *range_, where_, path);
    if (!ni)
        throw Error(where_ + ": " + windows_path(path) + " does not exist", ENOENT);
    if (ni->mrec->flags & MFT_RECORD_IS_DIRECTORY)
        throw Error(where_ + ": " + windows_path(path) + " is a directory", EISDIR);
    AttrPtr na = open_data(ni.get(), *range_, where_, path);
    const uint64_t total = std::min(length, static_cast<uint64_t>(na->data_size));
    std::vector<char> buf(static_cast<size_t>(std::min<uint64_t>(total, io_chunk)));
    for (uint64_t at = 0; at < total;) {
        const auto want = static_cast<s64>(std::min<uint64_t>(total - at, buf.size()));
        begin_call(*range_);
        const s64 got = ntfs_attr_pread(na.get(), static_cast<s64>(at), want, buf.data());
        if (got <= 0)
            throw Error(where_ + ": " + windows_path(path) + ": read at " + hex(at) +
                            " failed: " + reason(*range_, got < 0 ? errno : EIO),
                        EIO);
        sink(buf.data(), static_cast<size_t>(got));
        at += static_cast<uint64_t>(got);
    }
}

std::string NtfsVolume::read_file(const std::string& path, uint64_t limit) {
    const auto st = stat(path);
    if (!st)
        throw Error(where_ + ": " + windows_path(path) + " does not exist", ENOENT);
    if (st->directory)
        throw Error(where_ + ": " + windows_path(path) + " is a directory", EISDIR);
    if (st->size > limit)
        throw Error(where_ + ": " + windows_path(path) + " is " + human_size(st->size) +
                        ", more than the " + human_size(limit) + " it is read up to",
                    EFBIG);
    std::string out;
    out.reserve(static_cast<size_t>(st->size));
    read(path, st->size, [&](const char* p, size_t n) { out.append(p, n); });
    return out;
}

void NtfsVolume::make_directories(const std::string& path) {
    if (!range_->writable)
        throw InvalidState(where_ + " was opened read-only");
    std::lock_guard<std::mutex> lock(ntfs_mutex);
    std::string done;
    size_t i = 0;
    while (i < path.size()) {
        const size_t j = std::min(path.find('/', i), path.size());
        const std::string part = path.substr(i, j - i);
        i = j + 1;
        if (part.empty())
            continue;
        const std::string parent = done;
        done += (done.empty() ? "" : "/") + part;
        InodePtr ni = open_path(vol_, *range_, where_, done);
        if (ni) {
            if (!(ni->mrec->flags & MFT_RECORD_IS_DIRECTORY))
                throw Error(where_ + ": " + windows_path(done) + " is not a directory", ENOTDIR);
            continue;
        }
        InodePtr dir = open_path(vol_, *range_, where_, parent);
        if (!dir)
            throw Error(where_ + ": " + windows_path(parent) + " vanished", ENOENT);
        InodePtr made = create_in(dir.get(), *range_, where_, done, part, S_IFDIR);
        ntfs_inode_close_in_dir(made.release(), dir.get());
    }
}

void NtfsVolume::write_file(const std::string& path, const std::string& bytes) {
    if (!range_->writable)
        throw InvalidState(where_ + " was opened read-only");
    const auto [parent, name] = split_parent(path);
    if (!parent.empty())
        make_directories(parent);
    std::lock_guard<std::mutex> lock(ntfs_mutex);
    InodePtr dir = open_path(vol_, *range_, where_, parent);
    if (!dir)
        throw Error(where_ + ": " + windows_path(parent) + " does not exist", ENOENT);
    InodePtr ni = open_path(vol_, *range_, where_, path);
    if (!ni)
        ni = create_in(dir.get(), *range_, where_, path, name, S_IFREG);
    else if (ni->mrec->flags & MFT_RECORD_IS_DIRECTORY)
        throw Error(where_ + ": " + windows_path(path) + " is a directory", EISDIR);
    {
        AttrPtr na = open_data(ni.get(), *range_, where_, path);
        const auto size = static_cast<s64>(bytes.size());
        if (na->data_size != size) {
            begin_call(*range_);
            if (ntfs_attr_truncate(na.get(), size) != 0)
                throw Error(where_ + ": " + windows_path(path) + ": cannot resize it to " +
                                std::to_string(bytes.size()) + " bytes: " +
                                reason(*range_, errno),
                            EIO);
        }
        for (uint64_t at = 0; at < bytes.size();) {
            const auto want = static_cast<s64>(std::min<uint64_t>(bytes.size() - at, io_chunk));
            begin_call(*range_);
            const s64 put =
                ntfs_attr_pwrite(na.get(), static_cast<s64>(at), want, bytes.data() + at);
            if (put <= 0)
                throw Error(where_ + ": " + windows_path(path) + ": write at " + hex(at) +
                                " failed: " + reason(*range_, put < 0 ? errno : EIO),
                            EIO);
            at += static_cast<uint64_t>(put);
        }
    }
    // Closed while its directory is open, so that the size in the
    // directory's index entry is updated too.
    begin_call(*range_);
    if (ntfs_inode_close_in_dir(ni.release(), dir.get()) != 0)
        throw Error(where_ + ": " + windows_path(path) + ": cannot be written back: " +
                        reason(*range_, errno),
                    EIO);
}

} // namespace p2vfs::guest
