#include "guest/windows.h"

#include "common/error.h"
#include "guest/fat_fs.h"
#include "guest/ntfs.h"
#include "guest/registry.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <memory>
#include <optional>
#include <spdlog/spdlog.h>
#include <string>
#include <strings.h>
#include <vector>

namespace p2vfs::guest {

const std::vector<KnownService>& windows_hypervisor_tools() {
    static const std::vector<KnownService> list{
        {"VMTools", "vmware"},
        {"VGAuthService", "vmware"},
        {"vm3dservice", "vmware"},
        {"vmvss", "vmware"},
        {"VMwareCAFCommAmqpListener", "vmware"},
        {"VMwareCAFManagementAgentHost", "vmware"},
        {"VMUSBArbService", "vmware"},
        {"VBoxService", "virtualbox"},
        {"XenSvc", "xen"},
        {"xenagent", "xen"},
        {"xensvc", "xen"},
        {"prl_tools", "parallels"},
        {"prl_tools_service", "parallels"},
    };
    return list;
}

const std::vector<KnownService>& windows_vendor_agents() {
    static const std::vector<KnownService> list{
        // HPE Insight Management Agents, System Management Homepage,
        // Agentless Management Service.
        {"CqMgHost", "hp"},
        {"CqMgServ", "hp"},
        {"CqMgStor", "hp"},
        {"CpqNicMgmt", "hp"},
        {"SysMgmtHp", "hp"},
        {"hpqams", "hp"},
        {"HPWMISTOR", "hp"},
        // Dell OpenManage Server Administrator, iDRAC Service Module.
        {"dsm_om_connsvc", "dell"},
        {"dsm_om_shrsvc", "dell"},
        {"dsm_sa_datamgrsvc", "dell"},
        {"dsm_sa_eventmgr", "dell"},
        {"dsm_sa_snmpsvc", "dell"},
        {"iSM", "dell"},
        // Lenovo / IBM
        {"IBMPMSVC", "lenovo"},
        {"LXCA_Agent", "lenovo"},
    };
    return list;
}

std::string driver_file_path(const std::string& image_path, const std::string& service,
                             const std::string& system_root) {
    std::string p = image_path;
    std::replace(p.begin(), p.end(), '\\', '/');
    const auto starts = [&](const std::string& prefix) {
        return p.size() >= prefix.size() && strncasecmp(p.c_str(), prefix.c_str(), prefix.size()) == 0;
    };
    if (p.empty())
        return system_root + "/System32/drivers/" + service + ".sys";
    if (starts("/SystemRoot/"))
        return system_root + "/" + p.substr(12);
    if (starts("%SystemRoot%/"))
        return system_root + "/" + p.substr(13);
    if (starts("/?\?/C:/"))
        return p.substr(7);
    if (starts("C:/"))
        return p.substr(3);
    if (p.front() == '/' || (p.size() > 1 && p[1] == ':'))
        return ""; // another drive, or an NT path we do not follow
    return system_root + "/" + p; // "system32/DRIVERS/x.sys" is relative to the system root
}

namespace {

constexpr uint64_t hive_read_limit = Hive::size_limit;

std::string volume_name(const Volume& v) {
    return v.partition ? "partition " + std::to_string(v.partition) : "the whole disk";
}

void add(Inventory& inv, std::string id, std::string severity, std::string message) {
    inv.findings.push_back({std::move(id), std::move(severity), std::move(message)});
}

std::string lower(std::string s) {
    for (char& c : s)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

// The hive at `path` of `vol`, read whole into memory. Throws Error naming
// the hive and the volume.
std::unique_ptr<Hive> open_hive(NtfsVolume& vol, const std::string& path) {
    const auto st = vol.stat(path);
    if (!st || st->directory)
        throw Error(vol.where() + ": " + windows_path(path) + " is missing", ENOENT);
    const std::string name = windows_path(path) + " on " + vol.where();
    if (st->size > hive_read_limit)
        throw Error(name + " is " + human_size(st->size) + ", more than the " +
                        human_size(hive_read_limit) + " a registry hive is read up to",
                    EFBIG);
    return std::make_unique<Hive>(vol.read_file(path, hive_read_limit), name);
}

// "C:\Windows" -> "Windows"; "Windows" when the value is missing or odd.
std::string system_root_dir(const std::string& system_root) {
    std::string r = system_root;
    if (r.size() >= 2 && r[1] == ':')
        r = r.substr(2);
    while (!r.empty() && (r.front() == '\\' || r.front() == '/'))
        r.erase(r.begin());
    std::replace(r.begin(), r.end(), '\\', '/');
    return r.empty() ? "Windows" : r;
}

void read_software(NtfsVolume& vol, WindowsGuest& g, Inventory& inv) {
    auto hive = open_hive(vol, windows_software_hive);
    const std::string key_path = "Microsoft\\Windows NT\\CurrentVersion";
    const Hive::Node cv = hive->key(key_path);
    if (!cv) {
        add(inv, "windows-unreadable", "warning",
            hive->name() + " has no key " + key_path + ": the Windows version is unknown");
        return;
    }
    g.product_name = hive->string(cv, "ProductName").value_or("");
    g.edition_id = hive->string(cv, "EditionID").value_or("");
    g.installation_type = hive->string(cv, "InstallationType").value_or("");
    g.current_version = hive->string(cv, "CurrentVersion").value_or("");
    // Windows XP keeps an obsolete text in CurrentBuild; later versions have
    // the number in both.
    g.current_build = hive->string(cv, "CurrentBuildNumber").value_or("");
    if (g.current_build.empty())
        g.current_build = hive->string(cv, "CurrentBuild").value_or("");
    g.display_version = hive->string(cv, "DisplayVersion").value_or("");
    g.system_root = hive->string(cv, "SystemRoot").value_or("");
    const auto major = hive->dword(cv, "CurrentMajorVersionNumber");
    const auto minor = hive->dword(cv, "CurrentMinorVersionNumber");
    g.version = major ? std::to_string(*major) + "." + std::to_string(minor.value_or(0))
                      : g.current_version;
}

// What SYSTEM says of a service under `services`.
WindowsService service_of(Hive& hive, Hive::Node node, NtfsVolume& vol,
                          const std::string& root_dir, bool with_file) {
    WindowsService sv;
    sv.name = hive.key_name(node);
    sv.start = hive.dword(node, "Start").value_or(3);
    sv.group = hive.string(node, "Group").value_or("");
    if (with_file) {
        const std::string file =
            driver_file_path(hive.string(node, "ImagePath").value_or(""), sv.name, root_dir);
        if (!file.empty()) {
            const auto st = vol.stat(file);
            sv.file = st && !st->directory;
        }
    }
    return sv;
}

bool is_storage_group(const std::string& group) {
    const std::string g = lower(group);
    return g == "scsi miniport" || g == "system bus extender";
}

// Disk controller drivers Windows or their vendors ship whose Group is not
// one of the storage groups on some versions.
bool is_storage_driver_name(const std::string& name) {
    static const char* names[] = {"storahci", "msahci",  "stornvme", "iastorv", "iastoravc",
                                  "iastora",  "viostor", "vioscsi",  "pvscsi",  "storvsc",
                                  "lsi_sas",  "lsi_sas2", "lsi_sas3", "lsi_scsi", "megasas",
                                  "intelide", "pciide",  "atapi",    "msahci"};
    const std::string n = lower(name);
    return std::any_of(std::begin(names), std::end(names), [&](const char* k) { return n == k; });
}

void read_services(Hive& hive, Hive::Node set, NtfsVolume& vol, WindowsGuest& g) {
    const Hive::Node services = hive.key(g.control_set + "\\Services");
    if (!services)
        return;
    (void)set;
    const std::string root_dir = system_root_dir(g.system_root);
    for (const Hive::Node node : hive.subkeys(services)) {
        const std::string name = hive.key_name(node);
        const std::string n = lower(name);
        for (const KnownService& k : windows_hypervisor_tools())
            if (n == lower(k.name))
                g.hypervisor_tools.push_back(service_of(hive, node, vol, root_dir, false));
        for (const KnownService& k : windows_vendor_agents())
            if (n == lower(k.name))
                g.vendor_agents.push_back(service_of(hive, node, vol, root_dir, false));
        if (hive.dword(node, "Type").value_or(0) != 1) // a kernel driver
            continue;
        if (is_storage_driver_name(name) || is_storage_group(hive.string(node, "Group").value_or("")))
            g.storage_drivers.push_back(service_of(hive, node, vol, root_dir, true));
    }
    const auto by_name = [](const WindowsService& a, const WindowsService& b) {
        return lower(a.name) < lower(b.name);
    };
    std::sort(g.storage_drivers.begin(), g.storage_drivers.end(), by_name);
    std::sort(g.hypervisor_tools.begin(), g.hypervisor_tools.end(), by_name);
    std::sort(g.vendor_agents.begin(), g.vendor_agents.end(), by_name);
}

uint64_t le(const std::string& b, size_t at, size_t n) {
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;)
        v = v << 8 | static_cast<unsigned char>(b[at + i]);
    return v;
}

// What a MountedDevices value names.
std::string mounted_target(const Inventory& inv, const std::string& b) {
    char buf[64];
    if (b.size() == 12) {
        // MBR disks: the disk signature and the partition's byte offset.
        const auto sig = static_cast<uint32_t>(le(b, 0, 4));
        const uint64_t offset = le(b, 4, 8);
        char id[16];
        std::snprintf(id, sizeof id, "0x%08x", sig);
        if (inv.table.scheme == "mbr" && lower(inv.table.disk_id) == id)
            for (const Partition& p : inv.table.partitions)
                if (!p.extended && p.offset == offset)
                    return "partition " + std::to_string(p.number);
        std::snprintf(buf, sizeof buf, "disk 0x%08x at %s", sig, hex(offset).c_str());
        return buf;
    }
    if (b.size() == 24 && b.compare(0, 8, "DMIO:ID:") == 0) {
        // GPT disks: the partition's unique GUID.
        const std::string guid =
            guid_text(reinterpret_cast<const unsigned char*>(b.data() + 8));
        for (const Partition& p : inv.table.partitions)
            if (!p.guid.empty() && lower(p.guid) == lower(guid))
                return "partition " + std::to_string(p.number);
        return "GPT partition {" + guid + "}";
    }
    if (b.size() >= 8 && b.size() % 2 == 0 && b[1] == '\0' && (b[0] == '\\' || b[0] == '_'))
        return "device " + utf16le_to_utf8(b);
    return "unknown (" + std::to_string(b.size()) + " bytes)";
}

void read_mounted_devices(Hive& hive, const Inventory& inv, WindowsGuest& g) {
    const Hive::Node md = hive.key("MountedDevices");
    if (!md)
        return;
    for (const auto& [name, value] : hive.values(md)) {
        // "\DosDevices\C:"
        const std::string prefix = "\\DosDevices\\";
        if (name.size() != prefix.size() + 2 ||
            strncasecmp(name.c_str(), prefix.c_str(), prefix.size()) != 0 || name.back() != ':')
            continue;
        g.drive_letters.push_back(
            {std::string(1, static_cast<char>(std::toupper(
                                static_cast<unsigned char>(name[prefix.size()])))) +
                 ":",
             mounted_target(inv, value.bytes)});
    }
    std::sort(g.drive_letters.begin(), g.drive_letters.end(),
              [](const DriveLetter& a, const DriveLetter& b) { return a.letter < b.letter; });
}

void read_system(NtfsVolume& vol, WindowsGuest& g, Inventory& inv, bool& hibernate_known) {
    auto hive = open_hive(vol, windows_system_hive);
    // The control set Windows boots with is the one Select\Current names.
    const Hive::Node select = hive->key("Select");
    const auto current = select ? hive->dword(select, "Current") : std::nullopt;
    if (!current || *current < 1 || *current > 999) {
        add(inv, "windows-unreadable", "warning",
            hive->name() + ": " +
                (current ? "Select\\Current is " + std::to_string(*current) +
                               ", which names no control set"
                         : std::string("Select\\Current is missing")) +
                ": the host name, drivers and services are unknown");
        return;
    }
    char set_name[16];
    std::snprintf(set_name, sizeof set_name, "ControlSet%03u", *current);
    const Hive::Node set = hive->key(set_name);
    if (!set) {
        add(inv, "windows-unreadable", "warning",
            hive->name() + ": Select\\Current names " + set_name +
                ", which does not exist: the host name, drivers and services are unknown");
        return;
    }
    g.control_set = hive->key_name(set);
    const std::string control = g.control_set + "\\Control";
    if (const Hive::Node n = hive->key(control + "\\ComputerName\\ComputerName"))
        g.hostname = hive->string(n, "ComputerName").value_or("");
    if (const Hive::Node n = hive->key(control + "\\Session Manager\\Environment")) {
        const std::string a = lower(hive->string(n, "PROCESSOR_ARCHITECTURE").value_or(""));
        g.architecture = a == "amd64" ? "x86_64"
                         : a == "x86" ? "i386"
                         : a == "arm64" ? "aarch64"
                         : a == "ia64" ? "ia64"
                                       : "";
    }
    if (const Hive::Node n = hive->key(control + "\\Power"))
        if (const auto h = hive->dword(n, "HibernateEnabled")) {
            g.hibernation_enabled = *h != 0;
            hibernate_known = true;
        }
    if (const Hive::Node n = hive->key(control + "\\Session Manager\\Power"))
        g.fast_startup = hive->dword(n, "HiberbootEnabled").value_or(0) == 1;
    if (g.fast_startup)
        add(inv, "fast-startup", "warning",
            "Fast Startup is on (HiberbootEnabled=1 in " + control +
                "\\Session Manager\\Power of " + hive->name() +
                "): a shutdown hibernates the kernel and may leave the NTFS volumes "
                "dirty; turn it off (powercfg /h off) and shut down again before the last sync");
    read_services(*hive, set, vol, g);
    read_mounted_devices(*hive, inv, g);
}

// Windows writes "HIBR" (older: "WAKE") at the start of \hiberfil.sys when
// it hibernates, and clears or lowercases it when it resumes.
void read_hiberfil(NtfsVolume& vol, WindowsGuest& g, Inventory& inv) {
    const std::string path = "hiberfil.sys";
    const auto st = vol.stat(path);
    if (!st || st->directory)
        return;
    g.hiberfil = true;
    std::string head;
    vol.read(path, 4, [&](const char* p, size_t n) { head.append(p, n); });
    g.hibernated = head == "HIBR" || head == "WAKE";
    if (g.hibernated)
        add(inv, "hibernated", "blocker",
            vol.where() + ": \\hiberfil.sys holds a hibernation image (signature '" + head +
                "'); resume Windows and shut it down fully first, or it resumes into the old "
                "hardware and the volumes' changes since are lost");
}

bool has_file(NtfsVolume& vol, const char* path) {
    const auto st = vol.stat(path);
    return st && !st->directory;
}

struct OpenVolume {
    const Volume* volume;
    std::unique_ptr<NtfsVolume> ntfs;
};

bool is_esp(const Inventory& inv, unsigned partition) {
    for (const Partition& p : inv.table.partitions)
        if (p.number == partition &&
            (lower(p.type) == "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" || lower(p.type) == "0xef"))
            return true;
    return false;
}

// The BCD store: \EFI\Microsoft\Boot\BCD on an EFI System partition (FAT),
// else \Boot\BCD on the volume BIOS boots \bootmgr from.
void find_bcd(const DevicePtr& disk, Inventory& inv, WindowsGuest& g,
              std::vector<OpenVolume>& opened, OpenVolume* system) {
    for (const Volume& v : inv.volumes) {
        if (!v.fs || v.fs->type != "vfat" || !is_esp(inv, v.partition))
            continue;
        try {
            FatVolume esp(disk, v.offset, v.length, volume_name(v));
            const auto st = esp.stat("EFI/Microsoft/Boot/BCD");
            if (st && !st->directory) {
                g.boot_mode = "uefi";
                g.bcd_partition = v.partition;
                g.bcd_path = "\\EFI\\Microsoft\\Boot\\BCD";
                return;
            }
        } catch (const Error& e) {
            add(inv, "windows-unreadable", "warning", e.what());
        }
    }
    // The firmware follows the disk: an EFI System partition means UEFI even
    // when its store cannot be found; without one, BIOS boots \bootmgr from
    // the active partition or the system volume.
    if (inv.firmware == "uefi") {
        g.boot_mode = "uefi";
        add(inv, "windows-no-bcd", "warning",
            "no EFI System partition holds \\EFI\\Microsoft\\Boot\\BCD: Windows' boot "
            "configuration was not found");
        return;
    }
    std::vector<OpenVolume*> candidates{system};
    for (OpenVolume& o : opened)
        for (const Partition& p : inv.table.partitions)
            if (&o != system && p.bootable && p.number == o.volume->partition)
                candidates.insert(candidates.begin(), &o);
    for (OpenVolume* o : candidates) {
        try {
            if (g.boot_mode == "unknown" &&
                (has_file(*o->ntfs, "bootmgr") || has_file(*o->ntfs, "ntldr"))) {
                g.boot_mode = "bios";
                g.boot_partition = o->volume->partition;
            }
            if (!g.bcd_partition && has_file(*o->ntfs, "Boot/BCD")) {
                g.bcd_partition = o->volume->partition;
                g.bcd_path = "\\Boot\\BCD";
            }
        } catch (const Error& e) {
            add(inv, "windows-unreadable", "warning", e.what());
        }
    }
}

void add_service_findings(Inventory& inv, const WindowsGuest& g) {
    const auto listed = [](const std::vector<WindowsService>& list) {
        std::string t;
        for (const WindowsService& sv : list)
            if (sv.start < 4)
                t += (t.empty() ? "" : ", ") + sv.name;
        return t;
    };
    if (const std::string t = listed(g.hypervisor_tools); !t.empty())
        add(inv, "hypervisor-tools", "info",
            "services of another hypervisor's tools are enabled (" + t +
                "); fixups for a different target disable them");
    if (const std::string t = listed(g.vendor_agents); !t.empty())
        add(inv, "vendor-agents", "info",
            "hardware vendors' agents are enabled (" + t + "); fixups disable them");
}

} // namespace

void inspect_windows(const DevicePtr& disk, Inventory& inv) {
    std::vector<OpenVolume> opened;
    OpenVolume* system = nullptr;
    OpenVolume* windows_dir = nullptr; // has \Windows\System32\config, but maybe no SYSTEM
    std::string searched;
    for (const Volume& v : inv.volumes) {
        if (!v.fs || v.fs->type != "ntfs")
            continue;
        searched += (searched.empty() ? "" : ", ") + volume_name(v);
        try {
            opened.push_back(
                {&v, std::make_unique<NtfsVolume>(disk, v.offset, v.length, volume_name(v))});
        } catch (const Error& e) {
            add(inv, "windows-unreadable", "warning", e.what());
        }
    }
    for (OpenVolume& o : opened) {
        try {
            if (const auto st = o.ntfs->stat(windows_system_hive); st && !st->directory) {
                system = &o;
                break;
            }
            if (const auto st = o.ntfs->stat("Windows/System32/config");
                st && st->directory && !windows_dir)
                windows_dir = &o;
        } catch (const Error& e) {
            add(inv, "windows-unreadable", "warning", e.what());
        }
    }
    if (!system)
        system = windows_dir;
    if (!system) {
        if (!opened.empty())
            add(inv, "windows-unreadable", "warning",
                "no NTFS volume holds \\Windows\\System32\\config\\SYSTEM (searched " + searched +
                    "): no Windows installation was found");
        return;
    }

    WindowsGuest g;
    g.system_partition = system->volume->partition;
    bool hibernate_known = false;
    const auto guarded = [&](auto&& part) {
        try {
            part();
        } catch (const Error& e) {
            add(inv, "windows-unreadable", "warning", e.what());
        }
    };
    guarded([&] { read_software(*system->ntfs, g, inv); });
    guarded([&] { read_system(*system->ntfs, g, inv, hibernate_known); });
    guarded([&] { read_hiberfil(*system->ntfs, g, inv); });
    if (!hibernate_known)
        g.hibernation_enabled = g.hiberfil;
    g.boot_mode = "unknown";
    find_bcd(disk, inv, g, opened, system);
    for (const Volume& v : inv.volumes)
        if (v.fs && v.fs->type == "BitLocker")
            g.bitlocker_partitions.push_back(v.partition);
    for (const Finding& f : inv.findings)
        if (f.id == "dynamic-disk")
            g.dynamic_disk = true;
    add_service_findings(inv, g);
    inv.windows_guest = std::move(g);
}

} // namespace p2vfs::guest
