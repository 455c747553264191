#include "formats/layout_view.h"

#include "common/endian.h"
#include "common/error.h"
#include "formats/allocation_map.h"

#include <algorithm>
#include <cstring>
#include <memory>

namespace p2vfs {

void LayoutView::add_bytes(std::vector<unsigned char> bytes) {
    auto data = std::make_shared<const std::vector<unsigned char>>(std::move(bytes));
    const uint64_t length = data->size();
    add_generated(length, [data](unsigned char* out, size_t n, uint64_t rel) {
        std::memcpy(out, data->data() + rel, n);
    });
}

void LayoutView::add_generated(uint64_t length, ReadFn read, ExtentsFn extents, FdSpanFn fd) {
    if (length == 0)
        return;
    segments_.push_back({end_, length, std::move(read), std::move(extents), std::move(fd)});
    end_ += length;
}

void LayoutView::add_device(DevicePtr dev, uint64_t dev_offset, uint64_t length) {
    add_generated(
        length,
        [dev, dev_offset](unsigned char* out, size_t n, uint64_t rel) {
            dev->read(out, n, dev_offset + rel);
        },
        [dev, dev_offset](uint64_t rel, uint64_t n) {
            std::vector<Extent> ext = dev->extents(dev_offset + rel, n);
            for (Extent& e : ext)
                e.offset -= dev_offset;
            return ext;
        },
        [dev, dev_offset](uint64_t rel, size_t n) { return dev->fd_span(dev_offset + rel, n); });
}

void LayoutView::add_hole(uint64_t length) {
    add_generated(
        length, [](unsigned char* out, size_t n, uint64_t) { std::memset(out, 0, n); },
        [](uint64_t rel, uint64_t n) {
            return std::vector<Extent>{{rel, n, ExtentType::Hole}};
        });
}

namespace {

struct StoredBlocks {
    DevicePtr data;
    const AllocationMap* map;

    // Where `rel` lies on the disk, and how many bytes from there on are
    // contiguous there (to the end of its run of consecutive blocks).
    uint64_t locate(uint64_t rel, uint64_t& contiguous) const {
        const uint64_t bs = map->block_size();
        const uint64_t ordinal = rel / bs;
        contiguous = map->run_remaining(ordinal) * bs - rel % bs;
        return map->block_at(ordinal) * bs + rel % bs;
    }

    void read(unsigned char* out, size_t n, uint64_t rel) const {
        while (n > 0) {
            uint64_t contiguous;
            const uint64_t at = locate(rel, contiguous);
            const size_t k = static_cast<size_t>(std::min<uint64_t>(n, contiguous));
            data->read(out, k, at);
            out += k;
            rel += k;
            n -= k;
        }
    }

    std::vector<Extent> extents(uint64_t rel, uint64_t n) const {
        std::vector<Extent> out;
        while (n > 0) {
            uint64_t contiguous;
            const uint64_t at = locate(rel, contiguous);
            const uint64_t k = std::min(n, contiguous);
            for (Extent e : data->extents(at, k)) {
                e.offset = e.offset - at + rel;
                append_extent(out, e);
            }
            rel += k;
            n -= k;
        }
        return out;
    }

    std::optional<FdSpan> fd_span(uint64_t rel, size_t n) const {
        uint64_t contiguous;
        const uint64_t at = locate(rel, contiguous);
        if (n > contiguous)
            return std::nullopt;
        return data->fd_span(at, n);
    }
};

} // namespace

void LayoutView::add_stored_blocks(DevicePtr data, const AllocationMap* map) {
    auto area = std::make_shared<StoredBlocks>(StoredBlocks{std::move(data), map});
    add_generated(
        map->allocated_count() * map->block_size(),
        [area](unsigned char* out, size_t n, uint64_t rel) { area->read(out, n, rel); },
        [area](uint64_t rel, uint64_t n) { return area->extents(rel, n); },
        [area](uint64_t rel, size_t n) { return area->fd_span(rel, n); });
}

const LayoutView::Segment& LayoutView::segment_at(uint64_t offset) const {
    auto it = std::upper_bound(segments_.begin(), segments_.end(), offset,
                               [](uint64_t off, const Segment& s) { return off < s.offset; });
    if (it == segments_.begin())
        throw Error(name_ + ": no segment at " + hex(offset));
    return *--it;
}

void LayoutView::read(void* buf, size_t length, uint64_t offset) {
    auto* out = static_cast<unsigned char*>(buf);
    while (length > 0) {
        const Segment& s = segment_at(offset);
        const uint64_t rel = offset - s.offset;
        const size_t n = static_cast<size_t>(std::min<uint64_t>(length, s.length - rel));
        s.read(out, n, rel);
        out += n;
        offset += n;
        length -= n;
    }
}

std::vector<Extent> LayoutView::extents(uint64_t offset, uint64_t length) {
    std::vector<Extent> out;
    while (length > 0) {
        const Segment& s = segment_at(offset);
        const uint64_t rel = offset - s.offset;
        const uint64_t n = std::min(length, s.length - rel);
        if (!s.extents) {
            append_extent(out, {offset, n, ExtentType::Data});
        } else {
            for (Extent e : s.extents(rel, n)) {
                e.offset += s.offset;
                append_extent(out, e);
            }
        }
        offset += n;
        length -= n;
    }
    return out;
}

std::optional<FdSpan> LayoutView::fd_span(uint64_t offset, size_t length) {
    const Segment& s = segment_at(offset);
    const uint64_t rel = offset - s.offset;
    if (!s.fd || length > s.length - rel)
        return std::nullopt;
    return s.fd(rel, length);
}

} // namespace p2vfs

namespace p2vfs {

template <typename T>
void fill_table(unsigned char* out, size_t length, uint64_t rel, uint64_t entries,
                const std::function<T(uint64_t)>& entry, bool big_endian, T pad) {
    uint64_t i = rel / sizeof(T);
    size_t skip = static_cast<size_t>(rel % sizeof(T));
    while (length > 0) {
        unsigned char bytes[sizeof(T)];
        const T v = i < entries ? entry(i) : pad;
        if (big_endian)
            store_be(bytes, v);
        else
            store_le(bytes, v);
        const size_t n = std::min<size_t>(sizeof(T) - skip, length);
        std::memcpy(out, bytes + skip, n);
        out += n;
        length -= n;
        skip = 0;
        ++i;
    }
}

template void fill_table<uint32_t>(unsigned char*, size_t, uint64_t, uint64_t,
                                   const std::function<uint32_t(uint64_t)>&, bool, uint32_t);
template void fill_table<uint64_t>(unsigned char*, size_t, uint64_t, uint64_t,
                                   const std::function<uint64_t(uint64_t)>&, bool, uint64_t);

} // namespace p2vfs
