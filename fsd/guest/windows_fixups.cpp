// Windows fixups: plans of registry edits (and driver files) that let a
// physical Windows start on a target's virtual disk controller, applied to
// copies of the hives that are written back through libntfs-3g only when
// every edit has been made.
#include "common/error.h"
#include "guest/fixups.h"
#include "guest/ntfs.h"
#include "guest/profiles.h"
#include "guest/registry.h"
#include "guest/windows.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <spdlog/spdlog.h>
#include <sstream>
#include <strings.h>

namespace p2vfs::guest {

std::vector<std::string> default_windows_services() {
    std::vector<std::string> out;
    for (const KnownService& k : windows_hypervisor_tools())
        out.push_back(k.name);
    for (const KnownService& k : windows_vendor_agents())
        out.push_back(k.name);
    return out;
}

namespace {

namespace fs = std::filesystem;

constexpr const char* class_hdc = "{4D36E96A-E325-11CE-BFC1-08002BE10318}";
constexpr const char* class_scsi = "{4D36E97B-E325-11CE-BFC1-08002BE10318}";
constexpr uint64_t driver_file_limit = 64ull << 20;

std::string lower(std::string s) {
    for (char& c : s)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

bool same(const std::string& a, const std::string& b) {
    return strcasecmp(a.c_str(), b.c_str()) == 0;
}

// What a target's controller needs of Windows.
struct WindowsController {
    const char* controller; // a Controller::name of guest/profiles.h
    // Alternatives, in order: each a set of services that must all be there
    // ("storahci" on Windows 8 and later, "msahci" before).
    std::vector<std::vector<const char*>> drivers;
    bool shipped;           // Windows has the driver in the box
};

const std::vector<WindowsController>& windows_controllers() {
    static const std::vector<WindowsController> all{
        {"virtio-blk", {{"viostor"}}, false},
        {"virtio-scsi", {{"vioscsi"}}, false},
        {"sata", {{"storahci"}, {"msahci"}}, true},
        {"ide", {{"intelide", "atapi"}, {"pciide", "atapi"}}, true},
        {"pvscsi", {{"pvscsi"}}, false},
        {"lsisas", {{"LSI_SAS"}}, true},
        {"lsilogic", {{"LSI_SCSI"}}, true},
        {"hyperv-scsi", {{"storvsc"}}, true},
        {"hyperv-ide", {{"intelide", "atapi"}, {"pciide", "atapi"}}, true},
    };
    return all;
}

// The controllers a profile offers Windows, best first. Hyper-V boots
// generation 1 (BIOS) only from IDE, generation 2 (UEFI) only from SCSI.
std::vector<std::string> controller_order(const std::string& profile, const std::string& firmware) {
    if (profile == "vmware")
        return {"pvscsi", "lsisas", "lsilogic", "sata", "ide"};
    if (profile == "hyperv")
        return {firmware == "uefi" ? "hyperv-scsi" : "hyperv-ide"};
    return {"virtio-blk", "virtio-scsi", "sata", "ide"};
}

// The load-order group a boot driver belongs in.
std::string group_of(const std::string& service) {
    const std::string s = lower(service);
    if (s == "intelide" || s == "pciide")
        return "System Bus Extender";
    return "SCSI miniport";
}

struct PciId {
    const char* key;     // under CriticalDeviceDatabase
    const char* service;
    const char* class_guid;
};

// The device ids a target shows its controller by (Windows before 8 binds a
// boot disk's controller through CriticalDeviceDatabase).
std::vector<PciId> pci_ids(const std::string& profile, const std::string& controller,
                           const std::string& ahci, const std::string& ide) {
    if (controller == "sata")
        return {{profile == "vmware" ? "pci#ven_15ad&dev_07e0&cc_0106" // VMware AHCI
                                     : "pci#ven_8086&dev_2922&cc_0106", // QEMU q35's ICH9
                 ahci.c_str(), class_hdc}};
    if (controller == "ide" || controller == "hyperv-ide")
        return {{profile == "kvm" ? "pci#ven_8086&dev_7010" // PIIX3, QEMU's i440fx
                                  : "pci#ven_8086&dev_7111", // PIIX4: VMware, Hyper-V gen 1
                 ide.c_str(), class_hdc},
                {"primary_ide_channel", "atapi", class_hdc},
                {"secondary_ide_channel", "atapi", class_hdc}};
    if (controller == "virtio-blk")
        return {{"pci#ven_1af4&dev_1001&subsys_00021af4&rev_00", "viostor", class_scsi},
                {"pci#ven_1af4&dev_1042&subsys_11001af4&rev_01", "viostor", class_scsi}};
    if (controller == "virtio-scsi")
        return {{"pci#ven_1af4&dev_1004&subsys_00081af4&rev_00", "vioscsi", class_scsi},
                {"pci#ven_1af4&dev_1048&subsys_11001af4&rev_01", "vioscsi", class_scsi}};
    if (controller == "pvscsi")
        return {{"pci#ven_15ad&dev_07c0", "pvscsi", class_scsi}};
    if (controller == "lsisas")
        return {{"pci#ven_1000&dev_0054", "LSI_SAS", class_scsi}};
    if (controller == "lsilogic")
        return {{"pci#ven_1000&dev_0030", "LSI_SCSI", class_scsi}};
    if (controller == "hyperv-scsi")
        return {{"vmbus#{ba6163d9-04a1-4d29-b605-72e2ffb1dc7f}", "storvsc", class_scsi}};
    return {};
}

// Windows' version as a number: 601 for 6.1, 1000 for 10.0.
unsigned version_number(const WindowsGuest& g) {
    unsigned major = 0, minor = 0;
    std::sscanf(g.version.c_str(), "%u.%u", &major, &minor);
    return major * 100 + minor;
}

bool is_server(const WindowsGuest& g) {
    return same(g.installation_type, "Server") ||
           g.product_name.find("Server") != std::string::npos;
}

unsigned build_of(const WindowsGuest& g) {
    unsigned b = 0;
    std::sscanf(g.current_build.c_str(), "%u", &b);
    return b;
}

// virtio-win's directory for this Windows ("2k16"), and libosinfo's id
// ("win2k16").
std::pair<std::string, std::string> os_names(const WindowsGuest& g) {
    const unsigned v = version_number(g);
    const unsigned build = build_of(g);
    const bool server = is_server(g);
    if (v >= 1000) {
        if (server) {
            if (build >= 26100)
                return {"2k25", "win2k25"};
            if (build >= 20348)
                return {"2k22", "win2k22"};
            if (build >= 17763)
                return {"2k19", "win2k19"};
            return {"2k16", "win2k16"};
        }
        return build >= 22000 ? std::pair<std::string, std::string>{"w11", "win11"}
                              : std::pair<std::string, std::string>{"w10", "win10"};
    }
    if (v == 603)
        return server ? std::pair<std::string, std::string>{"2k12R2", "win2k12r2"}
                      : std::pair<std::string, std::string>{"w8.1", "win8.1"};
    if (v == 602)
        return server ? std::pair<std::string, std::string>{"2k12", "win2k12"}
                      : std::pair<std::string, std::string>{"w8", "win8"};
    if (v == 601)
        return server ? std::pair<std::string, std::string>{"2k8R2", "win2k8r2"}
                      : std::pair<std::string, std::string>{"w7", "win7"};
    if (v == 600)
        return server ? std::pair<std::string, std::string>{"2k8", "win2k8"}
                      : std::pair<std::string, std::string>{"w7", "winvista"};
    return {"", ""};
}

std::string arch_dir(const WindowsGuest& g) {
    if (g.architecture == "i386")
        return "x86";
    if (g.architecture == "aarch64")
        return "ARM64";
    return "amd64";
}

// A driver of the user's directory: virtio-win's DRIVER/OS/ARCH/DRIVER.sys,
// else DIR/DRIVER.sys. nullopt when neither is there.
std::optional<fs::path> find_driver(const std::string& dir, const std::string& driver,
                                    const WindowsGuest& g) {
    if (dir.empty())
        return std::nullopt;
    const std::string os = os_names(g).first;
    std::vector<fs::path> candidates;
    if (!os.empty())
        candidates.push_back(fs::path(dir) / driver / os / arch_dir(g) / (driver + ".sys"));
    candidates.push_back(fs::path(dir) / (driver + ".sys"));
    for (const fs::path& p : candidates) {
        std::error_code ec;
        if (fs::is_regular_file(p, ec))
            return p;
    }
    return std::nullopt;
}

// ---- the plan --------------------------------------------------------------

// Reads the hives the plan looks at, and records edits against them.
class Planner {
public:
    Planner(NtfsVolume& vol, const WindowsGuest& g)
        : system_(vol.read_file(windows_system_hive, Hive::size_limit),
                  windows_path(windows_system_hive) + " on " + vol.where()),
          software_(vol.read_file(windows_software_hive, Hive::size_limit),
                    windows_path(windows_software_hive) + " on " + vol.where()),
          set_(g.control_set) {}

    Hive& system() { return system_; }
    Hive& software() { return software_; }
    const std::string& set() const { return set_; }

    // The key of service `name` (its stored name), 0 when absent.
    std::pair<Hive::Node, std::string> service(const std::string& name) {
        const Hive::Node node = system_.key(set_ + "\\Services\\" + name);
        return {node, node ? system_.key_name(node) : name};
    }

    // `value` of `key` in `hive` set to `after` (nullopt: removed), when it
    // is not that already. Keys made earlier in this plan count as present.
    void set(FixupStep& step, const std::string& hive, const std::string& key,
             const std::string& value, std::optional<RegValue> after) {
        Hive& h = hive == "SYSTEM" ? system_ : software_;
        const Hive::Node node = h.key(key);
        std::optional<RegValue> before;
        std::string name = value;
        if (node) {
            before = h.value(node, value);
            name = h.value_name(node, value).value_or(value);
        }
        if (before == after)
            return;
        step.registry.push_back({hive, stored_path(h, key), name, before, after});
    }

    // Key `key` made (with its missing parents) unless it is there.
    void make_key(FixupStep& step, const std::string& hive, const std::string& key) {
        Hive& h = hive == "SYSTEM" ? system_ : software_;
        std::string path;
        size_t i = 0;
        while (i < key.size()) {
            const size_t j = std::min(key.find('\\', i), key.size());
            path += (path.empty() ? "" : "\\") + key.substr(i, j - i);
            i = j + 1;
            if (h.key(path) || made_.count(lower(hive + "\\" + path)))
                continue;
            made_.insert(lower(hive + "\\" + path));
            step.registry.push_back({hive, stored_path(h, path), std::nullopt, std::nullopt,
                                     RegValue{reg_none, ""}});
        }
    }

private:
    Hive system_;
    Hive software_;
    std::string set_;
    std::set<std::string> made_;

    // `key` with the case of the parts that exist ("controlset001\services"
    // -> "ControlSet001\Services"), so the plan names keys as the hive does.
    std::string stored_path(Hive& h, const std::string& key) {
        std::string out, probe;
        size_t i = 0;
        bool exists = true;
        while (i < key.size()) {
            const size_t j = std::min(key.find('\\', i), key.size());
            const std::string part = key.substr(i, j - i);
            i = j + 1;
            probe += (probe.empty() ? "" : "\\") + part;
            std::string shown = part;
            if (exists) {
                if (const Hive::Node n = h.key(probe))
                    shown = h.key_name(n);
                else
                    exists = false;
            }
            out += (out.empty() ? "" : "\\") + shown;
        }
        return out;
    }
};

const Volume* volume_of(const Inventory& inv, unsigned partition) {
    for (const Volume& v : inv.volumes)
        if (v.partition == partition)
            return &v;
    return nullptr;
}

// The MountedDevices value that ties a letter to `p` of this disk.
std::optional<RegValue> volume_id(const Inventory& inv, unsigned partition) {
    for (const Partition& p : inv.table.partitions) {
        if (p.number != partition)
            continue;
        std::string b;
        if (inv.table.scheme == "mbr") {
            unsigned long sig = 0;
            if (std::sscanf(inv.table.disk_id.c_str(), "0x%lx", &sig) != 1)
                return std::nullopt;
            for (int i = 0; i < 4; ++i)
                b += static_cast<char>(sig >> (8 * i));
            for (int i = 0; i < 8; ++i)
                b += static_cast<char>(p.offset >> (8 * i));
            return reg_binary_value(b);
        }
        if (inv.table.scheme == "gpt" && p.guid.size() == 36) {
            // The GUID's on-disk order: the first three fields little-endian.
            std::string hexdigits;
            for (char c : p.guid)
                if (c != '-')
                    hexdigits += c;
            std::string raw;
            for (size_t i = 0; i + 1 < hexdigits.size(); i += 2)
                raw += static_cast<char>(std::stoi(hexdigits.substr(i, 2), nullptr, 16));
            if (raw.size() != 16)
                return std::nullopt;
            std::string guid = raw;
            std::reverse(guid.begin(), guid.begin() + 4);
            std::reverse(guid.begin() + 4, guid.begin() + 6);
            std::reverse(guid.begin() + 6, guid.begin() + 8);
            return reg_binary_value("DMIO:ID:" + guid);
        }
    }
    return std::nullopt;
}

struct Choice {
    std::string controller;
    std::vector<std::string> services;   // as stored in the hive, or the driver's name
    std::optional<fs::path> driver_file; // copied from the user's directory
};

// Windows before 8 binds a boot controller through CriticalDeviceDatabase,
// which a plan can write; 8 and later through the DriverDatabase and the
// DriverStore, which only Windows' own driver installation fills right.
bool copied_driver_can_boot(const WindowsGuest& g) {
    return version_number(g) < 602;
}

// Whether `name`'s service and its file are in the guest.
bool installed(Planner& pl, NtfsVolume& vol, const WindowsGuest& g, const std::string& name) {
    const auto [node, stored] = pl.service(name);
    if (!node)
        return false;
    const std::string file =
        driver_file_path(pl.system().string(node, "ImagePath").value_or(""), stored,
                         g.system_root.size() > 3 ? g.system_root.substr(3) : "Windows");
    const auto st = file.empty() ? std::nullopt : vol.stat(file);
    return st && !st->directory;
}

std::optional<Choice> choose(Planner& pl, NtfsVolume& vol, const WindowsGuest& g,
                             const std::string& controller, const FixupOptions& options,
                             std::string& why_not) {
    const auto it = std::find_if(windows_controllers().begin(), windows_controllers().end(),
                                 [&](const WindowsController& c) { return c.controller == controller; });
    if (it == windows_controllers().end())
        return std::nullopt;
    for (const auto& alternative : it->drivers) {
        Choice c{controller, {}, std::nullopt};
        bool all = true;
        for (const char* name : alternative) {
            const bool present = installed(pl, vol, g, name);
            if (!present && alternative.size() == 1 && !it->shipped) {
                if (auto f = find_driver(options.drivers_dir, name, g)) {
                    if (!copied_driver_can_boot(g)) {
                        why_not += (why_not.empty() ? "" : "; ") + controller + ": " + name +
                                   " from " + options.drivers_dir +
                                   " cannot boot Windows 8 and later (they bind a boot "
                                   "controller only through a driver Windows installed itself: "
                                   "install it there, pnputil /add-driver " + name +
                                   ".inf /install, and plan again)";
                        return std::nullopt;
                    }
                    c.driver_file = *f;
                    c.services.push_back(name);
                    continue;
                }
            }
            if (!present) {
                all = false;
                break;
            }
            c.services.push_back(pl.service(name).second);
        }
        if (all)
            return c;
    }
    std::string names;
    for (const auto& alternative : it->drivers)
        for (const char* n : alternative)
            names += (names.empty() ? "" : ", ") + std::string(n);
    why_not += (why_not.empty() ? "" : "; ") + controller + " needs " + names +
               (it->shipped ? "" : options.drivers_dir.empty()
                                       ? " (Windows does not ship it; give a driver directory)"
                                       : " (not in " + options.drivers_dir + " either)");
    return std::nullopt;
}

// A host file copied to `to` on the volume; a missing optional file (an
// .inf or .cat) is left out.
void add_copy(NtfsVolume& vol, FixupStep& step, const fs::path& from, const std::string& to,
              bool required) {
    std::error_code ec;
    if (!fs::is_regular_file(from, ec)) {
        if (required)
            throw Error(from.string() + " is not a file" + (ec ? ": " + ec.message() : ""),
                        ENOENT);
        return;
    }
    const auto size = fs::file_size(from, ec);
    if (ec)
        throw Error(from.string() + ": " + ec.message(), ec.value());
    if (size > driver_file_limit)
        throw Error(from.string() + " is " + human_size(size) +
                        ", more than a driver file is copied up to (" +
                        human_size(driver_file_limit) + ")",
                    EFBIG);
    const auto st = vol.stat(to);
    std::optional<std::string> before;
    if (st)
        before = std::to_string(st->size) + " bytes";
    step.edits.push_back({windows_path(to), "copy", before, from.string(), 0644, size});
}

// SOFTWARE's DevicePath, where Plug and Play looks for .inf files when it
// meets a new device, gains \Windows\Drivers\VirtIO.
void add_device_path(Planner& pl, FixupStep& step) {
    const std::string cv = "Microsoft\\Windows\\CurrentVersion";
    const Hive::Node cv_node = pl.software().key(cv);
    const std::string path =
        cv_node ? pl.software().string(cv_node, "DevicePath").value_or("%SystemRoot%\\inf")
                : "%SystemRoot%\\inf";
    const std::string ours = "%SystemRoot%\\Drivers\\VirtIO";
    if (lower(path).find(lower(ours)) != std::string::npos)
        return;
    pl.make_key(step, "SOFTWARE", cv);
    pl.set(step, "SOFTWARE", cv, "DevicePath", reg_string(path + ";" + ours, reg_expand_sz));
}

} // namespace

FixupPlan plan_windows_fixups(const DevicePtr& disk, const Inventory& inv,
                              const FixupOptions& options) {
    const Profile& profile = guest::profile(options.profile);
    FixupPlan plan;
    plan.profile = profile.name;
    plan.disk_format = profile.disk_format;
    plan.firmware = inv.firmware;
    plan.os = "windows";
    if (!inv.windows_guest) {
        std::string why = "the disk holds NTFS but no Windows installation was read";
        for (const Finding& f : inv.findings)
            if (f.id == "windows-unreadable")
                why += "; " + f.message;
        plan.refusals.push_back(why);
        return plan;
    }
    const WindowsGuest& g = *inv.windows_guest;
    plan.os_variant = os_names(g).second;
    if (g.boot_mode == "uefi" || g.boot_mode == "bios")
        plan.firmware = g.boot_mode;
    for (const Finding& f : inv.findings)
        if (f.id == "hibernated" || f.id == "bitlocker" || f.id == "dynamic-disk")
            plan.refusals.push_back(f.message);
    if (g.control_set.empty()) {
        plan.refusals.push_back("the current control set of the SYSTEM hive is unknown (see the "
                                "inspection's findings): nothing can be edited");
        return plan;
    }
    const Volume* sys = volume_of(inv, g.system_partition);
    if (!sys)
        throw Error("partition " + std::to_string(g.system_partition) + " vanished", ENOENT);
    NtfsVolume vol(disk, sys->offset, sys->length,
                   "partition " + std::to_string(g.system_partition));
    Planner pl(vol, g);
    const std::string set = pl.set();
    const bool before_8 = version_number(g) < 602;

    // choose-controller
    FixupStep choose_step{"choose-controller", "", {}, {}};
    std::optional<Choice> choice;
    std::string why_not;
    for (const std::string& c : controller_order(profile.name, plan.firmware)) {
        choice = choose(pl, vol, g, c, options, why_not);
        if (choice)
            break;
    }
    if (!choice) {
        plan.refusals.push_back("Windows has a driver for none of the disk controllers " +
                                profile.name + " offers it (" + why_not + ")");
        plan.steps.push_back(choose_step);
        return plan;
    }
    plan.controller = choice->controller;
    plan.guest_disk = "\\\\.\\PhysicalDrive0";
    std::string drivers;
    for (const std::string& s : choice->services)
        drivers += (drivers.empty() ? "" : ", ") + s;
    choose_step.description = "the " + profile.name + " machine gets a " + choice->controller +
                              " disk controller, driven by " + drivers +
                              (choice->driver_file ? " (copied from " + options.drivers_dir + ")"
                                                   : " (Windows has it)");
    if (!why_not.empty())
        choose_step.description += "; not better ones: " + why_not;
    plan.steps.push_back(choose_step);

    // copy-drivers
    if (choice->driver_file) {
        const std::string name = choice->services.front();
        FixupStep step{"copy-drivers",
                       "Windows does not ship " + name + ": its files are copied from " +
                           choice->driver_file->parent_path().string() +
                           ", its service made, and Plug and Play told where its .inf is",
                       {},
                       {}};
        const std::string root = g.system_root.size() > 3 ? g.system_root.substr(3) : "Windows";
        add_copy(vol, step, *choice->driver_file, root + "/System32/drivers/" + name + ".sys", true);
        for (const char* ext : {".inf", ".cat"})
            add_copy(vol, step, choice->driver_file->parent_path() / (name + ext),
                     root + "/Drivers/VirtIO/" + name + ext, false);
        const std::string key = set + "\\Services\\" + name;
        pl.make_key(step, "SYSTEM", key);
        pl.set(step, "SYSTEM", key, "Type", reg_dword_value(1));
        pl.set(step, "SYSTEM", key, "ErrorControl", reg_dword_value(1));
        pl.set(step, "SYSTEM", key, "ImagePath",
               reg_string("system32\\drivers\\" + name + ".sys", reg_expand_sz));
        add_device_path(pl, step);
        plan.steps.push_back(step);
    }

    // stage-drivers: Windows 8 and later, drivers of the profile's better
    // controllers that the user's directory has, put where Plug and Play
    // installs them from when it meets the device.
    if (!choice->driver_file && !options.drivers_dir.empty()) {
        const auto order = controller_order(profile.name, plan.firmware);
        const auto rank = [&](const std::string& name) {
            return std::find(order.begin(), order.end(), name) - order.begin();
        };
        for (const WindowsController& c : windows_controllers()) {
            if (c.shipped || c.drivers.size() != 1 || c.drivers.front().size() != 1 ||
                rank(c.controller) >= rank(choice->controller))
                continue;
            const std::string name = c.drivers.front().front();
            if (installed(pl, vol, g, name))
                continue;
            const auto found = find_driver(options.drivers_dir, name, g);
            if (!found)
                continue;
            FixupStep step{"stage-drivers",
                           name + " (" + c.controller + ") from " +
                               found->parent_path().string() +
                               " is staged in \\Windows\\Drivers\\VirtIO, on Plug and Play's "
                               "DevicePath: Windows installs it when it meets the device; "
                               "switch the machine to " + c.controller +
                               " after that boot",
                           {},
                           {}};
            const std::string root =
                g.system_root.size() > 3 ? g.system_root.substr(3) : "Windows";
            for (const char* ext : {".sys", ".inf", ".cat"})
                add_copy(vol, step, found->parent_path() / (name + ext),
                         root + "/Drivers/VirtIO/" + name + ext, std::string(ext) == ".sys");
            add_device_path(pl, step);
            plan.steps.push_back(step);
            break;
        }
    }

    // boot-driver
    {
        FixupStep step{"boot-driver",
                       "the disk controller's driver starts with the kernel (Start=0), or "
                       "Windows stops with INACCESSIBLE_BOOT_DEVICE (0x7B)",
                       {},
                       {}};
        for (const std::string& s : choice->services) {
            const std::string key = set + "\\Services\\" + pl.service(s).second;
            pl.set(step, "SYSTEM", key, "Start", reg_dword_value(0));
            const Hive::Node node = pl.system().key(key);
            const std::string group = node ? pl.system().string(node, "Group").value_or("") : "";
            if (!same(group, group_of(s)))
                pl.set(step, "SYSTEM", key, "Group", reg_string(group_of(s)));
        }
        plan.steps.push_back(step);
    }

    // critical-device-database
    if (before_8) {
        FixupStep step{"critical-device-database",
                       "Windows before 8 binds the boot disk's controller through "
                       "CriticalDeviceDatabase: the target's device ids point at its driver",
                       {},
                       {}};
        std::string ahci = "msahci", ide = "intelide";
        for (const std::string& s : choice->services) {
            if (same(s, "msahci") || same(s, "storahci"))
                ahci = s;
            if (same(s, "intelide") || same(s, "pciide"))
                ide = s;
        }
        for (const PciId& id : pci_ids(profile.name, choice->controller, ahci, ide)) {
            const std::string key = set + "\\Control\\CriticalDeviceDatabase\\" + id.key;
            pl.make_key(step, "SYSTEM", key);
            std::string service = id.service;
            for (const std::string& s : choice->services)
                if (same(s, service))
                    service = s;
            pl.set(step, "SYSTEM", key, "Service", reg_string(service));
            pl.set(step, "SYSTEM", key, "ClassGUID", reg_string(id.class_guid));
        }
        plan.steps.push_back(step);
    }

    // disable-services
    {
        std::vector<std::string> names;
        std::string hypervisor = profile.name == "vmware" ? "vmware" : "";
        if (options.vendor_agents) {
            names = *options.vendor_agents;
        } else {
            for (const KnownService& k : windows_hypervisor_tools())
                if (k.owner != hypervisor)
                    names.push_back(k.name);
            for (const KnownService& k : windows_vendor_agents())
                names.push_back(k.name);
        }
        FixupStep step{"disable-services",
                       options.vendor_agents
                           ? "the services asked for are disabled (Start=4)"
                           : "services of other hypervisors' tools and of the physical "
                             "hardware's vendor agents are disabled (Start=4): they fail or "
                             "misbehave on virtual hardware",
                       {},
                       {}};
        for (const std::string& n : names) {
            const auto [node, stored] = pl.service(n);
            if (node && pl.system().dword(node, "Start").value_or(3) != 4)
                pl.set(step, "SYSTEM", set + "\\Services\\" + stored, "Start", reg_dword_value(4));
        }
        plan.steps.push_back(step);
    }

    // mounted-devices
    {
        FixupStep step{"mounted-devices",
                       "drive letters tied to device paths of the old hardware (its CD drive, "
                       "USB disks, controller paths) are freed; letters of this disk's and "
                       "other disks' volumes stay, as the signatures and offsets stay",
                       {},
                       {}};
        const Hive::Node md = pl.system().key("MountedDevices");
        std::string system_letter;
        if (g.system_root.size() >= 2 && g.system_root[1] == ':')
            system_letter = std::string(1, static_cast<char>(std::toupper(
                                                static_cast<unsigned char>(g.system_root[0])))) +
                            ":";
        bool system_tied = false;
        for (const DriveLetter& d : g.drive_letters) {
            const std::string value = "\\DosDevices\\" + d.letter;
            if (d.target.rfind("device ", 0) == 0) {
                pl.set(step, "SYSTEM", "MountedDevices", value, std::nullopt);
            } else if (d.letter == system_letter &&
                       d.target == "partition " + std::to_string(g.system_partition)) {
                system_tied = true;
            }
        }
        if (!system_letter.empty() && !system_tied) {
            if (const auto id = volume_id(inv, g.system_partition)) {
                if (!md)
                    pl.make_key(step, "SYSTEM", "MountedDevices");
                pl.set(step, "SYSTEM", "MountedDevices", "\\DosDevices\\" + system_letter, *id);
            }
        }
        plan.steps.push_back(step);
    }

    // crash-control
    {
        FixupStep step{"crash-control",
                       "a stop error stays on the screen (AutoReboot=0) instead of a reboot "
                       "loop, so a failed first boot can be read",
                       {},
                       {}};
        const std::string key = set + "\\Control\\CrashControl";
        pl.make_key(step, "SYSTEM", key);
        pl.set(step, "SYSTEM", key, "AutoReboot", reg_dword_value(0));
        plan.steps.push_back(step);
    }
    return plan;
}

namespace {

std::string read_host_file(const std::string& path, uint64_t expected) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw Error("cannot open " + path + ": " + errno_text(errno));
    std::ostringstream s;
    s << in.rdbuf();
    std::string out = s.str();
    if (out.size() != expected)
        throw InvalidState(path + " is " + std::to_string(out.size()) + " bytes, not the " +
                           std::to_string(expected) + " of the plan: plan again");
    return out;
}

// "\Windows\System32\drivers\x.sys" -> "Windows/System32/drivers/x.sys"
std::string ntfs_path(const std::string& shown) {
    std::string p = shown.substr(shown.rfind('\\', 0) == 0 ? 1 : 0);
    std::replace(p.begin(), p.end(), '\\', '/');
    return p;
}

} // namespace

void apply_windows_fixups(const DevicePtr& disk, const Inventory& inv, const FixupPlan& plan) {
    if (!plan.refusals.empty())
        throw InvalidState("fixups cannot be applied: " + plan.refusals.front());
    if (!inv.windows_guest)
        throw InvalidState("fixups cannot be applied: no Windows installation was read");
    const WindowsGuest& g = *inv.windows_guest;
    const Volume* sys = volume_of(inv, g.system_partition);
    if (!sys)
        throw Error("partition " + std::to_string(g.system_partition) + " vanished", ENOENT);
    const std::string where = "partition " + std::to_string(g.system_partition);

    // Every hive is edited in memory, each edit checked against what the
    // plan saw, on the volume opened read-only: a refused or failed edit
    // leaves the disk exactly as it was. Only then is it opened for writing.
    NtfsVolume vol(disk, sys->offset, sys->length, where);
    std::map<std::string, std::unique_ptr<Hive>> hives;
    const auto hive = [&](const std::string& name) -> Hive& {
        auto& h = hives[name];
        if (!h) {
            const std::string path = name == "SYSTEM" ? windows_system_hive : windows_software_hive;
            h = std::make_unique<Hive>(vol.read_file(path, Hive::size_limit),
                                       windows_path(path) + " on " + vol.where(), true);
        }
        return *h;
    };
    std::vector<std::pair<std::string, std::string>> files; // NTFS path, bytes
    for (const FixupStep& step : plan.steps) {
        for (const FileEdit& e : step.edits) {
            if (e.kind != "copy" || !e.after)
                throw InvalidState("fixup step " + step.name + ": a Windows guest takes only "
                                   "copied files, not a " + e.kind + " edit of " + e.path);
            files.push_back({ntfs_path(e.path), read_host_file(*e.after, e.size)});
        }
        for (const RegistryEdit& e : step.registry) {
            Hive& h = hive(e.hive);
            const std::string key = "HKLM\\" + e.hive + "\\" + e.key;
            const auto changed = [&] {
                return InvalidState(key + (e.value ? " value " + *e.value : std::string()) +
                                    " changed since the plan was made (step " + step.name +
                                    "); plan again");
            };
            if (!e.value) { // a key made
                if (h.key(e.key))
                    throw changed();
                h.add_key(e.key);
                continue;
            }
            const Hive::Node node = h.key(e.key);
            if (!node && e.before)
                throw changed();
            if (node && h.value(node, *e.value) != e.before)
                throw changed();
            if (!node)
                throw InvalidState(key + " does not exist, and the plan does not make it");
            try {
                if (e.after)
                    h.set_value(node, *e.value, *e.after);
                else
                    h.delete_value(node, *e.value);
            } catch (const Error& err) {
                throw Error("fixup step " + step.name + ": " + err.what(), err.error_number());
            }
        }
    }
    for (auto& [name, h] : hives)
        files.push_back({name == "SYSTEM" ? windows_system_hive : windows_software_hive,
                         h->commit()});
    vol.close();

    NtfsVolume out(disk, sys->offset, sys->length, where, true);
    for (const auto& [path, bytes] : files) {
        out.write_file(path, bytes);
        spdlog::debug("fixups: wrote {} ({} bytes) on {}", windows_path(path), bytes.size(),
                      out.where());
    }
    out.close();
    disk->flush();
}

} // namespace p2vfs::guest
