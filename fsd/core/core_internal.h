// What the core keeps of a source; shared by core.cpp and core_guest.cpp.
#pragma once

#include "core/core.h"
#include "core/text_file.h"
#include "overlay/overlay.h"

#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace p2vfs {

struct Core::Source {
    std::string name;
    std::string uri;
    bool persistent = false;
    std::optional<std::vector<std::string>> formats;
    std::vector<ExposedView> exposed;
    DevicePtr source;  // as opened
    OverlayPtr overlay;
    DevicePtr disk;    // what the views show: the overlaid disk, or the source
    bool writable = false;
    std::string writable_layer; // disk.raw's writes go there; "": read-only
    std::vector<MountedFile> files; // the folder's views, for jobs to copy from
    uint64_t allocated = 0;

    // Guest inspection and fixups (core_guest.cpp). guest_mutex serializes
    // the inspections and fixups of this source; the inspector thread holds
    // devices and files, never the Source, and is joined when it goes.
    std::mutex guest_mutex;
    std::shared_ptr<TextFile> info_file;   // info.json
    std::shared_ptr<TextFile> report_file; // report.txt
    std::optional<uint64_t> inspected_generation; // the disk's content generation inspected
    std::string inventory_json, report;
    std::optional<FixupRequest> fixups;    // applied, for which target
    std::vector<std::string> fixup_files;  // files the fixups added to the folder
    std::thread inspector;

    ~Source() {
        if (inspector.joinable())
            inspector.join();
    }
};


} // namespace p2vfs
