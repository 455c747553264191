#include "common/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace p2vfs {
namespace {

constexpr uint32_t reflected_polynomial = 0x82F63B78;

// Slicing-by-8 (Intel's technique, as in zlib and the Linux kernel): table[k][b]
// is the CRC of byte b followed by k zero bytes, so eight bytes are folded
// per step with eight independent look-ups instead of one byte per step.
using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables make_tables() {
    Tables t{};
    for (uint32_t b = 0; b < 256; ++b) {
        uint32_t c = b;
        for (int bit = 0; bit < 8; ++bit)
            c = (c & 1) ? (c >> 1) ^ reflected_polynomial : c >> 1;
        t[0][b] = c;
    }
    for (size_t k = 1; k < t.size(); ++k)
        for (uint32_t b = 0; b < 256; ++b)
            t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xff];
    return t;
}

constexpr Tables tables = make_tables();

} // namespace

uint32_t crc32c_portable(const void* data, size_t length, uint32_t crc) {
    const auto* p = static_cast<const unsigned char*>(data);
    uint32_t c = ~crc;
    while (length >= 8) {
        // Bytes are combined explicitly (not loaded as a word), so the result
        // does not depend on the host's byte order.
        const uint32_t lo = c ^ (uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 |
                                 uint32_t{p[3]} << 24);
        c = tables[7][lo & 0xff] ^ tables[6][(lo >> 8) & 0xff] ^ tables[5][(lo >> 16) & 0xff] ^
            tables[4][lo >> 24] ^ tables[3][p[4]] ^ tables[2][p[5]] ^ tables[1][p[6]] ^
            tables[0][p[7]];
        p += 8;
        length -= 8;
    }
    while (length-- > 0)
        c = (c >> 8) ^ tables[0][(c ^ *p++) & 0xff];
    return ~c;
}

#if defined(__x86_64__)
namespace {

// SSE 4.2's crc32 instruction computes CRC-32C, eight bytes per step: about
// five times the tables' speed here. Overlay chunks are checked on every
// read, so this is on the data path.
__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(const void* data, size_t length,
                                                          uint32_t crc) {
    const auto* p = static_cast<const unsigned char*>(data);
    uint64_t c = ~crc;
    while (length >= 8) {
        uint64_t word;
        std::memcpy(&word, p, 8); // little-endian host: the bytes in order
        c = _mm_crc32_u64(c, word);
        p += 8;
        length -= 8;
    }
    auto c32 = static_cast<uint32_t>(c);
    while (length-- > 0)
        c32 = _mm_crc32_u8(c32, *p++);
    return ~c32;
}

const bool have_sse42 = __builtin_cpu_supports("sse4.2");

} // namespace

uint32_t crc32c(const void* data, size_t length, uint32_t crc) {
    return have_sse42 ? crc32c_sse42(data, length, crc) : crc32c_portable(data, length, crc);
}
#else
uint32_t crc32c(const void* data, size_t length, uint32_t crc) {
    return crc32c_portable(data, length, crc);
}
#endif

} // namespace p2vfs
