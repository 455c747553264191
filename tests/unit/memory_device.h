// A sparse in-memory disk for unit tests: runs of bytes at chosen offsets,
// holes everywhere else, of any virtual size (a 2 TiB disk costs nothing).
#pragma once

#include "block/block_device.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <vector>

namespace p2vfs::test {

class MemoryDevice : public BlockDevice {
public:
    explicit MemoryDevice(uint64_t size) : size_(size) {}

    // Data runs must not overlap one another.
    void put(uint64_t offset, std::vector<unsigned char> bytes) {
        runs_[offset] = std::move(bytes);
    }
    // A run of `length` bytes whose value at disk offset x is pattern(x).
    void put_pattern(uint64_t offset, uint64_t length) {
        std::vector<unsigned char> b(length);
        for (uint64_t i = 0; i < length; ++i)
            b[i] = pattern(offset + i);
        put(offset, std::move(b));
    }
    static unsigned char pattern(uint64_t x) {
        return static_cast<unsigned char>((x * 2654435761u >> 13) ^ (x >> 9) ^ 0x5a);
    }

    std::string name() const override { return "memory"; }
    std::string identity() const override { return "memory:" + std::to_string(size_); }
    uint64_t size() const override { return size_; }

    void read(void* buf, size_t length, uint64_t offset) override {
        auto* out = static_cast<unsigned char*>(buf);
        std::memset(out, 0, length);
        for (const auto& [off, bytes] : runs_) {
            const uint64_t a = std::max(off, offset);
            const uint64_t b = std::min(off + bytes.size(), offset + length);
            if (a < b)
                std::memcpy(out + (a - offset), bytes.data() + (a - off), b - a);
        }
    }

    std::vector<Extent> extents(uint64_t offset, uint64_t length) override {
        std::vector<Extent> out;
        uint64_t pos = offset;
        const uint64_t end = offset + length;
        for (const auto& [off, bytes] : runs_) {
            const uint64_t a = std::max(off, pos);
            const uint64_t b = std::min(off + bytes.size(), end);
            if (a >= b)
                continue;
            append_extent(out, {pos, a - pos, ExtentType::Hole});
            append_extent(out, {a, b - a, ExtentType::Data});
            pos = b;
        }
        append_extent(out, {pos, end - pos, ExtentType::Hole});
        return out;
    }

private:
    uint64_t size_;
    std::map<uint64_t, std::vector<unsigned char>> runs_;
};

// The whole content of a device, for small devices.
inline std::vector<unsigned char> read_all(BlockDevice& dev) {
    std::vector<unsigned char> out(dev.size());
    dev.read(out.data(), out.size(), 0);
    return out;
}

inline std::vector<unsigned char> read_at(BlockDevice& dev, uint64_t offset, size_t length) {
    std::vector<unsigned char> out(length);
    dev.read(out.data(), length, offset);
    return out;
}

} // namespace p2vfs::test
