// The overlay of a source: where fixups and user writes land, beside a
// source that is never written.
//
// An overlay lives in STATE_DIR/overlays/NAME/ (NAME: the source's name in
// the mount) and holds two layers, bottom to top:
//
//   fixups   the guest OS changes a conversion makes (drivers, fstab, ...)
//   user     writes through a writable disk.raw
//
// Reads take each chunk from the topmost layer that has it, else from the
// source. Each layer can be listed, checkpointed, rolled back and discarded
// on its own (layer.h), and the changes exported as a qcow2 file backed by
// the pristine source (overlay/export.h).
//
// Chunks are 64 KiB. Smaller chunks would make a 4 KiB write (an fstab edit,
// an ext4 metadata block) copy less from the source, but the fixups touch
// few blocks, and every chunk costs 16 bytes of index and a log record; at
// 64 KiB a million chunks is 64 GiB of changes in a 16 MiB index. 64 KiB is
// also qcow2's default cluster size, so an export maps chunk to cluster one
// to one, and the read cache's block size.
//
// overlay.conf records what the overlay was made over (the source's spec,
// identity and size): reopening it over a different disk is refused, since
// its chunks would then be pasted onto the wrong bytes. A lock file keeps
// two processes (two daemons, or a daemon and p2vfs-overlay) from opening
// one overlay at once.
#pragma once

#include "block/block_device.h"
#include "common/file_io.h"
#include "overlay/layer.h"

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace p2vfs {

inline constexpr const char* fixups_layer = "fixups";
inline constexpr const char* user_layer = "user";

struct OverlayOptions {
    uint32_t chunk_size = 64 * 1024;
    bool compress = true;  // lz4 chunks (new overlays; an existing one keeps its setting)
    bool writable = false; // open the layers for writing
};

class Overlay : public std::enable_shared_from_this<Overlay> {
public:
    static std::string directory(const std::string& state_dir, const std::string& source_name);
    static bool exists(const std::string& state_dir, const std::string& source_name);
    // The source spec an existing overlay was made over (for tools that open
    // the source from it). Throws Error when there is no such overlay.
    static std::string recorded_source(const std::string& state_dir, const std::string& source_name);

    // Opens the overlay of source `name` over `source`; makes it if missing
    // and `create`. Throws Error naming the directory when it is in use,
    // damaged, or was made over another disk.
    static std::shared_ptr<Overlay> open(const std::string& state_dir, const std::string& name,
                                         DevicePtr source, const std::string& source_spec,
                                         const OverlayOptions& options, bool create);
    ~Overlay();

    const std::string& dir() const { return dir_; }
    const std::string& source_name() const { return name_; }
    const std::string& id() const { return id_; } // a UUID, made with the overlay
    const DevicePtr& source() const { return source_; }
    const overlay::Geometry& geometry() const { return geometry_; }
    bool writable() const { return options_.writable; }

    // Bottom to top. layer() throws InvalidArgument naming the layers there are.
    const std::vector<std::unique_ptr<overlay::Layer>>& layers() const { return layers_; }
    overlay::Layer& layer(const std::string& name) const;

    // The disk with the layers up to and including `top`. Writes go to
    // `write_layer` (empty: the device is read-only); it must be `top` or
    // below it.
    DevicePtr device(const std::string& top = user_layer, const std::string& write_layer = {});
    // Only the changes of the layers up to `top`: reads as device(top), but
    // its extents are Data for every chunk some layer holds and Hole
    // elsewhere (what a qcow2 file backed by the source must store).
    DevicePtr delta(const std::string& top = user_layer);

    // Raised when a chunk appears in a layer where it was not (the disk's
    // allocation changes) / on every write (its content changes).
    uint64_t allocation_generation() const { return allocation_generation_.load(); }
    uint64_t content_generation() const { return content_generation_.load(); }
    void note_write(bool allocation_changed) {
        content_generation_.fetch_add(1);
        if (allocation_changed)
            allocation_generation_.fetch_add(1);
    }
    void changed_layers() { note_write(true); } // after checkpoint/rollback/discard

    // Serializes read-modify-writes of chunk c.
    std::mutex& chunk_lock(uint64_t c) { return chunk_locks_[c % chunk_locks_.size()]; }

    void sync();

private:
    Overlay() = default;

    std::string dir_;
    std::string name_;
    DevicePtr source_;
    std::string identity_;
    std::string id_;
    overlay::Geometry geometry_;
    OverlayOptions options_;
    UniqueFd lock_fd_;
    std::vector<std::unique_ptr<overlay::Layer>> layers_;
    std::atomic<uint64_t> allocation_generation_{0};
    std::atomic<uint64_t> content_generation_{0};
    std::array<std::mutex, 64> chunk_locks_;
};

using OverlayPtr = std::shared_ptr<Overlay>;

} // namespace p2vfs
