#include "jobs/reflink_generations.h"

#include "block/snapshot_source.h"
#include "common/error.h"
#include "common/file_io.h"

#include <algorithm>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace p2vfs {
namespace {

using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;

[[noreturn]] void throw_errno(const std::string& what, int err) {
    throw Error(what + ": " + errno_text(err), err);
}

std::string parent_directory(const std::string& path) {
    const auto slash = path.find_last_of('/');
    if (slash == std::string::npos)
        return ".";
    return slash == 0 ? "/" : path.substr(0, slash);
}

[[noreturn]] void throw_clone_error(const std::string& origin, const std::string& copy, int err) {
    const std::string what = "reflink copy of " + origin + " to " + copy + ": ";
    if (err == EXDEV)
        throw Error(what + "reflinks cannot cross file systems: the origin is on " +
                        describe_mount(origin) + ", the copy on " +
                        describe_mount(parent_directory(copy)),
                    err);
    // EOPNOTSUPP: no remap_file_range (ext4, tmpfs, xfs without reflink=1);
    // EINVAL and ENOTTY: older kernels and FUSE say so.
    if (err == EOPNOTSUPP || err == EINVAL || err == ENOTTY)
        throw UnsupportedError(what + "the file system at " + describe_mount(origin) +
                                   " does not support reflinks (FICLONE); btrfs or xfs with "
                                   "reflink=1 do",
                               EOPNOTSUPP);
    throw Error(what + "FICLONE failed: " + errno_text(err), err);
}

// ---------------------------------------------------------------- FIEMAP

struct Mapping {
    uint64_t logical = 0;
    uint64_t physical = 0;
    uint64_t length = 0;
    uint32_t flags = 0;
    uint64_t end() const { return logical + length; }
};

// Flags under which the physical offset says nothing about the bytes: not
// allocated yet, not known, or not a plain block of their own.
constexpr uint32_t untrusted_flags = FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC |
                                     FIEMAP_EXTENT_ENCODED | FIEMAP_EXTENT_DATA_INLINE |
                                     FIEMAP_EXTENT_NOT_ALIGNED | FIEMAP_EXTENT_DATA_TAIL;

constexpr uint32_t extents_per_call = 512;

// The extents of [0, size) of the open file, sorted by logical offset.
// FIEMAP_FLAG_SYNC writes dirty pages back first: without it delayed
// allocations have no physical offset yet.
std::vector<Mapping> file_extents(int fd, const std::string& path, uint64_t size) {
    std::vector<uint64_t> buffer(
        (sizeof(fiemap) + extents_per_call * sizeof(fiemap_extent) + sizeof(uint64_t) - 1) /
        sizeof(uint64_t));
    auto* map = reinterpret_cast<fiemap*>(buffer.data());
    std::vector<Mapping> out;
    uint64_t start = 0;
    while (start < size) {
        std::fill(buffer.begin(), buffer.end(), 0);
        map->fm_start = start;
        map->fm_length = size - start;
        map->fm_flags = FIEMAP_FLAG_SYNC;
        map->fm_extent_count = extents_per_call;
        if (::ioctl(fd, FS_IOC_FIEMAP, map) != 0) {
            const int err = errno;
            if (err == EOPNOTSUPP || err == ENOTTY)
                throw UnsupportedError(path + ": the file system at " + describe_mount(path) +
                                           " does not map extents (FIEMAP)",
                                       EOPNOTSUPP);
            throw_errno(path + ": FIEMAP at offset " + hex(start) + " failed", err);
        }
        if (map->fm_mapped_extents == 0)
            break;
        bool last = false;
        const uint64_t before = start;
        for (uint32_t i = 0; i < map->fm_mapped_extents; ++i) {
            const fiemap_extent& e = map->fm_extents[i];
            if (e.fe_length > 0)
                out.push_back(Mapping{e.fe_logical, e.fe_physical, e.fe_length, e.fe_flags});
            start = std::max<uint64_t>(start, e.fe_logical + e.fe_length);
            last = last || (e.fe_flags & FIEMAP_EXTENT_LAST);
        }
        if (last || start == before)
            break;
    }
    std::sort(out.begin(), out.end(),
              [](const Mapping& a, const Mapping& b) { return a.logical < b.logical; });
    return out;
}

// Whether [pos, ...) reads the same in both, given what covers pos in each
// (nullptr: a hole).
bool same_bytes(const Mapping* a, const Mapping* b, uint64_t pos) {
    if (!a || !b)
        return !a && !b;
    if ((a->flags | b->flags) & untrusted_flags)
        return false;
    // An unwritten extent reads as zeros whatever its blocks hold.
    if ((a->flags ^ b->flags) & FIEMAP_EXTENT_UNWRITTEN)
        return false;
    return a->physical + (pos - a->logical) == b->physical + (pos - b->logical);
}

void add_range(Ranges& out, uint64_t offset, uint64_t length) {
    if (!out.empty() && out.back().first + out.back().second == offset)
        out.back().second += length;
    else
        out.emplace_back(offset, length);
}

UniqueFd open_for_fiemap(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        throw_errno(path + ": cannot open to compare reflink copies", errno);
    return UniqueFd(fd);
}

} // namespace

// The copy is created 0400 and is still written through the descriptor
// that created it: permissions are checked at open, and O_CREAT of a new
// file grants the mode asked for, whatever the file's bits.
void take_reflink_copy(const std::string& origin, const std::string& copy) {
    const UniqueFd src(::open(origin.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (!src)
        throw_errno("reflink copy of " + origin + ": cannot open it", errno);
    const std::string temp = copy + ".tmp";
    const UniqueFd dst(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0400));
    if (!dst) {
        const int err = errno;
        throw Error("reflink copy of " + origin + ": cannot create " + temp + ": " +
                        errno_text(err) +
                        (err == EEXIST ? " (left by an interrupted copy? remove it)" : ""),
                    err);
    }
    TemporaryFile guard(temp);
    if (::ioctl(dst.get(), FICLONE, src.get()) != 0)
        throw_clone_error(origin, copy, errno);
    if (::fsync(dst.get()) != 0)
        throw_errno(temp + ": fsync failed", errno);
    guard.rename_to(copy);
    sync_directory(parent_directory(copy));
}

Ranges reflink_changed_ranges(const std::string& older, const std::string& newer, uint64_t size) {
    const UniqueFd older_fd = open_for_fiemap(older);
    const UniqueFd newer_fd = open_for_fiemap(newer);
    const std::vector<Mapping> a = file_extents(older_fd.get(), older, size);
    const std::vector<Mapping> b = file_extents(newer_fd.get(), newer, size);

    // Sweep both extent lists at once, in segments where neither changes.
    Ranges out;
    size_t i = 0, j = 0;
    uint64_t pos = 0;
    while (pos < size) {
        while (i < a.size() && a[i].end() <= pos)
            ++i;
        while (j < b.size() && b[j].end() <= pos)
            ++j;
        const Mapping* in_a = i < a.size() && a[i].logical <= pos ? &a[i] : nullptr;
        const Mapping* in_b = j < b.size() && b[j].logical <= pos ? &b[j] : nullptr;
        uint64_t next = size;
        if (i < a.size())
            next = std::min(next, in_a ? a[i].end() : a[i].logical);
        if (j < b.size())
            next = std::min(next, in_b ? b[j].end() : b[j].logical);
        if (!same_bytes(in_a, in_b, pos))
            add_range(out, pos, next - pos);
        pos = next;
    }
    return out;
}

} // namespace p2vfs
