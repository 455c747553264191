#include "guest/registry.h"

#include <algorithm>
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

void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xc0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xe0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
        out += static_cast<char>(0xf0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    }
}

void append_utf16(std::string& out, uint32_t unit) {
    out += static_cast<char>(unit & 0xff);
    out += static_cast<char>(unit >> 8);
}

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

} // namespace

std::string utf16le_to_utf8(const std::string& bytes) {
    std::string out;
    for (size_t i = 0; i + 1 < bytes.size(); i += 2) {
        uint32_t u = static_cast<unsigned char>(bytes[i]) |
                     static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
        if (u == 0)
            break;
        if (u >= 0xd800 && u <= 0xdbff && i + 3 < bytes.size()) {
            const uint32_t lo = static_cast<unsigned char>(bytes[i + 2]) |
                                static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 3]))
                                    << 8;
            if (lo >= 0xdc00 && lo <= 0xdfff) {
                append_utf8(out, 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00));
                i += 2;
                continue;
            }
        }
        if (u >= 0xd800 && u <= 0xdfff)
            u = 0xfffd;
        append_utf8(out, u);
    }
    return out;
}

std::string utf8_to_utf16le(const std::string& utf8) {
    std::string out;
    for (size_t i = 0; i < utf8.size();) {
        const auto b = static_cast<unsigned char>(utf8[i]);
        uint32_t cp = 0xfffd;
        size_t n = 1;
        if (b < 0x80) {
            cp = b;
        } else if ((b & 0xe0) == 0xc0 && i + 1 < utf8.size()) {
            cp = (b & 0x1fu) << 6 | (utf8[i + 1] & 0x3f);
            n = 2;
        } else if ((b & 0xf0) == 0xe0 && i + 2 < utf8.size()) {
            cp = (b & 0x0fu) << 12 | (utf8[i + 1] & 0x3fu) << 6 | (utf8[i + 2] & 0x3f);
            n = 3;
        } else if ((b & 0xf8) == 0xf0 && i + 3 < utf8.size()) {
            cp = (b & 0x07u) << 18 | (utf8[i + 1] & 0x3fu) << 12 | (utf8[i + 2] & 0x3fu) << 6 |
                 (utf8[i + 3] & 0x3f);
            n = 4;
        }
        i += n;
        if (cp >= 0x10000 && cp <= 0x10ffff) {
            cp -= 0x10000;
            append_utf16(out, 0xd800 + (cp >> 10));
            append_utf16(out, 0xdc00 + (cp & 0x3ff));
        } else {
            append_utf16(out, cp > 0xffff ? 0xfffd : cp);
        }
    }
    return out;
}

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

Hive::Node Hive::key(const std::string& path) {
    Node node = root();
    size_t i = 0;
    while (node && i < path.size()) {
        const size_t j = std::min(path.find('\\', i), path.size());
        const std::string part = path.substr(i, j - i);
        i = j + 1;
        if (part.empty())
            continue;
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
    RegValue out{static_cast<uint32_t>(t), std::string(data, len)};
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
            out.push_back({name, RegValue{static_cast<uint32_t>(t), std::string(data, len)}});
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
    size_t i = 0;
    while (i < path.size()) {
        const size_t j = std::min(path.find('\\', i), path.size());
        const std::string part = path.substr(i, j - i);
        i = j + 1;
        if (part.empty())
            continue;
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

void Hive::set_value(Node node, const std::string& name, const RegValue& v) {
    if (!writable_)
        throw InvalidState(name_ + " was opened read-only");
    // An existing value keeps the case of its name (Windows matches names
    // without regard to case; the export would show a rename otherwise).
    const std::string stored = value_name(node, name).value_or(name);
    hive_set_value set{const_cast<char*>(stored.c_str()), static_cast<hive_type>(v.type),
                       v.bytes.size(), const_cast<char*>(v.bytes.data())};
    errno = 0;
    if (hivex_node_set_value(handle(h_), node, &set, 0) != 0)
        throw Error(name_ + ": cannot set value " + name + " of " + path_of(node) + " (hivex: " +
                        errno_text(errno ? errno : EINVAL) + ")",
                    EIO);
}

void Hive::delete_value(Node node, const std::string& name) {
    if (!writable_)
        throw InvalidState(name_ + " was opened read-only");
    // hivex replaces a key's values as a whole: every value but this one.
    auto all = values(node);
    std::vector<hive_set_value> keep;
    bool found = false;
    for (auto& [n, v] : all) {
        if (strcasecmp(n.c_str(), name.c_str()) == 0) {
            found = true;
            continue;
        }
        keep.push_back({const_cast<char*>(n.c_str()), static_cast<hive_type>(v.type),
                        v.bytes.size(), const_cast<char*>(v.bytes.data())});
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
