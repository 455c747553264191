// A local image file or block device, opened read-only.
//
// The source of a migration is a production disk: it is never opened for
// writing, whatever the caller asks. Allocation of files comes from FIEMAP
// (preallocated, unwritten extents are Zero), or SEEK_DATA/SEEK_HOLE where
// the file system has no FIEMAP; so sparse images give sparse views. A block
// device reports all of itself as data. O_DIRECT is optional, for sources whose page cache would
// only be polluted by one pass of reading.
#pragma once

#include "block/block_device.h"

#include <atomic>

namespace p2vfs {

struct LocalSourceOptions {
    bool direct = false; // O_DIRECT: bypass the page cache
};

class LocalSource : public BlockDevice {
public:
    // Throws Error with a one-line message naming `path` when it cannot be
    // used: missing, a directory, empty, unreadable, not a file or device.
    LocalSource(const std::string& path, LocalSourceOptions opts = {});
    ~LocalSource() override;
    LocalSource(const LocalSource&) = delete;
    LocalSource& operator=(const LocalSource&) = delete;

    std::string name() const override { return path_; }
    std::string identity() const override;
    uint64_t size() const override { return size_; }
    void read(void* buf, size_t length, uint64_t offset) override;
    std::vector<Extent> extents(uint64_t offset, uint64_t length) override;
    std::optional<FdSpan> fd_span(uint64_t offset, size_t length) override;

    bool is_block_device() const { return block_device_; }

private:
    void read_direct(void* buf, size_t length, uint64_t offset);
    // False when the file system has no FIEMAP (then SEEK_DATA is used).
    bool extents_fiemap(uint64_t offset, uint64_t length, std::vector<Extent>& out);
    void extents_seek(uint64_t offset, uint64_t length, std::vector<Extent>& out);

    std::string path_;
    std::string canonical_;
    int fd_ = -1;
    uint64_t size_ = 0;
    bool block_device_ = false;
    bool direct_ = false;
    uint32_t direct_align_ = 4096;
    std::atomic<bool> fiemap_works_{true};
};

} // namespace p2vfs
