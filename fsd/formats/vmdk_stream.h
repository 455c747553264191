// VMDK streamOptimized view: compressed grains with markers, the format of
// the disks in OVF/OVA packages (ESXi's "Deploy OVF template", ovftool).
//
// Its layout depends on how the grains compress, so it is a PreparedView
// (prepared_view.h): made cheaply, then prepared by one compression pass into
// a cache file (vmdk_stream_body.h) the first time it is opened.
#pragma once

#include "formats/format.h"
#include "formats/layout_view.h"
#include "formats/prepared_view.h"
#include "formats/vmdk_stream_body.h"

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

namespace p2vfs {

class VmdkStreamView : public LayoutView, public PreparedView {
public:
    // Settings from the view's options: cachedir (empty: $TMPDIR/p2vfs-cache,
    // else /var/tmp/p2vfs-cache), one compression thread per core up to 8.
    explicit VmdkStreamView(const ViewRequest& req);
    VmdkStreamView(const ViewRequest& req, vmdk::StreamBodySettings settings);

    uint64_t size() const override;
    void read(void* buf, size_t length, uint64_t offset) override;
    std::vector<Extent> extents(uint64_t offset, uint64_t length) override;
    std::optional<FdSpan> fd_span(uint64_t offset, size_t length) override;

    bool ready() const override { return ready_.load(std::memory_order_acquire); }
    void prepare(const Progress& progress) override;

private:
    void require_ready(const char* op, uint64_t offset) const;
    std::vector<unsigned char> header(uint64_t gd_offset) const;

    DevicePtr source_;
    vmdk::StreamBodySettings settings_;
    uint64_t capacity_;        // sectors
    std::string descriptor_;   // made at construction, so bad options fail early
    std::mutex prepare_mutex_; // held for the whole pass; later callers wait on it
    std::atomic<bool> ready_{false};
    std::shared_ptr<vmdk::CacheFile> cache_; // the body, once prepared
};

} // namespace p2vfs
