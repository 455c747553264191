#include "block/block_device.h"

#include "common/error.h"

namespace p2vfs {

void BlockDevice::write(const void*, size_t, uint64_t offset) {
    throw UnsupportedError(name() + ": write at " + hex(offset) + " refused: read-only");
}

std::optional<FdSpan> BlockDevice::fd_span(uint64_t, size_t) {
    return std::nullopt;
}

void append_extent(std::vector<Extent>& out, Extent e) {
    if (e.length == 0)
        return;
    if (!out.empty()) {
        Extent& last = out.back();
        if (last.type == e.type && last.offset + last.length == e.offset) {
            last.length += e.length;
            return;
        }
    }
    out.push_back(e);
}

} // namespace p2vfs
