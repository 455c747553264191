// A small read-only device over bytes in memory: the generated text files
// of a source's folder (info.json, report.txt, VM descriptions).
#pragma once

#include "block/block_device.h"
#include "common/stable_id.h"

#include <cstring>
#include <string>

namespace p2vfs {

class BytesDevice : public BlockDevice {
public:
    BytesDevice(std::string name, std::string bytes) : name_(std::move(name)), bytes_(std::move(bytes)) {}

    std::string name() const override { return name_; }
    std::string identity() const override { return "bytes:" + uuid_text(stable_hash128(bytes_)); }
    uint64_t size() const override { return bytes_.size(); }
    void read(void* buf, size_t length, uint64_t offset) override {
        std::memcpy(buf, bytes_.data() + offset, length);
    }
    std::vector<Extent> extents(uint64_t offset, uint64_t length) override {
        return {{offset, length, ExtentType::Data}};
    }

private:
    std::string name_;
    std::string bytes_;
};

} // namespace p2vfs
