#include "guest/windows.h"

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
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <spdlog/spdlog.h>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
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
#include <ntfs-3g/volume.h>
}
#undef min
#undef max
#include <hivex.h>

namespace p2vfs::guest {

namespace {

// A hive larger than this is refused: real SOFTWARE hives stay well under
// it, and the copy is held in memory while it is read.
constexpr uint64_t hive_limit = 512ull << 20;
constexpr size_t read_chunk = 1 << 20;

constexpr const char* system_hive = "Windows/System32/config/SYSTEM";
constexpr const char* software_hive = "Windows/System32/config/SOFTWARE";

std::string volume_name(const Volume& v) {
    return v.partition ? "partition " + std::to_string(v.partition) : "the whole disk";
}

// "Windows/System32/config/SYSTEM" -> "\Windows\System32\config\SYSTEM", as
// a Windows administrator would look for it.
std::string windows_path(const std::string& path) {
    std::string out = "\\" + path;
    for (char& c : out)
        if (c == '/')
            c = '\\';
    return out;
}

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

struct Range {
    DevicePtr disk;
    uint64_t offset;
    uint64_t length;
    uint64_t position = 0; // for seek() and read()
    std::string io_error;  // the first read that failed or was refused
};

Range& range_of(ntfs_device* dev) {
    return *static_cast<Range*>(dev->d_private);
}

s64 fail_io(Range& r, const std::string& what, int err) {
    if (r.io_error.empty())
        r.io_error = what;
    errno = err;
    return -1;
}

int dev_open(ntfs_device* dev, int flags) {
    if ((flags & O_ACCMODE) != O_RDONLY) {
        errno = EROFS;
        return -1;
    }
    NDevSetOpen(dev);
    NDevSetReadOnly(dev);
    return 0;
}

int dev_close(ntfs_device* dev) {
    NDevClearOpen(dev);
    return 0;
}

s64 dev_pread(ntfs_device* dev, void* buf, s64 count, s64 at) {
    Range& r = range_of(dev);
    if (count < 0 || at < 0) {
        errno = EINVAL;
        return -1;
    }
    const auto n = static_cast<uint64_t>(count);
    const auto pos = static_cast<uint64_t>(at);
    if (n > r.length || pos > r.length - n)
        return fail_io(r,
                       "a read of " + std::to_string(n) + " bytes at " + hex(pos) +
                           " lies past the end of the partition (" + human_size(r.length) + ")",
                       EIO);
    try {
        r.disk->read(buf, n, r.offset + pos);
    } catch (const Error& e) {
        return fail_io(r, e.what(), e.error_number() ? e.error_number() : EIO);
    }
    return count;
}

s64 dev_read(ntfs_device* dev, void* buf, s64 count) {
    Range& r = range_of(dev);
    const s64 n = dev_pread(dev, buf, count, static_cast<s64>(r.position));
    if (n > 0)
        r.position += static_cast<uint64_t>(n);
    return n;
}

s64 dev_seek(ntfs_device* dev, s64 offset, int whence) {
    Range& r = range_of(dev);
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

s64 dev_write(ntfs_device*, const void*, s64) {
    errno = EROFS;
    return -1;
}

s64 dev_pwrite(ntfs_device*, const void*, s64, s64) {
    errno = EROFS;
    return -1;
}

int dev_sync(ntfs_device*) {
    return 0;
}

int dev_stat(ntfs_device* dev, struct stat* st) {
    std::memset(st, 0, sizeof *st);
    st->st_mode = S_IFREG | 0444;
    st->st_size = static_cast<off_t>(range_of(dev).length);
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

// ---- an NTFS volume, read-only ---------------------------------------------

struct NtfsEntry {
    bool directory = false;
    uint64_t size = 0; // of the unnamed data stream
};

class NtfsVolume {
public:
    // Throws Error naming `where` and the reason when the volume cannot be
    // opened.
    NtfsVolume(DevicePtr disk, uint64_t offset, uint64_t length, std::string where)
        : where_(std::move(where)), range_{std::move(disk), offset, length, 0, {}} {
        std::lock_guard<std::mutex> lock(ntfs_mutex);
        static std::once_flag handler_once;
        std::call_once(handler_once, [] { ntfs_log_set_handler(log_to_text); });
        begin_call();
        dev_ = ntfs_device_alloc(where_.c_str(), 0, &range_operations, &range_);
        if (!dev_)
            throw Error(where_ + ": cannot allocate an NTFS device", ENOMEM);
        vol_ = ntfs_device_mount(dev_, NTFS_MNT_RDONLY);
        if (!vol_) {
            const int err = errno;
            NDevClearOpen(dev_);
            ntfs_device_free(dev_);
            throw Error(where_ + ": the NTFS file system cannot be opened: " + reason(err), EIO);
        }
        // Windows looks names up without regard to case ("WINDOWS\system32").
        if (ntfs_set_ignore_case(vol_))
            spdlog::warn("{}: NTFS names are matched case-sensitively: {}", where_, ntfs_log_text);
    }

    ~NtfsVolume() {
        std::lock_guard<std::mutex> lock(ntfs_mutex);
        ntfs_umount(vol_, FALSE); // frees dev_ too
    }

    NtfsVolume(const NtfsVolume&) = delete;
    NtfsVolume& operator=(const NtfsVolume&) = delete;

    const std::string& where() const { return where_; }

    // nullopt when `path` (relative to the root, '/'-separated) does not
    // exist. Throws Error when the lookup fails for any other reason.
    std::optional<NtfsEntry> stat(const std::string& path) {
        std::lock_guard<std::mutex> lock(ntfs_mutex);
        InodePtr ni = open(path);
        if (!ni)
            return std::nullopt;
        NtfsEntry e;
        e.directory = (ni->mrec->flags & MFT_RECORD_IS_DIRECTORY) != 0;
        if (!e.directory) {
            AttrPtr na = open_data(ni.get(), path);
            e.size = static_cast<uint64_t>(na->data_size);
        }
        return e;
    }

    // Passes the first `length` bytes of the file at `path` (fewer when it
    // is shorter) to `sink`, in pieces. Throws Error naming the path when
    // it is missing, not a file, or cannot be read.
    void read(const std::string& path, uint64_t length,
              const std::function<void(const char*, size_t)>& sink) {
        std::lock_guard<std::mutex> lock(ntfs_mutex);
        InodePtr ni = open(path);
        if (!ni)
            throw Error(where_ + ": " + windows_path(path) + " does not exist", ENOENT);
        if (ni->mrec->flags & MFT_RECORD_IS_DIRECTORY)
            throw Error(where_ + ": " + windows_path(path) + " is a directory", EISDIR);
        AttrPtr na = open_data(ni.get(), path);
        const uint64_t total = std::min(length, static_cast<uint64_t>(na->data_size));
        std::vector<char> buf(static_cast<size_t>(std::min<uint64_t>(total, read_chunk)));
        for (uint64_t at = 0; at < total;) {
            const auto want = static_cast<s64>(std::min<uint64_t>(total - at, buf.size()));
            begin_call();
            const s64 got = ntfs_attr_pread(na.get(), static_cast<s64>(at), want, buf.data());
            if (got <= 0)
                throw Error(where_ + ": " + windows_path(path) + ": read at " + hex(at) +
                                " failed: " + reason(got < 0 ? errno : EIO),
                            EIO);
            sink(buf.data(), static_cast<size_t>(got));
            at += static_cast<uint64_t>(got);
        }
    }

private:
    struct InodeClose {
        void operator()(ntfs_inode* ni) const { ntfs_inode_close(ni); }
    };
    struct AttrClose {
        void operator()(ntfs_attr* na) const { ntfs_attr_close(na); }
    };
    using InodePtr = std::unique_ptr<ntfs_inode, InodeClose>;
    using AttrPtr = std::unique_ptr<ntfs_attr, AttrClose>;

    std::string where_;
    Range range_;
    ntfs_device* dev_ = nullptr;
    ntfs_volume* vol_ = nullptr;

    // Caller holds ntfs_mutex. Forgets what earlier calls logged, so that a
    // message names only the damage its own call met.
    void begin_call() {
        ntfs_log_text.clear();
        range_.io_error.clear();
    }

    // errno, with what the library logged and the device saw: "Input/output
    // error (Failed to load $MFT: ...; a read of 4096 bytes at 0x...)".
    std::string reason(int err) const {
        std::string out = errno_text(err ? err : EIO);
        std::string detail = ntfs_log_text;
        if (!range_.io_error.empty())
            detail += (detail.empty() ? "" : "; ") + range_.io_error;
        if (!detail.empty())
            out += " (" + detail + ")";
        return out;
    }

    // Caller holds ntfs_mutex. nullptr when the path does not exist; a
    // lookup that fails on damage (the library logged why) throws.
    InodePtr open(const std::string& path) {
        begin_call();
        errno = 0;
        InodePtr ni(ntfs_pathname_to_inode(vol_, nullptr, path.c_str()));
        if (!ni) {
            const int err = errno;
            if (err == ENOENT && ntfs_log_text.empty())
                return nullptr;
            throw Error(where_ + ": cannot look up " + windows_path(path) + ": " + reason(err),
                        EIO);
        }
        return ni;
    }

    AttrPtr open_data(ntfs_inode* ni, const std::string& path) {
        begin_call();
        AttrPtr na(ntfs_attr_open(ni, AT_DATA, AT_UNNAMED, 0));
        if (!na)
            throw Error(where_ + ": " + windows_path(path) +
                            " has no readable data: " + reason(errno),
                        EIO);
        if (na->data_size < 0)
            throw Error(where_ + ": " + windows_path(path) + " claims a negative size", EIO);
        return na;
    }
};

// ---- registry hives --------------------------------------------------------

// A hive read from an NTFS volume into memory and opened with hivex. hivex
// takes a file name, so the copy lives in an anonymous memory file reached
// through /proc/self/fd; nothing is written to any file system.
class Hive {
public:
    // `path` as NtfsVolume takes it. Throws Error naming the hive and the
    // volume when it is missing, too large, or not a hive hivex accepts.
    Hive(NtfsVolume& vol, const std::string& path)
        : name_(windows_path(path) + " on " + vol.where()) {
        const auto st = vol.stat(path);
        if (!st || st->directory)
            throw Error(vol.where() + ": " + windows_path(path) + " is missing", ENOENT);
        if (st->size > hive_limit)
            throw Error(name_ + " is " + human_size(st->size) + ", more than the " +
                            human_size(hive_limit) + " a registry hive is read up to",
                        EFBIG);
        const int fd = ::memfd_create("p2vfs-hive", MFD_CLOEXEC);
        if (fd < 0)
            throw Error("cannot make a memory file for " + name_ + ": " + errno_text(errno));
        std::string magic; // hivex reports a file of another kind only by errno
        try {
            vol.read(path, st->size, [&](const char* p, size_t n) {
                magic.append(p, std::min(n, 4 - magic.size()));
                while (n > 0) {
                    const ssize_t w = ::write(fd, p, n);
                    if (w < 0 && errno == EINTR)
                        continue;
                    if (w <= 0)
                        throw Error("cannot copy " + name_ +
                                    " into memory: " + errno_text(w < 0 ? errno : ENOSPC));
                    p += w;
                    n -= static_cast<size_t>(w);
                }
            });
        } catch (...) {
            ::close(fd);
            throw;
        }
        if (magic != "regf") {
            ::close(fd);
            throw Error(name_ + " is not a registry hive: it does not start with 'regf'", EIO);
        }
        const std::string proc = "/proc/self/fd/" + std::to_string(fd);
        errno = 0;
        h_ = hivex_open(proc.c_str(), 0);
        const int err = errno;
        ::close(fd);
        if (!h_)
            throw Error(name_ + " is a damaged registry hive (hivex: " +
                            errno_text(err ? err : EINVAL) + ")",
                        EIO);
    }

    ~Hive() { hivex_close(h_); }
    Hive(const Hive&) = delete;
    Hive& operator=(const Hive&) = delete;

    // The key at `key_path` ("Microsoft\Windows NT\CurrentVersion", matched
    // without regard to case, as Windows does); 0 when it does not exist.
    // Throws Error when the hive is damaged on the way.
    hive_node_h key(const std::string& key_path) {
        hive_node_h node = hivex_root(h_);
        if (!node)
            throw damaged("the root key", errno);
        size_t i = 0;
        while (node && i < key_path.size()) {
            const size_t j = std::min(key_path.find('\\', i), key_path.size());
            const std::string part = key_path.substr(i, j - i);
            i = j + 1;
            if (part.empty())
                continue;
            errno = 0;
            node = hivex_node_get_child(h_, node, part.c_str());
            if (!node && errno)
                throw damaged("key " + key_path, errno);
        }
        return node;
    }

    // A REG_SZ / REG_EXPAND_SZ value as UTF-8; nullopt when it is missing
    // or of another type.
    std::optional<std::string> string(hive_node_h node, const char* name) {
        const hive_value_h v = value(node, name);
        if (!v || !is_type(v, {hive_t_REG_SZ, hive_t_REG_EXPAND_SZ}))
            return std::nullopt;
        char* s = hivex_value_string(h_, v);
        if (!s)
            throw damaged("value " + std::string(name), errno);
        std::string out = s;
        std::free(s);
        return out;
    }

    // A REG_DWORD value; nullopt when it is missing or of another type.
    std::optional<uint32_t> dword(hive_node_h node, const char* name) {
        const hive_value_h v = value(node, name);
        if (!v || !is_type(v, {hive_t_REG_DWORD, hive_t_REG_DWORD_BIG_ENDIAN}))
            return std::nullopt;
        errno = 0;
        const int32_t d = hivex_value_dword(h_, v);
        if (d == -1 && errno)
            throw damaged("value " + std::string(name), errno);
        return static_cast<uint32_t>(d);
    }

    const std::string& name() const { return name_; }

private:
    std::string name_;
    hive_h* h_ = nullptr;

    Error damaged(const std::string& what, int err) const {
        return Error(name_ + ": " + what +
                         " cannot be read (hivex: " + errno_text(err ? err : EINVAL) + ")",
                     EIO);
    }

    hive_value_h value(hive_node_h node, const char* name) {
        errno = 0;
        const hive_value_h v = hivex_node_get_value(h_, node, name);
        if (!v && errno)
            throw damaged("value " + std::string(name), errno);
        return v;
    }

    bool is_type(hive_value_h v, std::initializer_list<hive_type> types) {
        hive_type t{};
        size_t len = 0;
        if (hivex_value_type(h_, v, &t, &len) != 0)
            throw damaged("a value's type", errno);
        for (hive_type want : types)
            if (t == want)
                return true;
        return false;
    }
};

// ---- what the hives say ----------------------------------------------------

void add(Inventory& inv, std::string id, std::string severity, std::string message) {
    inv.findings.push_back({std::move(id), std::move(severity), std::move(message)});
}

void read_software(NtfsVolume& vol, WindowsGuest& g, Inventory& inv) {
    Hive hive(vol, software_hive);
    const std::string key_path = "Microsoft\\Windows NT\\CurrentVersion";
    const hive_node_h cv = hive.key(key_path);
    if (!cv) {
        add(inv, "windows-unreadable", "warning",
            hive.name() + " has no key " + key_path + ": the Windows version is unknown");
        return;
    }
    g.product_name = hive.string(cv, "ProductName").value_or("");
    g.edition_id = hive.string(cv, "EditionID").value_or("");
    g.current_version = hive.string(cv, "CurrentVersion").value_or("");
    // Windows XP keeps an obsolete text in CurrentBuild; later versions have
    // the number in both.
    g.current_build = hive.string(cv, "CurrentBuildNumber").value_or("");
    if (g.current_build.empty())
        g.current_build = hive.string(cv, "CurrentBuild").value_or("");
    g.display_version = hive.string(cv, "DisplayVersion").value_or("");
    g.system_root = hive.string(cv, "SystemRoot").value_or("");
}

void read_system(NtfsVolume& vol, WindowsGuest& g, Inventory& inv) {
    Hive hive(vol, system_hive);
    // The control set Windows boots with is the one Select\Current names.
    const hive_node_h select = hive.key("Select");
    const auto current = select ? hive.dword(select, "Current") : std::nullopt;
    if (!current || *current < 1 || *current > 999) {
        add(inv, "windows-unreadable", "warning",
            hive.name() + ": " +
                (current ? "Select\\Current is " + std::to_string(*current) +
                               ", which names no control set"
                         : std::string("Select\\Current is missing")) +
                ": the host name and Fast Startup setting are unknown");
        return;
    }
    char set_name[16];
    std::snprintf(set_name, sizeof set_name, "ControlSet%03u", *current);
    const hive_node_h set = hive.key(set_name);
    if (!set) {
        add(inv, "windows-unreadable", "warning",
            hive.name() + ": Select\\Current names " + set_name +
                ", which does not exist: the host name and Fast Startup setting are unknown");
        return;
    }
    const std::string control = std::string(set_name) + "\\Control";
    if (const hive_node_h n = hive.key(control + "\\ComputerName\\ComputerName"))
        g.hostname = hive.string(n, "ComputerName").value_or("");
    if (const hive_node_h n = hive.key(control + "\\Session Manager\\Power"))
        g.fast_startup = hive.dword(n, "HiberbootEnabled").value_or(0) == 1;
    if (g.fast_startup)
        add(inv, "fast-startup", "warning",
            "Fast Startup is on (HiberbootEnabled=1 in " + control +
                "\\Session Manager\\Power of " + hive.name() +
                "): a shutdown hibernates the kernel and may leave the NTFS volumes "
                "dirty; turn it off (powercfg /h off) and shut down again before the last sync");
}

// Windows writes "HIBR" (older: "WAKE") at the start of \hiberfil.sys when
// it hibernates, and clears or lowercases it when it resumes.
void read_hiberfil(NtfsVolume& vol, WindowsGuest& g, Inventory& inv) {
    const std::string path = "hiberfil.sys";
    const auto st = vol.stat(path);
    if (!st || st->directory)
        return;
    std::string head;
    vol.read(path, 4, [&](const char* p, size_t n) { head.append(p, n); });
    g.hibernated = head == "HIBR" || head == "WAKE";
    if (g.hibernated)
        add(inv, "hibernated", "blocker",
            vol.where() + ": \\hiberfil.sys holds a hibernation image (signature '" + head +
                "'); resume Windows and shut it down fully first, or it resumes into the old "
                "hardware and the volumes' changes since are lost");
}

bool has_boot_loader(NtfsVolume& vol) {
    for (const char* loader : {"bootmgr", "ntldr"})
        if (const auto st = vol.stat(loader); st && !st->directory)
            return true;
    return false;
}

struct OpenVolume {
    const Volume* volume;
    std::unique_ptr<NtfsVolume> ntfs;
};

} // namespace

void inspect_windows(const DevicePtr& disk, Inventory& inv) {
    std::vector<OpenVolume> opened;
    OpenVolume* system = nullptr;
    OpenVolume* windows_dir = nullptr; // has \Windows\System32\config, but maybe no SYSTEM
    std::string searched;
    for (const Volume& v : inv.volumes) {
        if (!v.fs || v.fs->type != "ntfs")
            continue;
        searched += (searched.empty() ? "" : ", ") + volume_name(v);
        try {
            opened.push_back(
                {&v, std::make_unique<NtfsVolume>(disk, v.offset, v.length, volume_name(v))});
        } catch (const Error& e) {
            add(inv, "windows-unreadable", "warning", e.what());
        }
    }
    for (OpenVolume& o : opened) {
        try {
            if (const auto st = o.ntfs->stat(system_hive); st && !st->directory) {
                system = &o;
                break;
            }
            if (const auto st = o.ntfs->stat("Windows/System32/config");
                st && st->directory && !windows_dir)
                windows_dir = &o;
        } catch (const Error& e) {
            add(inv, "windows-unreadable", "warning", e.what());
        }
    }
    if (!system)
        system = windows_dir;
    if (!system) {
        if (!opened.empty())
            add(inv, "windows-unreadable", "warning",
                "no NTFS volume holds \\Windows\\System32\\config\\SYSTEM (searched " + searched +
                    "): no Windows installation was found");
        return;
    }

    WindowsGuest g;
    g.system_partition = system->volume->partition;
    using Part = void (*)(NtfsVolume&, WindowsGuest&, Inventory&);
    for (Part part : {Part(read_software), Part(read_system), Part(read_hiberfil)}) {
        try {
            part(*system->ntfs, g, inv);
        } catch (const Error& e) {
            add(inv, "windows-unreadable", "warning", e.what());
        }
    }

    // The firmware follows the disk: an EFI System partition (where
    // \EFI\Microsoft\Boot\bootmgfw.efi lives) means UEFI; without one,
    // BIOS boots \bootmgr from the active partition or the system volume.
    g.boot_mode = "unknown";
    if (inv.firmware == "uefi") {
        g.boot_mode = "uefi";
    } else {
        std::vector<OpenVolume*> candidates{system};
        for (OpenVolume& o : opened)
            for (const Partition& p : inv.table.partitions)
                if (&o != system && p.bootable && p.number == o.volume->partition)
                    candidates.insert(candidates.begin(), &o);
        for (OpenVolume* o : candidates) {
            try {
                if (has_boot_loader(*o->ntfs)) {
                    g.boot_mode = "bios";
                    g.boot_partition = o->volume->partition;
                    break;
                }
            } catch (const Error& e) {
                add(inv, "windows-unreadable", "warning", e.what());
            }
        }
    }
    inv.windows_guest = std::move(g);
}

} // namespace p2vfs::guest
