// CRC-32C against published check values: the CRC catalogue's check value
// for "123456789" and the test vectors of RFC 3720 (iSCSI), appendix B.4.
#include "common/crc32c.h"

#include <cstring>
#include <gtest/gtest.h>
#include <string>
#include <vector>

namespace p2vfs {
namespace {

uint32_t crc_of(const std::vector<unsigned char>& b) {
    return crc32c(b.data(), b.size());
}

// One bit at a time, straight from the definition: the reference the
// table-driven code must agree with.
uint32_t crc32c_bitwise(const unsigned char* p, size_t n) {
    uint32_t c = 0xffffffff;
    while (n-- > 0) {
        c ^= *p++;
        for (int bit = 0; bit < 8; ++bit)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78 : c >> 1;
    }
    return ~c;
}

// n bytes from a linear congruential generator started at `seed`.
std::vector<unsigned char> pseudo_random(size_t n, uint32_t seed) {
    std::vector<unsigned char> b(n);
    for (auto& c : b) {
        seed = seed * 1103515245 + 12345;
        c = static_cast<unsigned char>(seed >> 16);
    }
    return b;
}

TEST(Crc32c, MatchesTheCatalogueCheckValue) {
    const std::string check = "123456789";
    EXPECT_EQ(crc32c(check.data(), check.size()), 0xE3069283u);
}

TEST(Crc32c, MatchesTheRfc3720Vectors) {
    std::vector<unsigned char> b(32, 0x00);
    EXPECT_EQ(crc_of(b), 0x8A9136AAu); // 32 bytes of zeros
    b.assign(32, 0xff);
    EXPECT_EQ(crc_of(b), 0x62A8AB43u); // 32 bytes of ones
    for (int i = 0; i < 32; ++i)
        b[i] = static_cast<unsigned char>(i);
    EXPECT_EQ(crc_of(b), 0x46DD794Eu); // incrementing 00..1f
    for (int i = 0; i < 32; ++i)
        b[i] = static_cast<unsigned char>(31 - i);
    EXPECT_EQ(crc_of(b), 0x113FDB5Cu); // decrementing 1f..00
}

TEST(Crc32c, OfNoBytesIsZero) {
    EXPECT_EQ(crc32c(nullptr, 0), 0u);
    EXPECT_EQ(crc32c(nullptr, 0, 0xE3069283u), 0xE3069283u);
}

TEST(Crc32c, ContinuesAcrossAnySplit) {
    std::vector<unsigned char> b(100);
    for (size_t i = 0; i < b.size(); ++i)
        b[i] = static_cast<unsigned char>(i * 37 + 11);
    const uint32_t whole = crc_of(b);
    for (size_t split = 0; split <= b.size(); ++split)
        ASSERT_EQ(crc32c(b.data() + split, b.size() - split, crc32c(b.data(), split)), whole)
            << "split at " << split;
}

TEST(Crc32c, AgreesWithTheBitwiseDefinitionAtEveryAlignmentAndLength) {
    const std::vector<unsigned char> b = pseudo_random(70000, 1);
    for (size_t start = 0; start < 8; ++start)
        for (size_t len : {0, 1, 7, 8, 9, 15, 16, 17, 4096, 65536})
            ASSERT_EQ(crc32c(b.data() + start, len), crc32c_bitwise(b.data() + start, len))
                << "start " << start << " length " << len;
}

// crc32c() takes the CPU's instruction where there is one; the table code
// must agree with it (and with the definition) wherever either runs.
TEST(Crc32c, PortableAndDispatchedAgree) {
    const std::vector<unsigned char> b = pseudo_random(70001, 7);
    for (size_t start = 0; start < 8; ++start)
        for (size_t len : {0, 1, 3, 8, 13, 64, 4097, 65536}) {
            ASSERT_EQ(crc32c_portable(b.data() + start, len), crc32c_bitwise(b.data() + start, len))
                << "start " << start << " length " << len;
            ASSERT_EQ(crc32c(b.data() + start, len, 0x1234567u),
                      crc32c_portable(b.data() + start, len, 0x1234567u))
                << "start " << start << " length " << len;
        }
}

} // namespace
} // namespace p2vfs
