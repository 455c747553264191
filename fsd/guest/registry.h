// Windows registry hives, read and edited in memory through hivex.
//
// A hive is opened from a copy of its bytes (read from NTFS by the caller)
// and, when edited, serialized back to bytes for the caller to write: the
// file on the guest's volume is replaced only once every edit has been made,
// so a failed edit changes nothing. hivex takes file names, so the copies
// live in anonymous memory files reached through /proc/self/fd; nothing is
// written to any file system of the host.
//
// Values are shown the way `hivexregedit --export` writes them
// ("dword:00000003", "hex(1):53,00,..."), so a plan of registry edits can be
// compared line by line with an export of the hive made by hivex's own
// tools, and in a readable form for previews ("3", "SCSI miniport").
#pragma once

#include "common/error.h"
#include "common/utf.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace p2vfs::guest {

// Registry value types (winnt.h).
enum RegType : uint32_t {
    reg_none = 0,
    reg_sz = 1,
    reg_expand_sz = 2,
    reg_binary = 3,
    reg_dword = 4,
    reg_dword_big_endian = 5,
    reg_link = 6,
    reg_multi_sz = 7,
    reg_qword = 11,
};

struct RegValue {
    uint32_t type = reg_none;
    std::string bytes; // as stored: UTF-16LE with a terminating NUL for strings
    bool operator==(const RegValue&) const = default;
};

RegValue reg_string(const std::string& utf8, uint32_t type = reg_sz);
RegValue reg_dword_value(uint32_t v);
RegValue reg_multi_string(const std::vector<std::string>& utf8);
RegValue reg_binary_value(std::string bytes);

// "dword:00000003" for REG_DWORD, "hex(T):xx,xx,..." for every other type
// ("hex(3):" for REG_BINARY too), exactly as hivexregedit --export writes
// the right-hand side of a value's line.
std::string reg_export_text(const RegValue& v);
// For people: a DWORD in decimal (and hex above 9), strings decoded
// ("SCSI miniport"; REG_MULTI_SZ as "a | b"), binary as spaced hex.
std::string reg_readable(const RegValue& v);
const char* reg_type_name(uint32_t type); // "REG_DWORD"; "REG_OTHER" for unknown ones

// UTF-16LE <-> UTF-8 (common/utf.h), as registry strings are stored.
using p2vfs::utf16le_to_utf8;
using p2vfs::utf8_to_utf16le;

class Hive {
public:
    // Hives larger than this are refused (real SYSTEM and SOFTWARE hives
    // stay far below; the copy is held in memory).
    static constexpr uint64_t size_limit = 512ull << 20;

    using Node = size_t; // 0: none

    // Opens a copy of `bytes`. `name` names the hive in every message
    // ("\Windows\System32\config\SYSTEM on partition 2"). Throws Error when
    // the bytes are not a hive ("does not start with 'regf'"), too large,
    // or damaged beyond what hivex opens.
    Hive(const std::string& bytes, std::string name, bool writable = false);
    ~Hive();
    Hive(const Hive&) = delete;
    Hive& operator=(const Hive&) = delete;

    const std::string& name() const { return name_; }

    Node root();
    // The key at `path` ("ControlSet001\Services\storahci"; '\'-separated,
    // matched without regard to case as Windows does); 0 when missing.
    // Throws Error when the hive is damaged on the way.
    Node key(const std::string& path);
    std::string key_name(Node node);
    std::vector<Node> subkeys(Node node);
    // The value's own name as stored (its case), or nullopt when missing.
    std::optional<std::string> value_name(Node node, const std::string& name);
    std::optional<RegValue> value(Node node, const std::string& name);
    std::vector<std::pair<std::string, RegValue>> values(Node node);
    // REG_SZ / REG_EXPAND_SZ as UTF-8; nullopt when missing or of another type.
    std::optional<std::string> string(Node node, const std::string& name);
    // REG_DWORD; nullopt when missing or of another type.
    std::optional<uint32_t> dword(Node node, const std::string& name);

    // Edits (a writable hive only; InvalidState otherwise). Each throws
    // Error naming the key and the value when hivex refuses.
    Node add_key(const std::string& path); // missing parents are made too
    void set_value(Node node, const std::string& name, const RegValue& v);
    void delete_value(Node node, const std::string& name);

    // The hive with the edits made, as bytes to write back.
    std::string commit();

private:
    std::string name_;
    bool writable_;
    void* h_ = nullptr; // hive_h*

    Error damaged(const std::string& what, int err) const;
    void check_editable(Node node, const std::string& name);
    size_t value_handle(Node node, const std::string& name);
    std::string path_of(Node node);
};

} // namespace p2vfs::guest
