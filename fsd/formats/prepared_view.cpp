#include "formats/prepared_view.h"

#include "block/checked_device.h"
#include "block/filter_device.h"

namespace p2vfs {
namespace {

// The device that is the PreparedView, looking through filter layers.
DevicePtr prepared_device_of(const DevicePtr& dev) {
    for (DevicePtr d = dev; d;) {
        if (dynamic_cast<PreparedView*>(d.get()))
            return d;
        auto* filter = dynamic_cast<FilterDevice*>(d.get());
        d = filter ? filter->next() : nullptr;
    }
    return nullptr;
}

} // namespace

PreparedView* prepared_view_of(BlockDevice& dev) {
    if (auto* p = dynamic_cast<PreparedView*>(&dev))
        return p;
    if (auto* filter = dynamic_cast<FilterDevice*>(&dev))
        return filter->next() ? prepared_view_of(*filter->next()) : nullptr;
    return nullptr;
}

DevicePtr prepared(const DevicePtr& dev, const PreparedView::Progress& progress) {
    const DevicePtr view = prepared_device_of(dev);
    if (!view)
        return dev;
    dynamic_cast<PreparedView&>(*view).prepare(progress);
    return std::make_shared<CheckedDevice>(view);
}

} // namespace p2vfs
