#include "common/error.h"

#include <gtest/gtest.h>

namespace p2vfs {
namespace {

TEST(HumanSize, ExactSizesPrintWholeInTheirUnit) {
    EXPECT_EQ(human_size(2040ULL << 30), "2040 GiB");
    EXPECT_EQ(human_size(1ULL << 40), "1 TiB");
    EXPECT_EQ(human_size(512), "512 B");
    EXPECT_EQ(human_size(1536), "1.50 KiB");
}

TEST(HumanSize, OtherSizesPrintWithAFraction) {
    EXPECT_EQ(human_size((2040ULL << 30) + 512), "1.99 TiB");
    EXPECT_EQ(human_size(100ULL * 1000 * 1000), "95.4 MiB");
}

TEST(Hex, OffsetsPrintInHexadecimal) {
    EXPECT_EQ(hex(0x1f400000), "0x1f400000");
}

} // namespace
} // namespace p2vfs
