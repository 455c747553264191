#include "guest/fixups.h"

#include "common/error.h"
#include "guest/profiles.h"

#include <algorithm>
#include <map>
#include <set>
#include <spdlog/spdlog.h>
#include <sstream>

namespace p2vfs::guest {

using json = nlohmann::json;

namespace {

constexpr const char* firstboot_script = "/usr/local/sbin/p2vfs-firstboot";
constexpr const char* firstboot_unit = "/etc/systemd/system/p2vfs-firstboot.service";
constexpr const char* firstboot_wants =
    "/etc/systemd/system/multi-user.target.wants/p2vfs-firstboot.service";

// Rebuilds the initramfs once, on the first boot on the target, with the
// drivers of the hardware it now runs on. The marker file makes the unit a
// no-op afterwards even if the symlink that enables it is restored.
const std::string firstboot_script_text =
    "#!/bin/sh\n"
    "# Rebuilds the initramfs once, on the first boot on virtual hardware, so\n"
    "# that it holds the drivers of the disk controller the machine has now.\n"
    "# Written by p2vfs fixups; removes nothing, runs once.\n"
    "set -e\n"
    "if command -v update-initramfs >/dev/null 2>&1; then\n"
    "    update-initramfs -u -k all\n"
    "elif command -v dracut >/dev/null 2>&1; then\n"
    "    dracut -f --regenerate-all\n"
    "fi\n"
    "mkdir -p /var/lib/p2vfs\n"
    "touch /var/lib/p2vfs/firstboot-done\n";

const std::string firstboot_unit_text =
    "[Unit]\n"
    "Description=Rebuild the initramfs for the virtual hardware (p2vfs first boot)\n"
    "ConditionPathExists=!/var/lib/p2vfs/firstboot-done\n"
    "After=local-fs.target\n"
    "\n"
    "[Service]\n"
    "Type=oneshot\n"
    "ExecStart=/usr/local/sbin/p2vfs-firstboot\n"
    "\n"
    "[Install]\n"
    "WantedBy=multi-user.target\n";

std::vector<std::string> split_lines(const std::string& text) {
    std::vector<std::string> out;
    size_t i = 0;
    while (i < text.size()) {
        const size_t j = text.find('\n', i);
        if (j == std::string::npos) {
            out.push_back(text.substr(i));
            break;
        }
        out.push_back(text.substr(i, j - i));
        i = j + 1;
    }
    return out;
}

std::string join_lines(const std::vector<std::string>& lines, bool final_newline) {
    std::string out;
    for (size_t i = 0; i < lines.size(); ++i) {
        out += lines[i];
        if (i + 1 < lines.size() || final_newline)
            out += '\n';
    }
    return out;
}

bool ends_with_newline(const std::string& s) {
    return !s.empty() && s.back() == '\n';
}

bool starts_with(const std::string& s, const std::string& p) {
    return s.compare(0, p.size(), p) == 0;
}

// Controller device name -> "UUID=..." of the volume it names (when that has one).
class Renamer {
public:
    explicit Renamer(const Inventory& inv) : inv_(inv) {}

    std::optional<std::string> replacement(const std::string& device) const {
        if (!partition_of_device_name(device))
            return std::nullopt;
        const Volume* v = volume_for_spec(inv_, device);
        if (!v || !v->fs || v->fs->uuid.empty())
            return std::nullopt;
        return "UUID=" + v->fs->uuid;
    }

    // root=/dev/X and resume=/dev/X anywhere in `line` (the value ends at
    // white space or a quote, as in GRUB_CMDLINE_LINUX="... resume=/dev/X").
    std::string rewrite_args(const std::string& line, std::vector<std::string>* unresolved) const {
        std::string out;
        size_t i = 0;
        while (i < line.size()) {
            bool matched = false;
            for (const std::string key : {"root=", "resume="}) {
                const bool boundary = i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t' ||
                                      line[i - 1] == '"' || line[i - 1] == '\'';
                if (!boundary || line.compare(i, key.size(), key) != 0)
                    continue;
                size_t end = i + key.size();
                while (end < line.size() && line[end] != ' ' && line[end] != '\t' &&
                       line[end] != '"' && line[end] != '\'')
                    ++end;
                const std::string value = line.substr(i + key.size(), end - i - key.size());
                if (const auto r = replacement(value)) {
                    out += key + *r;
                    i = end;
                    matched = true;
                } else if (partition_of_device_name(value) && unresolved) {
                    unresolved->push_back(key + value);
                }
                break;
            }
            if (!matched)
                out += line[i++];
        }
        return out;
    }

private:
    const Inventory& inv_;
};

void add_edit(FixupStep& step, std::string path, const std::optional<std::string>& before,
              std::optional<std::string> after, uint32_t mode = 0644) {
    if (before == after)
        return;
    step.edits.push_back({std::move(path), "file", before, std::move(after), mode});
}

FixupStep fstab_step(GuestTree& tree, const Renamer& names, std::vector<std::string>& notes) {
    FixupStep step{"fstab-by-uuid",
                   "/etc/fstab entries that name a disk by its physical controller path are "
                   "rewritten to the file system's UUID, which stays the same on any controller",
                   {}, {}};
    const auto before = tree.read_if_exists("/etc/fstab");
    if (!before)
        return step;
    std::vector<std::string> out;
    for (const std::string& line : split_lines(*before)) {
        size_t a = line.find_first_not_of(" \t");
        if (a == std::string::npos || line[a] == '#') {
            out.push_back(line);
            continue;
        }
        size_t b = line.find_first_of(" \t", a);
        if (b == std::string::npos)
            b = line.size();
        const std::string spec = line.substr(a, b - a);
        if (const auto r = names.replacement(spec)) {
            out.push_back("# p2vfs: was " + spec);
            out.push_back(line.substr(0, a) + *r + line.substr(b));
        } else {
            if (partition_of_device_name(spec))
                notes.push_back("/etc/fstab names " + spec +
                                ", whose volume has no UUID to name it by; left as it is");
            out.push_back(line);
        }
    }
    add_edit(step, "/etc/fstab", before, join_lines(out, ends_with_newline(*before)));
    return step;
}

FixupStep bootloader_step(GuestTree& tree, const Inventory& inv, const Renamer& names,
                          std::vector<std::string>& notes) {
    FixupStep step{"bootloader-by-uuid",
                   "root= and resume= of the boot entries name the file systems by UUID; "
                   "/etc/default/grub no longer forces device names, so the guest's own "
                   "grub-mkconfig keeps doing the same",
                   {}, {}};
    const LinuxGuest& g = *inv.linux_guest;
    std::vector<std::string> unresolved;
    auto rewrite_file = [&](const std::string& path) {
        const auto before = tree.read_if_exists(path, 8 << 20);
        if (!before)
            return;
        std::vector<std::string> out;
        for (const std::string& line : split_lines(*before))
            out.push_back(names.rewrite_args(line, &unresolved));
        add_edit(step, path, before, join_lines(out, ends_with_newline(*before)));
    };
    if (!g.bootloader.config.empty())
        rewrite_file(g.bootloader.config);
    if (const auto before = tree.read_if_exists("/etc/default/grub")) {
        std::vector<std::string> out;
        for (const std::string& line : split_lines(*before)) {
            const std::string t = line.substr(std::min(line.find_first_not_of(" \t"), line.size()));
            if (starts_with(t, "GRUB_DISABLE_LINUX_UUID=true") ||
                starts_with(t, "GRUB_DISABLE_LINUX_UUID=\"true\"") || starts_with(t, "GRUB_DEVICE=")) {
                out.push_back("# p2vfs: device names differ on the target; UUIDs do not");
                out.push_back("#" + line);
                continue;
            }
            out.push_back(names.rewrite_args(line, &unresolved));
        }
        add_edit(step, "/etc/default/grub", before, join_lines(out, ends_with_newline(*before)));
    }
    for (const std::string& u : unresolved)
        notes.push_back("the boot configuration's " + u + " names a volume without a UUID; left as it is");
    return step;
}

FixupStep resume_step(GuestTree& tree, const Renamer& names) {
    FixupStep step{"resume-by-uuid",
                   "the initramfs' resume device (RESUME=) names the swap volume by UUID", {}, {}};
    for (const std::string path : {"/etc/initramfs-tools/conf.d/resume", "/etc/uswsusp.conf"}) {
        const auto before = tree.read_if_exists(path);
        if (!before)
            continue;
        std::vector<std::string> out;
        for (const std::string& line : split_lines(*before)) {
            const auto eq = line.find('=');
            const std::string key = eq == std::string::npos ? "" : line.substr(0, eq);
            if (key == "RESUME" || key == "resume device") {
                std::string value = line.substr(eq + 1);
                const size_t a = value.find_first_not_of(" \t\"");
                const size_t b = value.find_last_not_of(" \t\"");
                if (a != std::string::npos) {
                    if (const auto r = names.replacement(value.substr(a, b - a + 1))) {
                        out.push_back(key + "=" + *r);
                        continue;
                    }
                }
            }
            out.push_back(line);
        }
        add_edit(step, path, before, join_lines(out, ends_with_newline(*before)));
    }
    return step;
}

FixupStep net_rules_step(GuestTree& tree, const LinuxGuest& g) {
    FixupStep step{"remove-persistent-net-rules",
                   "udev rules that give network interfaces names by the physical machine's MAC "
                   "addresses are removed, so the virtual adapters get their names afresh",
                   {}, {}};
    for (const std::string& path : g.persistent_net_rules)
        add_edit(step, path, tree.read_if_exists(path), std::nullopt);
    return step;
}

FixupStep agents_step(GuestTree& tree, const FixupOptions& options) {
    FixupStep step{"disable-vendor-agents",
                   "services of hardware vendors' agents, which expect the physical machine's "
                   "management hardware, are disabled (their enabling links removed)",
                   {},
                   {}};
    const std::vector<std::string> agents =
        options.vendor_agents.value_or(InspectOptions::default_vendor_agents());
    for (const std::string& wants : tree.list("/etc/systemd/system")) {
        if (wants.size() < 6 || wants.compare(wants.size() - 6, 6, ".wants") != 0)
            continue;
        const std::string dir = "/etc/systemd/system/" + wants;
        for (const std::string& unit : tree.list(dir))
            for (const std::string& a : agents)
                if (unit == a + ".service") {
                    const std::string path = dir + "/" + unit;
                    auto [fs, inner] = tree.locate(path);
                    const auto st = fs->stat(inner, false);
                    if (st && st->is_link())
                        step.edits.push_back({path, "symlink", fs->read_link(inner), std::nullopt, 0});
                }
    }
    for (const std::string rc : {"/etc/rc2.d", "/etc/rc3.d", "/etc/rc4.d", "/etc/rc5.d"})
        for (const std::string& link : tree.list(rc))
            for (const std::string& a : agents)
                if (link.size() > 3 && link[0] == 'S' && link.substr(3) == a) {
                    const std::string path = rc + "/" + link;
                    auto [fs, inner] = tree.locate(path);
                    const auto st = fs->stat(inner, false);
                    if (st && st->is_link())
                        step.edits.push_back({path, "symlink", fs->read_link(inner), std::nullopt, 0});
                }
    return step;
}

FixupStep drivers_step(GuestTree& tree, const LinuxGuest& g, const Controller& c) {
    FixupStep step{"initramfs-drivers",
                   "the modules of the " + c.name + " controller are added to those the "
                   "initramfs tool always includes, so every later rebuild keeps them",
                   {}, {}};
    if (g.initramfs_tool == "dracut") {
        std::string text = "# Drivers of the target's disk controller (" + c.name +
                           "), added by p2vfs fixups.\nadd_drivers+=\" ";
        for (const std::string& m : c.modules)
            text += m + " ";
        text += "\"\n";
        const std::string path = "/etc/dracut.conf.d/p2vfs.conf";
        add_edit(step, path, tree.read_if_exists(path), text);
        return step;
    }
    const std::string path = "/etc/initramfs-tools/modules";
    const auto before = tree.read_if_exists(path);
    std::set<std::string> present;
    for (const std::string& line : split_lines(before.value_or(""))) {
        const size_t a = line.find_first_not_of(" \t");
        if (a == std::string::npos || line[a] == '#')
            continue;
        present.insert(line.substr(a, line.find_first_of(" \t", a) - a));
    }
    std::string after = before.value_or("# List of modules to include in the initramfs.\n");
    if (!after.empty() && after.back() != '\n')
        after += '\n';
    bool added = false;
    for (const std::string& m : c.modules) {
        if (present.count(m))
            continue;
        if (!added)
            after += "# Drivers of the target's disk controller (" + c.name + "), added by p2vfs fixups.\n";
        after += m + "\n";
        added = true;
    }
    if (added)
        add_edit(step, path, before, after);
    return step;
}

FixupStep firstboot_step(GuestTree& tree) {
    FixupStep step{"firstboot-initramfs",
                   "a oneshot unit rebuilds the initramfs on the first boot on the target, with "
                   "the drivers of the hardware found there",
                   {}, {}};
    add_edit(step, firstboot_script, tree.read_if_exists(firstboot_script), firstboot_script_text, 0755);
    add_edit(step, firstboot_unit, tree.read_if_exists(firstboot_unit), firstboot_unit_text);
    auto [fs, inner] = tree.locate(firstboot_wants);
    const auto st = fs->stat(inner, false);
    std::optional<std::string> before;
    if (st && st->is_link())
        before = fs->read_link(inner);
    if (before != std::optional<std::string>(firstboot_unit))
        step.edits.push_back({firstboot_wants, "symlink", before, std::string(firstboot_unit), 0});
    return step;
}

std::string os_variant_of(const LinuxGuest& g) {
    std::string v = g.distribution + g.version;
    v.erase(std::remove(v.begin(), v.end(), '.'), v.end());
    return g.distribution == "debian" || g.distribution == "ubuntu" ? g.distribution + g.version : v;
}

} // namespace

bool FixupPlan::empty() const {
    for (const FixupStep& s : steps)
        if (!s.edits.empty() || !s.registry.empty())
            return false;
    return true;
}

FixupPlan plan_fixups(const DevicePtr& disk, const Inventory& inv, const FixupOptions& options) {
    const Profile& profile = guest::profile(options.profile);
    FixupPlan plan;
    plan.profile = profile.name;
    plan.disk_format = profile.disk_format;
    plan.firmware = inv.firmware;
    if (inv.os == "windows")
        return plan_windows_fixups(disk, inv, options);
    if (!inv.linux_guest) {
        std::string why = "no Linux system was found on the disk";
        for (const Finding& f : inv.findings)
            if (f.id == "unsupported-filesystem" || f.id == "partition-table-unreadable")
                why += "; " + f.message;
        plan.refusals.push_back(why);
        return plan;
    }
    const LinuxGuest& g = *inv.linux_guest;
    plan.os_variant = os_variant_of(g);
    for (const Finding& f : inv.findings)
        if (f.id == "journal-needs-recovery" || f.id == "hibernated" || f.id == "bitlocker")
            plan.refusals.push_back(f.message);

    FixupStep choose{"choose-controller", "", {}, {}};
    const Controller* controller = nullptr;
    if (g.kernels.empty() || g.kernels.front().initramfs.empty()) {
        plan.refusals.push_back("no kernel with an initramfs in /boot: the controller the "
                                "target boots from cannot be chosen");
    } else {
        const Kernel& k = g.kernels.front();
        std::vector<std::string> available = k.initramfs_contents.modules;
        available.insert(available.end(), k.initramfs_contents.builtin.begin(),
                         k.initramfs_contents.builtin.end());
        controller = choose_controller(profile, available);
        if (!controller) {
            plan.refusals.push_back("the initramfs of kernel " + k.version +
                                    " has a driver for none of the disk controllers " +
                                    profile.name + " offers");
        } else {
            plan.controller = controller->name;
            plan.guest_disk = controller->guest_disk;
            std::string mods;
            for (const std::string& m : controller->modules)
                mods += (mods.empty() ? "" : ", ") + m;
            choose.description = "the " + profile.name + " machine gets a " + controller->name +
                                 " disk controller: its drivers (" + mods +
                                 ") are in the initramfs of kernel " + k.version;
        }
    }
    plan.steps.push_back(choose);

    GuestTree tree(disk, inv, false);
    const Renamer names(inv);
    std::vector<std::string> notes;
    plan.steps.push_back(fstab_step(tree, names, notes));
    plan.steps.push_back(bootloader_step(tree, inv, names, notes));
    plan.steps.push_back(resume_step(tree, names));
    plan.steps.push_back(net_rules_step(tree, g));
    plan.steps.push_back(agents_step(tree, options));
    if (controller)
        plan.steps.push_back(drivers_step(tree, g, *controller));
    if (options.firstboot_initramfs) {
        if (g.init_system == "systemd")
            plan.steps.push_back(firstboot_step(tree));
        else
            notes.push_back("the guest does not boot with systemd; no firstboot rebuild of the "
                            "initramfs is installed");
    }
    for (const std::string& n : notes)
        plan.steps.front().description += (plan.steps.front().description.empty() ? "" : "; ") + n;
    return plan;
}

void apply_fixups(const DevicePtr& disk, const Inventory& inv, const FixupPlan& plan) {
    if (!plan.refusals.empty())
        throw InvalidState("fixups cannot be applied: " + plan.refusals.front());
    if (plan.os == "windows")
        return apply_windows_fixups(disk, inv, plan);
    GuestTree tree(disk, inv, true);
    // Everything is checked before anything is written.
    for (const FixupStep& step : plan.steps)
        for (const FileEdit& e : step.edits) {
            auto [fs, inner] = tree.locate(e.path);
            std::optional<std::string> now;
            if (e.kind == "symlink") {
                const auto st = fs->stat(inner, false);
                if (st && st->is_link())
                    now = fs->read_link(inner);
                else if (st)
                    now = "(not a symbolic link)";
            } else {
                now = fs->read_file_if_exists(inner, 8 << 20);
            }
            if (now != e.before)
                throw InvalidState(e.path + " changed since the plan was made (step " + step.name +
                                   "); plan again");
        }
    for (const FixupStep& step : plan.steps)
        for (const FileEdit& e : step.edits) {
            auto [fs, inner] = tree.locate(e.path);
            try {
                if (!e.after) {
                    fs->remove(inner);
                } else {
                    const auto slash = inner.rfind('/');
                    if (slash != std::string::npos && slash > 0)
                        fs->make_directories(inner.substr(0, slash));
                    if (e.kind == "symlink")
                        fs->symlink(inner, *e.after);
                    else
                        fs->write_file(inner, *e.after, e.mode);
                }
            } catch (const Error& err) {
                throw Error("fixup step " + step.name + ", " + e.path + ": " + err.what(),
                            err.error_number());
            }
            spdlog::debug("fixups: {} {}", e.after ? "wrote" : "removed", e.path);
        }
    tree.close();
    disk->flush();
}

json to_json(const FixupPlan& plan) {
    json steps = json::array();
    for (const FixupStep& s : plan.steps) {
        json edits = json::array();
        for (const FileEdit& e : s.edits) {
            json edit = {{"path", e.path},
                         {"kind", e.kind},
                         {"before", e.before ? json(*e.before) : json(nullptr)},
                         {"after", e.after ? json(*e.after) : json(nullptr)}};
            if (e.kind == "copy")
                edit["size"] = e.size;
            edits.push_back(edit);
        }
        json registry = json::array();
        for (const RegistryEdit& r : s.registry) {
            const auto text = [&](const std::optional<RegValue>& v, bool readable) {
                if (!r.value)
                    return v ? json("(key)") : json(nullptr);
                return v ? json(readable ? reg_readable(*v) : reg_export_text(*v)) : json(nullptr);
            };
            const RegValue* any = r.after ? &*r.after : r.before ? &*r.before : nullptr;
            registry.push_back({{"hive", r.hive},
                                {"key", r.key},
                                {"value", r.value ? json(*r.value) : json(nullptr)},
                                {"type", r.value && any ? json(reg_type_name(any->type)) : json(nullptr)},
                                {"before", text(r.before, false)},
                                {"after", text(r.after, false)},
                                {"before_text", text(r.before, true)},
                                {"after_text", text(r.after, true)}});
        }
        steps.push_back({{"name", s.name},
                         {"description", s.description},
                         {"edits", edits},
                         {"registry", registry}});
    }
    return {{"profile", plan.profile},       {"controller", plan.controller},
            {"guest_disk", plan.guest_disk}, {"disk_format", plan.disk_format},
            {"firmware", plan.firmware},     {"os", plan.os},
            {"os_variant", plan.os_variant}, {"steps", steps},
            {"refusals", plan.refusals}};
}

namespace {
// Changed lines: the common head and tail kept out; in between, lines both
// versions keep (a longest common subsequence) are shown as context (" "),
// the others as removed ("-") and added ("+"). Fixups touch short files; a
// middle too large for the table is shown as all removed, then all added.
void diff_lines(std::ostringstream& o, const std::string& before, const std::string& after) {
    const auto a = split_lines(before), b = split_lines(after);
    size_t head = 0;
    while (head < a.size() && head < b.size() && a[head] == b[head])
        ++head;
    size_t tail = 0;
    while (tail < a.size() - head && tail < b.size() - head &&
           a[a.size() - 1 - tail] == b[b.size() - 1 - tail])
        ++tail;
    o << "@@ line " << head + 1 << " @@\n";
    const size_t n = a.size() - head - tail, m = b.size() - head - tail;
    if (n * m > (1u << 22)) {
        for (size_t i = 0; i < n; ++i)
            o << "-" << a[head + i] << "\n";
        for (size_t j = 0; j < m; ++j)
            o << "+" << b[head + j] << "\n";
        return;
    }
    // lcs[i][j]: length of the common subsequence of a's middle from i and b's from j.
    std::vector<std::vector<uint32_t>> lcs(n + 1, std::vector<uint32_t>(m + 1, 0));
    for (size_t i = n; i-- > 0;)
        for (size_t j = m; j-- > 0;)
            lcs[i][j] = a[head + i] == b[head + j] ? lcs[i + 1][j + 1] + 1
                                                   : std::max(lcs[i + 1][j], lcs[i][j + 1]);
    size_t i = 0, j = 0;
    while (i < n || j < m) {
        if (i < n && j < m && a[head + i] == b[head + j]) {
            o << " " << a[head + i] << "\n";
            ++i;
            ++j;
        } else if (j == m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1])) {
            o << "-" << a[head + i++] << "\n";
        } else {
            o << "+" << b[head + j++] << "\n";
        }
    }
}
} // namespace

std::string preview_text(const FixupPlan& plan) {
    std::ostringstream o;
    o << "Fixups for " << plan.profile;
    if (!plan.controller.empty())
        o << " (disk controller " << plan.controller << ", the guest's disk " << plan.guest_disk << ")";
    o << "\n";
    for (const std::string& r : plan.refusals)
        o << "REFUSED: " << r << "\n";
    for (const FixupStep& s : plan.steps) {
        o << "\n== " << s.name << ": " << s.description << "\n";
        if (s.edits.empty() && s.registry.empty())
            o << "   (nothing to change)\n";
        for (const RegistryEdit& r : s.registry) {
            const std::string key = "HKLM\\" + r.hive + "\\" + r.key;
            if (!r.value) {
                o << "+ key " << key << "\n";
                continue;
            }
            const std::string name = r.value->empty() ? "(default)" : *r.value;
            if (!r.before)
                o << "+ " << key << "  " << name << " = " << reg_readable(*r.after) << "\n";
            else if (!r.after)
                o << "- " << key << "  " << name << " (was " << reg_readable(*r.before) << ")\n";
            else
                o << "~ " << key << "  " << name << ": " << reg_readable(*r.before) << " -> "
                  << reg_readable(*r.after) << "\n";
        }
        for (const FileEdit& e : s.edits) {
            if (e.kind == "copy") {
                o << "copy " << *e.after << " -> " << e.path << " (" << e.size << " bytes"
                  << (e.before ? ", replacing " + *e.before : std::string()) << ")\n";
                continue;
            }
            if (e.kind == "symlink") {
                o << (e.after ? "link " : "remove link ") << e.path;
                if (e.before)
                    o << " (was -> " << *e.before << ")";
                if (e.after)
                    o << " -> " << *e.after;
                o << "\n";
                continue;
            }
            o << "--- " << e.path << (e.before ? "" : " (absent)") << "\n";
            o << "+++ " << e.path << (e.after ? "" : " (removed)") << "\n";
            diff_lines(o, e.before.value_or(""), e.after.value_or(""));
        }
    }
    return o.str();
}

} // namespace p2vfs::guest
