// A generated text file in a source's folder (info.json, report.txt, a VM
// description): its content is replaced as a whole, and an open sees the
// content of the moment it opened (a live file, fuse_frontend.h).
#pragma once

#include "block/bytes_device.h"
#include "block/checked_device.h"
#include "fuse/fuse_frontend.h"

#include <atomic>
#include <memory>
#include <mutex>

namespace p2vfs {

class TextFile : public LiveFile, public std::enable_shared_from_this<TextFile> {
public:
    TextFile(std::string name, std::string content) : name_(std::move(name)) { set(std::move(content)); }

    void set(std::string content) {
        auto d = checked(std::make_shared<BytesDevice>(name_, std::move(content)));
        std::lock_guard<std::mutex> lock(mutex_);
        device_ = std::move(d);
        generation_.fetch_add(1);
    }
    uint64_t generation() const override { return generation_.load(); }
    DevicePtr make() override {
        std::lock_guard<std::mutex> lock(mutex_);
        return device_;
    }
    MountedFile file() {
        return MountedFile{name_, make(), shared_from_this(), false, ""};
    }

private:
    std::string name_;
    std::mutex mutex_;
    DevicePtr device_;
    std::atomic<uint64_t> generation_{0};
};

} // namespace p2vfs
