#include "formats/geometry.h"

#include <gtest/gtest.h>

namespace p2vfs {
namespace {

// Expected values worked through the VHD specification's "CHS Calculation"
// by hand; qemu-img's vpc driver, which uses the same algorithm, gives the
// same numbers for the sizes it rounds to.
TEST(VhdGeometry, SmallDiskUses17SectorsAndAtLeast4Heads) {
    EXPECT_EQ(vhd_geometry(20480), (Chs{301, 4, 17})); // 10 MiB
}

TEST(VhdGeometry, HeadsFollowCylinderCountUnder16) {
    EXPECT_EQ(vhd_geometry(260096), (Chs{1019, 15, 17})); // 127 MiB
}

TEST(VhdGeometry, TwoGiBMovesTo63SectorsPerTrack) {
    EXPECT_EQ(vhd_geometry(4194304), (Chs{4161, 16, 63}));
    // qemu-img create -f vpc 2G rounds the disk up to exactly this geometry.
    EXPECT_EQ(vhd_geometry(4194304).total_sectors() * 512 + 16 * 63 * 512, 2147991552u);
}

TEST(VhdGeometry, LargeDiskUses255SectorsPerTrack) {
    EXPECT_EQ(vhd_geometry(209715200), (Chs{51400, 16, 255})); // 100 GiB
}

TEST(VhdGeometry, CapsAtTheLargestGeometry) {
    EXPECT_EQ(vhd_geometry(65535ULL * 16 * 255), (Chs{65535, 16, 255}));
    EXPECT_EQ(vhd_geometry(2040ULL << 21), (Chs{65535, 16, 255})); // 2040 GiB
}

TEST(VhdGeometry, TinyDiskHasZeroCylinders) {
    // The algorithm rounds down: a disk under one 4x17 cylinder has none.
    EXPECT_EQ(vhd_geometry(8), (Chs{0, 4, 17}));
}

TEST(VmdkGeometry, IdeUses16HeadsAndCapsCylinders) {
    EXPECT_EQ(vmdk_geometry(4194304, false), (Chs{4161, 16, 63}));
    EXPECT_EQ(vmdk_geometry(2147483648ULL, false), (Chs{16383, 16, 63}));
}

TEST(VmdkGeometry, ScsiUses255HeadsWithoutCap) {
    EXPECT_EQ(vmdk_geometry(2147483648ULL, true), (Chs{133674, 255, 63}));
}

TEST(VmdkGeometry, TinyDiskHasOneCylinder) {
    EXPECT_EQ(vmdk_geometry(8, false), (Chs{1, 16, 63}));
}

} // namespace
} // namespace p2vfs
