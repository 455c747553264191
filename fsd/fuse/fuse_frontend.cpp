#define FUSE_USE_VERSION 312

#include "fuse/fuse_frontend.h"

#include "common/error.h"
#include "formats/prepared_view.h"
#include "fuse/mount_point.h"
#include "fuse/splice_pipe.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <fuse_lowlevel.h>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <unordered_map>
#include <unordered_set>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

namespace p2vfs {
namespace {

// Views never change shape while mounted, so the kernel may keep attributes
// and names for long. Live files (a view over an overlay taking writes) are
// never cached: their size and mtime move with their generation.
constexpr double attr_timeout = 60.0;
constexpr size_t max_read_bytes = 1 << 20;

// One device a file has shown, kept alive by the opens that use it.
struct Version {
    DevicePtr device;
    struct timespec made {};
    std::once_flag allocated_once;
    uint64_t allocated = 0; // bytes in Data/Zero extents
};
using VersionPtr = std::shared_ptr<Version>;
struct Node;
using NodePtr = std::shared_ptr<Node>;

struct Node {
    fuse_ino_t ino;
    fuse_ino_t parent;
    std::string name;
    std::string folder;               // the folder's name, for messages ("" for the root)
    bool is_dir;
    DevicePtr device;                 // files only, as given
    std::shared_ptr<LiveFile> live;   // remade when its generation moves
    bool writable = false;
    std::vector<fuse_ino_t> children; // folders only; guarded by Impl::tree_mutex

    // The device reads go to: null for a view to prepare (prepared_view.h)
    // until its first open has prepared it.
    mutable std::mutex mutex; // guards current and generation
    VersionPtr current;
    uint64_t generation = 0;
    std::mutex prepare_mutex; // held by the open that prepares or remakes

    VersionPtr version() const {
        std::lock_guard<std::mutex> lock(mutex);
        return current;
    }
    // Attributes of an unprepared file (size 0) must not be cached: the size
    // appears when the first open has prepared it. Nor those of live files.
    double timeout(const VersionPtr& v) const { return v && !live ? attr_timeout : 0.0; }
};

VersionPtr make_version(DevicePtr device) {
    auto v = std::make_shared<Version>();
    v->device = std::move(device);
    ::clock_gettime(CLOCK_REALTIME, &v->made);
    return v;
}

// What an open file reads from: fuse_file_info::fh holds one of these. It
// keeps its node too: the file's folder may be taken out of the tree while
// it is open, and reads go on as on an unlinked file.
struct Handle {
    VersionPtr version;
    NodePtr node;
};
Handle& handle(struct fuse_file_info* fi) { return *reinterpret_cast<Handle*>(fi->fh); }

} // namespace

struct FuseFrontend::Impl {
    FuseOptions options;
    // The tree. Folders come and go while mounted (sources added and removed
    // over the control API); inode numbers are never reused, so a removed
    // inode simply stops resolving. Open files keep their version.
    mutable std::shared_mutex tree_mutex;
    std::unordered_map<fuse_ino_t, NodePtr> nodes;
    fuse_ino_t next_ino = 1;
    struct timespec mount_time {};
    uid_t uid = ::getuid();
    gid_t gid = ::getgid();
    bool any_writable = false;

    static constexpr fuse_ino_t root_ino = FUSE_ROOT_ID;
    std::atomic<struct fuse_session*> session = nullptr; // set while the loop runs

    // The handles of open files. A file still open when the mount goes away
    // (a loop device over disk.raw, a lazy unmount) gets no release: what is
    // left here is freed when the loop ends.
    std::mutex handles_mutex;
    std::unordered_set<Handle*> handles;

    uint64_t new_handle(VersionPtr v, NodePtr n) {
        auto* h = new Handle{std::move(v), std::move(n)};
        std::lock_guard<std::mutex> lock(handles_mutex);
        handles.insert(h);
        return reinterpret_cast<uint64_t>(h);
    }
    void free_handle(uint64_t fh) {
        auto* h = reinterpret_cast<Handle*>(fh);
        {
            std::lock_guard<std::mutex> lock(handles_mutex);
            handles.erase(h);
        }
        delete h;
    }
    void free_all_handles() {
        std::lock_guard<std::mutex> lock(handles_mutex);
        for (Handle* h : handles)
            delete h;
        handles.clear();
    }

    NodePtr node(fuse_ino_t ino) const {
        std::shared_lock lock(tree_mutex);
        const auto it = nodes.find(ino);
        return it == nodes.end() ? nullptr : it->second;
    }

    // The child of `parent` named `name`; the caller holds tree_mutex.
    NodePtr child_locked(fuse_ino_t parent, std::string_view name) const {
        const auto p = nodes.find(parent);
        if (p == nodes.end())
            return nullptr;
        for (fuse_ino_t c : p->second->children) {
            const NodePtr& n = nodes.at(c);
            if (n->name == name)
                return n;
        }
        return nullptr;
    }

    // Adds a node; the caller holds tree_mutex exclusively.
    fuse_ino_t add_locked(fuse_ino_t parent, std::string name, bool is_dir, MountedFile file) {
        auto n = std::make_shared<Node>();
        n->ino = next_ino++;
        n->parent = parent;
        n->name = std::move(name);
        if (parent != 0 && parent != root_ino)
            n->folder = nodes.at(parent)->name;
        n->is_dir = is_dir;
        n->device = std::move(file.device);
        n->live = std::move(file.live);
        n->writable = file.writable;
        any_writable = any_writable || n->writable;
        // A view to prepare stays without a version until its first open,
        // even if it is ready: prepared() makes the wrapper that knows its
        // final size.
        if (n->device && !prepared_view_of(*n->device)) {
            n->current = make_version(n->device);
            n->generation = n->live ? n->live->generation() : 0;
        }
        const fuse_ino_t ino = n->ino;
        nodes.emplace(ino, std::move(n));
        if (parent != 0)
            nodes.at(parent)->children.push_back(ino);
        return ino;
    }

    // Tells the kernel to forget a name it may have cached (a folder taken
    // out, a file added where a lookup failed). Only while the loop runs,
    // and never with tree_mutex held: the kernel may call back into us.
    void forget_entry(fuse_ino_t parent, const std::string& name) {
        if (!session || fuse_session_exited(session))
            return;
        const int rc = fuse_lowlevel_notify_inval_entry(session, parent, name.c_str(), name.size());
        if (rc != 0 && rc != -ENOENT)
            spdlog::debug("invalidating '{}' in the kernel: {}", name, errno_text(-rc));
    }

    uint64_t allocated_bytes(Version& v) const {
        std::call_once(v.allocated_once, [&] {
            BlockDevice& dev = *v.device;
            try {
                for (const Extent& e : dev.extents(0, dev.size()))
                    if (e.type != ExtentType::Hole)
                        v.allocated += e.length;
            } catch (const Error& e) {
                spdlog::warn("{}: cannot map allocation ({}); reporting it fully allocated",
                             dev.name(), e.what());
                v.allocated = dev.size();
            }
        });
        return v.allocated;
    }

    // The version an open (may_prepare) or a stat should see: prepares the
    // view if it must be and, for a live file whose generation moved, makes
    // the new one. A stat never starts a preparation pass: it sees the last
    // version (or none). Throws the preparation's Error.
    VersionPtr refresh(Node& n, bool may_prepare) const {
        const uint64_t generation = n.live ? n.live->generation() : 0;
        {
            std::lock_guard<std::mutex> lock(n.mutex);
            if (n.current && (!n.live || n.generation == generation))
                return n.current;
        }
        // A stat never waits for an open that is preparing or remaking the
        // file (a pass over a large disk): it answers with what there is.
        if (!may_prepare && !n.live)
            return n.version();
        std::unique_lock<std::mutex> prepare_lock(n.prepare_mutex, std::defer_lock);
        if (may_prepare)
            prepare_lock.lock();
        else if (!prepare_lock.try_lock())
            return n.version();
        {
            std::lock_guard<std::mutex> lock(n.mutex);
            if (n.current && (!n.live || n.generation == generation))
                return n.current; // another open did it while this one waited
        }
        DevicePtr device = n.live ? n.live->make() : n.device;
        if (prepared_view_of(*device)) {
            if (!may_prepare)
                return n.version();
            const auto log = logged_progress(n.name + " of '" + n.folder + "'");
            // A long pass (compressing a large disk) must not hold up a
            // SIGTERM: once the session is exiting, the pass is cancelled.
            auto progress = [this, &log](uint64_t done, uint64_t total) {
                if (fuse_session* se = session.load(); se && fuse_session_exited(se))
                    throw Error("preparation cancelled: the daemon is stopping", ECANCELED);
                log(done, total);
            };
            device = prepared(device, progress);
            spdlog::info("{} of '{}': ready, {} bytes", n.name, n.folder,
                         device->size());
        }
        VersionPtr v = make_version(std::move(device));
        std::lock_guard<std::mutex> lock(n.mutex);
        n.current = v;
        n.generation = generation;
        return v;
    }

    struct stat stat_of(const Node& n, const VersionPtr& v) const {
        struct stat st {};
        st.st_ino = n.ino;
        st.st_uid = uid;
        st.st_gid = gid;
        st.st_atim = st.st_mtim = st.st_ctim = mount_time;
        if (n.is_dir) {
            st.st_mode = S_IFDIR | 0555;
            st.st_nlink = 2;
        } else {
            st.st_mode = S_IFREG | (n.writable ? 0644 : 0444);
            st.st_nlink = 1;
            if (v) {
                st.st_size = static_cast<off_t>(v->device->size());
                st.st_blocks = static_cast<blkcnt_t>((allocated_bytes(*v) + 511) / 512);
                if (n.live)
                    st.st_mtim = st.st_ctim = v->made;
            }
            st.st_blksize = 1 << 20;
        }
        return st;
    }

    // stat of a node for lookup/getattr: a live file's newest version.
    VersionPtr stat_version(Node& n) const {
        if (n.is_dir)
            return nullptr;
        try {
            return refresh(n, false);
        } catch (const std::exception& e) {
            spdlog::warn("{} of '{}': {}", n.name, n.folder, e.what());
            return n.version();
        }
    }

    static Impl& of(fuse_req_t req) { return *static_cast<Impl*>(fuse_req_userdata(req)); }

    // Read-ahead of the mount's bdi: the path is found right after mounting,
    // the value written on the first request after INIT (see tune_read_ahead).
    std::string read_ahead_path;
    std::once_flag read_ahead_once;
    void find_read_ahead_path(const std::string& canonical_mount_point);
    void tune_read_ahead();
};

namespace {

void reply_error(fuse_req_t req, const Node& n, const char* op, uint64_t offset, size_t length,
                 const std::exception& e) {
    const auto* err = dynamic_cast<const Error*>(&e);
    const int code = err ? err->error_number() : EIO;
    spdlog::error("{} {} bytes at {:#x} of {}: {}", op, length, offset, n.name, e.what());
    fuse_reply_err(req, code);
}

void op_init(void* userdata, struct fuse_conn_info* conn) {
    auto& impl = *static_cast<FuseFrontend::Impl*>(userdata);
    // Kernel features are negotiated here and nowhere else.
    if (impl.options.splice && (conn->capable & FUSE_CAP_SPLICE_WRITE))
        conn->want |= FUSE_CAP_SPLICE_WRITE | (conn->capable & FUSE_CAP_SPLICE_MOVE);
    conn->want &= ~static_cast<unsigned>(FUSE_CAP_SPLICE_READ); // writes are few and small
    // O_TRUNC comes with the open, where it is refused, rather than as a
    // separate truncation before it.
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
        conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
    // Writes go through to the daemon (no write-back cache): an fsync on a
    // writable view then covers every write that returned.
    conn->want &= ~static_cast<unsigned>(FUSE_CAP_WRITEBACK_CACHE);
    conn->max_readahead = std::min<unsigned>(conn->max_readahead, max_read_bytes);
    conn->max_read = 0;
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    auto& impl = FuseFrontend::Impl::of(req);
    impl.tune_read_ahead();
    NodePtr n;
    {
        std::shared_lock lock(impl.tree_mutex);
        const auto p = impl.nodes.find(parent);
        if (p == impl.nodes.end() || !p->second->is_dir) {
            fuse_reply_err(req, p == impl.nodes.end() ? ENOENT : ENOTDIR);
            return;
        }
        n = impl.child_locked(parent, name);
    }
    if (!n) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    const VersionPtr v = impl.stat_version(*n);
    struct fuse_entry_param e {};
    e.ino = n->ino;
    e.generation = 1;
    e.attr = impl.stat_of(*n, v);
    e.attr_timeout = n->is_dir ? attr_timeout : n->timeout(v);
    e.entry_timeout = e.attr_timeout;
    fuse_reply_entry(req, &e);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
    auto& impl = FuseFrontend::Impl::of(req);
    impl.tune_read_ahead();
    const NodePtr n = impl.node(ino);
    if (!n) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    // fstat(2) of an open file: the version that file reads.
    const VersionPtr v = fi && fi->fh && !n->is_dir ? handle(fi).version : impl.stat_version(*n);
    const struct stat st = impl.stat_of(*n, v);
    fuse_reply_attr(req, &st, n->is_dir ? attr_timeout : n->timeout(v));
}

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                struct fuse_file_info*) {
    auto& impl = FuseFrontend::Impl::of(req);
    const NodePtr n = impl.node(ino);
    if (!n || !n->writable) {
        fuse_reply_err(req, n ? EROFS : ENOENT);
        return;
    }
    // A disk has the size it has: only a "change" to the same size passes
    // (times and modes are not kept).
    const VersionPtr v = impl.stat_version(*n);
    if ((to_set & FUSE_SET_ATTR_SIZE) &&
        (!v || static_cast<uint64_t>(attr->st_size) != v->device->size())) {
        spdlog::warn("{} of '{}': refused a change of size to {} (a disk cannot be truncated or "
                     "grown; dd needs conv=notrunc)",
                     n->name, n->folder, attr->st_size);
        fuse_reply_err(req, EPERM);
        return;
    }
    const struct stat st = impl.stat_of(*n, v);
    fuse_reply_attr(req, &st, n->timeout(v));
}

void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
    const NodePtr n = FuseFrontend::Impl::of(req).node(ino);
    if (!n)
        fuse_reply_err(req, ENOENT);
    else if (!n->is_dir)
        fuse_reply_err(req, ENOTDIR);
    else
        fuse_reply_open(req, fi);
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info*) {
    auto& impl = FuseFrontend::Impl::of(req);
    // Entry i of ".", "..", children...; `off` is the index of the next one.
    // A folder added or removed between two calls may shift the entries
    // after it, as on any directory that changes while it is read.
    struct Entry {
        std::string name;
        fuse_ino_t ino;
        bool is_dir;
    };
    std::vector<Entry> entries;
    {
        std::shared_lock lock(impl.tree_mutex);
        const auto it = impl.nodes.find(ino);
        if (it == impl.nodes.end() || !it->second->is_dir) {
            fuse_reply_err(req, ENOTDIR);
            return;
        }
        const Node& n = *it->second;
        entries.push_back({".", n.ino, true});
        entries.push_back({"..", n.parent ? n.parent : n.ino, true});
        for (fuse_ino_t c : n.children) {
            const Node& child = *impl.nodes.at(c);
            entries.push_back({child.name, child.ino, child.is_dir});
        }
    }
    std::vector<char> buf(size);
    size_t used = 0;
    for (size_t i = static_cast<size_t>(off); i < entries.size(); ++i) {
        struct stat st {};
        st.st_ino = entries[i].ino;
        st.st_mode = entries[i].is_dir ? S_IFDIR : S_IFREG;
        const size_t need = fuse_add_direntry(req, buf.data() + used, size - used,
                                              entries[i].name.c_str(), &st,
                                              static_cast<off_t>(i + 1));
        if (need > size - used)
            break;
        used += need;
    }
    fuse_reply_buf(req, buf.data(), used);
}

void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
    auto& impl = FuseFrontend::Impl::of(req);
    const NodePtr n = impl.node(ino);
    if (!n) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (n->is_dir) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    const bool writing = (fi->flags & O_ACCMODE) != O_RDONLY;
    if ((writing || (fi->flags & O_TRUNC)) && !n->writable) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (fi->flags & O_TRUNC) {
        spdlog::warn("{} of '{}': refused an open with O_TRUNC (a disk cannot be truncated; dd "
                     "needs conv=notrunc)",
                     n->name, n->folder);
        fuse_reply_err(req, EPERM);
        return;
    }
    VersionPtr v;
    try {
        v = impl.refresh(*n, true);
    } catch (const std::exception& e) {
        const auto* err = dynamic_cast<const Error*>(&e);
        spdlog::error("preparing {} of '{}': {}", n->name, n->folder, e.what());
        fuse_reply_err(req, err ? err->error_number() : EIO);
        return;
    }
    fi->fh = impl.new_handle(std::move(v), n);
    // The kernel keeps one page cache per inode, shared by every open: pages
    // a later open reads from a newer version would be served to this one.
    // So reads of a live file bypass it and each reaches its own version.
    fi->direct_io = n->live != nullptr;
    if (fuse_reply_open(req, fi) != 0)
        impl.free_handle(fi->fh); // the opener is gone: no release follows
}

void op_release(fuse_req_t req, fuse_ino_t, struct fuse_file_info* fi) {
    FuseFrontend::Impl::of(req).free_handle(fi->fh);
    fuse_reply_err(req, 0);
}

void op_read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, struct fuse_file_info* fi) {
    auto& impl = FuseFrontend::Impl::of(req);
    const Handle& h = handle(fi);
    const Node* n = h.node.get();
    BlockDevice& dev = *h.version->device;
    const uint64_t offset = static_cast<uint64_t>(off);
    const uint64_t file_size = dev.size();
    if (offset >= file_size) {
        fuse_reply_buf(req, nullptr, 0);
        return;
    }
    const size_t length = static_cast<size_t>(std::min<uint64_t>(size, file_size - offset));
    try {
        if (impl.options.splice) {
            // Twice the largest read: room for a 1 MiB read at any page offset
            // where the kernel lets the daemon have it (root may exceed
            // pipe-max-size); fits() checks what the pipe really holds.
            thread_local SplicePipe pipe(2 * max_read_bytes);
            const auto span = dev.fd_span(offset, length);
            if (span && pipe.fits(span->offset, length) &&
                pipe.fill(span->fd, span->offset, length)) {
                struct fuse_bufvec bv = FUSE_BUFVEC_INIT(length);
                bv.buf[0].flags = FUSE_BUF_IS_FD;
                bv.buf[0].fd = pipe.read_end();
                fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
                pipe.reset_if_dirty();
                return;
            }
        }
        thread_local std::vector<unsigned char> buffer;
        if (buffer.size() < length)
            buffer.resize(std::max(length, max_read_bytes));
        dev.read(buffer.data(), length, offset);
        fuse_reply_buf(req, reinterpret_cast<const char*>(buffer.data()), length);
    } catch (const std::exception& e) {
        reply_error(req, *n, "read of", offset, length, e);
    }
}

void op_lseek(fuse_req_t req, fuse_ino_t, off_t off, int whence, struct fuse_file_info* fi) {
    const Node* n = handle(fi).node.get();
    if (whence != SEEK_DATA && whence != SEEK_HOLE) {
        fuse_reply_err(req, EINVAL); // SEEK_SET/CUR/END are handled by the kernel
        return;
    }
    BlockDevice& dev = *handle(fi).version->device;
    const uint64_t size = dev.size();
    const uint64_t offset = static_cast<uint64_t>(off);
    if (off < 0 || offset >= size) {
        fuse_reply_err(req, ENXIO);
        return;
    }
    try {
        const bool want_data = whence == SEEK_DATA;
        for (const Extent& e : dev.extents(offset, size - offset)) {
            if ((e.type != ExtentType::Hole) == want_data) {
                fuse_reply_lseek(req, static_cast<off_t>(e.offset));
                return;
            }
        }
        // No more data: ENXIO. No hole before the end: the end is a hole.
        if (want_data)
            fuse_reply_err(req, ENXIO);
        else
            fuse_reply_lseek(req, static_cast<off_t>(size));
    } catch (const std::exception& e) {
        reply_error(req, *n, "lseek in", offset, 0, e);
    }
}

void op_statfs(fuse_req_t req, fuse_ino_t) {
    auto& impl = FuseFrontend::Impl::of(req);
    struct statvfs sv {};
    sv.f_bsize = 4096;
    sv.f_frsize = 4096;
    uint64_t bytes = 0;
    std::shared_lock lock(impl.tree_mutex);
    for (const auto& [ino, n] : impl.nodes)
        if (!n->is_dir)
            if (const VersionPtr v = n->version())
                bytes += v->device->size();
    sv.f_blocks = bytes / 4096;
    sv.f_files = impl.nodes.size();
    sv.f_namemax = 255;
    fuse_reply_statfs(req, &sv);
}

void op_write(fuse_req_t req, fuse_ino_t, const char* buf, size_t size, off_t off,
              struct fuse_file_info* fi) {
    const Handle& h = handle(fi);
    const Node* n = h.node.get();
    if (!n->writable) {
        fuse_reply_err(req, EROFS);
        return;
    }
    BlockDevice& dev = *h.version->device;
    const uint64_t offset = static_cast<uint64_t>(off);
    // As on a block device: a write crossing the end is cut there, one at
    // or past the end has no room.
    if (off < 0 || offset >= dev.size()) {
        fuse_reply_err(req, ENOSPC);
        return;
    }
    const size_t length = static_cast<size_t>(std::min<uint64_t>(size, dev.size() - offset));
    try {
        dev.write(buf, length, offset);
        fuse_reply_write(req, length);
    } catch (const std::exception& e) {
        reply_error(req, *n, "write of", offset, length, e);
    }
}

void op_flush(fuse_req_t req, fuse_ino_t, struct fuse_file_info*) {
    // close(2): writes are in the overlay's log already; durability is
    // fsync's business, as on any file.
    fuse_reply_err(req, 0);
}

void op_fsync(fuse_req_t req, fuse_ino_t, int, struct fuse_file_info* fi) {
    const Handle& h = handle(fi);
    const Node* n = h.node.get();
    try {
        h.version->device->flush();
        fuse_reply_err(req, 0);
    } catch (const std::exception& e) {
        reply_error(req, *n, "fsync of", 0, 0, e);
    }
}

void op_create(fuse_req_t req, fuse_ino_t, const char*, mode_t, struct fuse_file_info*) {
    fuse_reply_err(req, EROFS);
}

const struct fuse_lowlevel_ops operations = [] {
    struct fuse_lowlevel_ops ops {};
    ops.init = op_init;
    ops.lookup = op_lookup;
    ops.getattr = op_getattr;
    ops.setattr = op_setattr;
    ops.opendir = op_opendir;
    ops.readdir = op_readdir;
    ops.open = op_open;
    ops.read = op_read;
    ops.release = op_release;
    ops.write = op_write;
    ops.flush = op_flush;
    ops.fsync = op_fsync;
    ops.create = op_create;
    ops.lseek = op_lseek;
    ops.statfs = op_statfs;
    return ops;
}();

} // namespace

void FuseFrontend::Impl::find_read_ahead_path(const std::string& canonical_mount_point) {
    if (options.read_ahead_kb == 0)
        return;
    if (const auto m = find_mount(canonical_mount_point))
        read_ahead_path = "/sys/class/bdi/" + std::to_string(m->major) + ":" +
                          std::to_string(m->minor) + "/read_ahead_kb";
}

void FuseFrontend::Impl::tune_read_ahead() {
    // The kernel reads ahead 128 KiB by default, which keeps FUSE requests
    // small; 1 MiB requests roughly double sequential throughput. It must be
    // set after the INIT exchange: the kernel sends INIT at mount time with
    // the bdi's read-ahead then (128 KiB) and clamps the bdi to the
    // max_readahead of the reply, undoing any earlier setting. So this runs
    // once, on the first request after INIT.
    std::call_once(read_ahead_once, [this] {
        if (read_ahead_path.empty())
            return;
        std::ofstream f(read_ahead_path);
        f << options.read_ahead_kb << "\n";
        f.flush();
        if (!f)
            spdlog::debug("cannot set {} (not root?); keeping the kernel's read-ahead",
                          read_ahead_path);
        else
            spdlog::debug("{} set to {}", read_ahead_path, options.read_ahead_kb);
    });
}

FuseFrontend::FuseFrontend(FuseOptions options, std::vector<MountedFolder> folders)
    : impl_(std::make_unique<Impl>()) {
    impl_->options = std::move(options);
    ::clock_gettime(CLOCK_REALTIME, &impl_->mount_time);
    {
        std::unique_lock lock(impl_->tree_mutex);
        impl_->add_locked(0, "", true, {});
    }
    for (auto& folder : folders)
        add_folder(std::move(folder));
}

void FuseFrontend::add_folder(MountedFolder folder) {
    Impl& impl = *impl_;
    {
        std::unique_lock lock(impl.tree_mutex);
        if (impl.child_locked(Impl::root_ino, folder.name))
            throw InvalidArgument("the mount has a folder named '" + folder.name + "' already");
        std::set<std::string_view> names;
        for (const MountedFile& f : folder.files)
            if (!names.insert(f.name).second)
                throw InvalidArgument("two files named '" + f.name + "' in folder '" +
                                      folder.name + "'");
        const fuse_ino_t dir = impl.add_locked(Impl::root_ino, folder.name, true, {});
        for (auto& file : folder.files) {
            std::string name = std::move(file.name);
            impl.add_locked(dir, std::move(name), false, std::move(file));
        }
    }
    impl.forget_entry(Impl::root_ino, folder.name);
}

void FuseFrontend::add_file(const std::string& folder, MountedFile file) {
    Impl& impl = *impl_;
    fuse_ino_t dir = 0;
    const std::string name = file.name;
    {
        std::unique_lock lock(impl.tree_mutex);
        const NodePtr d = impl.child_locked(Impl::root_ino, folder);
        if (!d)
            throw InvalidArgument("the mount has no folder named '" + folder + "'");
        if (impl.child_locked(d->ino, name))
            throw InvalidArgument("folder '" + folder + "' has a file named '" + name +
                                  "' already");
        dir = d->ino;
        impl.add_locked(dir, name, false, std::move(file));
    }
    impl.forget_entry(dir, name);
}

bool FuseFrontend::remove_folder(const std::string& folder) {
    Impl& impl = *impl_;
    {
        std::unique_lock lock(impl.tree_mutex);
        const NodePtr d = impl.child_locked(Impl::root_ino, folder);
        if (!d)
            return false;
        for (fuse_ino_t c : d->children)
            impl.nodes.erase(c);
        auto& siblings = impl.nodes.at(Impl::root_ino)->children;
        siblings.erase(std::find(siblings.begin(), siblings.end(), d->ino));
        impl.nodes.erase(d->ino);
    }
    impl.forget_entry(Impl::root_ino, folder);
    return true;
}

bool FuseFrontend::remove_file(const std::string& folder, const std::string& name) {
    Impl& impl = *impl_;
    fuse_ino_t dir = 0;
    {
        std::unique_lock lock(impl.tree_mutex);
        const NodePtr d = impl.child_locked(Impl::root_ino, folder);
        if (!d)
            return false;
        const NodePtr f = impl.child_locked(d->ino, name);
        if (!f)
            return false;
        dir = d->ino;
        auto& siblings = d->children;
        siblings.erase(std::find(siblings.begin(), siblings.end(), f->ino));
        impl.nodes.erase(f->ino);
    }
    impl.forget_entry(dir, name);
    return true;
}

const std::string& FuseFrontend::mount_point() const { return impl_->options.mount_point; }

FuseFrontend::~FuseFrontend() = default;

void FuseFrontend::run() {
    const FuseOptions& o = impl_->options;
    std::vector<std::string> argv_store{
        "p2vfsd", "-o",
        std::string(impl_->any_writable ? "rw" : "ro") +
            ",default_permissions,fsname=p2vfs,subtype=p2vfsd"};
    if (::geteuid() == 0)
        argv_store.back() += ",allow_other";
    if (o.debug)
        argv_store.push_back("-d");
    std::vector<char*> argv;
    for (auto& s : argv_store)
        argv.push_back(s.data());
    struct fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());

    struct fuse_session* se = fuse_session_new(&args, &operations, sizeof operations, impl_.get());
    fuse_opt_free_args(&args);
    if (!se)
        throw MountError("cannot create a FUSE session (is /dev/fuse available?)", EIO);
    impl_->session = se;
    struct SessionGuard {
        fuse_session* se;
        bool handlers = false;
        bool mounted = false;
        ~SessionGuard() {
            if (mounted)
                fuse_session_unmount(se);
            if (handlers)
                fuse_remove_signal_handlers(se);
            fuse_session_destroy(se);
        }
    } guard{se};

    if (fuse_set_signal_handlers(se) != 0)
        throw MountError("cannot install signal handlers", EIO);
    guard.handlers = true;
    // Canonical before mounting: resolving it afterwards would ask the file
    // system itself, which does not answer until the loop runs.
    char* real = ::realpath(o.mount_point.c_str(), nullptr);
    const std::string canonical = real ? real : o.mount_point;
    std::free(real);
    if (fuse_session_mount(se, o.mount_point.c_str()) != 0)
        throw MountError("mount point " + o.mount_point + ": FUSE mount failed", EIO);
    guard.mounted = true;
    impl_->find_read_ahead_path(canonical);
    size_t folders = 0;
    {
        std::shared_lock lock(impl_->tree_mutex);
        folders = impl_->nodes.at(Impl::root_ino)->children.size();
    }
    spdlog::info("ready: {} folder(s) mounted at {}", folders, o.mount_point);
    if (o.on_ready)
        o.on_ready();

    struct fuse_loop_config* cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_clone_fd(cfg, 1);
    fuse_loop_cfg_set_max_threads(cfg, o.max_threads);
    fuse_loop_cfg_set_idle_threads(cfg, std::max(1u, o.max_threads / 2));
    const int rc = fuse_session_loop_mt(se, cfg);
    fuse_loop_cfg_destroy(cfg);
    impl_->session = nullptr; // the workers are gone; the guard destroys it
    impl_->free_all_handles();
    spdlog::info("unmounting {}", o.mount_point);
    if (rc < 0)
        spdlog::warn("FUSE loop ended with: {}", errno_text(-rc));
}

} // namespace p2vfs
