#include "formats/format.h"

#include "block/checked_device.h"
#include "common/error.h"

namespace p2vfs {
const std::string& ViewOptions::get(const std::string& key) const {
    auto it = values_.find(key);
    if (it == values_.end())
        throw InvalidArgument("option '" + key + "' is not set");
    return it->second;
}

uint64_t ViewOptions::get_uint(const std::string& key, uint64_t min, uint64_t max) const {
    const std::string& v = get(key);
    size_t used = 0;
    unsigned long long n = 0;
    try {
        n = std::stoull(v, &used, 0);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used != v.size() || v.empty() || v[0] == '-')
        throw InvalidArgument("option " + key + "=" + v + ": not a number");
    if (n < min || n > max)
        throw InvalidArgument("option " + key + "=" + v + ": must be between " +
                              std::to_string(min) + " and " + std::to_string(max));
    return n;
}

const std::string& ViewOptions::get_choice(const std::string& key,
                                           std::initializer_list<std::string_view> choices) const {
    const std::string& v = get(key);
    std::string list;
    for (std::string_view c : choices) {
        if (v == c)
            return v;
        list += (list.empty() ? "" : ", ") + std::string(c);
    }
    throw InvalidArgument("option " + key + "=" + v + ": must be one of " + list);
}

std::string ViewOptions::canonical() const {
    std::string out;
    for (const auto& [k, v] : values_)
        out += (out.empty() ? "" : ",") + k + "=" + v;
    return out;
}

const Format* find_format(std::string_view name) {
    for (const Format* f : format_table())
        if (f->name == name)
            return f;
    return nullptr;
}

ViewOptions resolve_options(const Format& format, const std::map<std::string, std::string>& given) {
    std::map<std::string, std::string> values;
    for (const FormatOption& o : format.options)
        values.emplace(std::string(o.name), std::string(o.default_value));
    for (const auto& [k, v] : given) {
        auto it = values.find(k);
        if (it == values.end()) {
            std::string known;
            for (const FormatOption& o : format.options)
                known += (known.empty() ? "" : ", ") + std::string(o.name);
            throw InvalidArgument(std::string(format.name) + ": unknown option '" + k +
                                  "' (known: " + (known.empty() ? "none" : known) + ")");
        }
        it->second = v;
    }
    return ViewOptions(std::move(values));
}

std::vector<ViewFile> make_view_files(const Format& format, DevicePtr source,
                                      const std::map<std::string, std::string>& options,
                                      std::string file_name) {
    if (format.max_size != 0 && source->size() > format.max_size)
        throw FormatLimitError(std::string(format.label) + ": disk of " +
                               human_size(source->size()) + " (" + std::to_string(source->size()) +
                               " bytes) exceeds the format's " + human_size(format.max_size) +
                               " limit");
    ViewRequest req{checked(std::move(source)),
                    file_name.empty() ? std::string(format.file_name) : std::move(file_name),
                    resolve_options(format, options)};
    std::vector<ViewFile> files = format.make_files(req);
    for (ViewFile& f : files)
        f.device = checked(std::move(f.device));
    return files;
}

DevicePtr make_view(const Format& format, DevicePtr source,
                    const std::map<std::string, std::string>& options, std::string file_name) {
    return make_view_files(format, std::move(source), options, std::move(file_name)).front().device;
}

} // namespace p2vfs
