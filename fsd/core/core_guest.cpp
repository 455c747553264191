// The core's guest side: inspection (info.json, report.txt in a source's
// folder) and fixups for a target (written into the overlay's fixups
// layer, with the target's disk view and VM description beside them).
#include "core/core.h"
#include "core/core_internal.h"
#include "core/source_folder.h"
#include "formats/format.h"
#include "guest/fixups.h"
#include "guest/inspect.h"
#include "guest/profiles.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace p2vfs {

using json = nlohmann::json;

namespace {

constexpr const char* info_name = "info.json";
constexpr const char* report_name = "report.txt";

guest::FixupOptions fixup_options(const FixupRequest& r) {
    guest::FixupOptions o;
    o.profile = r.profile;
    if (r.vendor_agents)
        o.vendor_agents = *r.vendor_agents;
    o.firstboot_initramfs = r.firstboot;
    o.drivers_dir = r.drivers_dir;
    return o;
}

void check_request(const FixupRequest& r) {
    guest::profile(r.profile); // InvalidArgument naming the profiles there are
    if (!r.drivers_dir.empty()) {
        check_absolute_path("driver directory", r.drivers_dir);
        std::error_code ec;
        if (!std::filesystem::is_directory(r.drivers_dir, ec))
            throw InvalidArgument("driver directory " + r.drivers_dir + " is not a directory" +
                                  (ec ? ": " + ec.message() : std::string()));
    }
    if (r.memory_mib < 64 || r.memory_mib > 16 * 1024 * 1024)
        throw InvalidArgument("memory " + std::to_string(r.memory_mib) +
                              " MiB: use 64 MiB to 16 TiB");
    if (r.cpus < 1 || r.cpus > 1024)
        throw InvalidArgument("cpus " + std::to_string(r.cpus) + ": use 1 to 1024");
    if (r.vendor_agents) {
        if (r.vendor_agents->size() > Limits::options)
            throw InvalidArgument("too many vendor agents");
        for (const std::string& a : *r.vendor_agents) {
            if (a.empty() || a.size() > Limits::name)
                throw InvalidArgument("vendor agent names are 1-64 characters");
            for (char c : a)
                if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' &&
                    c != '.' && c != '@')
                    throw InvalidArgument("vendor agent '" + a +
                                          "': use A-Z a-z 0-9 - _ . @ (a service's name)");
        }
    }
}

// The machine a fixed-up disk goes in, described for its profile's
// hypervisor: the disk named `disk_file` beside the description (VMware,
// Hyper-V) or by its absolute path `disk_path` (libvirt). Throws
// InvalidArgument for what the hypervisor cannot take.
std::string describe_vm(const FixupRequest& r, const std::string& name, const std::string& format,
                        uint64_t size, const std::string& disk_file, const std::string& disk_path) {
    guest::VmDescription vm;
    vm.name = name;
    vm.os = r.os;
    vm.os_variant = r.os_variant;
    vm.firmware = r.firmware.empty() ? "bios" : r.firmware;
    vm.memory_mib = r.memory_mib;
    vm.cpus = r.cpus;
    vm.controller = r.controller;
    vm.disk_format = format;
    vm.disk_size = size;
    if (r.profile == "vmware") {
        vm.disk_path = disk_file; // beside the .vmx, as VMware resolves it
        return guest::vmware_vmx(vm);
    }
    if (r.profile == "hyperv") {
        vm.disk_path = disk_file;
        return guest::hyperv_summary(vm);
    }
    vm.disk_path = disk_path;
    return guest::libvirt_domain_xml(vm);
}

// The profile's disk view: its file name and the view's options.
struct TargetView {
    std::string file;
    std::string format;
    std::map<std::string, std::string> options;
    std::string description_file;
};

TargetView target_view(const FixupRequest& r) {
    if (r.profile == "vmware")
        return {"vmware.vmdk", "vmdk",
                {{"adapter", guest::vmdk_adapter_for(r.controller)}, {"hwversion", "14"}},
                "vmware.vmx"};
    if (r.profile == "hyperv")
        return {"hyperv.vhdx", "vhdx", {}, "hyperv.txt"};
    return {"kvm.qcow2", "qcow2", {}, "kvm.xml"};
}

} // namespace

// The daemon reads the driver directory as root and copies what it finds
// into the guest: a caller may name one only if it is root.
void check_fixups_caller(const Caller& caller, const FixupRequest& r) {
    if (!r.drivers_dir.empty() && !caller.is_root())
        throw AccessDenied(caller.describe() +
                           " may not give a driver directory: the daemon reads it as root "
                           "(only root may)");
}

std::vector<MountedFile> Core::guest_files(Source& s) {
    if (!s.info_file) {
        s.info_file = std::make_shared<TextFile>(
            s.name + "/" + info_name, json{{"state", "inspecting"}}.dump(2) + "\n");
        s.report_file = std::make_shared<TextFile>(s.name + "/" + report_name,
                                                   "Inspection of the disk is in progress.\n");
    }
    std::vector<MountedFile> files{s.info_file->file(), s.report_file->file()};
    files.front().name = info_name;
    files.back().name = report_name;
    s.fixup_files.clear();
    if (!s.fixups || !s.overlay)
        return files;
    // The target's view and its VM description.
    const FixupRequest& r = *s.fixups;
    const TargetView tv = target_view(r);
    const Format* format = find_format(tv.format);
    std::vector<ViewSpec> specs{{format, tv.file, tv.options, true}};
    MountedFolder folder;
    try {
        folder = build_overlay_folder(s.name, s.overlay, s.disk, specs, false);
    } catch (const Error& e) {
        spdlog::warn("source '{}': no {} view for the {} target: {}", s.name, tv.format,
                     r.profile, e.what());
        return files;
    }
    const std::string text = describe_vm(r, s.name, tv.format, s.disk->size(), tv.file,
                                         options_.mount_point + "/" + s.name + "/" + tv.file);
    auto description = std::make_shared<TextFile>(s.name + "/" + tv.description_file, text);
    MountedFile d = description->file();
    d.name = tv.description_file;
    for (MountedFile& f : folder.files) {
        s.fixup_files.push_back(f.name);
        files.push_back(f);
    }
    s.fixup_files.push_back(d.name);
    files.push_back(d);
    return files;
}

void Core::start_inspection(const std::shared_ptr<Source>& s) {
    // The thread gets the Source by plain pointer: ~Source joins it, so the
    // Source outlives it, and it never holds the last reference itself.
    Source* raw = s.get();
    std::lock_guard<std::mutex> lock(s->guest_mutex);
    if (s->inspector.joinable())
        return;
    s->inspector = std::thread([this, raw] {
        std::lock_guard<std::mutex> guest_lock(raw->guest_mutex);
        refresh_inspection(*raw);
    });
}

void Core::refresh_inspection(Source& s) {
    const uint64_t generation = s.overlay ? s.overlay->content_generation() : 0;
    if (s.inspected_generation && *s.inspected_generation == generation)
        return;
    try {
        const guest::Inventory inv = guest::inspect(s.disk);
        json j = guest::to_json(inv);
        j["source"] = s.name;
        if (s.fixups)
            j["fixups"] = {{"profile", s.fixups->profile}, {"controller", s.fixups->controller}};
        s.inventory_json = j.dump(2) + "\n";
        s.report = "Source '" + s.name + "'\n" + guest::report_text(inv);
        if (s.fixups)
            s.report += "\nFixups applied for " + s.fixups->profile + " (disk controller " +
                        s.fixups->controller + ").\n";
        size_t blockers = 0;
        for (const auto& f : inv.findings)
            blockers += f.severity == "blocker";
        spdlog::info("source '{}': inspected: {}{}, {} finding(s), {} blocking", s.name, inv.os,
                     inv.linux_guest     ? " (" + inv.linux_guest->pretty_name + ")"
                     : inv.windows_guest ? " (" + inv.windows_guest->product_name + ")"
                                         : std::string(),
                     inv.findings.size(), blockers);
    } catch (const std::exception& e) {
        s.inventory_json = json{{"source", s.name}, {"error", e.what()}}.dump(2) + "\n";
        s.report = "Source '" + s.name + "': inspection failed: " + e.what() + "\n";
        spdlog::warn("source '{}': inspection failed: {}", s.name, e.what());
    }
    s.inspected_generation = generation;
    s.info_file->set(s.inventory_json);
    s.report_file->set(s.report);
}

InspectResult Core::inspect(const Caller& caller, const std::string& name, bool refresh) {
    if (refresh)
        check_control(caller, "inspect again");
    const auto s = find_source(name);
    std::lock_guard<std::mutex> lock(s->guest_mutex);
    if (refresh)
        s->inspected_generation.reset();
    refresh_inspection(*s);
    return {s->inventory_json, s->report};
}

FixupResult Core::plan_fixups(const Caller& caller, const std::string& name,
                              const FixupRequest& request) {
    check_control(caller, "plan fixups");
    check_request(request);
    check_fixups_caller(caller, request);
    const auto s = find_source(name);
    std::lock_guard<std::mutex> lock(s->guest_mutex);
    // As the fixups layer would be edited: the source with the fixups
    // applied so far, without the user's writes above them.
    const DevicePtr disk = s->overlay ? s->overlay->device(fixups_layer) : s->source;
    const guest::Inventory inv = guest::inspect(disk);
    const guest::FixupPlan plan = guest::plan_fixups(disk, inv, fixup_options(request));
    return {guest::to_json(plan).dump(2) + "\n", guest::preview_text(plan), {}};
}

FixupResult Core::apply_fixups(const Caller& caller, const std::string& name,
                               const FixupRequest& request) {
    check_control(caller, "apply fixups");
    check_request(request);
    check_fixups_caller(caller, request);
    const auto s = find_source(name);
    check_no_running_job(name);
    FixupResult result;
    {
        std::lock_guard<std::mutex> lock(s->guest_mutex);
        if (s->fixups)
            throw InvalidState("source '" + name + "' has fixups for " + s->fixups->profile +
                               " applied already; discard them first");
        if (s->overlay && s->overlay->layer(fixups_layer).info().chunks > 0)
            throw InvalidState("source '" + name + "': the overlay's fixups layer holds changes "
                               "already (written by hand?); discard them first");
        // Planned on what the fixups layer shows (the source itself while
        // there is no overlay), so a refused plan makes no overlay.
        const DevicePtr seen = s->overlay ? s->overlay->device(fixups_layer) : s->source;
        const guest::Inventory inv = guest::inspect(seen);
        const guest::FixupPlan plan = guest::plan_fixups(seen, inv, fixup_options(request));
        if (!plan.refusals.empty())
            throw InvalidState("source '" + name + "': fixups for " + request.profile +
                               " refused: " + plan.refusals.front());
        ensure_writable_overlay(*s);
        // The same bytes as `seen`; apply_fixups checks every file again.
        const DevicePtr disk = s->overlay->device(fixups_layer, fixups_layer);
        try {
            guest::apply_fixups(disk, inv, plan);
        } catch (const Error& e) {
            // Half-written edits are worse than none: the layer goes back to
            // what it was (empty, checked above).
            spdlog::error("source '{}': fixups failed, discarding what was written: {}", name,
                          e.what());
            try {
                s->overlay->layer(fixups_layer).discard();
                s->overlay->changed_layers();
            } catch (const Error& d) {
                spdlog::error("source '{}': {}", name, d.what());
            }
            throw Error("source '" + name + "': " + e.what(), e.error_number());
        }
        s->overlay->layer(fixups_layer).sync();
        FixupRequest applied = request;
        applied.controller = plan.controller;
        applied.firmware = plan.firmware == "uefi" ? "uefi" : "bios";
        applied.os = plan.os;
        applied.os_variant = plan.os_variant;
        s->fixups = applied;
        size_t edits = 0;
        for (const auto& step : plan.steps)
            edits += step.edits.size();
        spdlog::info("source '{}': fixups for {} applied ({} file edit(s), disk controller {})",
                     name, request.profile, edits, plan.controller);
        for (MountedFile& f : guest_files(*s)) {
            if (f.name == info_name || f.name == report_name)
                continue;
            mount_.add_file(name, f);
            result.files.push_back(options_.mount_point + "/" + name + "/" + f.name);
        }
        s->inspected_generation.reset();
        refresh_inspection(*s);
        result.plan = guest::to_json(plan).dump(2) + "\n";
        result.preview = guest::preview_text(plan);
        if (s->persistent)
            save_source(*s);
    }
    CoreObserver* observer;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        observer = observer_;
    }
    if (observer)
        observer->source_changed(name);
    return result;
}

void Core::discard_fixups(const Caller& caller, const std::string& name) {
    check_control(caller, "discard fixups");
    const auto s = find_source(name);
    check_no_running_job(name);
    {
        std::lock_guard<std::mutex> lock(s->guest_mutex);
        if (!s->overlay || (!s->fixups && s->overlay->layer(fixups_layer).info().chunks == 0))
            throw InvalidState("source '" + name + "' has no fixups to discard");
        s->overlay->layer(fixups_layer).discard();
        s->overlay->changed_layers();
        for (const std::string& f : s->fixup_files)
            mount_.remove_file(name, f);
        s->fixup_files.clear();
        s->fixups.reset();
        s->inspected_generation.reset();
        refresh_inspection(*s);
        spdlog::info("source '{}': fixups discarded", name);
        if (s->persistent)
            save_source(*s);
    }
    CoreObserver* observer;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        observer = observer_;
    }
    if (observer)
        observer->source_changed(name);
}

} // namespace p2vfs

namespace p2vfs {

std::function<SyncFixups(const DevicePtr&, const std::string&, const std::string&)>
Core::fixups_hook(const FixupRequest& request, const std::string& vm_name) const {
    check_request(request);
    return [request, vm_name](const DevicePtr& disk, const std::string& destination,
                              const std::string& format) {
        const guest::Inventory inv = guest::inspect(disk);
        const guest::FixupPlan plan = guest::plan_fixups(disk, inv, fixup_options(request));
        if (!plan.refusals.empty())
            throw InvalidState("fixups for " + request.profile + " refused: " +
                               plan.refusals.front());
        guest::apply_fixups(disk, inv, plan);
        size_t edits = 0;
        for (const auto& step : plan.steps)
            edits += step.edits.size();
        spdlog::info("fixups for {} applied to the target ({} file edit(s), disk controller {})",
                     request.profile, edits, plan.controller);
        SyncFixups out;
        out.plan = guest::to_json(plan).dump(2) + "\n";
        // The machine around the target, beside it.
        FixupRequest applied = request;
        applied.controller = plan.controller;
        applied.firmware = plan.firmware == "uefi" ? "uefi" : "bios";
        applied.os = plan.os;
        applied.os_variant = plan.os_variant;
        try {
            out.description = describe_vm(applied, vm_name, format, disk->size(),
                                          std::filesystem::path(destination).filename().string(),
                                          destination);
            out.suffix = request.profile == "vmware"   ? ".vmx"
                         : request.profile == "hyperv" ? ".hyperv.txt"
                                                       : ".xml";
        } catch (const InvalidArgument& e) {
            spdlog::warn("no {} description beside {}: {}", request.profile, destination,
                         e.what());
            out.description.clear();
        }
        return out;
    };
}

} // namespace p2vfs
