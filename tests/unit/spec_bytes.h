// Reading on-disk fields out of a view's bytes in tests: the value of a
// big- or little-endian field at a byte offset, as the specifications give it.
#pragma once

#include "common/endian.h"

#include <cstdint>
#include <vector>

namespace p2vfs::test {

using Bytes = std::vector<unsigned char>;

inline uint16_t be16_at(const Bytes& b, uint64_t off) {
    return load_be<uint16_t>(&b[off]);
}
inline uint32_t be32_at(const Bytes& b, uint64_t off) {
    return load_be<uint32_t>(&b[off]);
}
inline uint64_t be64_at(const Bytes& b, uint64_t off) {
    return load_be<uint64_t>(&b[off]);
}
inline uint16_t le16_at(const Bytes& b, uint64_t off) {
    return load_le<uint16_t>(&b[off]);
}
inline uint32_t le32_at(const Bytes& b, uint64_t off) {
    return load_le<uint32_t>(&b[off]);
}
inline uint64_t le64_at(const Bytes& b, uint64_t off) {
    return load_le<uint64_t>(&b[off]);
}

} // namespace p2vfs::test
