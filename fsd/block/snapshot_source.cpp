#include "block/snapshot_source.h"

#include "common/endian.h"
#include "common/error.h"
#include "common/file_io.h"
#include "common/stable_id.h"

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <linux/fs.h>
#include <linux/magic.h>
#include <map>
#include <memory>
#include <optional>
#include <spdlog/spdlog.h>
#include <sstream>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

namespace p2vfs {
namespace {

constexpr const char* snapshot_suffix = ".snap";
constexpr const char* record_suffix = ".meta";
constexpr const char* temp_suffix = ".tmp";

bool ends_with(const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

std::string base_name(const std::string& path) {
    const auto slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string canonical_path(const std::string& path) {
    std::unique_ptr<char, decltype(&std::free)> p(::realpath(path.c_str(), nullptr), &std::free);
    return p ? std::string(p.get()) : path;
}

std::string device_text(uint64_t dev) {
    return std::to_string(major(dev)) + ":" + std::to_string(minor(dev));
}

// ---------------------------------------------------------------- mounts

// The file system holding a path, for messages: where it is mounted, and
// its type as mount(8) names it.
struct MountInfo {
    std::string point = "?";
    std::string type = "?";
};

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_mountinfo(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 3 < s.size()) {
            const std::string oct = s.substr(i + 1, 3);
            if (oct.find_first_not_of("01234567") == std::string::npos) {
                out += static_cast<char>(std::strtol(oct.c_str(), nullptr, 8));
                i += 3;
                continue;
            }
        }
        out += s[i];
    }
    return out;
}

std::string statfs_type(const std::string& path) {
    struct statfs sf {};
    if (::statfs(path.c_str(), &sf) != 0)
        return "?";
    static const std::map<unsigned long, const char*> names{
        {EXT4_SUPER_MAGIC, "ext4"},         {XFS_SUPER_MAGIC, "xfs"},
        {BTRFS_SUPER_MAGIC, "btrfs"},       {TMPFS_MAGIC, "tmpfs"},
        {OVERLAYFS_SUPER_MAGIC, "overlay"}, {NFS_SUPER_MAGIC, "nfs"},
    };
    const auto it = names.find(static_cast<unsigned long>(sf.f_type));
    return it != names.end() ? it->second : "file system type " + hex(sf.f_type);
}

// The mount whose mount point is the longest prefix of the path's canonical
// form (the last one listed wins, as it is mounted on top). st_dev cannot
// be matched against mountinfo: files in btrfs subvolumes have devices of
// their own.
MountInfo mount_of(const std::string& path) {
    const std::string p = canonical_path(path);
    MountInfo best;
    size_t best_len = 0;
    bool found = false;
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        std::string id, parent, devno, root, point;
        if (!(fields >> id >> parent >> devno >> root >> point))
            continue;
        point = unescape_mountinfo(point);
        const auto dash = line.find(" - ");
        if (dash == std::string::npos)
            continue;
        std::istringstream tail(line.substr(dash + 3));
        std::string type;
        tail >> type;
        const bool under = point == "/" || p == point ||
                           (p.size() > point.size() && p.compare(0, point.size(), point) == 0 &&
                            p[point.size()] == '/');
        if (under && point.size() >= best_len) {
            best = {point, type};
            best_len = point.size();
            found = true;
        }
    }
    if (!found)
        best.type = statfs_type(path);
    return best;
}

} // namespace

std::string describe_mount(const std::string& path) {
    const MountInfo m = mount_of(path);
    return m.point + " (" + m.type + ")";
}

namespace {

// ---------------------------------------------------------------- files

[[noreturn]] void throw_errno(const std::string& what) {
    const int err = errno;
    throw Error(what + ": " + errno_text(err), err);
}

// Makes `dir` and any missing parents; the directory itself mode 0700.
void ensure_directory(const std::string& dir) {
    for (size_t at = 1; at <= dir.size(); ++at) {
        if (at < dir.size() && dir[at] != '/')
            continue;
        const std::string part = dir.substr(0, at);
        if (::mkdir(part.c_str(), at == dir.size() ? 0700 : 0755) != 0 && errno != EEXIST) {
            const int err = errno;
            throw Error("snapshot directory " + dir + ": cannot create " + part + ": " +
                            errno_text(err),
                        err);
        }
    }
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0)
        throw_errno("snapshot directory " + dir);
    if (!S_ISDIR(st.st_mode))
        throw Error("snapshot directory " + dir + ": not a directory", ENOTDIR);
}

// flock() of the directory for the time of a keep-or-take: daemons (and the
// nbdkit plugin) that share a snapshot directory must not see one another's
// temporaries as leftovers, nor take the same snapshot twice.
class DirectoryLock {
public:
    explicit DirectoryLock(const std::string& dir)
        : fd_(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) {
        if (fd_.get() < 0)
            throw_errno("snapshot directory " + dir);
        while (::flock(fd_.get(), LOCK_EX) != 0)
            if (errno != EINTR)
                throw_errno("snapshot directory " + dir + ": cannot lock");
    }

private:
    UniqueFd fd_; // closing it releases the lock
};

// Temporaries of a take that was interrupted (crash, kill -9, power cut):
// no one holds them, since the directory is locked.
void remove_leftover_temporaries(const std::string& dir) {
    DIR* d = ::opendir(dir.c_str());
    if (!d)
        throw_errno("snapshot directory " + dir);
    std::vector<std::string> leftovers;
    while (const struct dirent* e = ::readdir(d)) {
        const std::string name = e->d_name;
        if (ends_with(name, std::string(snapshot_suffix) + temp_suffix) ||
            ends_with(name, std::string(record_suffix) + temp_suffix))
            leftovers.push_back(name);
    }
    ::closedir(d);
    for (const std::string& name : leftovers) {
        const std::string path = dir + "/" + name;
        if (::unlink(path.c_str()) != 0 && errno != ENOENT)
            throw Error(path + ": cannot remove this leftover of an interrupted snapshot: " +
                            errno_text(errno),
                        errno);
        spdlog::warn("removed {}, left by a snapshot that was interrupted", path);
    }
}

int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// "2026-11-24T21:31:36.123456789Z" -> nanoseconds; nullopt if malformed.
std::optional<int64_t> parse_time(const std::string& text) {
    std::tm tm{};
    char frac[10] = {};
    int used = 0;
    if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%9[0-9]Z%n", &tm.tm_year, &tm.tm_mon,
                    &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, frac, &used) != 7 ||
        static_cast<size_t>(used) != text.size() || std::strlen(frac) != 9)
        return std::nullopt;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    const time_t secs = ::timegm(&tm);
    if (secs == static_cast<time_t>(-1))
        return std::nullopt;
    return static_cast<int64_t>(secs) * 1000000000 + std::strtoll(frac, nullptr, 10);
}

// ---------------------------------------------------------------- reflink

// A clone of the image file made with ioctl(FICLONE): the file system
// shares the origin's extents with the snapshot and copies on write when
// the origin is overwritten, so taking it costs metadata only. The clone is
// atomic with respect to writes to the origin (btrfs and xfs lock both
// inodes and flush the origin's dirty pages first), so it is one point in
// time even while a VM writes the image.
class ReflinkSnapshot : public SnapshotKind {
public:
    std::string name() const override { return "reflink"; }

    bool handles(const SnapshotOrigin& origin) const override { return origin.regular_file; }

    SnapshotRecord take(const SnapshotOrigin& origin, const SnapshotPlace& place) override {
        const std::string path = place.dir + "/" + place.stem + snapshot_suffix;
        const std::string temp = path + temp_suffix;
        const UniqueFd src(::open(origin.canonical.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
        if (src.get() < 0)
            throw_errno(origin.path + ": cannot open for a snapshot");
        struct stat origin_st {};
        if (::fstat(src.get(), &origin_st) != 0)
            throw_errno(origin.path);
        // 0400: nothing is meant to write a snapshot, not even us.
        const UniqueFd dst(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0400));
        if (dst.get() < 0)
            throw_errno(temp + ": cannot create");
        TemporaryFile guard(temp);
        const int64_t taken = now_ns();
        if (::ioctl(dst.get(), FICLONE, src.get()) != 0)
            throw_clone_error(origin, place, errno);
        if (::fsync(dst.get()) != 0)
            throw_errno(temp + ": fsync failed");
        struct stat snap_st {};
        if (::fstat(dst.get(), &snap_st) != 0)
            throw_errno(temp);
        guard.rename_to(path);
        sync_directory(place.dir);

        SnapshotRecord r;
        r.kind = name();
        r.origin = origin.canonical;
        r.origin_device = origin_st.st_dev;
        r.origin_inode = origin_st.st_ino;
        r.path = path;
        r.snapshot_inode = snap_st.st_ino;
        r.taken_ns = taken;
        r.size = static_cast<uint64_t>(snap_st.st_size);
        return r;
    }

    bool present(const SnapshotRecord& r) const override {
        struct stat st {};
        if (::stat(r.path.c_str(), &st) != 0) {
            if (errno == ENOENT)
                return false;
            throw_errno(r.path);
        }
        if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != r.size ||
            st.st_ino != r.snapshot_inode)
            throw Error(r.path + ": the snapshot of " + r.origin + " taken " +
                            snapshot_time_text(r.taken_ns) + " is not as its record says (" +
                            std::to_string(r.size) + " bytes, inode " +
                            std::to_string(r.snapshot_inode) + "; found " +
                            (S_ISREG(st.st_mode) ? std::to_string(st.st_size) + " bytes"
                                                 : std::string("not a regular file")) +
                            ", inode " + std::to_string(st.st_ino) +
                            "): it was replaced or written; delete it to take a new snapshot",
                        EIO);
        return true;
    }

    void discard(const SnapshotPlace& place) override {
        const std::string path = place.dir + "/" + place.stem + snapshot_suffix;
        if (::unlink(path.c_str()) == 0) {
            spdlog::warn("removed {}: a snapshot whose record was never written (interrupted)",
                         path);
            sync_directory(place.dir);
        } else if (errno != ENOENT) {
            throw_errno(path + ": cannot remove");
        }
    }

private:
    [[noreturn]] static void throw_clone_error(const SnapshotOrigin& origin,
                                               const SnapshotPlace& place, int err) {
        const std::string what = origin.path + ": cannot take a snapshot in " + place.dir + ": ";
        if (err == EXDEV)
            throw Error(what + "reflinks cannot cross file systems: origin on " +
                            describe_mount(origin.canonical) + ", snapshot directory on " +
                            describe_mount(place.dir) +
                            "; give --snapshot-dir on the origin's file system",
                        err);
        // EOPNOTSUPP: no remap_file_range (ext4, tmpfs, xfs without
        // reflink=1); EINVAL and ENOTTY: older kernels and FUSE say so.
        if (err == EOPNOTSUPP || err == EINVAL || err == ENOTTY) {
            const MountInfo m = mount_of(origin.canonical);
            throw UnsupportedError(what + m.type + " at " + m.point +
                                       " does not support reflinks (FICLONE); btrfs or xfs with "
                                       "reflink=1 do",
                                   EOPNOTSUPP);
        }
        throw Error(what + "FICLONE failed: " + errno_text(err), err);
    }
};

SnapshotOrigin examine_origin(const std::string& path) {
    if (path.empty())
        throw InvalidArgument("snapshot: expected the path of the file to snapshot");
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
        throw_errno(path + ": cannot take a snapshot");
    SnapshotOrigin o;
    o.path = path;
    o.canonical = canonical_path(path);
    o.device = st.st_dev;
    o.inode = st.st_ino;
    o.size = static_cast<uint64_t>(st.st_size);
    o.regular_file = S_ISREG(st.st_mode);
    o.block_device = S_ISBLK(st.st_mode);
    return o;
}

SnapshotKind& kind_for(const SnapshotOrigin& origin) {
    for (SnapshotKind* k : snapshot_kinds())
        if (k->handles(origin))
            return *k;
    if (origin.block_device)
        throw UnsupportedError(origin.path +
                                   ": is a block device; snapshots of block devices need an LVM "
                                   "or file-system snapshot kind, not available: this build "
                                   "snapshots image files only, by reflink",
                               EOPNOTSUPP);
    throw Error(origin.path + ": cannot take a snapshot: not a regular file (a snapshot source "
                              "is an image file)",
                EINVAL);
}

SnapshotKind& kind_named(const std::string& name, const std::string& where) {
    for (SnapshotKind* k : snapshot_kinds())
        if (k->name() == name)
            return *k;
    throw Error(where + ": a snapshot of kind '" + name + "', which this build does not have",
                EINVAL);
}

} // namespace

const std::vector<SnapshotKind*>& snapshot_kinds() {
    static ReflinkSnapshot reflink;
    static const std::vector<SnapshotKind*> kinds{&reflink};
    return kinds;
}

std::string snapshot_stem(const std::string& canonical_origin) {
    // The base name keeps the file readable; characters a shell or a
    // listing would trip on become '_'. Long names are cut: the hash keeps
    // the stem unique.
    std::string base = base_name(canonical_origin);
    for (char& c : base)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
            c = '_';
    if (base.size() > 100)
        base.resize(100);
    if (base.empty() || base == "." || base == "..")
        base = "origin";
    const auto h = stable_hash128(canonical_origin);
    char digits[17];
    for (int i = 0; i < 8; ++i)
        std::snprintf(digits + 2 * i, 3, "%02x", h[static_cast<size_t>(i)]);
    return base + "-" + digits;
}

std::string snapshot_time_text(int64_t ns, bool nanoseconds) {
    const time_t secs = static_cast<time_t>(ns / 1000000000);
    std::tm tm{};
    ::gmtime_r(&secs, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    std::string out = buf;
    if (nanoseconds) {
        std::snprintf(buf, sizeof buf, ".%09lld", static_cast<long long>(ns % 1000000000));
        out += buf;
    }
    return out + "Z";
}

std::string snapshot_record_text(const SnapshotRecord& r, const std::string& dir) {
    for (const std::string* s : {&r.kind, &r.origin, &r.path})
        if (s->find('\n') != std::string::npos)
            throw Error("snapshot of " + r.origin + ": a path with a newline cannot be recorded",
                        EINVAL);
    // The snapshot is named relative to the directory when it lies there,
    // so the directory may be moved with its contents.
    std::string snapshot = r.path;
    if (snapshot.size() > dir.size() + 1 && snapshot.compare(0, dir.size(), dir) == 0 &&
        snapshot[dir.size()] == '/' && snapshot.find('/', dir.size() + 1) == std::string::npos)
        snapshot = snapshot.substr(dir.size() + 1);
    return "# p2vfs snapshot record: the snapshot is the origin as it was when taken.\n"
           "kind=" +
           r.kind + "\norigin=" + r.origin + "\norigin-device=" + device_text(r.origin_device) +
           "\norigin-inode=" + std::to_string(r.origin_inode) + "\nsnapshot=" + snapshot +
           "\nsnapshot-inode=" + std::to_string(r.snapshot_inode) +
           "\ntaken=" + snapshot_time_text(r.taken_ns, true) + "\nsize=" + std::to_string(r.size) +
           "\n";
}

SnapshotRecord parse_snapshot_record(const std::string& text, const std::string& where,
                                     const std::string& dir) {
    std::map<std::string, std::string> fields;
    std::istringstream in(text);
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
        if (line.empty() || line[0] == '#')
            continue;
        const auto eq = line.find('=');
        if (eq == std::string::npos || eq == 0)
            throw Error(where + ": line " + std::to_string(n) + ": expected KEY=VALUE, got '" +
                            line + "'",
                        EINVAL);
        fields[line.substr(0, eq)] = line.substr(eq + 1);
    }
    const auto damaged = [&](const std::string& why) {
        return Error(where + ": " + why +
                         "; the record is damaged: delete it and its snapshot to take a new one",
                     EINVAL);
    };
    const auto field = [&](const char* key) -> const std::string& {
        const auto it = fields.find(key);
        if (it == fields.end() || it->second.empty())
            throw damaged(std::string("no '") + key + "' line");
        return it->second;
    };
    const auto number = [&](const char* key) {
        const std::string& v = field(key);
        char* end = nullptr;
        errno = 0;
        const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
        if (v[0] == '-' || *end != '\0' || errno)
            throw damaged(std::string("'") + key + "' is not a number: '" + v + "'");
        return static_cast<uint64_t>(n);
    };

    SnapshotRecord r;
    r.kind = field("kind");
    r.origin = field("origin");
    {
        const std::string& v = field("origin-device");
        unsigned maj = 0, min = 0;
        int used = 0;
        if (std::sscanf(v.c_str(), "%u:%u%n", &maj, &min, &used) != 2 ||
            static_cast<size_t>(used) != v.size())
            throw damaged("'origin-device' is not MAJOR:MINOR: '" + v + "'");
        r.origin_device = makedev(maj, min);
    }
    r.origin_inode = number("origin-inode");
    r.path = field("snapshot");
    if (r.path[0] != '/')
        r.path = dir + "/" + r.path;
    r.snapshot_inode = number("snapshot-inode");
    const auto taken = parse_time(field("taken"));
    if (!taken)
        throw damaged("'taken' is not a time such as 2026-11-24T21:31:36.000000000Z: '" +
                      field("taken") + "'");
    r.taken_ns = *taken;
    r.size = number("size");
    return r;
}

SnapshotRecord keep_or_take_snapshot(const std::string& origin_path, const std::string& dir) {
    if (dir.empty())
        throw InvalidArgument("snapshot:" + origin_path +
                              ": snapshot sources need a snapshot directory (--snapshot-dir)");
    const SnapshotOrigin origin = examine_origin(origin_path);
    SnapshotKind& kind = kind_for(origin);
    ensure_directory(dir);
    const DirectoryLock lock(dir);
    remove_leftover_temporaries(dir);

    const SnapshotPlace place{dir, snapshot_stem(origin.canonical)};
    const std::string record_name = place.stem + record_suffix;
    const std::string record_path = dir + "/" + record_name;
    struct stat st {};
    if (::stat(record_path.c_str(), &st) == 0) {
        SnapshotRecord r = parse_snapshot_record(read_small_file(record_path), record_path, dir);
        if (r.origin != origin.canonical)
            throw Error(record_path + ": is the record of a snapshot of " + r.origin + ", not of " +
                            origin.canonical + "; give another --snapshot-dir",
                        EEXIST);
        SnapshotKind& recorded = kind_named(r.kind, record_path);
        if (recorded.present(r)) {
            if (r.origin_device != origin.device || r.origin_inode != origin.inode)
                spdlog::warn("{} is now another file (device {}, inode {}; the snapshot was taken "
                             "of device {}, inode {}); the snapshot is kept",
                             origin.path, device_text(origin.device), origin.inode,
                             device_text(r.origin_device), r.origin_inode);
            spdlog::info("snapshot of {} kept from {}: {} (delete it to take a new one)",
                         origin.path, snapshot_time_text(r.taken_ns), r.path);
            r.kept = true;
            return r;
        }
        spdlog::info("snapshot of {} taken {} is gone ({}): taking a new one", origin.path,
                     snapshot_time_text(r.taken_ns), r.path);
        if (::unlink(record_path.c_str()) != 0)
            throw_errno(record_path + ": cannot remove");
        sync_directory(dir);
    } else if (errno != ENOENT) {
        throw_errno(record_path);
    }
    // No record: anything at the place is from a take that never finished.
    kind.discard(place);

    SnapshotRecord r = kind.take(origin, place);
    // Whole or not at all: through record_name.tmp, synced, renamed.
    replace_file(dir + "/" + record_name, snapshot_record_text(r, dir));
    spdlog::info("snapshot of {} taken at {} ({}, {}): {}", origin.path,
                 snapshot_time_text(r.taken_ns), kind.name(), human_size(r.size), r.path);
    return r;
}

// ---------------------------------------------------------------- the device

SnapshotSource::SnapshotSource(DevicePtr snapshot, SnapshotRecord record, std::string format)
    : FilterDevice(std::move(snapshot)), record_(std::move(record)), format_(std::move(format)) {}

std::string SnapshotSource::name() const {
    std::string n = "snapshot of " + record_.origin;
    if (format_ != "raw")
        n += " (" + format_ + " image)";
    return n + " taken " + snapshot_time_text(record_.taken_ns);
}

std::string SnapshotSource::identity() const {
    // The origin's identity describes bytes that keep changing; this one is
    // fixed by the moment and the snapshot file, and still names how the
    // snapshot is read (the layer below's identity).
    return "snapshot:" + record_.kind + ":" + record_.origin +
           "|taken=" + snapshot_time_text(record_.taken_ns, true) +
           "|inode=" + std::to_string(record_.snapshot_inode) + "|" + next_->identity();
}

// ---------------------------------------------------------------- image checks

std::optional<std::string> check_snapshot_image(const std::string& origin, const std::string& image,
                                                const std::string& format) {
    if (format != "qcow2" && format != "vmdk")
        return std::nullopt;
    std::ifstream in(image, std::ios::binary);
    std::vector<char> head(512);
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<size_t>(in.gcount()));
    // A kept snapshot is still what it was when taken: fixing the origin
    // needs a new snapshot.
    const std::string retake =
        image == origin ? "" : "; then delete the snapshot " + image + " to take a new one";

    if (format == "vmdk") {
        const std::string_view magic = "# Disk DescriptorFile";
        if (head.size() >= magic.size() && std::string_view(head.data(), magic.size()) == magic)
            throw UnsupportedError(
                origin +
                    ": is a VMDK descriptor, whose data lies in extent files that a snapshot of "
                    "the descriptor does not freeze; snapshot a monolithic image, or each flat "
                    "extent (snapshot:raw:EXTENT)" +
                    retake,
                EOPNOTSUPP);
        return std::nullopt;
    }
    // qcow2 header (qcow2.txt): backing_file_offset at 8 (u64), its size at
    // 16 (u32), both big-endian; the name is not NUL-terminated.
    if (head.size() < 20)
        return std::nullopt; // qemu-nbd will say what is wrong with it
    const uint64_t offset = load_be<uint64_t>(head.data() + 8);
    const uint32_t length = load_be<uint32_t>(head.data() + 16);
    if (offset == 0 || length == 0 || length > 1023)
        return std::nullopt;
    std::string backing(length, '\0');
    in.clear();
    in.seekg(static_cast<std::streamoff>(offset));
    if (!in.read(backing.data(), length))
        return std::nullopt;
    // "json:{...}", "nbd://..." and the like are not file names.
    const bool protocol =
        backing.rfind("json:", 0) == 0 || backing.find("://") != std::string::npos;
    if (backing[0] == '/' || protocol)
        return backing;
    throw UnsupportedError(origin + ": its backing file '" + backing +
                               "' is named relative to the image's directory, which a snapshot "
                               "kept elsewhere cannot follow; name it absolutely (qemu-img "
                               "rebase -u -b /ABSOLUTE/PATH -F FORMAT IMAGE) or snapshot a "
                               "self-contained image (qemu-img convert)" +
                               retake,
                           EOPNOTSUPP);
}

} // namespace p2vfs
