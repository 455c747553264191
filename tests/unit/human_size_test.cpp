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

TEST(ParseSize, NumbersWithBinaryUnits) {
    EXPECT_EQ(parse_size("0", "--x"), 0u);
    EXPECT_EQ(parse_size("4096", "--x"), 4096u);
    EXPECT_EQ(parse_size("64K", "--x"), 64u << 10);
    EXPECT_EQ(parse_size("256M", "--x"), 256u << 20);
    EXPECT_EQ(parse_size("256MiB", "--x"), 256u << 20);
    EXPECT_EQ(parse_size("2g", "--x"), 2ull << 30);
    EXPECT_EQ(parse_size("3T", "--x"), 3ull << 40);
    EXPECT_EQ(parse_size("512B", "--x"), 512u);
}

TEST(ParseSize, AnythingElseIsRefusedNamingTheOption) {
    for (const char* bad : {"", "M", "-1", "1.5G", "12Q", "1MB", "1 M", "99999999999999999999",
                            "17179869184T"}) {
        try {
            parse_size(bad, "--cache-size");
            ADD_FAILURE() << "accepted '" << bad << "'";
        } catch (const InvalidArgument& e) {
            EXPECT_EQ(std::string(e.what()), std::string("--cache-size ") + bad +
                                                 ": expected a size such as 4096, 64K, 256M or 2G");
        }
    }
}

TEST(Hex, OffsetsPrintInHexadecimal) {
    EXPECT_EQ(hex(0x1f400000), "0x1f400000");
}

} // namespace
} // namespace p2vfs
