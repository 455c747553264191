// Byte-order stores and loads for on-disk structures.
//
// Spec structs (formats/*_spec.h) are byte arrays laid out as the specification
// says; these helpers are the only place that knows the host byte order.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

namespace p2vfs {

template <typename T> constexpr T byteswap_if(bool swap, T v) {
    if (!swap)
        return v;
    T r = 0;
    for (size_t i = 0; i < sizeof(T); ++i)
        r = static_cast<T>((r << 8) | ((v >> (8 * i)) & 0xff));
    return r;
}

template <typename T> inline void store_be(void* p, T v) {
    v = byteswap_if(std::endian::native == std::endian::little, v);
    std::memcpy(p, &v, sizeof v);
}
template <typename T> inline void store_le(void* p, T v) {
    v = byteswap_if(std::endian::native == std::endian::big, v);
    std::memcpy(p, &v, sizeof v);
}
template <typename T> inline T load_be(const void* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return byteswap_if(std::endian::native == std::endian::little, v);
}
template <typename T> inline T load_le(const void* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return byteswap_if(std::endian::native == std::endian::big, v);
}

// Big- and little-endian fields for packed spec structs: the struct keeps the
// exact on-disk bytes, reads and writes go through set()/get().
template <typename T, bool Big> struct EndianField {
    unsigned char bytes[sizeof(T)];
    void set(T v) {
        if constexpr (Big)
            store_be(bytes, v);
        else
            store_le(bytes, v);
    }
    T get() const {
        if constexpr (Big)
            return load_be<T>(bytes);
        else
            return load_le<T>(bytes);
    }
};
using be16 = EndianField<uint16_t, true>;
using be32 = EndianField<uint32_t, true>;
using be64 = EndianField<uint64_t, true>;
using le16 = EndianField<uint16_t, false>;
using le32 = EndianField<uint32_t, false>;
using le64 = EndianField<uint64_t, false>;
static_assert(sizeof(be64) == 8 && alignof(be64) == 1);

constexpr uint64_t div_round_up(uint64_t a, uint64_t b) {
    return (a + b - 1) / b;
}
constexpr uint64_t round_up(uint64_t a, uint64_t b) {
    return div_round_up(a, b) * b;
}
constexpr uint64_t round_down(uint64_t a, uint64_t b) {
    return a / b * b;
}

} // namespace p2vfs
