#include "formats/vmdk_stream_body.h"

#include "common/endian.h"
#include "common/error.h"
#include "formats/format.h"
#include "formats/vmdk_stream_spec.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <future>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

namespace p2vfs::vmdk {
namespace {

constexpr uint64_t grain_sectors = default_grain_sectors;
constexpr uint64_t grain_bytes = grain_sectors * sector_size;
constexpr uint64_t gt_bytes = uint64_t{gtes_per_gt} * 4;
// Grains read and compressed as one unit of work: 2 MiB.
constexpr uint64_t batch_grains = 32;
// Cache writes are gathered up to this size.
constexpr size_t write_chunk = 8u << 20;

void make_dirs(const std::string& dir) {
    for (size_t at = dir.find('/', 1);; at = dir.find('/', at + 1)) {
        const std::string part = dir.substr(0, at);
        if (!part.empty() && ::mkdir(part.c_str(), 0700) != 0 && errno != EEXIST)
            throw Error("cannot create cache directory " + part + ": " + errno_text(errno), errno);
        if (at == std::string::npos)
            break;
    }
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        throw Error("cache directory " + dir + " is not a directory", ENOTDIR);
}

// Consecutive grains of one run of the allocation map, read in one go.
struct GrainBatch {
    uint64_t first_grain;
    uint64_t count;
    std::vector<unsigned char> data;
};

// The compressed records of a batch, ready to append to the body.
struct CompressedBatch {
    uint64_t grains_read; // for progress, zero grains included
    std::vector<unsigned char> records;
    struct Record {
        uint64_t grain;
        size_t offset; // in `records`
    };
    std::vector<Record> stored;
};

bool all_zero(const unsigned char* p, size_t n) {
    static const unsigned char zeros[4096] = {};
    for (; n >= sizeof zeros; p += sizeof zeros, n -= sizeof zeros)
        if (std::memcmp(p, zeros, sizeof zeros) != 0)
            return false;
    return std::memcmp(p, zeros, n) == 0;
}

CompressedBatch compress_batch(const GrainBatch& batch, uint64_t capacity_bytes, int level,
                               const std::string& label) {
    CompressedBatch out{batch.count, {}, {}};
    for (uint64_t i = 0; i < batch.count; ++i) {
        const uint64_t grain = batch.first_grain + i;
        // The last grain of a disk that is not a whole number of grains
        // holds only the sectors up to the capacity, as VMware writes it.
        const size_t length =
            static_cast<size_t>(std::min(grain_bytes, capacity_bytes - grain * grain_bytes));
        const unsigned char* data = batch.data.data() + i * grain_bytes;
        if (all_zero(data, length))
            continue;
        const size_t at = out.records.size();
        uLongf packed = compressBound(static_cast<uLong>(length));
        out.records.resize(at + sizeof(GrainMarker) + packed);
        const int rc = compress2(out.records.data() + at + sizeof(GrainMarker), &packed, data,
                                 static_cast<uLong>(length), level);
        if (rc != Z_OK)
            throw Error(label + ": zlib compress2 failed (" + std::to_string(rc) + ") on grain " +
                        std::to_string(grain));
        GrainMarker m{};
        m.lba.set(grain * grain_sectors);
        m.size.set(static_cast<uint32_t>(packed));
        std::memcpy(out.records.data() + at, &m, sizeof m);
        out.records.resize(at + round_up(sizeof(GrainMarker) + packed, sector_size), 0);
        out.stored.push_back({grain, at});
    }
    return out;
}

// Appends records, grain tables and their markers to the cache file, and
// keeps the grain table being filled and the directory.
class BodyWriter {
public:
    BodyWriter(CacheFile& cache, uint64_t start_sector, uint64_t tables, const std::string& label)
        : cache_(cache), start_sector_(start_sector), label_(label), directory_(tables, 0),
          table_(gtes_per_gt, 0) {}

    void add(const CompressedBatch& batch) {
        for (size_t r = 0; r < batch.stored.size(); ++r) {
            const auto& rec = batch.stored[r];
            const uint64_t table = rec.grain / gtes_per_gt;
            if (table != table_index_)
                end_table();
            table_index_ = table;
            table_used_ = true;
            table_[rec.grain % gtes_per_gt] = sector_here();
            const size_t end =
                r + 1 < batch.stored.size() ? batch.stored[r + 1].offset : batch.records.size();
            append(batch.records.data() + rec.offset, end - rec.offset);
        }
    }

    // Ends the body: the last grain table, and everything flushed to the file.
    uint64_t finish() {
        end_table();
        flush();
        return length_;
    }

    std::vector<uint32_t> take_directory() { return std::move(directory_); }

private:
    // The sector, in the final file, where the next byte appended lands.
    uint32_t sector_here() const {
        const uint64_t sector = start_sector_ + length_ / sector_size;
        if (sector > 0xffffffffULL)
            throw FormatLimitError(label_ + ": the compressed disk reaches beyond " +
                                   human_size(0x100000000ULL * sector_size) +
                                   ", past the format's 32-bit sector offsets");
        return static_cast<uint32_t>(sector);
    }

    void end_table() {
        if (!table_used_)
            return;
        MetadataMarker m{};
        m.num_sectors.set(gt_bytes / sector_size);
        m.type.set(marker_grain_table);
        append(&m, sizeof m);
        directory_[table_index_] = sector_here();
        unsigned char bytes[gt_bytes];
        for (uint32_t i = 0; i < gtes_per_gt; ++i)
            store_le<uint32_t>(bytes + 4 * i, table_[i]);
        append(bytes, sizeof bytes);
        std::fill(table_.begin(), table_.end(), 0);
        table_used_ = false;
    }

    void append(const void* p, size_t n) {
        const auto* b = static_cast<const unsigned char*>(p);
        pending_.insert(pending_.end(), b, b + n);
        length_ += n;
        if (pending_.size() >= write_chunk)
            flush();
    }

    void flush() {
        cache_.write_at(pending_.data(), pending_.size(), length_ - pending_.size());
        pending_.clear();
    }

    CacheFile& cache_;
    uint64_t start_sector_;
    const std::string& label_;
    std::vector<uint32_t> directory_;
    std::vector<uint32_t> table_;
    uint64_t table_index_ = 0;
    bool table_used_ = false;
    uint64_t length_ = 0;
    std::vector<unsigned char> pending_;
};

} // namespace

CacheFile::CacheFile(const std::string& dir) : dir_(dir) {
    make_dirs(dir_);
    fd_ = ::open(dir_.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd_ < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
        // No O_TMPFILE on this file system: a named file, unlinked at once.
        std::string path = dir_ + "/p2vfs-vmdk-stream-XXXXXX";
        fd_ = ::mkostemp(path.data(), O_CLOEXEC);
        if (fd_ >= 0)
            ::unlink(path.c_str());
    }
    if (fd_ < 0)
        throw Error("cannot create a cache file in " + dir_ + ": " + errno_text(errno), errno);
}

CacheFile::~CacheFile() {
    if (fd_ >= 0)
        ::close(fd_);
}

void CacheFile::write_at(const void* buf, size_t length, uint64_t offset) {
    const auto* p = static_cast<const unsigned char*>(buf);
    while (length > 0) {
        const ssize_t n = ::pwrite(fd_, p, length, static_cast<off_t>(offset));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            throw Error("cache file in " + dir_ + ": write at " + hex(offset) +
                            " failed: " + errno_text(n < 0 ? errno : ENOSPC),
                        n < 0 ? errno : ENOSPC);
        p += n;
        offset += static_cast<uint64_t>(n);
        length -= static_cast<size_t>(n);
    }
}

void CacheFile::read_at(void* buf, size_t length, uint64_t offset) const {
    auto* p = static_cast<unsigned char*>(buf);
    while (length > 0) {
        const ssize_t n = ::pread(fd_, p, length, static_cast<off_t>(offset));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            throw Error("cache file in " + dir_ + ": read at " + hex(offset) +
                        (n < 0 ? " failed: " + errno_text(errno) : " hit its end"));
        p += n;
        offset += static_cast<uint64_t>(n);
        length -= static_cast<size_t>(n);
    }
}

StreamBody write_stream_body(BlockDevice& disk, const AllocationMap& map, uint64_t capacity_sectors,
                             uint64_t start_sector, const StreamBodySettings& settings,
                             const PreparedView::Progress& progress, const std::string& label) {
    const uint64_t capacity_bytes = capacity_sectors * sector_size;
    const uint64_t grains = div_round_up(capacity_sectors, grain_sectors);
    const uint64_t tables = div_round_up(grains, gtes_per_gt);
    const uint64_t total = map.allocated_count() * grain_bytes;
    const unsigned threads = std::max(1u, settings.threads);

    StreamBody body;
    body.cache = std::make_unique<CacheFile>(settings.cache_dir);
    BodyWriter writer(*body.cache, start_sector, tables, label);
    uint64_t done = 0;
    if (progress)
        progress(0, total);
    auto take = [&](const CompressedBatch& batch) {
        writer.add(batch);
        done += batch.grains_read * grain_bytes;
        if (progress)
            progress(done, total);
    };

    // Reads happen here, in disk order; compression of up to `threads`
    // batches runs beside them; results are taken in the order read, so the
    // body does not depend on which thread finishes first.
    std::deque<std::future<CompressedBatch>> running;
    for (const AllocationMap::Run& run : map.runs()) {
        for (uint64_t i = 0; i < run.count; i += batch_grains) {
            GrainBatch batch{run.first_block + i, std::min(batch_grains, run.count - i), {}};
            const uint64_t offset = batch.first_grain * grain_bytes;
            batch.data.assign(batch.count * grain_bytes, 0);
            const uint64_t readable = std::min(batch.data.size(), disk.size() - offset);
            disk.read(batch.data.data(), readable, offset);
            if (threads == 1) {
                take(compress_batch(batch, capacity_bytes, settings.zlib_level, label));
                continue;
            }
            running.push_back(std::async(std::launch::async, [&, b = std::move(batch)] {
                return compress_batch(b, capacity_bytes, settings.zlib_level, label);
            }));
            if (running.size() >= threads) {
                take(running.front().get());
                running.pop_front();
            }
        }
    }
    for (; !running.empty(); running.pop_front())
        take(running.front().get());

    body.length = writer.finish();
    body.directory = writer.take_directory();
    return body;
}

} // namespace p2vfs::vmdk
