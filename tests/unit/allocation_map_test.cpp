#include "common/error.h"
#include "formats/allocation_map.h"

#include <gtest/gtest.h>

namespace p2vfs {
namespace {

constexpr uint64_t KiB = 1024;

TEST(AllocationMap, BlocksTouchedByDataAreStoredInDiskOrder) {
    // Data in block 1 (partly), blocks 3-4 (one extent across the boundary), block 9.
    const std::vector<Extent> ext{{0, 70 * KiB, ExtentType::Hole},
                                  {70 * KiB, 1, ExtentType::Data},
                                  {70 * KiB + 1, 130 * KiB - 1, ExtentType::Hole},
                                  {200 * KiB, 100 * KiB, ExtentType::Data},
                                  {300 * KiB, 276 * KiB, ExtentType::Zero},
                                  {576 * KiB, 64 * KiB, ExtentType::Data}};
    AllocationMap m(ext, 640 * KiB, 64 * KiB);
    EXPECT_EQ(m.block_count(), 10u);
    EXPECT_EQ(m.allocated_count(), 4u);
    EXPECT_EQ(m.ordinal(0), std::nullopt);
    EXPECT_EQ(m.ordinal(1), 0u);
    EXPECT_EQ(m.ordinal(2), std::nullopt);
    EXPECT_EQ(m.ordinal(3), 1u);
    EXPECT_EQ(m.ordinal(4), 2u);
    EXPECT_EQ(m.ordinal(5), std::nullopt); // Zero extents are not stored
    EXPECT_EQ(m.ordinal(9), 3u);
    EXPECT_EQ(m.block_at(0), 1u);
    EXPECT_EQ(m.block_at(1), 3u);
    EXPECT_EQ(m.block_at(2), 4u);
    EXPECT_EQ(m.block_at(3), 9u);
    EXPECT_THROW(m.block_at(4), Error);
}

TEST(AllocationMap, ExtentsSharingABlockCountItOnce) {
    const std::vector<Extent> ext{{0, 10, ExtentType::Data},
                                  {10, 10, ExtentType::Hole},
                                  {20, 10, ExtentType::Data},
                                  {30, 4066, ExtentType::Hole},
                                  {4096, 1, ExtentType::Data}};
    AllocationMap m(ext, 4097, 4096);
    EXPECT_EQ(m.block_count(), 2u);
    EXPECT_EQ(m.allocated_count(), 2u);
    ASSERT_EQ(m.runs().size(), 1u); // blocks 0 and 1 make one run
    EXPECT_EQ(m.runs()[0].count, 2u);
}

TEST(AllocationMap, FullyAllocatedHugeDiskIsOneRun) {
    const uint64_t size = 2ULL << 40;
    AllocationMap m({{0, size, ExtentType::Data}}, size, 64 * KiB);
    EXPECT_EQ(m.runs().size(), 1u);
    EXPECT_EQ(m.allocated_count(), size / (64 * KiB));
    EXPECT_EQ(m.ordinal(m.block_count() - 1), m.block_count() - 1);
}

TEST(AllocationMap, EmptyDiskStoresNothing) {
    AllocationMap m({{0, 1 << 20, ExtentType::Hole}}, 1 << 20, 64 * KiB);
    EXPECT_EQ(m.allocated_count(), 0u);
    EXPECT_EQ(m.ordinal(0), std::nullopt);
}

} // namespace
} // namespace p2vfs

namespace p2vfs {
namespace {

TEST(AllocationMap, RunRemainingCountsConsecutiveStoredBlocks) {
    const std::vector<Extent> ext{{0, 3 * 4096, ExtentType::Data},
                                  {3 * 4096, 4096, ExtentType::Hole},
                                  {4 * 4096, 2 * 4096, ExtentType::Data}};
    AllocationMap m(ext, 6 * 4096, 4096);
    EXPECT_EQ(m.run_remaining(0), 3u);
    EXPECT_EQ(m.run_remaining(2), 1u);
    EXPECT_EQ(m.run_remaining(3), 2u); // block 4
    EXPECT_EQ(m.run_remaining(4), 1u);
}

} // namespace
} // namespace p2vfs
