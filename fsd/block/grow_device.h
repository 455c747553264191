// A larger virtual size: the layer below, followed by zeros (a hole) up to
// `size`. Formats use it to round a disk up to whole sectors, blocks or MiB.
#pragma once

#include "block/filter_device.h"

namespace p2vfs {

class GrowDevice : public FilterDevice {
public:
    GrowDevice(DevicePtr next, uint64_t size);

    std::string identity() const override;
    uint64_t size() const override { return size_; }
    void read(void* buf, size_t length, uint64_t offset) override;
    std::vector<Extent> extents(uint64_t offset, uint64_t length) override;
    std::optional<FdSpan> fd_span(uint64_t offset, size_t length) override;

private:
    uint64_t inner_size_;
    uint64_t size_;
};

// `dev` grown to `size`, or `dev` itself when it already has that size.
DevicePtr grown(DevicePtr dev, uint64_t size);

} // namespace p2vfs
