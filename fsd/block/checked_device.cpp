#include "block/checked_device.h"

#include "common/error.h"

#include <spdlog/spdlog.h>

namespace p2vfs {

CheckedDevice::CheckedDevice(DevicePtr next)
    : FilterDevice(std::move(next)), size_(next_->size()) {}

void CheckedDevice::check_range(const char* op, uint64_t length, uint64_t offset) const {
    if (offset > size_ || length > size_ - offset)
        throw Error(name() + ": " + op + " of " + std::to_string(length) + " bytes at " +
                        hex(offset) + " is beyond the end (" + std::to_string(size_) + " bytes)",
                    EINVAL);
}

void CheckedDevice::read(void* buf, size_t length, uint64_t offset) {
    check_range("read", length, offset);
    SPDLOG_TRACE("{}: read {} bytes at {:#x}", name(), length, offset);
    if (length != 0)
        next_->read(buf, length, offset);
}

void CheckedDevice::write(const void* buf, size_t length, uint64_t offset) {
    check_range("write", length, offset);
    if (!next_->writable())
        throw UnsupportedError(name() + ": write at " + hex(offset) + " refused: read-only");
    SPDLOG_TRACE("{}: write {} bytes at {:#x}", name(), length, offset);
    if (length != 0)
        next_->write(buf, length, offset);
}

std::vector<Extent> CheckedDevice::extents(uint64_t offset, uint64_t length) {
    check_range("extents", length, offset);
    if (length == 0)
        return {};
    std::vector<Extent> raw = next_->extents(offset, length);
    // A layer that returns gaps, overlaps or a short map would make views
    // serve wrong bytes; refuse it here rather than downstream.
    std::vector<Extent> out;
    out.reserve(raw.size());
    uint64_t expect = offset;
    for (const Extent& e : raw) {
        if (e.offset != expect || e.length == 0 || e.length > offset + length - expect)
            throw Error(name() + ": inconsistent extent map at " + hex(e.offset) +
                        " (expected an extent at " + hex(expect) + ")");
        append_extent(out, e);
        expect += e.length;
    }
    if (expect != offset + length)
        throw Error(name() + ": extent map ends at " + hex(expect) + ", short of " +
                    hex(offset + length));
    return out;
}

std::optional<FdSpan> CheckedDevice::fd_span(uint64_t offset, size_t length) {
    check_range("fd_span", length, offset);
    return next_->fd_span(offset, length);
}

DevicePtr checked(DevicePtr dev) {
    if (dynamic_cast<CheckedDevice*>(dev.get()))
        return dev;
    return std::make_shared<CheckedDevice>(std::move(dev));
}

} // namespace p2vfs
