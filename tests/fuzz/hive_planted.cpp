// The replay's side of hive_fuzz.cpp: a SYSTEM-like hive built cell by
// cell here, holding the record kinds hivex's own writer never makes and
// large real hives do — a subkey index ("ri") over two hashed lists
// ("lh"), a plain list ("li"), data in segments ("db") — beside data kept
// in the value itself (REG_DWORD, length's top bit set), so that mutations
// reach hivex's readers of them; and the fields of a hive's pages.
//
// Layout (Windows Registry File Format Specification, Maxim Suhanov,
// github.com/msuhanov/regf; hivex's lib/hivex-internal.h): a 4 KiB header
// ("regf"; the root key's offset at 0x24, the pages' length at 0x28, an XOR
// checksum of its first 0x1fc bytes at 0x1fc), then pages ("hbin": their
// offset at 4, length at 8) of cells: a 32-bit size (negative when used)
// and the record. Offsets between cells count from the first page.
#include "replay.h"

#include <algorithm>

namespace p2vfs::fuzz {

namespace {

class HiveBuilder {
public:
    // A used cell of the record `body` (its id first); returns its offset.
    uint32_t cell(const Bytes& body) {
        const size_t size = (4 + body.size() + 7) / 8 * 8;
        const auto at = static_cast<uint32_t>(bins_.size());
        put_le<int32_t>(bins_, at, -static_cast<int32_t>(size));
        put(bins_, at + 4, body.data(), body.size());
        bins_.resize(at + size);
        return at;
    }

    void set32(uint32_t cell, size_t field, uint32_t v) {
        put_le<uint32_t>(bins_, cell + field, v);
    }

    uint32_t key(const std::string& name, uint32_t parent, uint16_t flags = 0x20) {
        Bytes b(0x4c);
        put_text(b, 0, "nk");
        put_le<uint16_t>(b, 2, flags);                 // 0x20: the name is ASCII
        put_le<uint64_t>(b, 4, 0x01d9f0a0c0ffee00ULL); // last written
        put_le<uint32_t>(b, 0x10, parent);
        put_le<uint32_t>(b, 0x1c, none); // subkey list
        put_le<uint32_t>(b, 0x20, none); // volatile subkey list
        put_le<uint32_t>(b, 0x28, none); // value list
        put_le<uint32_t>(b, 0x2c, sk_);  // security
        put_le<uint32_t>(b, 0x30, none); // class name
        put_le<uint16_t>(b, 0x48, static_cast<uint16_t>(name.size()));
        put_text(b, 0x4c, name.c_str());
        const uint32_t at = cell(b);
        if (sk_ != none)
            set32(sk_, 0x10, ++sk_refs_);
        return at;
    }

    // Subkeys as an lh list, an li list, or an ri index of lists.
    void subkeys(uint32_t key, uint32_t count, uint32_t list) {
        set32(key, 0x18, count);
        set32(key, 0x20, list);
    }
    uint32_t lh(const std::vector<std::pair<uint32_t, std::string>>& keys) {
        Bytes b(4);
        put_text(b, 0, "lh");
        put_le<uint16_t>(b, 2, static_cast<uint16_t>(keys.size()));
        for (const auto& [at, name] : keys) {
            uint32_t hash = 0;
            for (const char c : name)
                hash = hash * 37 + static_cast<unsigned char>(c >= 'a' && c <= 'z' ? c - 32 : c);
            put_le<uint32_t>(b, b.size(), at);
            put_le<uint32_t>(b, b.size(), hash);
        }
        return cell(b);
    }
    uint32_t offsets_list(const char* id, const std::vector<uint32_t>& offsets) {
        Bytes b(4);
        put_text(b, 0, id);
        put_le<uint16_t>(b, 2, static_cast<uint16_t>(offsets.size()));
        for (const uint32_t at : offsets)
            put_le<uint32_t>(b, b.size(), at);
        return cell(b);
    }

    // The key's values: each a vk record, their offsets in a list cell.
    void values(uint32_t key, const std::vector<uint32_t>& vks) {
        Bytes b;
        for (const uint32_t at : vks)
            put_le<uint32_t>(b, b.size(), at);
        const uint32_t list = cell(b);
        set32(key, 0x28, static_cast<uint32_t>(vks.size()));
        set32(key, 0x2c, list);
    }
    uint32_t value(const std::string& name, uint32_t type, uint32_t length, uint32_t data) {
        Bytes b(0x14);
        put_text(b, 0, "vk");
        put_le<uint16_t>(b, 2, static_cast<uint16_t>(name.size()));
        put_le<uint32_t>(b, 4, length);
        put_le<uint32_t>(b, 8, data);
        put_le<uint32_t>(b, 0xc, type);
        put_le<uint16_t>(b, 0x10, 1); // the name is ASCII
        put_text(b, 0x14, name.c_str());
        return cell(b);
    }
    uint32_t inline_dword(const std::string& name, uint32_t v) {
        return value(name, 4, 0x80000004, v);
    }
    uint32_t data_value(const std::string& name, uint32_t type, const Bytes& data) {
        Bytes b(data);
        const uint32_t at = cell(b);
        return value(name, type, static_cast<uint32_t>(data.size()), at);
    }
    // `data` in a db record's segments of `segment` bytes each, each cell
    // 4 bytes longer than its data (as Windows writes them, and as hivex
    // reads them).
    uint32_t segmented_value(const std::string& name, uint32_t type, const Bytes& data,
                             size_t segment) {
        std::vector<uint32_t> segments;
        for (size_t at = 0; at < data.size(); at += segment) {
            Bytes chunk(data.begin() + static_cast<ptrdiff_t>(at),
                        data.begin() + static_cast<ptrdiff_t>(std::min(data.size(), at + segment)));
            chunk.resize(chunk.size() + 4);
            segments.push_back(cell(chunk));
        }
        Bytes list;
        for (const uint32_t at : segments)
            put_le<uint32_t>(list, list.size(), at);
        const uint32_t list_at = cell(list);
        Bytes db(12);
        put_text(db, 0, "db");
        put_le<uint16_t>(db, 2, static_cast<uint16_t>(segments.size()));
        put_le<uint32_t>(db, 4, list_at);
        return value(name, type, static_cast<uint32_t>(data.size()), cell(db));
    }

    // Every key shares one security record, as in a hive where no key has
    // its own permissions.
    void security() {
        Bytes b(0x14);
        put_text(b, 0, "sk");
        put_le<uint32_t>(b, 0x10, 20);
        // A self-relative security descriptor with no owner and no lists.
        put_le<uint8_t>(b, 0x14, 1);
        put_le<uint16_t>(b, 0x16, 0x8000);
        b.resize(0x14 + 20);
        sk_ = cell(b);
        set32(sk_, 8, sk_); // its neighbours in the chain: itself
        set32(sk_, 0xc, sk_);
    }

    Bytes finish(uint32_t root) {
        // One page of whole 4 KiB units, the last cell a free one.
        const size_t used = bins_.size();
        const size_t length = (used + 8 + 0xfff) / 0x1000 * 0x1000;
        put_le<int32_t>(bins_, used, static_cast<int32_t>(length - used));
        bins_.resize(length);
        put_text(bins_, 0, "hbin");
        put_le<uint32_t>(bins_, 8, static_cast<uint32_t>(length));

        Bytes d(0x1000);
        put_text(d, 0, "regf");
        put_le<uint32_t>(d, 4, 7); // sequence numbers, equal: written whole
        put_le<uint32_t>(d, 8, 7);
        put_le<uint32_t>(d, 0x14, 1); // version 1.5
        put_le<uint32_t>(d, 0x18, 5);
        put_le<uint32_t>(d, 0x20, 1);
        put_le<uint32_t>(d, 0x24, root);
        put_le<uint32_t>(d, 0x28, static_cast<uint32_t>(length));
        put_le<uint32_t>(d, 0x2c, 1);
        const std::string name = "\\SystemRoot\\System32\\Config\\SYSTEM";
        for (size_t i = 0; i < name.size() && i < 32; ++i)
            d[0x30 + 2 * i] = static_cast<unsigned char>(name[i]);
        uint32_t sum = 0;
        for (size_t at = 0; at < 0x1fc; at += 4)
            sum ^= p2vfs::load_le<uint32_t>(&d[at]);
        put_le<uint32_t>(d, 0x1fc, sum);
        d.insert(d.end(), bins_.begin(), bins_.end());
        return d;
    }

    static constexpr uint32_t none = 0xffffffff;

private:
    Bytes bins_ = Bytes(0x20); // the page's header, filled by finish()
    uint32_t sk_ = none;
    uint32_t sk_refs_ = 0;
};

Bytes utf16z(const std::string& ascii) {
    Bytes b;
    for (const char c : ascii) {
        b.push_back(static_cast<unsigned char>(c));
        b.push_back(0);
    }
    b.push_back(0);
    b.push_back(0);
    return b;
}

Bytes system_hive() {
    HiveBuilder h;
    h.security();
    const uint32_t root = h.key("ROOT", 0, 0x2c); // HiveEntry, NoDelete, ASCII
    const uint32_t set = h.key("ControlSet001", root);
    const uint32_t mounted = h.key("MountedDevices", root);
    const uint32_t select = h.key("Select", root);
    h.subkeys(root, 3,
              h.offsets_list("ri", {h.lh({{set, "ControlSet001"}}),
                                    h.lh({{mounted, "MountedDevices"}, {select, "Select"}})}));
    h.values(select, {h.inline_dword("Current", 1), h.inline_dword("Default", 1)});

    const uint32_t control = h.key("Control", set);
    const uint32_t services = h.key("Services", set);
    h.subkeys(set, 2, h.lh({{control, "Control"}, {services, "Services"}}));
    const uint32_t crash = h.key("CrashControl", control);
    h.subkeys(control, 1, h.lh({{crash, "CrashControl"}}));
    h.values(crash, {h.inline_dword("AutoReboot", 1)});

    Bytes multi = utf16z("VMCI");
    const Bytes second = utf16z("vmhgfs");
    multi.insert(multi.end(), second.begin(), second.end());
    multi.push_back(0);
    multi.push_back(0);
    const uint32_t storahci = h.key("storahci", services);
    const uint32_t vmtools = h.key("VMTools", services);
    h.subkeys(services, 2, h.offsets_list("li", {storahci, vmtools}));
    h.values(storahci,
             {h.inline_dword("Type", 1), h.inline_dword("Start", 3),
              h.data_value("Group", 1, utf16z("SCSI miniport")),
              h.segmented_value("ImagePath", 2, utf16z("system32\\drivers\\storahci.sys"), 24)});
    h.values(vmtools, {h.inline_dword("Type", 16), h.inline_dword("Start", 2),
                       h.data_value("ImagePath", 2, utf16z("\"C:\\Program Files\\VMware\"")),
                       h.data_value("DependOnService", 7, multi)});

    // \DosDevices\C: on an MBR disk (signature, offset), D: a device path.
    Bytes c{0xb1, 0xa2, 0x08, 0x20, 0, 0, 0x10, 0, 0, 0, 0, 0};
    Bytes dpath = utf16z("\\??\\IDE#CdRom");
    dpath.resize(dpath.size() - 2);
    h.values(mounted, {h.data_value("\\DosDevices\\C:", 3, c),
                       h.segmented_value("\\DosDevices\\D:", 3, dpath, 16)});
    return h.finish(root);
}

} // namespace

ReplayTarget replay_target() {
    ReplayTarget t;
    t.planted = {{"planted:system-hive", system_hive()}};
    t.unit = 0x1000;
    // Header: sequence numbers, version, root offset, pages' length,
    // checksum. Pages: magic, offset, length, the first cell.
    t.fields = {0, 4, 8, 0x14, 0x20, 0x24, 0x28, 0x1fc};
    t.signatures = {
        {0, "regf"},      {0x1000, "hbin"},
        {0x2000, "hbin"}, {0x14, std::string("\x01\x00\x00\x00", 4)},
        {0x1024, "nk"},   {0x1024, "ri"},
        {0x1024, "li"},   {0x1024, "db"},
    };
    return t;
}

} // namespace p2vfs::fuzz
