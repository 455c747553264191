#include "block/open_source.h"

#include "block/checked_device.h"
#include "block/local_source.h"
#include "common/error.h"

namespace p2vfs {

DevicePtr open_source(const std::string& spec, const SourceOptions& options) {
    if (spec.find("://") != std::string::npos)
        throw InvalidArgument(spec + ": URI sources are not supported by this build");
    return checked(std::make_shared<LocalSource>(spec, LocalSourceOptions{options.direct}));
}

} // namespace p2vfs
