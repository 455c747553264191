// A layer of an overlay: its segments, bottom to top, and its checkpoints.
//
// A checkpoint freezes the layer's top segment (synced, then only read) and
// starts an empty one above it; rolling back to a checkpoint deletes the
// segments above the one it froze; discarding deletes them all. Reads take a
// chunk from the topmost segment that has it. So checkpoints cost nothing
// until the chunks they keep are written again, and each operation is a
// change of the segment list, not of any data.
//
// Crash rules: the segment list is the file `segments`, replaced whole by
// rename (common/file_io.h replace_file) after the segments it names exist
// and before any segment it no longer names is deleted. A crash between the
// two leaves directories that the list does not name; open() deletes them.
// Each segment keeps its own rules (segment.h).
//
//   segments:   p2vfs-layer 1
//               segment 1 checkpoint before-fixups 1764000000
//               segment 2
//
// Thread model: chunk reads, writes and sync may run concurrently; the
// operations that change the segment list (checkpoint, rollback, discard)
// wait for them and block them while they run.
#pragma once

#include "overlay/segment.h"

#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

namespace p2vfs::overlay {

struct CheckpointInfo {
    std::string name;
    int64_t time = 0;    // when it was made, seconds since the epoch
    SegmentStats stats;  // of the segment it froze
};

struct LayerInfo {
    std::string name;
    uint64_t chunks = 0;           // chunks present in the layer (any segment)
    uint64_t stored_bytes = 0;     // payload bytes in all segments
    uint64_t disk_usage = 0;       // bytes its files take on disk
    uint64_t segments = 0;
    std::vector<CheckpointInfo> checkpoints; // oldest first
};

class Layer {
public:
    // Opens the layer in `dir`; with `create`, makes it (one empty segment)
    // if it is missing, otherwise a missing layer is an error.
    Layer(std::string dir, std::string name, const Geometry& geometry,
          const SegmentOptions& options, bool create = false);
    ~Layer();

    const std::string& name() const { return name_; }

    bool has(uint64_t c) const;
    bool is_zero(uint64_t c) const; // in the topmost segment that has c
    uint64_t next_present(uint64_t from, uint64_t end) const;
    uint64_t next_absent(uint64_t from, uint64_t end) const;
    void read_chunk(uint64_t c, unsigned char* out);
    void write_chunk(uint64_t c, const unsigned char* data);
    void sync();

    // Throws InvalidArgument for an empty or reused name, or one with
    // characters other than letters, digits, '.', '_', '-'.
    void checkpoint(const std::string& checkpoint_name);
    // Throws InvalidArgument naming the checkpoints there are.
    void rollback(const std::string& checkpoint_name);
    // Drops every chunk and every checkpoint.
    void discard();

    LayerInfo info() const;

private:
    struct Member {
        uint64_t number;
        std::string checkpoint; // empty: the top, writable
        int64_t time = 0;
        std::unique_ptr<Segment> segment;
    };
    std::string segment_dir(uint64_t number) const;
    void save_list();
    void open_list();
    void push_new_segment();
    void remove_unlisted();
    // Closes `dropped`, puts a new empty top segment `next` above the
    // members left, saves the list, then deletes the dropped segments.
    void replace_dropped(std::vector<Member> dropped, uint64_t next);
    uint64_t next_present_locked(uint64_t from, uint64_t end) const;
    uint64_t next_absent_locked(uint64_t from, uint64_t end) const;

    std::string dir_;
    std::string name_;
    Geometry geometry_;
    SegmentOptions options_;
    mutable std::shared_mutex mutex_;
    std::vector<Member> members_; // bottom to top
};

} // namespace p2vfs::overlay
