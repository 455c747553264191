#include "common/stable_id.h"

#include <cstdio>

namespace p2vfs {
namespace {

// SplitMix64 finaliser: a full-avalanche 64-bit mix.
uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

uint64_t lane(std::string_view input, uint64_t seed) {
    uint64_t h = mix64(seed ^ input.size());
    for (unsigned char c : input)
        h = mix64(h ^ (c + 0x9e3779b97f4a7c15ULL));
    return h;
}

} // namespace

std::array<uint8_t, 16> stable_hash128(std::string_view input) {
    const uint64_t a = lane(input, 0x7032766673000001ULL);
    const uint64_t b = lane(input, 0x7032766673000002ULL);
    std::array<uint8_t, 16> out{};
    for (int i = 0; i < 8; ++i) {
        out[i] = static_cast<uint8_t>(a >> (56 - 8 * i));
        out[8 + i] = static_cast<uint8_t>(b >> (56 - 8 * i));
    }
    return out;
}

std::array<uint8_t, 16> stable_uuid(std::string_view input) {
    auto u = stable_hash128(input);
    u[6] = static_cast<uint8_t>((u[6] & 0x0f) | 0x80); // version 8
    u[8] = static_cast<uint8_t>((u[8] & 0x3f) | 0x80); // RFC 9562 variant
    return u;
}

std::string uuid_text(const std::array<uint8_t, 16>& u) {
    char buf[37];
    std::snprintf(buf, sizeof buf,
                  "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
                  u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
                  u[14], u[15]);
    return buf;
}

} // namespace p2vfs
