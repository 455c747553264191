#include "guest/ext_fs.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
extern "C" {
#include <et/com_err.h>
}
#include <ext2fs/ext2_fs.h>
#include <ext2fs/ext2fs.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <atomic>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <spdlog/spdlog.h>

namespace p2vfs::guest {

namespace {

// ---- the io_manager: a partition's range of a BlockDevice ------------------

struct Range {
    DevicePtr disk;
    uint64_t offset;
    uint64_t length;
    bool writable;
};

// libext2fs opens a channel by name; the name is a key into this table.
std::mutex ranges_mutex;
std::map<std::string, Range>& ranges() {
    static std::map<std::string, Range> table;
    return table;
}

struct Channel {
    Range range;
    std::string last_error; // for the message ExtFs builds
};

errcode_t range_io(io_channel ch, unsigned long long block, int count, void* data,
                   const void* wdata) {
    auto* c = static_cast<Channel*>(ch->private_data);
    const uint64_t bytes = count < 0 ? static_cast<uint64_t>(-static_cast<int64_t>(count))
                                     : static_cast<uint64_t>(count) * ch->block_size;
    const uint64_t at = block * static_cast<uint64_t>(ch->block_size);
    if (bytes > c->range.length || at > c->range.length - bytes) {
        c->last_error = "block " + std::to_string(block) + " (+" + std::to_string(bytes) +
                        " bytes) lies past the end of the file system's partition (" +
                        human_size(c->range.length) + ")";
        return wdata ? EXT2_ET_SHORT_WRITE : EXT2_ET_SHORT_READ;
    }
    try {
        if (wdata)
            c->range.disk->write(wdata, bytes, c->range.offset + at);
        else
            c->range.disk->read(data, bytes, c->range.offset + at);
    } catch (const Error& e) {
        c->last_error = e.what();
        return e.error_number() ? e.error_number() : EIO;
    }
    return 0;
}

errcode_t io_open(const char* name, int flags, io_channel* out);

errcode_t io_close(io_channel ch) {
    delete static_cast<Channel*>(ch->private_data);
    delete[] ch->name;
    delete ch;
    return 0;
}

errcode_t io_set_blksize(io_channel ch, int size) {
    ch->block_size = size;
    return 0;
}

errcode_t io_read64(io_channel ch, unsigned long long block, int count, void* data) {
    return range_io(ch, block, count, data, nullptr);
}

errcode_t io_write64(io_channel ch, unsigned long long block, int count, const void* data) {
    if (!static_cast<Channel*>(ch->private_data)->range.writable)
        return EXT2_ET_RO_FILSYS;
    return range_io(ch, block, count, nullptr, data);
}

errcode_t io_read(io_channel ch, unsigned long block, int count, void* data) {
    return io_read64(ch, block, count, data);
}

errcode_t io_write(io_channel ch, unsigned long block, int count, const void* data) {
    return io_write64(ch, block, count, data);
}

errcode_t io_write_byte(io_channel ch, unsigned long offset, int size, const void* data) {
    auto* c = static_cast<Channel*>(ch->private_data);
    if (!c->range.writable)
        return EXT2_ET_RO_FILSYS;
    if (size < 0 || offset > c->range.length || static_cast<uint64_t>(size) > c->range.length - offset)
        return EXT2_ET_SHORT_WRITE;
    try {
        c->range.disk->write(data, size, c->range.offset + offset);
    } catch (const Error& e) {
        c->last_error = e.what();
        return e.error_number() ? e.error_number() : EIO;
    }
    return 0;
}

errcode_t io_flush(io_channel ch) {
    auto* c = static_cast<Channel*>(ch->private_data);
    if (!c->range.writable)
        return 0;
    try {
        c->range.disk->flush();
    } catch (const Error& e) {
        c->last_error = e.what();
        return e.error_number() ? e.error_number() : EIO;
    }
    return 0;
}

errcode_t io_set_option(io_channel, const char*, const char*) {
    return EXT2_ET_INVALID_ARGUMENT;
}

struct_io_manager range_manager = [] {
    struct_io_manager m{};
    m.magic = EXT2_ET_MAGIC_IO_MANAGER;
    m.name = "p2vfs range I/O manager";
    m.open = io_open;
    m.close = io_close;
    m.set_blksize = io_set_blksize;
    m.read_blk = io_read;
    m.write_blk = io_write;
    m.flush = io_flush;
    m.write_byte = io_write_byte;
    m.set_option = io_set_option;
    m.read_blk64 = io_read64;
    m.write_blk64 = io_write64;
    return m;
}();

errcode_t io_open(const char* name, int /*flags*/, io_channel* out) {
    Range range;
    {
        std::lock_guard<std::mutex> lock(ranges_mutex);
        const auto it = ranges().find(name);
        if (it == ranges().end())
            return EXT2_ET_BAD_DEVICE_NAME;
        range = it->second;
    }
    auto* ch = new struct_io_channel{};
    ch->magic = EXT2_ET_MAGIC_IO_CHANNEL;
    ch->manager = &range_manager;
    const size_t n = std::strlen(name);
    ch->name = new char[n + 1];
    std::memcpy(ch->name, name, n + 1);
    ch->block_size = 1024;
    ch->refcount = 1;
    ch->private_data = new Channel{range, {}};
    *out = ch;
    return 0;
}

std::once_flag error_table_once;

std::string errcode_text(errcode_t code) {
    return error_message(code);
}

std::vector<std::string> split_path(const std::string& path) {
    std::vector<std::string> parts;
    size_t i = 0;
    while (i < path.size()) {
        const size_t j = std::min(path.find('/', i), path.size());
        if (j > i)
            parts.push_back(path.substr(i, j - i));
        i = j + 1;
    }
    return parts;
}

uint32_t now() {
    return static_cast<uint32_t>(::time(nullptr));
}

} // namespace

ExtFs::ExtFs(DevicePtr disk, uint64_t offset, uint64_t length, bool writable, std::string where)
    : where_(std::move(where)), writable_(writable) {
    std::call_once(error_table_once, [] { add_error_table(&et_ext2_error_table); });
    if (writable && !disk->writable())
        throw UnsupportedError(where_ + ": the disk under the file system does not take writes");
    static std::atomic<uint64_t> counter{0};
    channel_name_ = "p2vfs-range-" + std::to_string(counter.fetch_add(1));
    {
        std::lock_guard<std::mutex> lock(ranges_mutex);
        ranges()[channel_name_] = Range{std::move(disk), offset, length, writable};
    }
    ext2_filsys fs = nullptr;
    int flags = EXT2_FLAG_64BITS | EXT2_FLAG_THREADS;
    if (writable)
        flags |= EXT2_FLAG_RW;
    const errcode_t rc = ext2fs_open2(channel_name_.c_str(), nullptr, flags, 0, 0, &range_manager, &fs);
    {
        std::lock_guard<std::mutex> lock(ranges_mutex);
        ranges().erase(channel_name_);
    }
    if (rc) {
        throw Error(where_ + ": cannot open the ext2/3/4 file system: " + errcode_text(rc));
    }
    fs_ = fs;
    if (writable && needs_recovery()) {
        ext2fs_close_free(&fs);
        fs_ = nullptr;
        throw Error(where_ + ": the ext4 journal needs recovery (the system was not shut down "
                             "cleanly, or is running); fixups are not written around an "
                             "unreplayed journal — take the source from a clean shutdown or a "
                             "snapshot after `sync`, or replay it with e2fsck on a copy",
                    EBUSY);
    }
    if (writable) {
        if (const errcode_t r = ext2fs_read_bitmaps(fs_)) {
            ext2fs_close_free(&fs);
            fs_ = nullptr;
            throw Error(where_ + ": cannot read the allocation bitmaps: " + errcode_text(r));
        }
    }
}

ExtFs::~ExtFs() {
    try {
        close();
    } catch (const Error& e) {
        spdlog::error("{}", e.what());
    }
}

void ExtFs::close() {
    if (!fs_)
        return;
    ext2_filsys fs = fs_;
    fs_ = nullptr;
    if (writable_) {
        // Dirty only after a change; ext2fs_close2 then writes the superblock
        // and the group descriptors, and the bitmaps it read.
        const errcode_t rc = ext2fs_close2(fs, 0);
        if (rc) {
            ext2fs_free(fs);
            throw Error(where_ + ": cannot write the file system's metadata back: " +
                        errcode_text(rc));
        }
        return;
    }
    ext2fs_free(fs);
}

[[noreturn]] void ExtFs::fail(const std::string& what, long code) const {
    std::string detail = errcode_text(code);
    if (fs_ && fs_->io && fs_->io->private_data) {
        const auto* c = static_cast<const Channel*>(fs_->io->private_data);
        if (!c->last_error.empty())
            detail += " (" + c->last_error + ")";
    }
    throw Error(where_ + ": " + what + ": " + detail,
                code == EXT2_ET_SYMLINK_LOOP ? ELOOP : EIO);
}

std::string ExtFs::uuid() const {
    char text[40];
    const unsigned char* u = fs_->super->s_uuid;
    std::snprintf(text, sizeof text,
                  "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
                  u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
                  u[15]);
    return text;
}

std::string ExtFs::label() const {
    const char* l = reinterpret_cast<const char*>(fs_->super->s_volume_name);
    return std::string(l, strnlen(l, sizeof fs_->super->s_volume_name));
}

bool ExtFs::needs_recovery() const {
    return ext2fs_has_feature_journal_needs_recovery(fs_->super);
}

uint32_t ExtFs::lookup(const std::string& path, bool follow, bool* missing) {
    *missing = false;
    ext2_ino_t ino = 0;
    const errcode_t rc = follow ? ext2fs_namei_follow(fs_, EXT2_ROOT_INO, EXT2_ROOT_INO,
                                                      path.c_str(), &ino)
                                : ext2fs_namei(fs_, EXT2_ROOT_INO, EXT2_ROOT_INO, path.c_str(), &ino);
    if (rc == EXT2_ET_FILE_NOT_FOUND || rc == EXT2_ET_NO_DIRECTORY) {
        *missing = true;
        return 0;
    }
    if (rc == EXT2_ET_SYMLINK_LOOP)
        fail("'" + path + "' is a loop of symbolic links", rc);
    if (rc)
        fail("cannot look up '" + path + "'", rc);
    return ino;
}

std::optional<ExtStat> ExtFs::stat(const std::string& path, bool follow) {
    bool missing = false;
    const uint32_t ino = lookup(path, follow, &missing);
    if (missing)
        return std::nullopt;
    struct ext2_inode inode {};
    if (const errcode_t rc = ext2fs_read_inode(fs_, ino, &inode))
        fail("cannot read the inode of '" + path + "'", rc);
    ExtStat st;
    st.inode = ino;
    st.mode = inode.i_mode;
    st.size = EXT2_I_SIZE(&inode);
    st.uid = inode_uid(inode);
    st.gid = inode_gid(inode);
    return st;
}

std::string ExtFs::read_file(const std::string& path, uint64_t limit) {
    auto content = read_file_if_exists(path, limit);
    if (!content)
        throw Error(where_ + ": '" + path + "' does not exist", ENOENT);
    return *content;
}

std::optional<std::string> ExtFs::read_file_if_exists(const std::string& path, uint64_t limit) {
    const auto st = stat(path, true);
    if (!st)
        return std::nullopt;
    if (!st->is_file())
        throw Error(where_ + ": '" + path + "' is not a regular file", EISDIR);
    if (st->size > limit)
        throw Error(where_ + ": '" + path + "' is " + human_size(st->size) +
                        "; more than the " + human_size(limit) + " read from such a file",
                    EFBIG);
    std::string out(st->size, '\0');
    struct ext2_inode inode {};
    if (const errcode_t rc = ext2fs_read_inode(fs_, st->inode, &inode))
        fail("cannot read the inode of '" + path + "'", rc);
    if (inode.i_flags & EXT4_INLINE_DATA_FL) {
        // Small files kept in the inode itself: the file API knows how.
        ext2_file_t file;
        if (const errcode_t rc = ext2fs_file_open(fs_, st->inode, 0, &file))
            fail("cannot open '" + path + "'", rc);
        unsigned int got = 0;
        const errcode_t rc = ext2fs_file_read(file, out.data(), static_cast<unsigned>(out.size()), &got);
        ext2fs_file_close(file);
        if (rc)
            fail("cannot read '" + path + "'", rc);
        out.resize(got);
        return out;
    }
    // Map logical blocks to physical ones and read runs of contiguous blocks
    // at once: an initramfs is tens of MiB, and the file API would read it
    // one block per request.
    const uint64_t bs = fs_->blocksize;
    const uint64_t blocks = (st->size + bs - 1) / bs;
    auto* channel = static_cast<Channel*>(fs_->io->private_data);
    uint64_t b = 0;
    while (b < blocks) {
        blk64_t phys = 0;
        if (const errcode_t rc = ext2fs_bmap2(fs_, st->inode, &inode, nullptr, 0, b, nullptr, &phys))
            fail("cannot map block " + std::to_string(b) + " of '" + path + "'", rc);
        uint64_t run = 1;
        if (phys != 0) {
            while (b + run < blocks && run < 4096) {
                blk64_t next = 0;
                if (const errcode_t rc =
                        ext2fs_bmap2(fs_, st->inode, &inode, nullptr, 0, b + run, nullptr, &next))
                    fail("cannot map block " + std::to_string(b + run) + " of '" + path + "'", rc);
                if (next != phys + run)
                    break;
                ++run;
            }
            const uint64_t at = b * bs;
            const uint64_t len = std::min(run * bs, st->size - at);
            if (phys >= ext2fs_blocks_count(fs_->super) ||
                run > ext2fs_blocks_count(fs_->super) - phys)
                throw Error(where_ + ": '" + path + "' block " + std::to_string(b) +
                            " maps to block " + std::to_string(phys) +
                            ", past the end of the file system");
            const uint64_t disk_at = channel->range.offset + phys * bs;
            if (phys * bs + len > channel->range.length)
                throw Error(where_ + ": '" + path + "' block " + std::to_string(b) +
                            " lies past the end of the partition");
            try {
                channel->range.disk->read(out.data() + at, len, disk_at);
            } catch (const Error& e) {
                throw Error(where_ + ": reading '" + path + "': " + e.what(), e.error_number());
            }
        } // a hole reads as the zeros `out` holds
        b += run;
    }
    return out;
}

std::string ExtFs::read_link(const std::string& path) {
    bool missing = false;
    const uint32_t ino = lookup(path, false, &missing);
    if (missing)
        throw Error(where_ + ": '" + path + "' does not exist", ENOENT);
    struct ext2_inode inode {};
    if (const errcode_t rc = ext2fs_read_inode(fs_, ino, &inode))
        fail("cannot read the inode of '" + path + "'", rc);
    if (!LINUX_S_ISLNK(inode.i_mode))
        throw Error(where_ + ": '" + path + "' is not a symbolic link", EINVAL);
    const uint64_t size = EXT2_I_SIZE(&inode);
    if (size > fs_->blocksize)
        throw Error(where_ + ": symbolic link '" + path + "' claims " + std::to_string(size) +
                    " bytes");
    std::string out(size, '\0');
    ext2_file_t file;
    if (ext2fs_is_fast_symlink(&inode) && !(inode.i_flags & EXT4_INLINE_DATA_FL)) {
        std::memcpy(out.data(), reinterpret_cast<const char*>(inode.i_block), std::min<uint64_t>(size, sizeof inode.i_block));
        return out;
    }
    if (const errcode_t rc = ext2fs_file_open(fs_, ino, 0, &file))
        fail("cannot open symbolic link '" + path + "'", rc);
    unsigned int got = 0;
    const errcode_t rc = ext2fs_file_read(file, out.data(), static_cast<unsigned>(size), &got);
    ext2fs_file_close(file);
    if (rc)
        fail("cannot read symbolic link '" + path + "'", rc);
    out.resize(got);
    return out;
}

namespace {
struct ListState {
    std::vector<std::string>* names;
};
int list_entry(ext2_ino_t, int, struct ext2_dir_entry* dirent, int, int, char*, void* priv) {
    auto* st = static_cast<ListState*>(priv);
    const int len = ext2fs_dirent_name_len(dirent);
    std::string name(dirent->name, len);
    if (name != "." && name != ".." && st->names->size() < 100000)
        st->names->push_back(std::move(name));
    return 0;
}
} // namespace

std::vector<std::string> ExtFs::list(const std::string& dir) {
    std::vector<std::string> names;
    const auto st = stat(dir, true);
    if (!st || !st->is_dir())
        return names;
    ListState state{&names};
    if (const errcode_t rc = ext2fs_dir_iterate2(fs_, st->inode, 0, nullptr, list_entry, &state))
        fail("cannot list '" + dir + "'", rc);
    std::sort(names.begin(), names.end());
    return names;
}

std::pair<uint32_t, std::string> ExtFs::parent_of(const std::string& path) {
    auto parts = split_path(path);
    if (parts.empty())
        throw InvalidArgument(where_ + ": '" + path + "' names the root directory");
    std::string name = parts.back();
    parts.pop_back();
    std::string dir = "/";
    for (const auto& p : parts)
        dir += p + "/";
    const auto st = stat(dir, true);
    if (!st || !st->is_dir())
        throw Error(where_ + ": directory '" + dir + "' of '" + path + "' does not exist", ENOENT);
    return {st->inode, name};
}

void ExtFs::write_file(const std::string& path, const std::string& content, uint32_t mode) {
    if (!writable_)
        throw UnsupportedError(where_ + ": opened read-only");
    auto existing = stat(path, false);
    if (existing && existing->is_link()) {
        // Editing through a link would write the file it names; the guest's
        // own tools would too, so follow it (inside the guest).
        existing = stat(path, true);
    }
    ext2_ino_t ino;
    if (existing) {
        if (!existing->is_file())
            throw Error(where_ + ": '" + path + "' is not a regular file", EISDIR);
        ino = existing->inode;
    } else {
        const auto [parent, name] = parent_of(path);
        if (const errcode_t rc = ext2fs_new_inode(fs_, parent, LINUX_S_IFREG | 0644, nullptr, &ino))
            fail("cannot allocate an inode for '" + path + "'", rc);
        errcode_t rc = ext2fs_link(fs_, parent, name.c_str(), ino, EXT2_FT_REG_FILE);
        if (rc == EXT2_ET_DIR_NO_SPACE) {
            if (const errcode_t r = ext2fs_expand_dir(fs_, parent))
                fail("cannot grow the directory of '" + path + "'", r);
            rc = ext2fs_link(fs_, parent, name.c_str(), ino, EXT2_FT_REG_FILE);
        }
        if (rc)
            fail("cannot link '" + path + "'", rc);
        ext2fs_inode_alloc_stats2(fs_, ino, +1, 0);
        struct ext2_inode inode {};
        inode.i_mode = static_cast<uint16_t>(LINUX_S_IFREG | (mode & 07777));
        inode.i_links_count = 1;
        inode.i_atime = inode.i_ctime = inode.i_mtime = now();
        if (ext2fs_has_feature_extents(fs_->super)) {
            // An empty extent tree in the inode, as mke2fs's populate does.
            ext2_extent_handle_t handle;
            if (const errcode_t r = ext2fs_extent_open2(fs_, ino, &inode, &handle))
                fail("cannot start the extent tree of '" + path + "'", r);
            ext2fs_extent_free(handle);
        }
        if (const errcode_t r = ext2fs_write_new_inode(fs_, ino, &inode))
            fail("cannot write the inode of '" + path + "'", r);
    }
    ext2_file_t file;
    if (const errcode_t rc = ext2fs_file_open(fs_, ino, EXT2_FILE_WRITE, &file))
        fail("cannot open '" + path + "' for writing", rc);
    errcode_t rc = ext2fs_file_set_size2(file, 0);
    size_t done = 0;
    while (!rc && done < content.size()) {
        unsigned int wrote = 0;
        const auto n = static_cast<unsigned>(std::min<size_t>(content.size() - done, 1 << 20));
        rc = ext2fs_file_write(file, content.data() + done, n, &wrote);
        if (!rc && wrote == 0)
            rc = EXT2_ET_SHORT_WRITE;
        done += wrote;
    }
    const errcode_t rc_close = ext2fs_file_close(file);
    if (rc)
        fail("cannot write '" + path + "'", rc);
    if (rc_close)
        fail("cannot write '" + path + "'", rc_close);
    struct ext2_inode inode {};
    if (const errcode_t r = ext2fs_read_inode(fs_, ino, &inode))
        fail("cannot read the inode of '" + path + "'", r);
    inode.i_mtime = inode.i_ctime = now();
    if (const errcode_t r = ext2fs_write_inode(fs_, ino, &inode))
        fail("cannot write the inode of '" + path + "'", r);
}

void ExtFs::remove(const std::string& path) {
    if (!writable_)
        throw UnsupportedError(where_ + ": opened read-only");
    const auto st = stat(path, false);
    if (!st)
        return;
    if (st->is_dir())
        throw Error(where_ + ": '" + path + "' is a directory; only files are removed", EISDIR);
    const auto [parent, name] = parent_of(path);
    if (const errcode_t rc = ext2fs_unlink(fs_, parent, name.c_str(), st->inode, 0))
        fail("cannot unlink '" + path + "'", rc);
    struct ext2_inode inode {};
    if (const errcode_t rc = ext2fs_read_inode(fs_, st->inode, &inode))
        fail("cannot read the inode of '" + path + "'", rc);
    if (inode.i_links_count > 1) {
        --inode.i_links_count;
        inode.i_ctime = now();
    } else {
        inode.i_links_count = 0;
        if (ext2fs_inode_has_valid_blocks2(fs_, &inode)) {
            if (const errcode_t rc = ext2fs_punch(fs_, st->inode, &inode, nullptr, 0, ~0ULL))
                fail("cannot free the blocks of '" + path + "'", rc);
        }
        inode.i_dtime = now();
        ext2fs_inode_alloc_stats2(fs_, st->inode, -1, 0);
    }
    if (const errcode_t rc = ext2fs_write_inode(fs_, st->inode, &inode))
        fail("cannot write the inode of '" + path + "'", rc);
}

void ExtFs::symlink(const std::string& path, const std::string& target) {
    if (!writable_)
        throw UnsupportedError(where_ + ": opened read-only");
    if (const auto st = stat(path, false)) {
        if (!st->is_link())
            throw Error(where_ + ": '" + path + "' exists and is not a symbolic link", EEXIST);
        remove(path);
    }
    const auto [parent, name] = parent_of(path);
    errcode_t rc = ext2fs_symlink(fs_, parent, 0, name.c_str(), target.c_str());
    if (rc == EXT2_ET_DIR_NO_SPACE) {
        if (const errcode_t r = ext2fs_expand_dir(fs_, parent))
            fail("cannot grow the directory of '" + path + "'", r);
        rc = ext2fs_symlink(fs_, parent, 0, name.c_str(), target.c_str());
    }
    if (rc)
        fail("cannot make symbolic link '" + path + "'", rc);
}

void ExtFs::make_directories(const std::string& path) {
    if (!writable_)
        throw UnsupportedError(where_ + ": opened read-only");
    std::string dir;
    for (const std::string& part : split_path(path)) {
        const std::string parent = dir.empty() ? "/" : dir;
        dir += "/" + part;
        const auto st = stat(dir, true);
        if (st) {
            if (!st->is_dir())
                throw Error(where_ + ": '" + dir + "' exists and is not a directory", ENOTDIR);
            continue;
        }
        const auto pst = stat(parent, true);
        errcode_t rc = ext2fs_mkdir(fs_, pst->inode, 0, part.c_str());
        if (rc == EXT2_ET_DIR_NO_SPACE) {
            if (const errcode_t r = ext2fs_expand_dir(fs_, pst->inode))
                fail("cannot grow directory '" + parent + "'", r);
            rc = ext2fs_mkdir(fs_, pst->inode, 0, part.c_str());
        }
        if (rc)
            fail("cannot make directory '" + dir + "'", rc);
    }
}

} // namespace p2vfs::guest
