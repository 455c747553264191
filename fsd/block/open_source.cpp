#include "block/open_source.h"

#include "block/checked_device.h"
#include "block/local_source.h"
#include "common/error.h"
#include "nbd-bridge/image_source.h"

#include <sys/stat.h>

namespace p2vfs {

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
    if (spec.find("://") != std::string::npos)
        throw InvalidArgument(spec + ": not a source this build knows (NBD URIs start with "
                                     "nbd://, nbds://, nbd+unix:// or nbds+unix://)");

    std::string path = spec;
    std::string format;
    if (const auto colon = spec.find(':'); colon != std::string::npos) {
        const std::string prefix = spec.substr(0, colon);
        if (prefix == "raw" || is_image_format(prefix)) {
            format = prefix;
            path = spec.substr(colon + 1);
        }
    }
    if (format.empty()) {
        struct stat st;
        if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode))
            format = probe_image_format(path);
        else
            format = "raw";
    }
    if (format == "raw")
        return checked(std::make_shared<LocalSource>(path, LocalSourceOptions{options.direct}));
    return checked(open_image_source(path, format, options.nbd));
}

} // namespace p2vfs
