#include "formats/prepared_view.h"

#include "block/checked_device.h"
#include "block/filter_device.h"
#include "common/error.h"

#include <chrono>
#include <spdlog/spdlog.h>

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

namespace {

// At the start, every 10% or 10 seconds, and at the end.
class ProgressLog {
public:
    explicit ProgressLog(std::string what) : what_(std::move(what)) {}

    void operator()(uint64_t done, uint64_t total) {
        const auto now = std::chrono::steady_clock::now();
        if (done == 0) {
            start_ = last_ = now;
            spdlog::info("{}: preparing ({} of data to process)", what_, human_size(total));
            return;
        }
        const unsigned pct = total ? static_cast<unsigned>(done * 100 / total) : 100;
        if (done < total && pct < next_pct_ && now - last_ < std::chrono::seconds(10))
            return;
        last_ = now;
        next_pct_ = pct / 10 * 10 + 10;
        const double secs = std::chrono::duration<double>(now - start_).count();
        spdlog::info("{}: {}% ({} of {}) after {:.1f} s", what_, pct, human_size(done),
                     human_size(total), secs);
    }

private:
    std::string what_;
    std::chrono::steady_clock::time_point start_{}, last_{};
    unsigned next_pct_ = 10;
};

} // namespace

PreparedView::Progress logged_progress(std::string what) {
    return ProgressLog(std::move(what));
}

} // namespace p2vfs
