#include "block/grow_device.h"

#include "common/error.h"

#include <algorithm>
#include <cstring>

namespace p2vfs {

GrowDevice::GrowDevice(DevicePtr next, uint64_t size)
    : FilterDevice(std::move(next)), inner_size_(next_->size()), size_(size) {
    if (size_ < inner_size_)
        throw InvalidArgument(name() + ": cannot grow to " + std::to_string(size_) +
                              " bytes, smaller than its " + std::to_string(inner_size_));
}

std::string GrowDevice::identity() const {
    return next_->identity() + "|grow=" + std::to_string(size_);
}

void GrowDevice::read(void* buf, size_t length, uint64_t offset) {
    auto* out = static_cast<unsigned char*>(buf);
    if (offset < inner_size_) {
        const size_t inner = static_cast<size_t>(std::min<uint64_t>(length, inner_size_ - offset));
        next_->read(out, inner, offset);
        out += inner;
        length -= inner;
    }
    std::memset(out, 0, length);
}

std::vector<Extent> GrowDevice::extents(uint64_t offset, uint64_t length) {
    std::vector<Extent> out;
    const uint64_t end = offset + length;
    if (offset < inner_size_)
        out = next_->extents(offset, std::min(end, inner_size_) - offset);
    const uint64_t tail = std::max(offset, inner_size_);
    if (end > tail)
        append_extent(out, {tail, end - tail, ExtentType::Hole});
    return out;
}

std::optional<FdSpan> GrowDevice::fd_span(uint64_t offset, size_t length) {
    if (offset + length > inner_size_)
        return std::nullopt;
    return next_->fd_span(offset, length);
}

DevicePtr grown(DevicePtr dev, uint64_t size) {
    if (dev->size() == size)
        return dev;
    return std::make_shared<GrowDevice>(std::move(dev), size);
}

} // namespace p2vfs
