// A layer that passes every call to the layer it wraps.
//
// Like an nbdkit filter: a subclass overrides only what it changes and gets
// the layer below for everything else.
#pragma once

#include "block/block_device.h"

#include <utility>

namespace p2vfs {

class FilterDevice : public BlockDevice {
public:
    explicit FilterDevice(DevicePtr next) : next_(std::move(next)) {}

    std::string name() const override { return next_->name(); }
    std::string identity() const override { return next_->identity(); }
    uint64_t size() const override { return next_->size(); }
    void read(void* buf, size_t length, uint64_t offset) override {
        next_->read(buf, length, offset);
    }
    bool writable() const override { return next_->writable(); }
    void write(const void* buf, size_t length, uint64_t offset) override {
        next_->write(buf, length, offset);
    }
    void flush() override { next_->flush(); }
    std::vector<Extent> extents(uint64_t offset, uint64_t length) override {
        return next_->extents(offset, length);
    }
    std::optional<FdSpan> fd_span(uint64_t offset, size_t length) override {
        return next_->fd_span(offset, length);
    }

    const DevicePtr& next() const { return next_; }

protected:
    DevicePtr next_;
};

} // namespace p2vfs
