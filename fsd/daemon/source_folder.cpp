#include "daemon/source_folder.h"

#include "common/error.h"

#include <set>
#include <spdlog/spdlog.h>

namespace p2vfs {

std::vector<ViewSpec> view_specs_for(const DaemonArgs& args, const std::string& name) {
    std::vector<ViewSpec> specs;
    static const std::map<std::string, std::string> none;
    auto add_default = [&](const Format* f) {
        auto it = args.format_options.find(std::string(f->name));
        specs.push_back({f, {}, it == args.format_options.end() ? none : it->second, false});
    };
    if (args.default_formats_given) {
        for (const std::string& f : args.default_formats)
            add_default(find_format(f));
    } else {
        for (const Format* f : format_table())
            add_default(f);
    }
    for (const ViewArg& v : args.views)
        if (v.source == name)
            specs.push_back({find_format(v.format), v.file, v.options, true});
    return specs;
}

MountedFolder build_folder(const std::string& name, const DevicePtr& source,
                           const std::vector<ViewSpec>& specs) {
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
        for (ViewFile& f : files) {
            if (!names.insert(f.name).second)
                throw InvalidArgument("two view files named '" + f.name + "'");
            folder.files.push_back({std::move(f.name), std::move(f.device)});
        }
    }
    return folder;
}

} // namespace p2vfs
