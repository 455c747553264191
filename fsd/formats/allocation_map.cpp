#include "formats/allocation_map.h"

#include "common/endian.h"
#include "common/error.h"

#include <algorithm>

namespace p2vfs {

AllocationMap::AllocationMap(const std::vector<Extent>& extents, uint64_t size, uint64_t block_size)
    : block_size_(block_size), block_count_(div_round_up(size, block_size)) {
    for (const Extent& e : extents) {
        if (e.type != ExtentType::Data || e.length == 0)
            continue;
        const uint64_t first = e.offset / block_size;
        const uint64_t end = std::min(div_round_up(e.offset + e.length, block_size), block_count_);
        if (first >= end)
            continue;
        if (!runs_.empty()) {
            Run& last = runs_.back();
            const uint64_t last_end = last.first_block + last.count;
            if (first < last_end && end <= last_end)
                continue; // extents are ordered: a block already counted
            if (first <= last_end) {
                const uint64_t added = end - last_end;
                last.count += added;
                allocated_ += added;
                continue;
            }
        }
        runs_.push_back({first, end - first, allocated_});
        allocated_ += end - first;
    }
}

AllocationMap AllocationMap::of(BlockDevice& dev, uint64_t block_size) {
    return AllocationMap(dev.extents(0, dev.size()), dev.size(), block_size);
}

std::optional<uint64_t> AllocationMap::ordinal(uint64_t block) const {
    auto it = std::upper_bound(runs_.begin(), runs_.end(), block,
                               [](uint64_t b, const Run& r) { return b < r.first_block; });
    if (it == runs_.begin())
        return std::nullopt;
    --it;
    if (block >= it->first_block + it->count)
        return std::nullopt;
    return it->first_ordinal + (block - it->first_block);
}

std::vector<AllocationMap::Run>::const_iterator
AllocationMap::run_of_ordinal(uint64_t ordinal) const {
    auto it = std::upper_bound(runs_.begin(), runs_.end(), ordinal,
                               [](uint64_t o, const Run& r) { return o < r.first_ordinal; });
    if (it == runs_.begin() || ordinal >= allocated_)
        throw Error("allocation map: no stored block number " + std::to_string(ordinal));
    return --it;
}

uint64_t AllocationMap::block_at(uint64_t ordinal) const {
    const auto it = run_of_ordinal(ordinal);
    return it->first_block + (ordinal - it->first_ordinal);
}

uint64_t AllocationMap::run_remaining(uint64_t ordinal) const {
    const auto it = run_of_ordinal(ordinal);
    return it->count - (ordinal - it->first_ordinal);
}

} // namespace p2vfs
