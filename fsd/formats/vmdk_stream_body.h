// The body of a stream-optimized VMDK, compressed once into a cache file.
//
// VMware "Virtual Disk Format 5.0", "Stream-Optimized Compressed Sparse
// Extents". The body is everything between the header area and the grain
// directory: for each run of 512 grains (one grain table's worth) that holds
// any data, its grains in disk order — grain marker, zlib stream, zeros to
// the next sector — then a grain-table marker and the grain table. Grain
// tables of runs without data are left out (their directory entry is 0,
// "no grain here"), as are grains that read as zeros.
//
// Where a grain lands depends on how well every grain before it compressed,
// so nothing about the body is known before all of it has been compressed.
// It goes to a file, not to memory (a 500 GiB disk does not compress into
// RAM): an anonymous file in a cache directory, gone when the view is. What
// stays in memory is the grain directory, 4 bytes per 32 MiB of disk.
//
// Deterministic: each grain is compressed on its own by zlib at a fixed
// level, so the body is the same for the same disk whatever the number of
// threads or the order they finish in (for a given zlib build).
#pragma once

#include "block/block_device.h"
#include "formats/allocation_map.h"
#include "formats/prepared_view.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace p2vfs::vmdk {

// An anonymous, read-write file in a directory, removed when closed.
class CacheFile {
public:
    // Creates `dir` (mode 0700, parents too) when missing. Throws Error naming
    // the directory when no file can be made there.
    explicit CacheFile(const std::string& dir);
    ~CacheFile();
    CacheFile(const CacheFile&) = delete;
    CacheFile& operator=(const CacheFile&) = delete;

    int fd() const { return fd_; }
    const std::string& dir() const { return dir_; }
    void write_at(const void* buf, size_t length, uint64_t offset);
    void read_at(void* buf, size_t length, uint64_t offset) const;

private:
    std::string dir_;
    int fd_ = -1;
};

struct StreamBodySettings {
    std::string cache_dir;
    unsigned threads = 1; // grains compressed in parallel; the bytes do not depend on it
    int zlib_level = 6;
};

struct StreamBody {
    std::unique_ptr<CacheFile> cache; // the body, from offset 0
    uint64_t length = 0;              // bytes, a whole number of sectors
    // Per grain table: the sector (in the final file) of the table, 0 for none.
    std::vector<uint32_t> directory;
};

// Compresses the grains `map` marks as holding data (grain-sized blocks of
// `disk`; the disk is `capacity_sectors` long, the last grain may be short)
// into a cache file, for a body that starts at sector `start_sector` of the
// final file. `label` names the view in messages. Throws FormatLimitError
// when an offset would not fit the format's 32-bit sector numbers (files of
// 2 TiB and more), Error for failed reads and writes.
StreamBody write_stream_body(BlockDevice& disk, const AllocationMap& map, uint64_t capacity_sectors,
                             uint64_t start_sector, const StreamBodySettings& settings,
                             const PreparedView::Progress& progress, const std::string& label);

} // namespace p2vfs::vmdk
