#include "guest/registry.h"

#include "common/endian.h"

#include <algorithm>
#include <set>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <hivex.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace p2vfs::guest {

namespace {

hive_h* handle(void* h) {
    return static_cast<hive_h*>(h);
}

// An anonymous memory file, closed on scope exit; hivex reaches it by name.
class MemoryFile {
public:
    explicit MemoryFile(const std::string& what) : fd_(::memfd_create("p2vfs-hive", MFD_CLOEXEC)) {
        if (fd_ < 0)
            throw Error("cannot make a memory file for " + what + ": " + errno_text(errno));
    }
    ~MemoryFile() { ::close(fd_); }
    MemoryFile(const MemoryFile&) = delete;
    MemoryFile& operator=(const MemoryFile&) = delete;

    std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

    void write_all(const std::string& bytes, const std::string& what) {
        for (size_t at = 0; at < bytes.size();) {
            const ssize_t w = ::pwrite(fd_, bytes.data() + at, bytes.size() - at,
                                       static_cast<off_t>(at));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                throw Error("cannot copy " + what +
                            " into memory: " + errno_text(w < 0 ? errno : ENOSPC));
            at += static_cast<size_t>(w);
        }
    }

    std::string read_all(const std::string& what) {
        struct stat st {};
        if (::fstat(fd_, &st) != 0)
            throw Error("cannot read back " + what + ": " + errno_text(errno));
        std::string out(static_cast<size_t>(st.st_size), '\0');
        for (size_t at = 0; at < out.size();) {
            const ssize_t r = ::pread(fd_, out.data() + at, out.size() - at, static_cast<off_t>(at));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                throw Error("cannot read back " + what + ": " + errno_text(r < 0 ? errno : EIO));
            at += static_cast<size_t>(r);
        }
        return out;
    }

private:
    int fd_;
};

// UTF-16LE code units from `bytes`, split at NULs (REG_MULTI_SZ).
std::vector<std::string> utf16_strings(const std::string& bytes) {
    std::vector<std::string> out;
    std::string cur;
    bool any = false;
    for (size_t i = 0; i + 1 < bytes.size(); i += 2) {
        const uint32_t u = static_cast<unsigned char>(bytes[i]) |
                           static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
        if (u == 0) {
            if (!any)
                break; // the empty string that ends the list
            out.push_back(utf16le_to_utf8(cur));
            cur.clear();
            any = false;
            continue;
        }
        cur += bytes[i];
        cur += bytes[i + 1];
        any = true;
    }
    if (any)
        out.push_back(utf16le_to_utf8(cur));
    return out;
}

// hivex gives and takes a value's type as enum hive_type, whose enumerators
// end at 11, while a hive holds any 32-bit number there (types of
// applications' own, or damage). Read as the enum, such a number is
// undefined behaviour (UBSan stops on it), so the type crosses as bytes.
static_assert(sizeof(hive_type) == sizeof(uint32_t));

uint32_t type_number(const hive_type& t) {
    uint32_t n = 0;
    std::memcpy(&n, &t, sizeof n);
    return n;
}

hive_set_value set_value_of(const std::string& name, const RegValue& v) {
    hive_set_value s{const_cast<char*>(name.c_str()), hive_t_REG_NONE, v.bytes.size(),
                     const_cast<char*>(v.bytes.data())};
    std::memcpy(&s.t, &v.type, sizeof s.t);
    return s;
}

// Where the hive bins end disagrees with the header, in words that follow
// the hive's name; "" when they agree (or when hivex will refuse the file
// anyway). The base block (4 KiB) gives the length of the bins after it at
// 0x28, a whole number of 4 KiB pages; each bin gives its own length at 8
// ("hbin" at 0; Windows registry file format specification, "Base block",
// "Hive bin"). hivex trusts the header's length: it reads whole bins past
// it, and an edit appends its new bin at it — over bins it read, or after a
// hole of zeros when the file is shorter, as much memory as a lying header
// asks for — and the hive committed opens nowhere.
std::string bins_disagree(const std::string& bytes) {
    constexpr size_t base_block = 0x1000, page = 0x1000;
    if (bytes.size() < base_block)
        return "";
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    const uint32_t bins = load_le<uint32_t>(p + 0x28);
    if (bins % page != 0)
        return ": its header counts " + std::to_string(bins) +
               " bytes of hive bins, not a whole number of 4 KiB pages";
    if (const size_t held = bytes.size() - base_block; bins > held)
        return " is cut short: its header counts " + human_size(bins) +
               " of hive bins, the file holds " +
               (held % 1024 == 0 ? human_size(held) : std::to_string(held) + " bytes");
    const size_t end = base_block + bins;
    for (size_t at = base_block; at < end;) {
        const uint32_t length = load_le<uint32_t>(p + at + 8);
        if (bytes.compare(at, 4, "hbin") != 0 || length == 0 || length % page != 0)
            return ""; // hivex refuses it, naming what it found
        if (length > end - at)
            return ": the hive bin at " + hex(at) + " (" + human_size(length) +
                   ") reaches past the " + human_size(bins) + " of hive bins its header counts";
        at += length;
    }
    return "";
}

} // namespace

RegValue reg_string(const std::string& utf8, uint32_t type) {
    return {type, utf8_to_utf16le(utf8) + std::string(2, '\0')};
}

RegValue reg_dword_value(uint32_t v) {
    std::string b(4, '\0');
    for (int i = 0; i < 4; ++i)
        b[static_cast<size_t>(i)] = static_cast<char>(v >> (8 * i));
    return {reg_dword, b};
}

RegValue reg_multi_string(const std::vector<std::string>& utf8) {
    std::string b;
    for (const std::string& s : utf8)
        b += utf8_to_utf16le(s) + std::string(2, '\0');
    b += std::string(2, '\0');
    return {reg_multi_sz, b};
}

RegValue reg_binary_value(std::string bytes) {
    return {reg_binary, std::move(bytes)};
}

const char* reg_type_name(uint32_t type) {
    switch (type) {
    case reg_none: return "REG_NONE";
    case reg_sz: return "REG_SZ";
    case reg_expand_sz: return "REG_EXPAND_SZ";
    case reg_binary: return "REG_BINARY";
    case reg_dword: return "REG_DWORD";
    case reg_dword_big_endian: return "REG_DWORD_BIG_ENDIAN";
    case reg_link: return "REG_LINK";
    case reg_multi_sz: return "REG_MULTI_SZ";
    case reg_qword: return "REG_QWORD";
    default: return "REG_OTHER";
    }
}

std::string reg_export_text(const RegValue& v) {
    char buf[16];
    if (v.type == reg_dword && v.bytes.size() == 4) {
        uint32_t d = 0;
        for (int i = 3; i >= 0; --i)
            d = d << 8 | static_cast<unsigned char>(v.bytes[static_cast<size_t>(i)]);
        std::snprintf(buf, sizeof buf, "dword:%08x", d);
        return buf;
    }
    std::snprintf(buf, sizeof buf, "hex(%x):", v.type);
    std::string out = buf;
    for (size_t i = 0; i < v.bytes.size(); ++i) {
        std::snprintf(buf, sizeof buf, "%s%02x", i ? "," : "",
                      static_cast<unsigned char>(v.bytes[i]));
        out += buf;
    }
    return out;
}

std::string reg_readable(const RegValue& v) {
    switch (v.type) {
    case reg_dword:
        if (v.bytes.size() == 4) {
            uint32_t d = 0;
            for (int i = 3; i >= 0; --i)
                d = d << 8 | static_cast<unsigned char>(v.bytes[static_cast<size_t>(i)]);
            char buf[32];
            if (d > 9)
                std::snprintf(buf, sizeof buf, "%u (0x%x)", d, d);
            else
                std::snprintf(buf, sizeof buf, "%u", d);
            return buf;
        }
        break;
    case reg_sz:
    case reg_expand_sz:
        return utf16le_to_utf8(v.bytes);
    case reg_multi_sz: {
        std::string out;
        for (const std::string& s : utf16_strings(v.bytes))
            out += (out.empty() ? "" : " | ") + s;
        return out;
    }
    case reg_none:
        if (v.bytes.empty())
            return "(key)";
        break;
    default:
        break;
    }
    // Binary data that is UTF-16 text (MountedDevices' device paths) is
    // shown as the text.
    bool text = !v.bytes.empty() && v.bytes.size() % 2 == 0;
    for (size_t i = 0; text && i < v.bytes.size(); i += 2)
        text = v.bytes[i + 1] == '\0' && v.bytes[i] >= 0x20 && v.bytes[i] < 0x7f;
    if (text)
        return std::string(reg_type_name(v.type)) + " \"" + utf16le_to_utf8(v.bytes) +
               "\" (UTF-16)";
    std::string out;
    char buf[4];
    for (size_t i = 0; i < v.bytes.size(); ++i) {
        std::snprintf(buf, sizeof buf, "%02x", static_cast<unsigned char>(v.bytes[i]));
        out += (i ? " " : "") + std::string(buf);
    }
    return std::string(reg_type_name(v.type)) + " " + out;
}

// ---- Hive -------------------------------------------------------------------

Hive::Hive(const std::string& bytes, std::string name, bool writable)
    : name_(std::move(name)), writable_(writable) {
    if (bytes.size() > size_limit)
        throw Error(name_ + " is " + human_size(bytes.size()) + ", more than the " +
                        human_size(size_limit) + " a registry hive is read up to",
                    EFBIG);
    // hivex reports a file of another kind only by errno.
    if (bytes.compare(0, 4, "regf") != 0)
        throw Error(name_ + " is not a registry hive: it does not start with 'regf'", EIO);
    if (const std::string why = bins_disagree(bytes); !why.empty())
        throw Error(name_ + why, EIO);
    MemoryFile copy(name_);
    copy.write_all(bytes, name_);
    errno = 0;
    h_ = hivex_open(copy.path().c_str(), writable ? HIVEX_OPEN_WRITE : 0);
    const int err = errno;
    if (!h_)
        throw Error(name_ + " is a damaged registry hive (hivex: " +
                        errno_text(err ? err : EINVAL) + ")",
                    EIO);
}

Hive::~Hive() {
    hivex_close(handle(h_));
}

Error Hive::damaged(const std::string& what, int err) const {
    return Error(name_ + ": " + what + " cannot be read (hivex: " +
                     errno_text(err ? err : EINVAL) + ")",
                 EIO);
}

Hive::Node Hive::root() {
    errno = 0;
    const hive_node_h node = hivex_root(handle(h_));
    if (!node)
        throw damaged("the root key", errno);
    return node;
}

namespace {
// "A\\B\\\\C" -> {"A", "B", "C"}
std::vector<std::string> key_parts(const std::string& path) {
    std::vector<std::string> parts;
    for (size_t i = 0; i < path.size();) {
        const size_t j = std::min(path.find('\\', i), path.size());
        if (j > i)
            parts.push_back(path.substr(i, j - i));
        i = j + 1;
    }
    return parts;
}
} // namespace

Hive::Node Hive::key(const std::string& path) {
    Node node = root();
    for (const std::string& part : key_parts(path)) {
        if (!node)
            break;
        errno = 0;
        node = hivex_node_get_child(handle(h_), node, part.c_str());
        if (!node && errno)
            throw damaged("key " + path, errno);
    }
    return node;
}

std::string Hive::key_name(Node node) {
    errno = 0;
    char* s = hivex_node_name(handle(h_), node);
    if (!s)
        throw damaged("a key's name", errno);
    std::string out = s;
    std::free(s);
    return out;
}

std::string Hive::path_of(Node node) {
    std::string out;
    const Node top = root();
    for (int depth = 0; node && node != top && depth < 512; ++depth) {
        out = key_name(node) + (out.empty() ? "" : "\\") + out;
        errno = 0;
        node = hivex_node_parent(handle(h_), node);
        if (!node && errno)
            break;
    }
    return out.empty() ? "the root key" : out;
}

std::vector<Hive::Node> Hive::subkeys(Node node) {
    errno = 0;
    hive_node_h* children = hivex_node_children(handle(h_), node);
    if (!children)
        throw damaged("the subkeys of " + path_of(node), errno);
    std::vector<Node> out;
    for (size_t i = 0; children[i]; ++i)
        out.push_back(children[i]);
    std::free(children);
    return out;
}

size_t Hive::value_handle(Node node, const std::string& name) {
    errno = 0;
    const hive_value_h v = hivex_node_get_value(handle(h_), node, name.c_str());
    if (!v && errno)
        throw damaged("value " + name + " of " + path_of(node), errno);
    return v;
}

std::optional<std::string> Hive::value_name(Node node, const std::string& name) {
    const size_t v = value_handle(node, name);
    if (!v)
        return std::nullopt;
    errno = 0;
    char* s = hivex_value_key(handle(h_), v);
    if (!s)
        throw damaged("the name of value " + name + " of " + path_of(node), errno);
    std::string out = s;
    std::free(s);
    return out;
}

std::optional<RegValue> Hive::value(Node node, const std::string& name) {
    const size_t v = value_handle(node, name);
    if (!v)
        return std::nullopt;
    hive_type t{};
    size_t len = 0;
    errno = 0;
    char* data = hivex_value_value(handle(h_), v, &t, &len);
    if (!data)
        throw damaged("value " + name + " of " + path_of(node), errno);
    RegValue out{type_number(t), std::string(data, len)};
    std::free(data);
    return out;
}

std::vector<std::pair<std::string, RegValue>> Hive::values(Node node) {
    errno = 0;
    hive_value_h* vs = hivex_node_values(handle(h_), node);
    if (!vs)
        throw damaged("the values of " + path_of(node), errno);
    std::vector<std::pair<std::string, RegValue>> out;
    try {
        for (size_t i = 0; vs[i]; ++i) {
            errno = 0;
            char* key = hivex_value_key(handle(h_), vs[i]);
            if (!key)
                throw damaged("a value's name in " + path_of(node), errno);
            std::string name = key;
            std::free(key);
            hive_type t{};
            size_t len = 0;
            char* data = hivex_value_value(handle(h_), vs[i], &t, &len);
            if (!data)
                throw damaged("value " + name + " of " + path_of(node), errno);
            out.push_back({name, RegValue{type_number(t), std::string(data, len)}});
            std::free(data);
        }
    } catch (...) {
        std::free(vs);
        throw;
    }
    std::free(vs);
    return out;
}

std::optional<std::string> Hive::string(Node node, const std::string& name) {
    const auto v = value(node, name);
    if (!v || (v->type != reg_sz && v->type != reg_expand_sz))
        return std::nullopt;
    return utf16le_to_utf8(v->bytes);
}

std::optional<uint32_t> Hive::dword(Node node, const std::string& name) {
    const auto v = value(node, name);
    if (!v || v->bytes.size() != 4)
        return std::nullopt;
    uint32_t d = 0;
    if (v->type == reg_dword) {
        for (int i = 3; i >= 0; --i)
            d = d << 8 | static_cast<unsigned char>(v->bytes[static_cast<size_t>(i)]);
    } else if (v->type == reg_dword_big_endian) {
        for (int i = 0; i < 4; ++i)
            d = d << 8 | static_cast<unsigned char>(v->bytes[static_cast<size_t>(i)]);
    } else {
        return std::nullopt;
    }
    return d;
}

Hive::Node Hive::add_key(const std::string& path) {
    if (!writable_)
        throw InvalidState(name_ + " was opened read-only");
    Node node = root();
    for (const std::string& part : key_parts(path)) {
        errno = 0;
        Node child = hivex_node_get_child(handle(h_), node, part.c_str());
        if (!child && errno)
            throw damaged("key " + path, errno);
        if (!child) {
            errno = 0;
            child = hivex_node_add_child(handle(h_), node, part.c_str());
            if (!child)
                throw Error(name_ + ": cannot make key " + path + " (hivex: " +
                                errno_text(errno ? errno : EINVAL) + ")",
                            EIO);
        }
        node = child;
    }
    return node;
}

// hivex frees a key's old values before it writes the new ones: a value
// list that names one value twice, or two values whose data share a cell
// (a damaged or hostile hive), makes it free a cell twice and abort the
// process. Such a key is refused before hivex sees the edit.
void Hive::check_editable(Node node, const std::string& name) {
    errno = 0;
    hive_value_h* vs = hivex_node_values(handle(h_), node);
    if (!vs)
        throw damaged("the values of " + path_of(node), errno);
    std::set<size_t> records, cells; // each value's own record, its data's cell
    std::string why;
    for (size_t i = 0; vs[i] && why.empty(); ++i)
        if (!records.insert(vs[i]).second)
            why = "its value list names the value at " + hex(vs[i]) + " twice";
    for (size_t i = 0; vs[i] && why.empty(); ++i) {
        size_t len = 0;
        errno = 0;
        const hive_value_h cell = hivex_value_data_cell_offset(handle(h_), vs[i], &len);
        if (!cell)
            continue; // data kept in the record itself
        if (records.count(cell))
            why = "a value's data is the record of another value, at " + hex(cell);
        else if (!cells.insert(cell).second)
            why = "two of its values share the data cell at " + hex(cell);
    }
    std::free(vs);
    if (!why.empty())
        throw Error(name_ + ": key " + path_of(node) + " is damaged (" + why +
                        "): value " + name + " is not edited",
                    EIO);
}

void Hive::set_value(Node node, const std::string& name, const RegValue& v) {
    if (!writable_)
        throw InvalidState(name_ + " was opened read-only");
    check_editable(node, name);
    // hivex sets the last value of a name and reads the first: of two (a
    // damaged hive; names match without regard to case) the edit would
    // land on the one not read.
    size_t same = 0;
    for (const auto& held : values(node))
        same += strcasecmp(held.first.c_str(), name.c_str()) == 0;
    if (same > 1)
        throw Error(name_ + ": key " + path_of(node) + " holds " + std::to_string(same) +
                        " values named " + name +
                        " (names match without regard to case): which one Windows reads is "
                        "not known, so none is edited",
                    EIO);
    // An existing value keeps the case of its name (Windows matches names
    // without regard to case; the export would show a rename otherwise).
    const std::string stored = value_name(node, name).value_or(name);
    hive_set_value set = set_value_of(stored, v);
    errno = 0;
    if (hivex_node_set_value(handle(h_), node, &set, 0) != 0)
        throw Error(name_ + ": cannot set value " + name + " of " + path_of(node) + " (hivex: " +
                        errno_text(errno ? errno : EINVAL) + ")",
                    EIO);
}

void Hive::delete_value(Node node, const std::string& name) {
    if (!writable_)
        throw InvalidState(name_ + " was opened read-only");
    check_editable(node, name);
    // hivex replaces a key's values as a whole: every value but this one.
    auto all = values(node);
    std::vector<hive_set_value> keep;
    bool found = false;
    for (auto& [n, v] : all) {
        if (strcasecmp(n.c_str(), name.c_str()) == 0) {
            found = true;
            continue;
        }
        keep.push_back(set_value_of(n, v));
    }
    if (!found)
        return;
    errno = 0;
    if (hivex_node_set_values(handle(h_), node, keep.size(), keep.data(), 0) != 0)
        throw Error(name_ + ": cannot remove value " + name + " of " + path_of(node) +
                        " (hivex: " + errno_text(errno ? errno : EINVAL) + ")",
                    EIO);
}

std::string Hive::commit() {
    if (!writable_)
        throw InvalidState(name_ + " was opened read-only");
    MemoryFile out(name_);
    errno = 0;
    if (hivex_commit(handle(h_), out.path().c_str(), 0) != 0)
        throw Error("cannot write the edited " + name_ + " (hivex: " +
                        errno_text(errno ? errno : EIO) + ")",
                    EIO);
    return out.read_all(name_);
}

} // namespace p2vfs::guest
