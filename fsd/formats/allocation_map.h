// Which blocks of a disk hold data, and where each sits in a dynamic file.
//
// Every dynamic format (VHD, VMDK, qcow2, VDI, VHDX) stores only the blocks
// that hold data, one after another in disk order. This map is built from
// extents() alone — no data is read — and answers both directions in
// O(log runs): block -> ordinal (its position among stored blocks) and
// ordinal -> block. It keeps runs of consecutive blocks, not one entry per
// block, so a fully allocated 2 TiB disk costs a few bytes.
#pragma once

#include "block/block_device.h"

#include <cstdint>
#include <optional>
#include <vector>

namespace p2vfs {

class AllocationMap {
public:
    struct Run {
        uint64_t first_block;
        uint64_t count;
        uint64_t first_ordinal;
    };

    AllocationMap() = default;
    // Blocks of `block_size` over a device of `size` bytes; a block is
    // stored when any byte of it is Data (Zero and Hole ranges are not).
    AllocationMap(const std::vector<Extent>& extents, uint64_t size, uint64_t block_size);
    static AllocationMap of(BlockDevice& dev, uint64_t block_size);

    uint64_t block_size() const { return block_size_; }
    uint64_t block_count() const { return block_count_; }
    uint64_t allocated_count() const { return allocated_; }
    const std::vector<Run>& runs() const { return runs_; }

    std::optional<uint64_t> ordinal(uint64_t block) const;
    uint64_t block_at(uint64_t ordinal) const;
    // How many stored blocks from `ordinal` on are consecutive on the disk
    // (the rest of its run): a read may take them as one range.
    uint64_t run_remaining(uint64_t ordinal) const;

private:
    std::vector<Run>::const_iterator run_of_ordinal(uint64_t ordinal) const;

    uint64_t block_size_ = 0;
    uint64_t block_count_ = 0;
    uint64_t allocated_ = 0;
    std::vector<Run> runs_;
};

} // namespace p2vfs
