// p2vctl: the command line over p2vfsd's D-Bus API (org.p2vfs1).
#include "common/error.h"
#include "dbus/service.h"
#include "p2vfs/job_proxy.h"
#include "p2vfs/manager_proxy.h"
#include "p2vfs/source_proxy.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <getopt.h>
#include <nlohmann/json.hpp>
#include <sdbus-c++/sdbus-c++.h>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using p2vfs::human_size;
using json = nlohmann::json;

enum ExitCode {
    exit_ok = 0,
    exit_failed = 1,     // the daemon refused, or the job failed
    exit_usage = 2,
    exit_no_daemon = 3,  // no bus, or no p2vfsd on it
    exit_denied = 4,
    exit_not_found = 5,
    exit_cancelled = 6,  // the job waited for was cancelled
};

const char* usage_text =
    "Usage: p2vctl [--bus BUS] [--json] COMMAND [ARGS...]\n"
    "\n"
    "Drives p2vfsd over D-Bus (org.p2vfs1).\n"
    "\n"
    "Commands:\n"
    "  list                          sources, their views and where they are mounted\n"
    "  formats                       view formats the daemon offers\n"
    "  add NAME URI [--views F,F...] [--no-persist]\n"
    "                                add a source disk: a path, FORMAT:PATH,\n"
    "                                snapshot:PATH or an NBD URI\n"
    "  remove NAME                   remove a source (its overlay stays)\n"
    "  expose NAME FORMAT [--file FILE] [-o KEY=VALUE]...\n"
    "                                show one more view file of a source\n"
    "  materialize NAME VIEW DEST [--parallel N] [--bwlimit RATE] [--no-verify]\n"
    "                             [--block-size SIZE] [--wait]\n"
    "                                copy view file VIEW of source NAME to DEST (a new\n"
    "                                file, or an NBD URI); RATE and SIZE as 50M, 1G\n"
    "  jobs                          all jobs\n"
    "  job ID                        one job in full\n"
    "  wait ID                       wait for a job to end, with a progress bar on a\n"
    "                                terminal\n"
    "  pause ID | resume ID | cancel ID | forget ID\n"
    "                                control a job; forget removes an ended one\n"
    "  inspect NAME [--refresh]      the guest on the disk: partitions, file systems,\n"
    "                                OS, kernels and drivers, findings (--json: the\n"
    "                                inventory, as info.json in the mount)\n"
    "  fixups plan|apply NAME [--profile kvm|vmware|hyperv] [--memory MIB] [--cpus N]\n"
    "                         [--agents SVC,SVC...] [--no-firstboot] [--drivers DIR]\n"
    "                                preview / apply the changes the guest needs to\n"
    "                                boot on the target (into the overlay, never the\n"
    "                                source); apply also shows the target's disk and\n"
    "                                VM description in the folder. --drivers: Windows\n"
    "                                drivers it does not ship (virtio-win's layout)\n"
    "  fixups discard NAME           drop the fixups: the views show the source again\n"
    "  sync start NAME DEST [--format F] [--block-size SIZE] [--parallel N]\n"
    "             [--detection auto|hash|dirty-bitmap|reflink] [--bitmap B]\n"
    "             [--reflink-dir DIR] [--every MINUTES] [--cutover-at TIME]\n"
    "             [--quiesce-command CMD] [--unquiesce-command CMD] [--quiesce-signal]\n"
    "             [--quiesce-timeout SECONDS] [--profile kvm|vmware|hyperv]\n"
    "             [--memory MIB] [--cpus N] [--agents SVC,SVC...] [--no-firstboot]\n"
    "             [--drivers DIR] [--wait]\n"
    "                                keep a target image DEST (format F: raw, qcow2\n"
    "                                (default), vmdk, vhd, vhdx, vdi; written as\n"
    "                                DEST.part until the cutover) in step with source\n"
    "                                NAME; prints the job's ID; --wait: until the\n"
    "                                initial copy (generation 1) is done; --profile:\n"
    "                                the fixups applied at the cutover\n"
    "  sync now ID [--wait]          sync now; --wait: until that sync is done\n"
    "  sync cutover ID [--wait]      quiesce, final sync, fixups, DEST.part renamed\n"
    "                                to DEST; --wait: until the job has ended\n"
    "  sync retarget ID DEST         the paused job's target was moved to DEST.part\n"
    "  sync schedule ID [--every MINUTES] [--cutover-at TIME|none]\n"
    "                                replace the schedule (what is left out: none)\n"
    "  sync ack ID [--fail MESSAGE]  answer the job's QuiesceRequested signal (for\n"
    "                                a tool on the source)\n"
    "                                TIME: Unix seconds or 2026-11-25T18:00:00Z (UTC)\n"
    "\n"
    "Options:\n"
    "  --bus BUS     system (default), session or a D-Bus address; also $P2VFS_BUS\n"
    "  --json        print JSON for scripts instead of text\n"
    "  -h, --help    this text\n"
    "\n"
    "Exit status: 0 success (--wait: what was waited for happened); 1 the daemon\n"
    "refused or the job failed; 2 bad command line; 3 no p2vfsd reachable; 4 access\n"
    "denied; 5 no such source, view or job; 6 the job waited for was cancelled.\n";

struct Usage : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A failure with the exit code it means.
struct Failure : std::runtime_error {
    int code;
    Failure(const std::string& what, int c) : std::runtime_error(what), code(c) {}
};

using Properties = std::map<std::string, sdbus::Variant>;

class ManagerProxy : public sdbus::ProxyInterfaces<org::p2vfs1::Manager_proxy> {
public:
    explicit ManagerProxy(sdbus::IConnection& c)
        : ProxyInterfaces(c, p2vfs::dbus_name, std::string(p2vfs::dbus_root_path) + "/Manager") {
        registerProxy();
    }
    virtual ~ManagerProxy() { unregisterProxy(); }
};

class SourceProxy : public sdbus::ProxyInterfaces<org::p2vfs1::Source_proxy, sdbus::Properties_proxy> {
public:
    SourceProxy(sdbus::IConnection& c, const std::string& path)
        : ProxyInterfaces(c, p2vfs::dbus_name, path) {
        registerProxy();
    }
    virtual ~SourceProxy() { unregisterProxy(); }

private:
    void onPropertiesChanged(const std::string&, const Properties&,
                             const std::vector<std::string>&) override {}
};

class JobProxy : public sdbus::ProxyInterfaces<org::p2vfs1::Job_proxy, sdbus::Properties_proxy> {
public:
    JobProxy(sdbus::IConnection& c, const std::string& path)
        : ProxyInterfaces(c, p2vfs::dbus_name, path) {
        registerProxy();
    }
    virtual ~JobProxy() { unregisterProxy(); }

private:
    void onPropertiesChanged(const std::string&, const Properties&,
                             const std::vector<std::string>&) override {}
    void onQuiesceRequested(const bool&) override {}
};

struct Context {
    std::unique_ptr<sdbus::IConnection> bus;
    bool json_output = false;
};

std::string text(const Properties& p, const char* key) { return p.at(key).get<std::string>(); }
uint64_t number(const Properties& p, const char* key) { return p.at(key).get<uint64_t>(); }
bool is_sync(const Properties& p) {
    return text(p, "Kind") == "sync";
}

// Unix seconds as 2026-11-25T18:00:00Z; "none" for 0.
std::string iso_time(int64_t unix_seconds) {
    if (unix_seconds == 0)
        return "none";
    const time_t t = static_cast<time_t>(unix_seconds);
    struct tm tm {};
    char buf[32];
    if (!::gmtime_r(&t, &tm) || !std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm))
        return std::to_string(unix_seconds);
    return buf;
}

json source_json(const Properties& p) {
    json views = json::array();
    for (const auto& v : p.at("Views").get<std::vector<sdbus::Struct<std::string, std::string, std::string>>>())
        views.push_back({{"file", v.get<0>()}, {"format", v.get<1>()}, {"path", v.get<2>()}});
    return {{"name", text(p, "Name")},         {"uri", text(p, "URI")},
            {"size", number(p, "Size")},       {"allocated", number(p, "AllocatedBytes")},
            {"overlay", text(p, "Overlay")},   {"overlay_bytes", number(p, "OverlayBytes")},
            {"persistent", p.at("Persistent").get<bool>()}, {"views", views},
            {"fixups", text(p, "Fixups")}};
}

// The fields every job has.
json common_job_json(const Properties& p) {
    return {{"id", text(p, "Id")},
            {"kind", text(p, "Kind")},
            {"source", text(p, "SourceName")},
            {"view", text(p, "View")},
            {"destination", text(p, "Destination")},
            {"state", text(p, "State")},
            {"phase", text(p, "Phase")},
            {"bytes_total", number(p, "BytesTotal")},
            {"bytes_done", number(p, "BytesDone")},
            {"bytes_copied", number(p, "BytesCopied")},
            {"bytes_resumed", number(p, "BytesResumed")},
            {"bytes_written", number(p, "BytesWritten")},
            {"bytes_checkpointed", number(p, "BytesCheckpointed")},
            {"bytes_verified", number(p, "BytesVerified")},
            {"rate", p.at("Rate").get<double>()},
            {"eta", p.at("ETA").get<double>()},
            {"error", text(p, "Error")}};
}

// A job as JSON; a sync job with its generation, last sync and schedule.
json job_json(const Properties& p) {
    json j = common_job_json(p);
    if (is_sync(p)) {
        j["generation"] = number(p, "Generation");
        j["changed_bytes"] = number(p, "ChangedBytes");
        j["written_bytes"] = number(p, "WrittenBytes");
        j["read_bytes"] = number(p, "ReadBytes");
        j["detection"] = text(p, "Detection");
        j["next_event"] = text(p, "NextEvent");
        j["next_event_time"] = p.at("NextEventTime").get<int64_t>();
        j["bootable"] = p.at("Bootable").get<bool>();
        j["target"] = text(p, "Target");
    }
    return j;
}

// What a sync job's last sync did: "generation 2: 12.0 MiB changed, ...".
std::string last_sync(const Properties& p) {
    std::string out = "generation " + std::to_string(number(p, "Generation"));
    if (number(p, "Generation") > 0)
        out += ": " + human_size(number(p, "ChangedBytes")) + " changed, " +
               human_size(number(p, "WrittenBytes")) + " written, " +
               human_size(number(p, "ReadBytes")) + " read" +
               (text(p, "Detection").empty() ? "" : " (" + text(p, "Detection") + ")");
    return out;
}

Properties source_properties(Context& ctx, const std::string& path) {
    SourceProxy s(*ctx.bus, path);
    return s.GetAll(org::p2vfs1::Source_proxy::INTERFACE_NAME);
}

std::string job_path(const std::string& id) {
    if (id.starts_with("/"))
        return id;
    if (id.empty() || id.find_first_not_of("0123456789") != std::string::npos)
        throw Usage("job ID '" + id + "': expected a number (p2vctl jobs lists them)");
    return p2vfs::job_object_path(id);
}

Properties job_properties(Context& ctx, const std::string& path) {
    JobProxy j(*ctx.bus, path);
    return j.GetAll(org::p2vfs1::Job_proxy::INTERFACE_NAME);
}

std::string percent(uint64_t done, uint64_t total) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%5.1f%%", total ? 100.0 * static_cast<double>(done) / static_cast<double>(total) : 0.0);
    return buf;
}

std::string duration(double seconds) {
    if (seconds < 0 || !std::isfinite(seconds))
        return "--:--";
    const auto s = static_cast<unsigned long>(seconds + 0.5);
    char buf[32];
    if (s >= 3600)
        std::snprintf(buf, sizeof buf, "%lu:%02lu:%02lu", s / 3600, s / 60 % 60, s % 60);
    else
        std::snprintf(buf, sizeof buf, "%lu:%02lu", s / 60, s % 60);
    return buf;
}

void print_job_line(const Properties& p) {
    const std::string state = text(p, "State");
    std::string sync;
    if (is_sync(p)) {
        sync = ", " + last_sync(p);
        if (!text(p, "NextEvent").empty())
            sync += "; next: " + text(p, "NextEvent") + " at " +
                    iso_time(p.at("NextEventTime").get<int64_t>());
        if (p.at("Bootable").get<bool>())
            sync += "; bootable";
    }
    std::printf("%-4s %-10s %s  %s%s of '%s' -> %s%s%s%s\n", text(p, "Id").c_str(), state.c_str(),
                percent(number(p, "BytesDone"), number(p, "BytesTotal")).c_str(),
                is_sync(p) ? "sync to " : "", text(p, "View").c_str(),
                text(p, "SourceName").c_str(), text(p, "Destination").c_str(), sync.c_str(),
                text(p, "Error").empty() ? "" : ": ", text(p, "Error").c_str());
}

// ---- commands ----------------------------------------------------------------

int cmd_list(Context& ctx, const std::vector<std::string>& args) {
    if (!args.empty())
        throw Usage("list takes no arguments");
    ManagerProxy m(*ctx.bus);
    json out = json::array();
    for (const auto& path : m.ListSources()) {
        const Properties p = source_properties(ctx, path);
        if (ctx.json_output) {
            out.push_back(source_json(p));
            continue;
        }
        std::string extra;
        if (text(p, "Overlay") != "none")
            extra += ", overlay " + text(p, "Overlay");
        if (!text(p, "Fixups").empty())
            extra += ", fixups for " + text(p, "Fixups");
        std::printf("%s  %s, %s allocated%s  %s\n", text(p, "Name").c_str(),
                    human_size(number(p, "Size")).c_str(),
                    human_size(number(p, "AllocatedBytes")).c_str(), extra.c_str(),
                    text(p, "URI").c_str());
        for (const auto& v : p.at("Views").get<std::vector<sdbus::Struct<std::string, std::string, std::string>>>())
            std::printf("  %-22s %-12s %s\n", v.get<0>().c_str(), v.get<1>().c_str(),
                        v.get<2>().c_str());
    }
    if (ctx.json_output)
        std::printf("%s\n", out.dump(2).c_str());
    return exit_ok;
}

int cmd_formats(Context& ctx, const std::vector<std::string>& args) {
    if (!args.empty())
        throw Usage("formats takes no arguments");
    ManagerProxy m(*ctx.bus);
    json out = json::array();
    for (const auto& f : m.ListFormats()) {
        if (ctx.json_output)
            out.push_back({{"name", f.get<0>()}, {"file", f.get<1>()}, {"description", f.get<2>()}});
        else
            std::printf("%-14s %-18s %s\n", f.get<0>().c_str(), f.get<1>().c_str(), f.get<2>().c_str());
    }
    if (ctx.json_output)
        std::printf("%s\n", out.dump(2).c_str());
    return exit_ok;
}

// Splits ARGS into positionals and --options (with values where `with_value` says).
struct Parsed {
    std::vector<std::string> positional;
    std::vector<std::pair<std::string, std::string>> options;
};
Parsed parse(const std::vector<std::string>& args, const std::vector<std::string>& with_value,
             const std::vector<std::string>& flags) {
    Parsed p;
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a.size() > 1 && a[0] == '-') {
            std::string key = a, value;
            if (const auto eq = a.find('='); eq != std::string::npos && a.starts_with("--")) {
                key = a.substr(0, eq);
                value = a.substr(eq + 1);
            } else if (std::find(with_value.begin(), with_value.end(), key) != with_value.end()) {
                if (i + 1 >= args.size())
                    throw Usage("option " + key + " needs a value");
                value = args[++i];
            }
            const bool known = std::find(with_value.begin(), with_value.end(), key) != with_value.end() ||
                               std::find(flags.begin(), flags.end(), key) != flags.end();
            if (!known)
                throw Usage("unknown option " + key);
            p.options.emplace_back(key, value);
        } else {
            p.positional.push_back(a);
        }
    }
    return p;
}

// "a,b,,c" -> {"a", "b", "c"}.
std::vector<std::string> split_list(const std::string& v) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= v.size()) {
        const size_t end = std::min(v.find(',', start), v.size());
        if (end > start)
            out.push_back(v.substr(start, end - start));
        start = end + 1;
    }
    return out;
}

// A relative path is the caller's, not the daemon's.
std::string absolute(const std::string& path) {
    if (path.starts_with("/"))
        return path;
    char* cwd = ::getcwd(nullptr, 0);
    if (!cwd)
        return path;
    std::string out = std::string(cwd) + "/" + path;
    std::free(cwd);
    return out;
}

int cmd_add(Context& ctx, const std::vector<std::string>& args) {
    const Parsed p = parse(args, {"--views"}, {"--no-persist"});
    if (p.positional.size() != 2)
        throw Usage("add NAME URI");
    std::map<std::string, sdbus::Variant> options;
    for (const auto& [k, v] : p.options) {
        if (k == "--views") {
            options["views"] = sdbus::Variant(split_list(v));
        } else if (k == "--no-persist") {
            options["persist"] = sdbus::Variant(false);
        }
    }
    ManagerProxy m(*ctx.bus);
    const auto path = m.AddSource(p.positional[0], p.positional[1], options);
    const Properties props = source_properties(ctx, path);
    if (ctx.json_output) {
        std::printf("%s\n", source_json(props).dump(2).c_str());
    } else {
        std::printf("added %s (%s)\n", text(props, "Name").c_str(),
                    human_size(number(props, "Size")).c_str());
        for (const auto& v : props.at("Views").get<std::vector<sdbus::Struct<std::string, std::string, std::string>>>())
            std::printf("  %s\n", v.get<2>().c_str());
    }
    return exit_ok;
}

// Inspection and fixups read a whole initramfs and may take longer than
// D-Bus's default 25 s on a slow source.
constexpr auto guest_call_timeout = std::chrono::minutes(10);

int cmd_inspect(Context& ctx, const std::vector<std::string>& args) {
    const Parsed p = parse(args, {}, {"--refresh"});
    if (p.positional.size() != 1)
        throw Usage("inspect NAME [--refresh]");
    const bool refresh = !p.options.empty();
    const auto proxy = sdbus::createProxy(*ctx.bus, p2vfs::dbus_name,
                                          p2vfs::source_object_path(p.positional[0]));
    std::string inventory, report;
    proxy->callMethod("Inspect")
        .onInterface(org::p2vfs1::Source_proxy::INTERFACE_NAME)
        .withTimeout(guest_call_timeout)
        .withArguments(refresh)
        .storeResultsTo(inventory, report);
    std::fputs((ctx.json_output ? inventory : report).c_str(), stdout);
    return exit_ok;
}

// The options of the fixups' machine (fixups plan|apply, sync start), as
// PlanFixups takes them: true if `key` was one of them.
const std::vector<std::string> fixup_flags_with_value{"--memory", "--cpus", "--agents",
                                                      "--drivers"};
bool fixup_option(const std::string& key, const std::string& v,
                  std::map<std::string, sdbus::Variant>& options) {
    auto number_of = [](const std::string& k, const std::string& value) {
        if (value.empty() || value.size() > 9 ||
            value.find_first_not_of("0123456789") != std::string::npos)
            throw Usage(k + " " + value + ": expected a whole number");
        return static_cast<uint32_t>(std::stoul(value));
    };
    if (key == "--memory")
        options["memory-mib"] = sdbus::Variant(number_of(key, v));
    else if (key == "--cpus")
        options["cpus"] = sdbus::Variant(number_of(key, v));
    else if (key == "--no-firstboot")
        options["firstboot"] = sdbus::Variant(false);
    else if (key == "--agents")
        options["vendor-agents"] = sdbus::Variant(split_list(v));
    else if (key == "--drivers")
        options["drivers"] = sdbus::Variant(absolute(v));
    else
        return false;
    return true;
}

int cmd_fixups(Context& ctx, const std::vector<std::string>& args) {
    if (args.empty())
        throw Usage("fixups plan|apply|discard NAME ...");
    const std::string action = args[0];
    const std::vector<std::string> rest(args.begin() + 1, args.end());
    std::vector<std::string> with_value = fixup_flags_with_value;
    with_value.push_back("--profile");
    const Parsed p = parse(rest, with_value, {"--no-firstboot"});
    if (p.positional.size() != 1)
        throw Usage("fixups " + action + " NAME");
    SourceProxy s(*ctx.bus, p2vfs::source_object_path(p.positional[0]));
    if (action == "discard") {
        if (!p.options.empty())
            throw Usage("fixups discard NAME takes no options");
        s.DiscardFixups();
        if (ctx.json_output)
            std::printf("%s\n", json{{"discarded", p.positional[0]}}.dump().c_str());
        else
            std::printf("fixups of %s discarded\n", p.positional[0].c_str());
        return exit_ok;
    }
    if (action != "plan" && action != "apply")
        throw Usage("fixups plan|apply|discard NAME");
    std::string profile = "kvm";
    std::map<std::string, sdbus::Variant> options;
    for (const auto& [k, v] : p.options)
        if (!fixup_option(k, v, options))
            profile = v; // --profile
    std::string plan, preview;
    std::vector<std::string> files;
    const auto proxy = sdbus::createProxy(*ctx.bus, p2vfs::dbus_name,
                                          p2vfs::source_object_path(p.positional[0]));
    if (action == "plan")
        proxy->callMethod("PlanFixups")
            .onInterface(org::p2vfs1::Source_proxy::INTERFACE_NAME)
            .withTimeout(guest_call_timeout)
            .withArguments(profile, options)
            .storeResultsTo(plan, preview);
    else
        proxy->callMethod("ApplyFixups")
            .onInterface(org::p2vfs1::Source_proxy::INTERFACE_NAME)
            .withTimeout(guest_call_timeout)
            .withArguments(profile, options)
            .storeResultsTo(plan, preview, files);
    if (ctx.json_output) {
        json j = json::parse(plan);
        if (action == "apply")
            j["files"] = files;
        std::printf("%s\n", j.dump(2).c_str());
        return exit_ok;
    }
    std::fputs(preview.c_str(), stdout);
    if (action == "apply") {
        std::printf("\napplied; the target's files:\n");
        for (const std::string& f : files)
            std::printf("  %s\n", f.c_str());
    } else if (!json::parse(plan).at("refusals").empty()) {
        return exit_failed;
    }
    return exit_ok;
}

int cmd_remove(Context& ctx, const std::vector<std::string>& args) {
    if (args.size() != 1)
        throw Usage("remove NAME");
    ManagerProxy m(*ctx.bus);
    m.RemoveSource(args[0], {});
    if (ctx.json_output)
        std::printf("%s\n", json{{"removed", args[0]}}.dump().c_str());
    return exit_ok;
}

int cmd_expose(Context& ctx, const std::vector<std::string>& args) {
    const Parsed p = parse(args, {"--file", "-o", "--option"}, {});
    if (p.positional.size() != 2)
        throw Usage("expose NAME FORMAT [--file FILE] [-o KEY=VALUE]...");
    std::string file;
    std::map<std::string, std::string> options;
    for (const auto& [k, v] : p.options) {
        if (k == "--file") {
            file = v;
        } else {
            const auto eq = v.find('=');
            if (eq == std::string::npos || eq == 0)
                throw Usage("-o " + v + ": expected KEY=VALUE");
            options[v.substr(0, eq)] = v.substr(eq + 1);
        }
    }
    SourceProxy s(*ctx.bus, p2vfs::source_object_path(p.positional[0]));
    const std::string path = s.Expose(p.positional[1], file, options);
    if (ctx.json_output)
        std::printf("%s\n", json{{"path", path}}.dump().c_str());
    else
        std::printf("%s\n", path.c_str());
    return exit_ok;
}

// A job's properties once waiting ended, and whether it ended because
// `reached` held (rather than the job ending).
struct Waited {
    Properties p;
    bool reached = false;
};

// Polls the job four times a second until it ends (done, failed, cancelled;
// a paused job may be resumed) or `reached` holds of its properties; a
// progress bar on a terminal.
Waited wait_until(Context& ctx, const std::string& path,
                  const std::function<bool(const Properties&)>& reached = {}) {
    const bool tty = ::isatty(STDERR_FILENO) && !ctx.json_output;
    Waited w;
    Properties& p = w.p;
    size_t drawn = 0;
    for (;;) {
        p = job_properties(ctx, path);
        const std::string state = text(p, "State");
        if (tty) {
            const uint64_t total = number(p, "BytesTotal");
            const std::string phase = text(p, "Phase");
            const bool verifying = phase == "verifying";
            const uint64_t done = verifying ? number(p, "BytesVerified") : number(p, "BytesDone");
            const int width = 30;
            const int filled = total ? static_cast<int>(width * static_cast<double>(done) / static_cast<double>(total)) : 0;
            std::string bar(static_cast<size_t>(filled), '#');
            bar.resize(width, '.');
            char line[256];
            std::snprintf(line, sizeof line, "\r%-9s [%s] %s %s/%s %s/s ETA %s",
                          (phase.empty() ? state : phase).c_str(), bar.c_str(), percent(done, total).c_str(),
                          human_size(done).c_str(), human_size(total).c_str(),
                          human_size(static_cast<uint64_t>(p.at("Rate").get<double>())).c_str(),
                          duration(p.at("ETA").get<double>()).c_str());
            std::string out = line;
            if (out.size() < drawn)
                out += std::string(drawn - out.size(), ' ');
            drawn = std::string(line).size();
            std::fputs(out.c_str(), stderr);
            std::fflush(stderr);
        }
        if (reached && reached(p)) {
            w.reached = true;
            break;
        }
        if (state != "running" && state != "paused")
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    if (tty)
        std::fputs("\n", stderr);
    return w;
}

int exit_code_of(const Waited& w) {
    const std::string state = text(w.p, "State");
    return w.reached || state == "done" ? exit_ok
           : state == "cancelled"       ? exit_cancelled
                                        : exit_failed;
}

// Prints how waiting ended (the job in JSON with --json); the exit code.
int report(Context& ctx, const Waited& w) {
    const Properties& p = w.p;
    const std::string state = text(p, "State");
    if (ctx.json_output)
        std::printf("%s\n", job_json(p).dump(2).c_str());
    else if (w.reached)
        std::printf("job %s: %s\n", text(p, "Id").c_str(), last_sync(p).c_str());
    else if (state == "done" && is_sync(p))
        std::printf("job %s: done: %s%s (%s)\n", text(p, "Id").c_str(), text(p, "Target").c_str(),
                    p.at("Bootable").get<bool>() ? " is bootable" : "", last_sync(p).c_str());
    else if (state == "done")
        std::printf("job %s: done: %s (%s, %s of data written%s)\n", text(p, "Id").c_str(),
                    text(p, "Destination").c_str(), human_size(number(p, "BytesTotal")).c_str(),
                    human_size(number(p, "BytesWritten")).c_str(),
                    number(p, "BytesVerified") == number(p, "BytesTotal") ? ", verified" : "");
    else
        std::printf("job %s: %s%s%s\n", text(p, "Id").c_str(), state.c_str(),
                    text(p, "Error").empty() ? "" : ": ", text(p, "Error").c_str());
    return exit_code_of(w);
}

// Waits for the job to end.
int wait_for(Context& ctx, const std::string& path) {
    return report(ctx, wait_until(ctx, path));
}

int cmd_materialize(Context& ctx, const std::vector<std::string>& args) {
    const Parsed p = parse(args, {"--parallel", "--bwlimit", "--block-size"}, {"--no-verify", "--wait"});
    if (p.positional.size() != 3)
        throw Usage("materialize NAME VIEW DEST");
    std::map<std::string, sdbus::Variant> options;
    bool wait = false;
    for (const auto& [k, v] : p.options) {
        if (k == "--parallel") {
            char* end = nullptr;
            const unsigned long n = std::strtoul(v.c_str(), &end, 10);
            if (v.empty() || *end || n < 1 || n > 64)
                throw Usage("--parallel " + v + ": expected a number from 1 to 64");
            options["parallel"] = sdbus::Variant(static_cast<uint32_t>(n));
        } else if (k == "--bwlimit") {
            try {
                options["bandwidth"] = sdbus::Variant(p2vfs::parse_size(v, "--bwlimit"));
            } catch (const p2vfs::Error& e) {
                throw Usage(e.what());
            }
        } else if (k == "--block-size") {
            try {
                options["block-size"] = sdbus::Variant(p2vfs::parse_size(v, "--block-size"));
            } catch (const p2vfs::Error& e) {
                throw Usage(e.what());
            }
        } else if (k == "--no-verify") {
            options["verify"] = sdbus::Variant(false);
        } else if (k == "--wait") {
            wait = true;
        }
    }
    std::string destination = p.positional[2];
    if (destination.find("://") == std::string::npos)
        destination = absolute(destination);
    SourceProxy s(*ctx.bus, p2vfs::source_object_path(p.positional[0]));
    const std::string path = s.Materialize(p.positional[1], destination, options);
    if (wait)
        return wait_for(ctx, path);
    const Properties props = job_properties(ctx, path);
    if (ctx.json_output)
        std::printf("%s\n", job_json(props).dump(2).c_str());
    else
        std::printf("job %s started: %s of '%s' -> %s\n", text(props, "Id").c_str(),
                    text(props, "View").c_str(), text(props, "SourceName").c_str(),
                    text(props, "Destination").c_str());
    return exit_ok;
}

// ---- sync jobs ---------------------------------------------------------------

// A number of minutes or seconds: finite, not negative.
double non_negative(const std::string& key, const std::string& v) {
    char* end = nullptr;
    const double d = std::strtod(v.c_str(), &end);
    if (v.empty() || *end || !std::isfinite(d) || d < 0)
        throw Usage(key + " " + v + ": expected a number, 0 or more");
    return d;
}

// TIME: Unix seconds, or an ISO 8601 UTC time (2026-11-25T18:00:00Z);
// "none" (with `none_ok`) is 0.
int64_t parse_time(const std::string& key, const std::string& v, bool none_ok) {
    if (none_ok && v == "none")
        return 0;
    if (!v.empty() && v.size() <= 12 && v.find_first_not_of("0123456789") == std::string::npos)
        return std::stoll(v);
    struct tm tm {};
    const char* end = ::strptime(v.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
    if (end && (std::string(end) == "Z" || std::string(end) == "+00:00")) {
        const struct tm asked = tm;
        const time_t t = ::timegm(&tm);
        // timegm moves a day that does not exist (February 30) on.
        if (t >= 0 && tm.tm_mday == asked.tm_mday && tm.tm_mon == asked.tm_mon &&
            tm.tm_hour == asked.tm_hour && tm.tm_min == asked.tm_min && tm.tm_sec == asked.tm_sec)
            return static_cast<int64_t>(t);
    }
    throw Usage(key + " " + v + ": expected Unix seconds or a UTC time like 2026-11-25T18:00:00Z" +
                (none_ok ? ", or none" : ""));
}

int cmd_sync_start(Context& ctx, const std::vector<std::string>& args) {
    std::vector<std::string> with_value = fixup_flags_with_value;
    with_value.insert(with_value.end(),
                      {"--format", "--block-size", "--parallel", "--detection", "--bitmap",
                       "--reflink-dir", "--every", "--cutover-at", "--quiesce-command",
                       "--unquiesce-command", "--quiesce-timeout", "--profile"});
    const Parsed p = parse(args, with_value, {"--quiesce-signal", "--no-firstboot", "--wait"});
    if (p.positional.size() != 2)
        throw Usage("sync start NAME DEST [options]");
    std::string format = "qcow2";
    std::map<std::string, sdbus::Variant> options;
    bool wait = false, profile = false;
    for (const auto& [k, v] : p.options) {
        if (fixup_option(k, v, options)) {
            continue;
        } else if (k == "--format") {
            format = v;
        } else if (k == "--block-size") {
            try {
                options["block-size"] = sdbus::Variant(p2vfs::parse_size(v, "--block-size"));
            } catch (const p2vfs::Error& e) {
                throw Usage(e.what());
            }
        } else if (k == "--parallel") {
            if (v.empty() || v.size() > 2 ||
                v.find_first_not_of("0123456789") != std::string::npos || std::stoul(v) < 1 ||
                std::stoul(v) > 16)
                throw Usage("--parallel " + v + ": expected a number from 1 to 16");
            options["parallel"] = sdbus::Variant(static_cast<uint32_t>(std::stoul(v)));
        } else if (k == "--detection") {
            options["detection"] = sdbus::Variant(v);
        } else if (k == "--bitmap") {
            options["bitmap"] = sdbus::Variant(v);
        } else if (k == "--reflink-dir") {
            options["reflink-dir"] = sdbus::Variant(absolute(v));
        } else if (k == "--every") {
            options["interval-minutes"] = sdbus::Variant(non_negative(k, v));
        } else if (k == "--cutover-at") {
            options["cutover-at"] = sdbus::Variant(parse_time(k, v, true));
        } else if (k == "--quiesce-command") {
            options["quiesce-command"] = sdbus::Variant(v);
        } else if (k == "--unquiesce-command") {
            options["unquiesce-command"] = sdbus::Variant(v);
        } else if (k == "--quiesce-signal") {
            options["quiesce-signal"] = sdbus::Variant(true);
        } else if (k == "--quiesce-timeout") {
            options["quiesce-timeout"] = sdbus::Variant(non_negative(k, v));
        } else if (k == "--profile") {
            options["profile"] = sdbus::Variant(v);
            profile = true;
        } else if (k == "--wait") {
            wait = true;
        }
    }
    if (!profile && (options.count("memory-mib") || options.count("cpus") ||
                     options.count("vendor-agents") || options.count("firstboot") ||
                     options.count("drivers")))
        throw Usage("--memory, --cpus, --agents, --drivers and --no-firstboot describe the target of "
                    "--profile: give one");
    SourceProxy s(*ctx.bus, p2vfs::source_object_path(p.positional[0]));
    const std::string path = s.StartSync(absolute(p.positional[1]), format, options);
    if (!wait) {
        const Properties props = job_properties(ctx, path);
        if (ctx.json_output)
            std::printf("%s\n", job_json(props).dump(2).c_str());
        else
            std::printf("%s\n", text(props, "Id").c_str());
        return exit_ok;
    }
    // The ID first (stdout holds nothing else): the job is there to ask
    // about while the initial copy runs.
    if (!ctx.json_output) {
        std::printf("%s\n", path.substr(path.rfind('/') + 1).c_str());
        std::fflush(stdout);
    }
    const Waited w =
        wait_until(ctx, path, [](const Properties& q) { return number(q, "Generation") >= 1; });
    if (ctx.json_output)
        return report(ctx, w);
    if (exit_code_of(w) != exit_ok)
        std::fprintf(stderr, "p2vctl: job %s: %s%s%s\n", text(w.p, "Id").c_str(),
                     text(w.p, "State").c_str(), text(w.p, "Error").empty() ? "" : ": ",
                     text(w.p, "Error").c_str());
    return exit_code_of(w);
}

// sync now|cutover|retarget|schedule|ack ID ...
int cmd_sync_job(Context& ctx, const std::string& action, const std::vector<std::string>& args) {
    const bool waits = action == "now" || action == "cutover";
    std::vector<std::string> with_value, flags;
    if (waits)
        flags = {"--wait"};
    else if (action == "schedule")
        with_value = {"--every", "--cutover-at"};
    else if (action == "ack")
        with_value = {"--fail"};
    const Parsed p = parse(args, with_value, flags);
    const size_t positionals = action == "retarget" ? 2 : 1;
    if (p.positional.size() != positionals)
        throw Usage("sync " + action + (action == "retarget" ? " ID DEST" : " ID"));
    const std::string path = job_path(p.positional[0]);
    JobProxy j(*ctx.bus, path);
    if (action == "now") {
        // Waiting: until the generation moved past this one and the job is
        // not syncing (a sync in progress now is followed at once by the one
        // asked for here, the phase staying "syncing" in between).
        const uint64_t before = number(job_properties(ctx, path), "Generation");
        j.Sync();
        if (!p.options.empty())
            return report(ctx, wait_until(ctx, path, [before](const Properties& q) {
                              return number(q, "Generation") > before &&
                                     text(q, "Phase") != "syncing" &&
                                     text(q, "Phase") != "checking-target";
                          }));
    } else if (action == "cutover") {
        j.Cutover();
        if (!p.options.empty())
            return wait_for(ctx, path);
    } else if (action == "retarget") {
        j.Retarget(absolute(p.positional[1]));
    } else if (action == "schedule") {
        double every = 0;
        int64_t cutover_at = 0;
        for (const auto& [k, v] : p.options) {
            if (k == "--every")
                every = non_negative(k, v);
            else
                cutover_at = parse_time(k, v, true);
        }
        j.SetSchedule(every, cutover_at);
    } else {
        std::string message;
        for (const auto& [k, v] : p.options)
            message = v; // --fail
        j.AckQuiesce(p.options.empty(), message);
    }
    const Properties props = job_properties(ctx, path);
    if (ctx.json_output)
        std::printf("%s\n", job_json(props).dump(2).c_str());
    else
        print_job_line(props);
    return exit_ok;
}

int cmd_sync(Context& ctx, const std::vector<std::string>& args) {
    if (args.empty())
        throw Usage("sync start|now|cutover|retarget|schedule|ack ...");
    const std::string action = args[0];
    const std::vector<std::string> rest(args.begin() + 1, args.end());
    if (action == "start")
        return cmd_sync_start(ctx, rest);
    if (action == "now" || action == "cutover" || action == "retarget" || action == "schedule" ||
        action == "ack")
        return cmd_sync_job(ctx, action, rest);
    throw Usage("sync " + action + ": expected start, now, cutover, retarget, schedule or ack");
}

int cmd_jobs(Context& ctx, const std::vector<std::string>& args) {
    if (!args.empty())
        throw Usage("jobs takes no arguments");
    ManagerProxy m(*ctx.bus);
    json out = json::array();
    for (const auto& path : m.ListJobs()) {
        const Properties p = job_properties(ctx, path);
        if (ctx.json_output)
            out.push_back(job_json(p));
        else
            print_job_line(p);
    }
    if (ctx.json_output)
        std::printf("%s\n", out.dump(2).c_str());
    return exit_ok;
}

int cmd_job(Context& ctx, const std::vector<std::string>& args) {
    if (args.size() != 1)
        throw Usage("job ID");
    const json j = job_json(job_properties(ctx, job_path(args[0])));
    if (ctx.json_output) {
        std::printf("%s\n", j.dump(2).c_str());
        return exit_ok;
    }
    for (const auto& [k, v] : j.items()) {
        const std::string value = k == "next_event_time" ? iso_time(v.get<int64_t>())
                                  : v.is_string()        ? v.get<std::string>()
                                                         : v.dump();
        std::printf("%-15s %s\n", k.c_str(), value.c_str());
    }
    return exit_ok;
}

int cmd_control(Context& ctx, const std::string& command, const std::vector<std::string>& args) {
    if (args.size() != 1)
        throw Usage(command + " ID");
    const std::string path = job_path(args[0]);
    JobProxy j(*ctx.bus, path);
    if (command == "pause")
        j.Pause();
    else if (command == "resume")
        j.Resume();
    else if (command == "cancel")
        j.Cancel();
    else
        j.Remove();
    if (command == "forget") {
        if (ctx.json_output)
            std::printf("%s\n", json{{"forgotten", args[0]}}.dump().c_str());
        return exit_ok;
    }
    const Properties p = job_properties(ctx, path);
    if (ctx.json_output)
        std::printf("%s\n", job_json(p).dump(2).c_str());
    else
        print_job_line(p);
    return exit_ok;
}

int exit_code_of(const sdbus::Error& e) {
    const std::string& name = e.getName();
    if (name == "org.p2vfs.Error.AccessDenied" || name == "org.freedesktop.DBus.Error.AccessDenied")
        return exit_denied;
    if (name == "org.p2vfs.Error.NotFound" || name == "org.freedesktop.DBus.Error.UnknownObject" ||
        name == "org.freedesktop.DBus.Error.UnknownMethod")
        return exit_not_found;
    if (name == "org.freedesktop.DBus.Error.ServiceUnknown" ||
        name == "org.freedesktop.DBus.Error.NameHasNoOwner" ||
        name == "org.freedesktop.DBus.Error.NoReply" ||
        name == "org.freedesktop.DBus.Error.Disconnected" || name.starts_with("System.Error."))
        return exit_no_daemon;
    return exit_failed;
}

} // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    Context ctx;
    std::string bus = std::getenv("P2VFS_BUS") ? std::getenv("P2VFS_BUS") : "system";
    size_t i = 0;
    try {
        for (; i < args.size(); ++i) {
            const std::string& a = args[i];
            if (a == "--json") {
                ctx.json_output = true;
            } else if (a == "--bus" || a.starts_with("--bus=")) {
                if (a == "--bus") {
                    if (i + 1 >= args.size())
                        throw Usage("--bus needs a value");
                    bus = args[++i];
                } else {
                    bus = a.substr(6);
                }
            } else if (a == "-h" || a == "--help") {
                std::fputs(usage_text, stdout);
                return exit_ok;
            } else if (a.starts_with("-")) {
                throw Usage("unknown option " + a);
            } else {
                break;
            }
        }
        if (i >= args.size())
            throw Usage("no command given");
        const std::string command = args[i];
        const std::vector<std::string> rest(args.begin() + static_cast<long>(i) + 1, args.end());
        // --json may also come after the command.
        std::vector<std::string> command_args;
        for (const std::string& a : rest) {
            if (a == "--json")
                ctx.json_output = true;
            else
                command_args.push_back(a);
        }
        static const std::vector<std::string> commands{
            "list", "formats", "add",    "remove", "expose", "materialize", "jobs",   "job",
            "wait", "pause",   "resume", "cancel", "forget", "inspect",     "fixups", "sync"};
        if (std::find(commands.begin(), commands.end(), command) == commands.end())
            throw Usage("unknown command '" + command + "'");
        try {
            if (bus == "system")
                ctx.bus = sdbus::createSystemBusConnection();
            else if (bus == "session")
                ctx.bus = sdbus::createSessionBusConnection();
            else
                ctx.bus = sdbus::createSessionBusConnectionWithAddress(bus);
        } catch (const sdbus::Error& e) {
            throw Failure("cannot connect to the " + bus + " bus: " + e.getMessage(), exit_no_daemon);
        }
        if (command == "list")
            return cmd_list(ctx, command_args);
        if (command == "formats")
            return cmd_formats(ctx, command_args);
        if (command == "add")
            return cmd_add(ctx, command_args);
        if (command == "remove")
            return cmd_remove(ctx, command_args);
        if (command == "expose")
            return cmd_expose(ctx, command_args);
        if (command == "materialize")
            return cmd_materialize(ctx, command_args);
        if (command == "jobs")
            return cmd_jobs(ctx, command_args);
        if (command == "inspect")
            return cmd_inspect(ctx, command_args);
        if (command == "fixups")
            return cmd_fixups(ctx, command_args);
        if (command == "sync")
            return cmd_sync(ctx, command_args);
        if (command == "job")
            return cmd_job(ctx, command_args);
        if (command == "wait") {
            if (command_args.size() != 1)
                throw Usage("wait ID");
            return wait_for(ctx, job_path(command_args[0]));
        }
        return cmd_control(ctx, command, command_args);
    } catch (const Usage& e) {
        std::fprintf(stderr, "p2vctl: %s (see p2vctl --help)\n", e.what());
        return exit_usage;
    } catch (const Failure& e) {
        std::fprintf(stderr, "p2vctl: error: %s\n", e.what());
        return e.code;
    } catch (const sdbus::Error& e) {
        std::fprintf(stderr, "p2vctl: error: %s (%s)\n", e.getMessage().c_str(), e.getName().c_str());
        return exit_code_of(e);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "p2vctl: error: %s\n", e.what());
        return exit_failed;
    }
}
