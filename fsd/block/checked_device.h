// The one place where requests are range-checked, results validated and the
// data path traced, so that no source or view repeats it (cf. nbdkit's
// server/backend.c). Every device a front end serves is wrapped in one.
#pragma once

#include "block/filter_device.h"

namespace p2vfs {

class CheckedDevice : public FilterDevice {
public:
    explicit CheckedDevice(DevicePtr next);

    void read(void* buf, size_t length, uint64_t offset) override;
    void write(const void* buf, size_t length, uint64_t offset) override;
    std::vector<Extent> extents(uint64_t offset, uint64_t length) override;
    std::optional<FdSpan> fd_span(uint64_t offset, size_t length) override;

private:
    void check_range(const char* op, uint64_t length, uint64_t offset) const;
    uint64_t size_;
};

// Wraps `dev` in a CheckedDevice unless it already is one.
DevicePtr checked(DevicePtr dev);

} // namespace p2vfs
