// The one interface every layer of the data path implements.
//
// Sources, caches, slices, overlays and format views are all BlockDevices:
// a size, reads, allocation (extents), and optionally writes. Layers wrap one
// another (see FilterDevice); the FUSE and NBD front ends serve any of them.
//
// Thread model: read(), extents() and fd_span() may be called from many
// threads at once; implementations are safe for concurrent readers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace p2vfs {

// What a range of a device holds. Hole and Zero both read as zeros; a Hole is
// not allocated at all (a view may leave it out of the file), a Zero range is
// allocated but known to hold zeros. Same meaning as NBD base:allocation.
enum class ExtentType : uint8_t { Data, Zero, Hole };

struct Extent {
    uint64_t offset;
    uint64_t length;
    ExtentType type;
    bool operator==(const Extent&) const = default;
};

// A range of a device that sits unchanged at `offset` in file descriptor `fd`,
// so a front end may splice it instead of copying it through memory.
struct FdSpan {
    int fd;
    uint64_t offset;
};

class BlockDevice {
public:
    virtual ~BlockDevice() = default;

    // Who this layer is, for messages: "/srv/images/pc1.img", "vhd view of 'pc1'".
    virtual std::string name() const = 0;

    // A stable description of the content this layer shows, from which views
    // derive their identifiers. Equal identities mean equal bytes.
    virtual std::string identity() const = 0;

    virtual uint64_t size() const = 0;

    // Fills buf[0..length) with the bytes at offset. Callers stay within size();
    // the checked wrapper enforces that. Throws Error naming offset and layer.
    virtual void read(void* buf, size_t length, uint64_t offset) = 0;

    virtual bool writable() const { return false; }
    virtual void write(const void* buf, size_t length, uint64_t offset);
    virtual void flush() {}

    // Allocation of [offset, offset+length), in order, covering the range
    // exactly, adjacent extents of one type merged.
    virtual std::vector<Extent> extents(uint64_t offset, uint64_t length) = 0;

    // Where [offset, offset+length) can be read directly from a descriptor,
    // if it can. Default: nowhere.
    virtual std::optional<FdSpan> fd_span(uint64_t offset, size_t length);
};

using DevicePtr = std::shared_ptr<BlockDevice>;

// Appends an extent, merging it into the previous one when they touch and
// have the same type. Every layer that builds extent lists uses this.
void append_extent(std::vector<Extent>& out, Extent e);

} // namespace p2vfs
