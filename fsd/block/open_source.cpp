#include "block/open_source.h"

#include "block/checked_device.h"
#include "block/local_source.h"
#include "block/snapshot_source.h"
#include "common/error.h"
#include "nbd-bridge/image_source.h"

#include <climits>
#include <cstdlib>
#include <spdlog/spdlog.h>
#include <string_view>
#include <sys/stat.h>

namespace p2vfs {
namespace {

constexpr std::string_view snapshot_prefix = "snapshot:";

// A local path, with the format named in FORMAT:PATH (empty: probe it).
struct PathSpec {
    std::string path;
    std::string format;
};

PathSpec parse_path_spec(const std::string& spec) {
    if (const auto colon = spec.find(':'); colon != std::string::npos) {
        const std::string prefix = spec.substr(0, colon);
        if (prefix == "raw" || is_image_format(prefix))
            return {spec.substr(colon + 1), prefix};
    }
    return {spec, ""};
}

// How a local path is read: as named, else a regular file by its magic;
// block devices (and what cannot be opened, which LocalSource then reports)
// are raw.
std::string format_of(const std::string& path, const std::string& named) {
    if (!named.empty())
        return named;
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode))
        return probe_image_format(path);
    return "raw";
}

DevicePtr open_path(const std::string& path, const std::string& format,
                    const SourceOptions& options) {
    if (format == "raw")
        return std::make_shared<LocalSource>(path, LocalSourceOptions{options.direct});
    return open_image_source(path, format, options.nbd);
}

// snapshot:PATH and snapshot:FORMAT:PATH. The snapshot is kept or taken
// first, then opened exactly as a plain path would be; the format is probed
// on the snapshot, the bytes that will be served.
DevicePtr open_snapshot(const std::string& origin_spec, const SourceOptions& options) {
    const PathSpec origin = parse_path_spec(origin_spec);
    if (is_nbd_uri(origin.path) || origin.path.find("://") != std::string::npos)
        throw UnsupportedError("snapshot:" + origin_spec +
                                   ": snapshots are of local image files; snapshot a remote "
                                   "disk where it lives, and export the snapshot",
                               EOPNOTSUPP);
    check_snapshot_image(origin.path, origin.path, format_of(origin.path, origin.format));
    SnapshotRecord record = keep_or_take_snapshot(origin.path, options.snapshot_dir);
    const std::string format = format_of(record.path, origin.format);
    if (const auto backing = check_snapshot_image(origin.path, record.path, format))
        spdlog::warn("snapshot of {}: its backing file {} is not part of the snapshot; it is "
                     "read where it is, as it is now",
                     origin.path, *backing);
    DevicePtr snapshot = open_path(record.path, format, options);
    return std::make_shared<SnapshotSource>(std::move(snapshot), std::move(record), format);
}

} // namespace

void validate(const SourceOptions& options) {
    validate(options.nbd);
    validate(options.cache);
}

DevicePtr open_source(const std::string& spec, const SourceOptions& options) {
    if (is_nbd_uri(spec)) {
        DevicePtr dev = std::make_shared<NbdSource>(spec, options.nbd);
        if (options.cache.capacity > 0)
            dev = std::make_shared<CacheDevice>(checked(dev), options.cache);
        return checked(dev);
    }
    // Before FORMAT:PATH, which it may wrap (snapshot:qcow2:/x).
    if (spec.starts_with(snapshot_prefix))
        return checked(open_snapshot(spec.substr(snapshot_prefix.size()), options));
    if (spec.find("://") != std::string::npos)
        throw InvalidArgument(spec + ": not a source this build knows (NBD URIs start with "
                                     "nbd://, nbds://, nbd+unix:// or nbds+unix://)");

    const PathSpec local = parse_path_spec(spec);
    return checked(open_path(local.path, format_of(local.path, local.format), options));
}

std::optional<std::string> local_path_of(const std::string& spec) {
    if (is_nbd_uri(spec) || spec.find("://") != std::string::npos)
        return std::nullopt;
    const std::string rest =
        spec.starts_with(snapshot_prefix) ? spec.substr(snapshot_prefix.size()) : spec;
    return parse_path_spec(rest).path;
}

BackingFile backing_file_of(const std::string& spec, const DevicePtr& source) {
    if (is_nbd_uri(spec))
        return {spec, "raw"};
    // A snapshot: the snapshot file, in the format it is read in.
    for (BlockDevice* d = source.get(); d;) {
        if (const auto* snap = dynamic_cast<const SnapshotSource*>(d)) {
            const PathSpec inner = parse_path_spec(spec.substr(snapshot_prefix.size()));
            return {snap->record().path, format_of(snap->record().path, inner.format)};
        }
        const auto* filter = dynamic_cast<const FilterDevice*>(d);
        d = filter ? filter->next().get() : nullptr;
    }
    const PathSpec local = parse_path_spec(spec);
    char* real = ::realpath(local.path.c_str(), nullptr);
    if (!real)
        throw Error(local.path + ": cannot name it as a backing file: " + errno_text(errno));
    BackingFile b{real, format_of(real, local.format)};
    std::free(real);
    return b;
}

} // namespace p2vfs
