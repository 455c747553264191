// What the core keeps of a source and a job; shared by core.cpp,
// core_guest.cpp and core_sync.cpp.
#pragma once

#include "core/core.h"
#include "core/text_file.h"
#include "overlay/overlay.h"

#include <nlohmann/json.hpp>

#include <atomic>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace p2vfs {

inline constexpr const char* sync_kind = "sync";

// Checks of what callers pass (core.cpp): InvalidArgument naming `what`.
void check_length(const std::string& what, const std::string& value, size_t limit);
void check_text(const std::string& what, const std::string& value); // no control characters
void check_absolute_path(const std::string& what, const std::string& path); // no . or ..
// AccessDenied when a non-root caller names a driver directory.
void check_fixups_caller(const Caller& caller, const FixupRequest& r);

nlohmann::json fixup_request_json(const FixupRequest& r);
FixupRequest fixup_request_from(const nlohmann::json& j);

struct Core::Job {
    std::string id;
    std::string kind = "materialize";
    std::string source;
    std::string view;        // sync: the target's format
    std::string destination;
    std::string dir;
    MaterializeOptions options;
    // Sync jobs: the source's spec as added, and the fixups of the cutover.
    std::string source_uri;
    SyncOptions sync_options;
    uint64_t source_size = 0;
    std::optional<FixupRequest> fixups;

    // Held while job.json is written and while the job's directory is
    // removed: the monitor may be saving a job that remove_job is removing.
    std::mutex record_mutex;
    bool removed = false; // under record_mutex: the directory is gone

    std::mutex mutex; // everything below
    std::shared_ptr<JobEngine> engine; // null until started (sync: until first needed)
    JobProgress saved{};      // the state job.json holds, shown while there is no engine
    JobState persisted = JobState::Running;
    std::thread starter;      // prepares a computed view, then starts the engine
    std::atomic<bool> abandon{false}; // the starter gives up (cancel, stop)
    std::string last_reported;

    JobProgress progress() {
        std::lock_guard<std::mutex> lock(mutex);
        return engine ? engine->progress() : saved;
    }
    // The engine (null before it started) and the state, with `mutex` held.
    std::pair<std::shared_ptr<JobEngine>, JobState> engine_and_state_locked() const {
        return {engine, engine ? engine->progress().state : saved.state};
    }
};


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
