#include "overlay/segment.h"

#include "common/crc32c.h"
#include "common/endian.h"
#include "common/error.h"
#include "common/file_io.h"

#include <algorithm>
#include <boost/interprocess/file_mapping.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <cstring>
#include <fcntl.h>
#include <lz4.h>
#include <random>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

namespace p2vfs::overlay {
namespace {

namespace bip = boost::interprocess;

constexpr uint64_t page = 4096;
constexpr uint32_t version = 1;
constexpr size_t record_header_size = 64;
constexpr size_t entry_size = 16;
constexpr size_t slot_size = 128;
constexpr uint64_t slot_offset[2] = {0, 2048};
constexpr char log_magic[8] = {'P', '2', 'V', 'F', 'S', 'L', 'O', 'G'};
constexpr char index_magic[8] = {'P', '2', 'V', 'F', 'S', 'I', 'D', 'X'};
constexpr char record_magic[8] = {'P', '2', 'V', 'F', 'S', 'R', 'E', 'C'};
// A record that only fills the place of a failed write, so replay steps over it.
constexpr uint8_t kind_pad = 4;

uint64_t round_up(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }

uint64_t index_file_size(const Geometry& g) {
    return page + round_up(g.chunk_count() * entry_size, page);
}

bool all_zero(const unsigned char* p, size_t n) {
    // Word at a time; chunks are large and usually start aligned.
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        std::memcpy(&w, p + i, 8);
        if (w)
            return false;
    }
    for (; i < n; ++i)
        if (p[i])
            return false;
    return true;
}

struct RecordHeader {
    uint64_t chunk = 0;
    uint64_t sequence = 0;
    uint32_t stored = 0;
    uint32_t length = 0;
    uint8_t kind = 0;
    uint32_t payload_crc = 0;
};

void encode_record_header(unsigned char* p, const unsigned char* id, const RecordHeader& h) {
    std::memset(p, 0, record_header_size);
    std::memcpy(p, record_magic, 8);
    std::memcpy(p + 8, id, 16);
    store_le<uint64_t>(p + 24, h.chunk);
    store_le<uint64_t>(p + 32, h.sequence);
    store_le<uint32_t>(p + 40, h.stored);
    store_le<uint32_t>(p + 44, h.length);
    p[48] = h.kind;
    store_le<uint32_t>(p + 52, h.payload_crc);
    store_le<uint32_t>(p + 60, crc32c(p, 60));
}

// False when the bytes are not a record header of segment `id`.
bool decode_record_header(const unsigned char* p, const unsigned char* id, RecordHeader& h) {
    if (std::memcmp(p, record_magic, 8) != 0 || std::memcmp(p + 8, id, 16) != 0 ||
        load_le<uint32_t>(p + 60) != crc32c(p, 60))
        return false;
    h.chunk = load_le<uint64_t>(p + 24);
    h.sequence = load_le<uint64_t>(p + 32);
    h.stored = load_le<uint32_t>(p + 40);
    h.length = load_le<uint32_t>(p + 44);
    h.kind = p[48];
    h.payload_crc = load_le<uint32_t>(p + 52);
    return true;
}

// The start both file headers share: magic, version, geometry, segment id.
void encode_file_header(unsigned char* p, const char* magic, const Geometry& g,
                        const unsigned char* id) {
    std::memcpy(p, magic, 8);
    store_le<uint32_t>(p + 8, version);
    store_le<uint32_t>(p + 12, g.chunk_size);
    store_le<uint64_t>(p + 16, g.disk_size);
    std::memcpy(p + 24, id, 16);
}

uint32_t entry_check(const unsigned char* e, uint64_t c) {
    unsigned char n[8];
    store_le<uint64_t>(n, c);
    return crc32c(n, 8, crc32c(e, 12));
}

} // namespace

struct Segment::Mapping {
    bip::file_mapping file;
    bip::mapped_region region;
};

uint32_t Geometry::chunk_length(uint64_t c) const {
    const uint64_t start = c * chunk_size;
    return static_cast<uint32_t>(std::min<uint64_t>(chunk_size, disk_size - start));
}

Segment::Segment(std::string dir, const Geometry& geometry, const SegmentOptions& options)
    : dir_(std::move(dir)), log_path_(dir_ + "/log"), index_path_(dir_ + "/index"),
      geometry_(geometry), options_(options) {
    if (geometry_.chunk_size < 4096 || geometry_.chunk_size > (1u << 20) ||
        (geometry_.chunk_size & (geometry_.chunk_size - 1)) || geometry_.disk_size == 0)
        throw InvalidArgument("overlay segment " + dir_ + ": bad geometry (chunk size " +
                              std::to_string(geometry_.chunk_size) + ", disk size " +
                              std::to_string(geometry_.disk_size) + ")");
    const uint64_t words = (geometry_.chunk_count() + 63) / 64;
    present_ = std::vector<std::atomic<uint64_t>>(words);
    zero_ = std::vector<std::atomic<uint64_t>>(words);
}

std::unique_ptr<Segment> Segment::create(const std::string& dir, const Geometry& geometry,
                                         const SegmentOptions& options) {
    std::unique_ptr<Segment> s(new Segment(dir, geometry, options));
    make_directories(dir);
    std::random_device rd;
    for (auto& b : s->id_)
        b = static_cast<unsigned char>(rd());
    s->open_files(true);
    return s;
}

std::unique_ptr<Segment> Segment::open(const std::string& dir, const Geometry& geometry,
                                       const SegmentOptions& options) {
    std::unique_ptr<Segment> s(new Segment(dir, geometry, options));
    s->open_files(false);
    return s;
}

void Segment::open_files(bool create) {
    const int mode = options_.writable ? O_RDWR : O_RDONLY;
    UniqueFd log = open_file(log_path_, mode | (create ? O_CREAT | O_EXCL : 0), 0600);
    UniqueFd index = open_file(index_path_, mode | (create ? O_CREAT | O_EXCL : 0), 0600);
    const std::string what = "overlay segment " + dir_;

    if (create) {
        unsigned char h[page]{};
        encode_file_header(h, log_magic, geometry_, id_);
        store_le<uint32_t>(h + 60, crc32c(h, 60));
        pwrite_full(log.get(), h, page, 0, log_path_);
        sync_data(log.get(), log_path_);
        if (::ftruncate(index.get(), static_cast<off_t>(index_file_size(geometry_))) != 0)
            throw Error(index_path_ + ": cannot size the index: " + errno_text(errno), errno);
        log_fd_ = std::move(log);
        index_fd_ = std::move(index);
        applied_end_ = page;
        log_end_ = page;
        header_slot_ = 1; // write_header() writes slot 0 with seq 1
        write_header();
        sync_directory(dir_);
    } else {
        unsigned char h[64];
        if (pread_full(log.get(), h, 64, 0, log_path_) != 64 || std::memcmp(h, log_magic, 8) != 0 ||
            load_le<uint32_t>(h + 60) != crc32c(h, 60))
            throw Error(log_path_ + ": not an overlay log (bad header)");
        if (load_le<uint32_t>(h + 8) != version)
            throw Error(log_path_ + ": overlay log version " + std::to_string(load_le<uint32_t>(h + 8)) +
                        " (this p2vfsd reads version " + std::to_string(version) + ")");
        const Geometry found{load_le<uint32_t>(h + 12), load_le<uint64_t>(h + 16)};
        if (!(found == geometry_))
            throw Error(what + ": made for a disk of " + std::to_string(found.disk_size) +
                        " bytes in chunks of " + std::to_string(found.chunk_size) + ", not " +
                        std::to_string(geometry_.disk_size) + " in " +
                        std::to_string(geometry_.chunk_size));
        std::memcpy(id_, h + 24, 16);

        // The newer valid header slot.
        bool found_slot = false;
        for (int i = 0; i < 2; ++i) {
            unsigned char s[slot_size];
            if (pread_full(index.get(), s, slot_size, slot_offset[i], index_path_) != slot_size)
                continue;
            if (std::memcmp(s, index_magic, 8) != 0 ||
                load_le<uint32_t>(s + 124) != crc32c(s, 124) ||
                std::memcmp(s + 24, id_, 16) != 0)
                continue;
            const uint64_t seq = load_le<uint64_t>(s + 40);
            if (found_slot && seq <= header_seq_)
                continue;
            found_slot = true;
            header_seq_ = seq;
            header_slot_ = i;
            applied_end_ = load_le<uint64_t>(s + 48);
            sequence_ = load_le<uint64_t>(s + 56);
        }
        if (!found_slot)
            throw Error(index_path_ + ": no valid index header (both copies damaged, or the "
                                      "index belongs to another log)");
        struct stat st {};
        if (::fstat(index.get(), &st) != 0 ||
            static_cast<uint64_t>(st.st_size) != index_file_size(geometry_))
            throw Error(index_path_ + ": index of " + std::to_string(st.st_size) +
                        " bytes, expected " + std::to_string(index_file_size(geometry_)));
        log_fd_ = std::move(log);
        index_fd_ = std::move(index);
    }

    map_ = std::make_unique<Mapping>();
    try {
        const auto m = options_.writable ? bip::read_write : bip::read_only;
        map_->file = bip::file_mapping(index_path_.c_str(), m);
        map_->region = bip::mapped_region(map_->file, m, page, index_file_size(geometry_) - page);
    } catch (const bip::interprocess_exception& e) {
        throw Error(index_path_ + ": cannot map the index: " + e.what());
    }
    entries_ = static_cast<unsigned char*>(map_->region.get_address());
    build_bitmaps();
    if (!create)
        recover();
}


Segment::~Segment() {
    if (options_.writable && !failed_ && log_fd_) {
        try {
            sync();
        } catch (const std::exception& e) {
            spdlog::error("overlay segment {}: final sync failed: {}", dir_, e.what());
        }
    }
}

void Segment::write_header() {
    const int slot = 1 - header_slot_;
    unsigned char s[slot_size]{};
    encode_file_header(s, index_magic, geometry_, id_);
    store_le<uint64_t>(s + 40, header_seq_ + 1);
    store_le<uint64_t>(s + 48, applied_end_);
    store_le<uint64_t>(s + 56, sequence_.load());
    store_le<uint32_t>(s + 124, crc32c(s, 124));
    pwrite_full(index_fd_.get(), s, slot_size, slot_offset[slot], index_path_);
    sync_data(index_fd_.get(), index_path_);
    header_slot_ = slot;
    ++header_seq_;
}

Segment::Entry Segment::load_entry(uint64_t c, bool* damaged) const {
    const unsigned char* p = entries_ + c * entry_size;
    Entry e;
    if (all_zero(p, entry_size))
        return e;
    if (load_le<uint32_t>(p + 12) != entry_check(p, c)) {
        if (damaged)
            *damaged = true;
        return e;
    }
    e.where = load_le<uint64_t>(p);
    const uint32_t w = load_le<uint32_t>(p + 8);
    e.stored = w & 0xffffff;
    e.kind = static_cast<ChunkKind>(w >> 24);
    return e;
}

void Segment::store_entry(uint64_t c, const Entry& e) {
    unsigned char* p = entries_ + c * entry_size;
    unsigned char tmp[entry_size];
    store_le<uint64_t>(tmp, e.where);
    store_le<uint32_t>(tmp + 8, e.stored | static_cast<uint32_t>(e.kind) << 24);
    store_le<uint32_t>(tmp + 12, entry_check(tmp, c));
    std::memcpy(p, tmp, entry_size);
}

Segment::Entry Segment::lookup(uint64_t c, bool* damaged) const {
    std::lock_guard<std::mutex> lock(index_mutex_);
    if (auto it = pending_.find(c); it != pending_.end())
        return it->second;
    if (auto it = applying_.find(c); it != applying_.end())
        return it->second;
    if (damaged_.count(c)) {
        if (damaged)
            *damaged = true;
        return {};
    }
    return load_entry(c, damaged);
}

void Segment::assign(std::vector<std::atomic<uint64_t>>& bits, uint64_t c, bool value) {
    const uint64_t mask = uint64_t{1} << (c & 63);
    if (value)
        bits[c >> 6].fetch_or(mask, std::memory_order_relaxed);
    else
        bits[c >> 6].fetch_and(~mask, std::memory_order_relaxed);
}

void Segment::build_bitmaps() {
    // Only the parts of the index file that hold data: a sparse overlay has
    // a sparse index, and holes read as absent entries anyway.
    const uint64_t count = geometry_.chunk_count();
    const uint64_t file_end = index_file_size(geometry_);
    uint64_t pos = page;
    while (pos < file_end) {
        const off_t data = ::lseek(index_fd_.get(), static_cast<off_t>(pos), SEEK_DATA);
        if (data < 0)
            break; // ENXIO: no more data
        off_t hole = ::lseek(index_fd_.get(), data, SEEK_HOLE);
        if (hole < 0)
            hole = static_cast<off_t>(file_end);
        const uint64_t first = (static_cast<uint64_t>(data) - page) / entry_size;
        const uint64_t last = std::min<uint64_t>(
            count, (static_cast<uint64_t>(hole) - page + entry_size - 1) / entry_size);
        for (uint64_t c = first; c < last; ++c) {
            bool damaged = false;
            const Entry e = load_entry(c, &damaged);
            if (damaged) {
                damaged_[c] = true;
                assign(present_, c, true);
                continue;
            }
            if (e.kind == ChunkKind::Absent)
                continue;
            assign(present_, c, true);
            assign(zero_, c, e.kind == ChunkKind::Zero);
            ++stats_.chunks;
            stats_.zero_chunks += e.kind == ChunkKind::Zero;
            stats_.stored_bytes += e.stored;
        }
        pos = static_cast<uint64_t>(hole);
    }
}

void Segment::note_entry(uint64_t c, const Entry& e) {
    bool damaged = false;
    Entry old;
    if (auto it = pending_.find(c); it != pending_.end())
        old = it->second;
    else if (auto it2 = applying_.find(c); it2 != applying_.end())
        old = it2->second;
    else if (test(present_, c) && !damaged_.count(c))
        old = load_entry(c, &damaged); // (absent: no need to fault in its index page)
    damaged_.erase(c);
    if (old.kind != ChunkKind::Absent)
        dead_.push_back(old);
    make_pending(c, old, e);
}

void Segment::make_pending(uint64_t c, const Entry& old, const Entry& e) {
    if (old.kind != ChunkKind::Absent) {
        --stats_.chunks;
        stats_.zero_chunks -= old.kind == ChunkKind::Zero;
        stats_.stored_bytes -= old.stored;
    }
    pending_[c] = e;
    ++stats_.chunks;
    stats_.zero_chunks += e.kind == ChunkKind::Zero;
    stats_.stored_bytes += e.stored;
    assign(zero_, c, e.kind == ChunkKind::Zero);
    assign(present_, c, true);
}

void Segment::recover() {
    // Replay every record after applied_end (see the crash rules).
    const uint64_t count = geometry_.chunk_count();
    const uint64_t replay_start = applied_end_;
    uint64_t pos = replay_start;
    std::vector<unsigned char> payload;
    unsigned char h[record_header_size];
    std::string stop;
    uint64_t max_sequence = sequence_;
    std::vector<std::pair<uint64_t, Entry>> replayed; // in log order
    std::unordered_map<uint64_t, Entry> last;         // the newest record of each chunk
    while (true) {
        const size_t n = pread_full(log_fd_.get(), h, record_header_size, pos, log_path_);
        if (n == 0)
            break;
        RecordHeader r;
        if (n < record_header_size || !decode_record_header(h, id_, r)) {
            stop = "no valid record header";
            break;
        }
        if (r.kind == kind_pad) {
            pos += round_up(record_header_size + r.stored, page);
            continue;
        }
        if (r.chunk >= count || r.length != geometry_.chunk_length(r.chunk) ||
            r.stored > static_cast<uint32_t>(LZ4_compressBound(static_cast<int>(geometry_.chunk_size))) ||
            r.kind < 1 || r.kind > 3) {
            stop = "a record header that does not fit this overlay";
            break;
        }
        payload.resize(r.stored);
        if (pread_full(log_fd_.get(), payload.data(), r.stored, pos + record_header_size,
                       log_path_) != r.stored ||
            crc32c(payload.data(), r.stored) != r.payload_crc) {
            stop = "a torn record (payload checksum)";
            break;
        }
        const Entry e{pos, r.stored, static_cast<ChunkKind>(r.kind)};
        replayed.emplace_back(r.chunk, e);
        last[r.chunk] = e;
        max_sequence = std::max(max_sequence, r.sequence + 1);
        pos += round_up(record_header_size + r.stored, page);
    }
    {
        // The mapped array may already hold some of the replayed entries (a
        // sync stored them and died before its header): only records from
        // before replay_start, and replayed ones superseded in the log, are
        // dead. A replayed record is never dead just because the array
        // names it already.
        std::lock_guard<std::mutex> lock(index_mutex_);
        for (const auto& [c, e] : last) {
            Entry old;
            if (!damaged_.count(c))
                old = load_entry(c, nullptr);
            damaged_.erase(c);
            if (old.kind != ChunkKind::Absent && old.where < replay_start)
                dead_.push_back(old);
            make_pending(c, old, e);
        }
        for (const auto& [c, e] : replayed)
            if (last[c].where != e.where)
                dead_.push_back(e);
    }
    const uint64_t replayed_count = replayed.size();
    sequence_ = max_sequence;
    struct stat st {};
    ::fstat(log_fd_.get(), &st);
    const uint64_t log_size = static_cast<uint64_t>(st.st_size);
    if (pos < log_size) {
        spdlog::warn("overlay segment {}: {} at log offset {}: dropping the last {} of the log "
                     "(writes never confirmed by a sync)",
                     dir_, stop, hex(pos), human_size(log_size - pos));
        if (options_.writable && ::ftruncate(log_fd_.get(), static_cast<off_t>(pos)) != 0)
            throw Error(log_path_ + ": cannot cut the torn end of the log: " + errno_text(errno),
                        errno);
    }
    log_end_ = pos;
    if (replayed_count)
        spdlog::info("overlay segment {}: replayed {} record(s) written since the last sync", dir_,
                     replayed_count);
    if (!damaged_.empty())
        spdlog::error("overlay segment {}: {} index entr{} damaged; reads of {} fail (first: chunk "
                      "{})",
                      dir_, damaged_.size(), damaged_.size() == 1 ? "y is" : "ies are",
                      damaged_.size() == 1 ? "it" : "them", damaged_.begin()->first);
    if (options_.writable)
        sync_locked();
}

uint64_t Segment::scan(const std::vector<std::atomic<uint64_t>>& bits, uint64_t from, uint64_t end,
                       bool want) const {
    uint64_t c = from;
    while (c < end) {
        uint64_t w = bits[c >> 6].load(std::memory_order_relaxed);
        if (!want)
            w = ~w;
        w &= ~uint64_t{0} << (c & 63);
        if (w)
            return std::min(end, (c & ~uint64_t{63}) + static_cast<uint64_t>(__builtin_ctzll(w)));
        c = (c & ~uint64_t{63}) + 64;
    }
    return end;
}

uint64_t Segment::next_present(uint64_t from, uint64_t end) const {
    return scan(present_, from, end, true);
}

uint64_t Segment::next_absent(uint64_t from, uint64_t end) const {
    return scan(present_, from, end, false);
}

void Segment::read_record(uint64_t c, const Entry& e, unsigned char* out, std::string* why) {
    const uint32_t length = geometry_.chunk_length(c);
    if (e.kind == ChunkKind::Zero) {
        std::memset(out, 0, length);
        return;
    }
    if (e.kind == ChunkKind::Raw && e.stored == length) {
        // The payload straight into the caller's buffer: no copy.
        unsigned char h[record_header_size];
        struct iovec iov[2] = {{h, sizeof h}, {out, length}};
        const ssize_t n = ::preadv(log_fd_.get(), iov, 2, static_cast<off_t>(e.where));
        if (n < 0) {
            const int err = errno;
            throw Error(log_path_ + ": read of chunk " + std::to_string(c) + " at " +
                            hex(e.where) + " failed: " + errno_text(err),
                        err);
        }
        RecordHeader r;
        if (static_cast<size_t>(n) != sizeof h + length)
            *why = "the log ends inside the record";
        else if (!decode_record_header(h, id_, r))
            *why = "bad record header";
        else if (r.chunk != c || r.stored != e.stored || r.kind != static_cast<uint8_t>(e.kind) ||
                 r.length != length)
            *why = "the record belongs to chunk " + std::to_string(r.chunk);
        else if (crc32c(out, length) != r.payload_crc)
            *why = "payload checksum mismatch";
        return;
    }
    thread_local std::vector<unsigned char> buf;
    buf.resize(record_header_size + e.stored);
    const size_t n = pread_full(log_fd_.get(), buf.data(), buf.size(), e.where, log_path_);
    RecordHeader r;
    const unsigned char* payload = buf.data() + record_header_size;
    if (n != buf.size())
        *why = "the log ends inside the record";
    else if (!decode_record_header(buf.data(), id_, r))
        *why = "bad record header";
    else if (r.chunk != c || r.stored != e.stored || r.kind != static_cast<uint8_t>(e.kind) ||
             r.length != length)
        *why = "the record belongs to chunk " + std::to_string(r.chunk);
    else if (crc32c(payload, e.stored) != r.payload_crc)
        *why = "payload checksum mismatch";
    else if (e.kind == ChunkKind::Raw && e.stored == length)
        std::memcpy(out, payload, length);
    else if (e.kind != ChunkKind::Lz4 ||
             LZ4_decompress_safe(reinterpret_cast<const char*>(payload),
                                 reinterpret_cast<char*>(out), static_cast<int>(e.stored),
                                 static_cast<int>(length)) != static_cast<int>(length))
        *why = "the payload does not decompress to the chunk's length";
}

void Segment::read_chunk(uint64_t c, unsigned char* out) {
    // A record superseded and punched out between the look-up and the read
    // fails its checks; the newer entry is then read instead. Only a failure
    // on the same entry twice is an error.
    Entry e = lookup(c);
    for (int attempt = 0;; ++attempt) {
        bool damaged = false;
        if (attempt)
            e = lookup(c, &damaged);
        if (damaged)
            throw Error("overlay segment " + dir_ + ": the index entry of chunk " +
                            std::to_string(c) + " is damaged",
                        EIO);
        if (e.kind == ChunkKind::Absent)
            throw Error("overlay segment " + dir_ + ": chunk " + std::to_string(c) +
                            " is not in the segment",
                        EIO);
        std::string why;
        read_record(c, e, out, &why);
        if (why.empty())
            return;
        const Entry again = lookup(c);
        if (attempt > 0 && again.where == e.where)
            throw Error("overlay segment " + dir_ + ": chunk " + std::to_string(c) +
                            " at log offset " + hex(e.where) + ": " + why,
                        EIO);
        e = again;
    }
}

void Segment::write_chunk(uint64_t c, const unsigned char* data) {
    if (!options_.writable)
        throw UnsupportedError("overlay segment " + dir_ + " is read-only (a checkpoint)");
    if (failed_)
        throw_failed();
    const uint32_t length = geometry_.chunk_length(c);
    thread_local std::vector<unsigned char> buf;
    const size_t bound = record_header_size + static_cast<size_t>(LZ4_compressBound(static_cast<int>(length)));
    if (buf.size() < bound)
        buf.resize(bound);
    unsigned char* payload = buf.data() + record_header_size;
    RecordHeader r;
    r.chunk = c;
    r.length = length;
    if (all_zero(data, length)) {
        r.kind = static_cast<uint8_t>(ChunkKind::Zero);
    } else {
        int n = 0;
        if (options_.compress)
            n = LZ4_compress_default(reinterpret_cast<const char*>(data),
                                     reinterpret_cast<char*>(payload), static_cast<int>(length),
                                     LZ4_compressBound(static_cast<int>(length)));
        if (n > 0 && static_cast<uint32_t>(n) <= length - length / 16) {
            r.kind = static_cast<uint8_t>(ChunkKind::Lz4);
            r.stored = static_cast<uint32_t>(n);
        } else {
            r.kind = static_cast<uint8_t>(ChunkKind::Raw);
            r.stored = length;
            std::memcpy(payload, data, length);
        }
    }
    r.payload_crc = crc32c(payload, r.stored);
    const uint64_t record_size = round_up(record_header_size + r.stored, page);
    if (buf.size() < record_size)
        buf.resize(record_size);
    std::memset(buf.data() + record_header_size + r.stored, 0,
                record_size - record_header_size - r.stored);

    size_t pending = 0;
    {
        std::shared_lock<std::shared_mutex> writers(write_lock_);
        r.sequence = sequence_.fetch_add(1);
        encode_record_header(buf.data(), id_, r);
        const uint64_t where = log_end_.fetch_add(record_size);
        try {
            pwrite_full(log_fd_.get(), buf.data(), record_size, where, log_path_);
        } catch (const Error& e) {
            // Cover the place with a padding record, so replay steps over it.
            RecordHeader pad;
            pad.kind = kind_pad;
            pad.stored = static_cast<uint32_t>(record_size - record_header_size);
            unsigned char ph[record_header_size];
            encode_record_header(ph, id_, pad);
            try {
                pwrite_full(log_fd_.get(), ph, sizeof ph, where, log_path_);
            } catch (const Error&) {
                fail(std::string("a log write failed and could not be covered: ") + e.what());
            }
            throw;
        }
        std::lock_guard<std::mutex> lock(index_mutex_);
        note_entry(c, {where, r.stored, static_cast<ChunkKind>(r.kind)});
        pending = pending_.size();
    }
    if (pending >= options_.auto_sync_chunks)
        sync();
}

void Segment::fail(const std::string& why) {
    std::lock_guard<std::mutex> lock(index_mutex_);
    if (!failed_.exchange(true)) {
        failure_ = why;
        spdlog::error("overlay segment {}: {}; it takes no more writes until reopened", dir_, why);
    }
}

void Segment::throw_failed() const {
    std::lock_guard<std::mutex> lock(index_mutex_);
    throw Error("overlay segment " + dir_ + " stopped taking writes after an error: " + failure_,
                EIO);
}

void Segment::sync() {
    if (!options_.writable)
        return;
    std::lock_guard<std::mutex> serial(sync_mutex_);
    if (failed_)
        throw_failed();
    sync_locked();
}

void Segment::sync_locked() {
    std::vector<Entry> dead;
    uint64_t end;
    {
        std::unique_lock<std::shared_mutex> writers(write_lock_);
        std::lock_guard<std::mutex> lock(index_mutex_);
        applying_.swap(pending_);
        dead.swap(dead_);
        end = log_end_.load();
    }
    if (applying_.empty() && dead.empty() && end == applied_end_)
        return;
    try {
        sync_data(log_fd_.get(), log_path_);
        {
            std::lock_guard<std::mutex> lock(index_mutex_);
            for (const auto& [c, e] : applying_)
                store_entry(c, e);
        }
        if (!map_->region.flush(0, map_->region.get_size(), false))
            throw Error(index_path_ + ": msync of the index failed: " + errno_text(errno), EIO);
        applied_end_ = end;
        write_header();
    } catch (const Error& e) {
        fail(std::string("sync failed: ") + e.what());
        throw;
    }
    {
        std::lock_guard<std::mutex> lock(index_mutex_);
        applying_.clear();
    }
    for (const Entry& d : dead) {
        if (::fallocate(log_fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        static_cast<off_t>(d.where),
                        static_cast<off_t>(round_up(record_header_size + d.stored, page))) != 0) {
            spdlog::debug("overlay segment {}: cannot punch out a superseded record: {}", dir_,
                          errno_text(errno));
            break;
        }
    }
}

SegmentStats Segment::stats() const {
    std::lock_guard<std::mutex> lock(index_mutex_);
    return stats_;
}

uint64_t Segment::disk_usage() const {
    uint64_t total = 0;
    for (int fd : {log_fd_.get(), index_fd_.get()}) {
        struct stat st {};
        if (::fstat(fd, &st) == 0)
            total += static_cast<uint64_t>(st.st_blocks) * 512;
    }
    return total;
}

} // namespace p2vfs::overlay
