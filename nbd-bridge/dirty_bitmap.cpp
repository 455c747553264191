#include "nbd-bridge/dirty_bitmap.h"

#include "common/error.h"

#include <algorithm>
#include <cstring>
#include <libnbd.h>
#include <utility>

namespace p2vfs {
namespace {

// The NBD protocol carries lengths in 32 bits; ask in pieces well below that.
constexpr uint64_t block_status_span = 1ull << 30;
// NBD_STATE_DIRTY in the qemu:dirty-bitmap contexts (qemu's docs/interop/nbd.txt).
constexpr uint32_t state_dirty = 1;
constexpr const char* bitmap_prefix = "qemu:dirty-bitmap:";

using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;

std::string nbd_error_text() {
    const char* e = nbd_get_error();
    return e && *e ? e : "unknown libnbd error";
}

class Handle {
public:
    Handle() : h_(nbd_create()) {}
    ~Handle() {
        if (h_)
            nbd_close(h_);
    }
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    nbd_handle* get() const { return h_; }

private:
    nbd_handle* h_;
};

int collect_context(void* user, const char* name) {
    static_cast<std::vector<std::string>*>(user)->emplace_back(name);
    return 0;
}

// Lists the bitmaps the server offers for the export into `names`; false
// when it cannot list them (no NBD_OPT_LIST_META_CONTEXT, no structured
// replies). The handle stays negotiating.
bool list_bitmaps(nbd_handle* h, std::vector<std::string>& names) {
    if (nbd_clear_meta_contexts(h) == -1 || nbd_add_meta_context(h, bitmap_prefix) == -1)
        return false;
    std::vector<std::string> found;
    if (nbd_opt_list_meta_context(h, nbd_context_callback{collect_context, &found, nullptr}) == -1)
        return false;
    for (const std::string& c : found)
        if (c.rfind(bitmap_prefix, 0) == 0)
            names.push_back(c.substr(std::strlen(bitmap_prefix)));
    std::sort(names.begin(), names.end());
    return true;
}

// One block status reply: the extents of `context`, from `offset`.
struct Answer {
    const std::string& context;
    uint64_t offset = 0;
    std::vector<std::pair<uint32_t, bool>> extents; // length, dirty
};

int on_extents(void* user, const char* context, uint64_t offset, uint32_t* entries, size_t count,
               int*) {
    auto* a = static_cast<Answer*>(user);
    if (a->context != context)
        return 0;
    a->offset = offset;
    for (size_t i = 0; i + 1 < count; i += 2)
        a->extents.emplace_back(entries[i], (entries[i + 1] & state_dirty) != 0);
    return 0;
}

void add_range(Ranges& out, uint64_t offset, uint64_t length) {
    if (!out.empty() && out.back().first + out.back().second == offset)
        out.back().second += length;
    else
        out.emplace_back(offset, length);
}

} // namespace

// One connection, in option mode so that the bitmaps can be listed before
// NBD_OPT_GO: a refusal is only known after it, when listing is too late.
Ranges nbd_dirty_ranges(const std::string& uri, const std::string& bitmap, uint64_t size) {
    const std::string context = bitmap_prefix + bitmap;
    const auto fail = [&](const std::string& what) {
        return Error("NBD server " + uri + ": " + what + nbd_error_text(),
                     nbd_get_errno() ? nbd_get_errno() : EIO);
    };
    Handle handle;
    nbd_handle* h = handle.get();
    if (!h)
        throw fail("");
    // Local files named in the URI (tls-psk-file, tls-certificates) are the
    // user's own configuration, as for NbdSource.
    if (nbd_set_uri_allow_local_file(h, true) == -1 || nbd_set_opt_mode(h, true) == -1 ||
        nbd_connect_uri(h, uri.c_str()) == -1)
        throw fail("");
    // An oldstyle server skips negotiation: no meta contexts at all.
    std::vector<std::string> names;
    bool listed = false;
    if (nbd_aio_is_negotiating(h) == 1) {
        listed = list_bitmaps(h, names);
        if (nbd_clear_meta_contexts(h) == -1 || nbd_add_meta_context(h, context.c_str()) == -1 ||
            nbd_opt_go(h) == -1)
            throw fail("");
    }
    if (nbd_can_meta_context(h, context.c_str()) != 1) {
        std::string offers;
        if (listed) {
            offers = "; the bitmaps it offers: ";
            if (names.empty())
                offers += "none";
            for (size_t i = 0; i < names.size(); ++i)
                offers += (i ? ", " : "") + names[i];
        }
        throw Error("NBD server " + uri + ": does not offer " + context + offers +
                        " (qemu-nbd serves a qcow2 image's persistent bitmap with -B NAME)",
                    ENOENT);
    }

    const int64_t export_size = nbd_get_size(h);
    if (export_size < 0)
        throw fail("");
    if (static_cast<uint64_t>(export_size) != size)
        throw Error("NBD server " + uri + ": the export is " + std::to_string(export_size) +
                        " bytes, not " + std::to_string(size) + " (" + human_size(size) +
                        ") as expected; is it the same disk?",
                    EINVAL);

    // The server may describe less than was asked (never less than one
    // extent), and its last extent may run past the end asked for.
    Ranges out;
    uint64_t pos = 0;
    while (pos < size) {
        Answer a{context, pos, {}};
        const uint64_t count = std::min(block_status_span, size - pos);
        if (nbd_block_status(h, count, pos, nbd_extent_callback{on_extents, &a, nullptr}, 0) == -1)
            throw fail("block status of " + context + " at offset " + hex(pos) + ": ");
        const uint64_t before = pos;
        uint64_t at = a.offset;
        for (const auto& [length, dirty] : a.extents) {
            const uint64_t end = std::min(at + length, size);
            if (at != pos || end <= pos)
                break; // not where we are: ask again from pos
            if (dirty)
                add_range(out, pos, end - pos);
            pos = at = end;
        }
        if (pos == before)
            throw Error("NBD server " + uri + ": block status of " + context + " at offset " +
                        hex(pos) + " described nothing there");
    }
    nbd_shutdown(h, 0);
    return out;
}

} // namespace p2vfs
