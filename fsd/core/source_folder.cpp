#include "core/source_folder.h"

#include "common/error.h"
#include "formats/prepared_view.h"

#include <mutex>

#include <set>
#include <spdlog/spdlog.h>

namespace p2vfs {

namespace {

// The files of one view spec over an overlay, remade for each generation.
class ViewFactory {
public:
    ViewFactory(OverlayPtr overlay, DevicePtr disk, const ViewSpec& spec, std::vector<ViewFile> files)
        : overlay_(std::move(overlay)), disk_(std::move(disk)), spec_(spec),
          computed_(prepared_view_of(*files.front().device) != nullptr), files_(std::move(files)),
          made_(generation()) {}

    uint64_t generation() const {
        return computed_ ? overlay_->content_generation() : overlay_->allocation_generation();
    }

    DevicePtr file(size_t index) {
        std::lock_guard<std::mutex> lock(mutex_);
        const uint64_t g = generation();
        if (g != made_) {
            files_ = make_view_files(*spec_.format, disk_, spec_.options, spec_.file_name);
            made_ = g;
        }
        return files_.at(index).device;
    }

private:
    OverlayPtr overlay_;
    DevicePtr disk_;
    ViewSpec spec_;
    bool computed_; // bytes computed from the data: remade after any write
    std::mutex mutex_;
    std::vector<ViewFile> files_;
    uint64_t made_;
};

class LiveViewFile : public LiveFile {
public:
    LiveViewFile(std::shared_ptr<ViewFactory> factory, size_t index)
        : factory_(std::move(factory)), index_(index) {}
    uint64_t generation() const override { return factory_->generation(); }
    DevicePtr make() override { return factory_->file(index_); }

private:
    std::shared_ptr<ViewFactory> factory_;
    size_t index_;
};

// Calls add(spec, files) for the files of every spec, with the rules of
// build_folder for limits, bad options and duplicate names.
template <typename Add>
MountedFolder make_folder(const std::string& name, const DevicePtr& source,
                          const std::vector<ViewSpec>& specs, Add add) {
    MountedFolder folder{name, {}};
    std::set<std::string> names;
    for (const ViewSpec& spec : specs) {
        std::vector<ViewFile> files;
        try {
            files = make_view_files(*spec.format, source, spec.options, spec.file_name);
        } catch (const FormatLimitError& e) {
            if (spec.asked_for)
                throw;
            spdlog::warn("source '{}': no {}: {}", name, spec.format->file_name, e.what());
            continue;
        } catch (const InvalidArgument& e) {
            throw InvalidArgument(std::string(spec.format->name) + " view" +
                                  (spec.file_name.empty() ? "" : " " + spec.file_name) + ": " +
                                  e.what());
        }
        for (const ViewFile& f : files)
            if (!names.insert(f.name).second)
                throw InvalidArgument("two view files named '" + f.name + "'");
        add(folder, spec, std::move(files));
    }
    return folder;
}

} // namespace

MountedFolder build_folder(const std::string& name, const DevicePtr& source,
                           const std::vector<ViewSpec>& specs) {
    return make_folder(name, source, specs,
                       [](MountedFolder& folder, const ViewSpec& spec, std::vector<ViewFile> files) {
                           for (ViewFile& f : files)
                               folder.files.push_back({std::move(f.name), std::move(f.device),
                                                       nullptr, false,
                                                       std::string(spec.format->name)});
                       });
}

MountedFolder build_overlay_folder(const std::string& name, const OverlayPtr& overlay,
                                   const DevicePtr& disk, const std::vector<ViewSpec>& specs,
                                   bool writable) {
    return make_folder(
        name, disk, specs,
        [&](MountedFolder& folder, const ViewSpec& spec, std::vector<ViewFile> files) {
            const bool raw = spec.format->name == "raw";
            auto factory = std::make_shared<ViewFactory>(overlay, disk, spec, files);
            for (size_t i = 0; i < files.size(); ++i) {
                MountedFile f{std::move(files[i].name), std::move(files[i].device)};
                // The raw view is the disk itself: its layout never changes.
                if (!raw)
                    f.live = std::make_shared<LiveViewFile>(factory, i);
                f.writable = raw && writable;
                f.format = std::string(spec.format->name);
                folder.files.push_back(std::move(f));
            }
        });
}

} // namespace p2vfs
