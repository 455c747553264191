// One segment of an overlay layer: a log of chunk records and a mapped index.
//
// An overlay stores the chunks written over a disk. A segment is two files in
// its own directory:
//
//   log    a 4 KiB header, then records, each at a 4 KiB-aligned offset:
//          a 64-byte header (magic, segment id, chunk number, sequence,
//          stored length, kind, CRC-32C of the payload, CRC-32C of the
//          header) and the payload: the chunk raw, lz4-compressed, or
//          nothing for an all-zero chunk. Records are only ever appended.
//   index  a 4 KiB page holding two header slots (A at 0, B at 2048), then a
//          dense array of 16-byte entries, entry c for chunk c: where its
//          newest record is in the log, its stored length and kind, and a
//          CRC-32C over the entry and c. All zeros: not in this segment. The
//          array is mapped (Boost.Interprocess) and used in place: opening
//          only scans the allocated parts of the index for a presence bitmap
//          (SEEK_DATA skips the rest). A million chunks is a 16 MiB file,
//          sparse for a sparse overlay; it opens in ~50 ms cold here
//          (tools/bench/README.md, "Overlay").
//
// Crash rules. What is written, in which order:
//   1. A write appends a record to the log (one pwrite) and notes the new
//      entry in memory only. Readers see it at once (memory first, then the
//      mapped array). The mapped array is never touched by a write.
//   2. sync() — the daemon's answer to fsync(2) on a view, and every
//      `auto_sync_chunks` writes — makes all of it durable, in this order:
//        a. fdatasync(log): every record written before the sync began is
//           on disk.
//        b. the noted entries are stored into the mapped array, msync(MS_SYNC).
//           Each entry stored points at a record made durable by (a).
//        c. the header slot not in use gets seq+1 and applied_end = the log
//           offset up to which (b) reflects the log; pwrite, fdatasync.
//        d. records superseded by the entries of (b) are punched out of the
//           log (FALLOC_FL_PUNCH_HOLE), which keeps the log's offsets and
//           returns their space. Only now: before (c) a crash would replay
//           from the old applied_end and need them.
//      When sync() returns, every write that completed before it was called
//      survives any crash.
// What a crash can leave, and how open() recovers:
//   - a torn header slot: each slot carries its CRC; the valid slot with the
//     higher seq wins (the other still describes the previous sync).
//   - index entries half stored by (b), torn within 16 bytes or missing:
//     only entries for records after applied_end can be affected, and open()
//     replays every record from applied_end to the end of the log into the
//     array again, in order, then advances applied_end (as in 2b-c).
//   - a torn record at the end of the log (written, never synced): replay
//     stops at the first record whose header or payload fails its CRC or
//     whose segment id is not this segment's; the log is cut there. Such a
//     record was never acknowledged by a sync, and no stored entry points at
//     it (2b only follows 2a).
//   - writes since the last sync may or may not be present after recovery,
//     each chunk either wholly old or wholly new, never torn: every read
//     checks the record's header and payload CRCs and its chunk number, and
//     a mismatch is an I/O error naming the segment, chunk and log offset,
//     never wrong bytes.
// A log write that fails (ENOSPC, EIO) is covered by a padding record if it
// can be, so replay can step over it; otherwise the segment stops taking
// writes and syncs (each then fails naming the first error) until reopened.
//
// Thread model: read_chunk(), write_chunk(), lookups and sync() may be
// called from many threads at once. Writers to one chunk must be serialized
// by the caller (a read-modify-write of part of a chunk needs that anyway).
#pragma once

#include "common/file_io.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace p2vfs::overlay {

// What chunk c of a disk of `disk_size` bytes covers.
struct Geometry {
    uint32_t chunk_size = 0; // a power of two, 4 KiB to 1 MiB
    uint64_t disk_size = 0;

    uint64_t chunk_count() const { return (disk_size + chunk_size - 1) / chunk_size; }
    // The last chunk may be short.
    uint32_t chunk_length(uint64_t c) const;
    bool operator==(const Geometry&) const = default;
};

enum class ChunkKind : uint8_t { Absent = 0, Raw = 1, Lz4 = 2, Zero = 3 };

struct SegmentStats {
    uint64_t chunks = 0;       // chunks present
    uint64_t zero_chunks = 0;  // of which all-zero (no payload)
    uint64_t stored_bytes = 0; // payload bytes of their records
};

struct SegmentOptions {
    bool writable = true;
    bool compress = true;              // lz4 when it saves at least 1/16
    uint64_t auto_sync_chunks = 4096;  // sync after this many unsynced writes
};

class Segment {
public:
    // Makes the segment's directory and files; `id` names the segment in
    // every record (a log copied from elsewhere does not replay).
    static std::unique_ptr<Segment> create(const std::string& dir, const Geometry& geometry,
                                           const SegmentOptions& options);
    // Opens and recovers (see the crash rules). Throws Error naming the file
    // and what is wrong when the segment cannot be used, or when it was made
    // for other geometry.
    static std::unique_ptr<Segment> open(const std::string& dir, const Geometry& geometry,
                                         const SegmentOptions& options);
    ~Segment(); // syncs a writable segment; an error is logged
    Segment(const Segment&) = delete;
    Segment& operator=(const Segment&) = delete;

    const std::string& dir() const { return dir_; }
    const Geometry& geometry() const { return geometry_; }
    bool writable() const { return options_.writable; }

    // Whether chunk c is in this segment, and if so whether it is all zeros.
    bool has(uint64_t c) const { return test(present_, c); }
    bool is_zero(uint64_t c) const { return test(zero_, c); }
    // The first chunk in [from, end) that is present (has) / absent, or end.
    uint64_t next_present(uint64_t from, uint64_t end) const;
    uint64_t next_absent(uint64_t from, uint64_t end) const;

    // Reads chunk c, which must be present, in full (chunk_length(c) bytes).
    // Throws Error (EIO) naming the chunk and offset if its record fails a check.
    void read_chunk(uint64_t c, unsigned char* out);
    // Stores chunk c in full (chunk_length(c) bytes).
    void write_chunk(uint64_t c, const unsigned char* data);
    // Makes every completed write durable (see the crash rules).
    void sync();

    SegmentStats stats() const;
    // Bytes the log and index take on disk (allocated blocks).
    uint64_t disk_usage() const;

    struct Entry {
        uint64_t where = 0; // record offset in the log
        uint32_t stored = 0;
        ChunkKind kind = ChunkKind::Absent;
    };

private:
    Segment(std::string dir, const Geometry& geometry, const SegmentOptions& options);
    void open_files(bool create);
    void recover();
    void build_bitmaps();
    // The newest entry of chunk c; `damaged` set when only a damaged one exists.
    Entry lookup(uint64_t c, bool* damaged = nullptr) const;
    void store_entry(uint64_t c, const Entry& e);
    Entry load_entry(uint64_t c, bool* damaged) const;
    void read_record(uint64_t c, const Entry& e, unsigned char* out, std::string* why);
    void write_header();
    void note_entry(uint64_t c, const Entry& e); // with index_mutex_ held
    // Counts e in place of old (Absent: none) and notes it; index_mutex_ held.
    void make_pending(uint64_t c, const Entry& old, const Entry& e);
    void sync_locked();
    void fail(const std::string& why);
    [[noreturn]] void throw_failed() const;
    static bool test(const std::vector<std::atomic<uint64_t>>& bits, uint64_t c) {
        return (bits[c >> 6].load(std::memory_order_relaxed) >> (c & 63)) & 1;
    }
    static void assign(std::vector<std::atomic<uint64_t>>& bits, uint64_t c, bool value);
    uint64_t scan(const std::vector<std::atomic<uint64_t>>& bits, uint64_t from, uint64_t end,
                  bool want) const;

    std::string dir_;
    std::string log_path_;
    std::string index_path_;
    Geometry geometry_;
    SegmentOptions options_;
    UniqueFd log_fd_;
    UniqueFd index_fd_;
    struct Mapping;
    std::unique_ptr<Mapping> map_;
    unsigned char* entries_ = nullptr; // the mapped array

    unsigned char id_[16]{};
    uint64_t header_seq_ = 0;
    int header_slot_ = 0;     // slot holding header_seq_
    uint64_t applied_end_ = 0;
    std::atomic<uint64_t> log_end_{0};
    std::atomic<uint64_t> sequence_{0};

    std::vector<std::atomic<uint64_t>> present_;
    std::vector<std::atomic<uint64_t>> zero_;

    // Writers hold it shared from allocating a record's place in the log to
    // noting its entry; sync() takes it exclusively for an instant, so all
    // records before the end it reads are complete and noted.
    std::shared_mutex write_lock_;
    std::mutex sync_mutex_; // one sync at a time
    mutable std::mutex index_mutex_;
    std::unordered_map<uint64_t, Entry> pending_;  // noted, not yet synced
    std::unordered_map<uint64_t, Entry> applying_; // being stored by sync()
    std::vector<Entry> dead_;                      // superseded, to punch after the next sync
    std::unordered_map<uint64_t, bool> damaged_;   // chunks whose index entry fails its check
    SegmentStats stats_;
    std::atomic<bool> failed_{false};
    std::string failure_;
};

} // namespace p2vfs::overlay
