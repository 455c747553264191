// The format table: one descriptor per virtual disk format.
//
// Like qemu's BlockDriver tables, a format is data: its name, the file it
// appears as, the options it takes, its size limit and how to make a view.
// Adding a format is one file in formats/ and one line in format_table.cpp.
#pragma once

#include "block/block_device.h"
#include "common/error.h"

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace p2vfs {

// The disk does not fit the format (size over its limit): the view cannot be
// made, while other views of the same disk can.
class FormatLimitError : public InvalidArgument {
public:
    using InvalidArgument::InvalidArgument;
};

struct FormatOption {
    std::string_view name;
    std::string_view default_value;
    std::string_view help;
};

// Options given for one view, already checked against the format's list.
class ViewOptions {
public:
    ViewOptions() = default;
    explicit ViewOptions(std::map<std::string, std::string> values) : values_(std::move(values)) {}

    const std::string& get(const std::string& key) const;
    uint64_t get_uint(const std::string& key, uint64_t min, uint64_t max) const;
    // One of `choices`, or an error listing them.
    const std::string& get_choice(const std::string& key,
                                  std::initializer_list<std::string_view> choices) const;
    const std::map<std::string, std::string>& values() const { return values_; }
    // "adapter=ide,hwversion=4": part of a view's identity.
    std::string canonical() const;

private:
    std::map<std::string, std::string> values_;
};

struct ViewRequest {
    DevicePtr source;      // the disk to show
    std::string file_name; // the name the view has in the mount ("disk.vmdk")
    ViewOptions options;   // complete: every option of the format, defaults filled in
};

// One file of a view. Most formats make one; some make several that belong
// together (a VMDK descriptor and its flat extent), the first being the one
// a user opens.
struct ViewFile {
    std::string name;
    DevicePtr device;
};

// make_files for a format whose view is one file of type View.
template <typename View> std::vector<ViewFile> one_file(const ViewRequest& req) {
    return {{req.file_name, std::make_shared<View>(req)}};
}

struct Format {
    std::string_view name;      // "vhd-fixed": how users select it
    std::string_view label;     // "VHD": how messages name it
    std::string_view file_name; // default file name in a source's folder
    std::string_view description;
    std::vector<FormatOption> options;
    uint64_t max_size; // largest virtual disk the format holds; 0: no limit
    std::function<std::vector<ViewFile>(const ViewRequest&)> make_files;
};

// Every format, in the order their files appear in a source's folder.
const std::vector<const Format*>& format_table();
// nullptr when there is no such format.
const Format* find_format(std::string_view name);

// Fills defaults and refuses unknown keys: "vmdk: unknown option 'foo' (known: ...)".
ViewOptions resolve_options(const Format& format, const std::map<std::string, std::string>& given);

// Makes the files of the view of `source` in `format`, checking the format's
// size limit first: "VHD: disk of 2.1 TiB exceeds the format's 2040 GiB limit".
// Every device returned is wrapped in a CheckedDevice.
std::vector<ViewFile> make_view_files(const Format& format, DevicePtr source,
                                      const std::map<std::string, std::string>& options,
                                      std::string file_name = {});

// The first (main) file of the view: what tests and single-file callers want.
DevicePtr make_view(const Format& format, DevicePtr source,
                    const std::map<std::string, std::string>& options, std::string file_name = {});

} // namespace p2vfs
