#include "overlay/layer.h"

#include "common/error.h"
#include "common/file_io.h"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <filesystem>
#include <mutex>
#include <set>
#include <spdlog/spdlog.h>
#include <sstream>

namespace p2vfs::overlay {
namespace {

constexpr const char* list_magic = "p2vfs-layer 1";

bool valid_checkpoint_name(const std::string& s) {
    if (s.empty() || s.size() > 100)
        return false;
    return std::all_of(s.begin(), s.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
    });
}

} // namespace

Layer::Layer(std::string dir, std::string name, const Geometry& geometry,
             const SegmentOptions& options, bool create)
    : dir_(std::move(dir)), name_(std::move(name)), geometry_(geometry), options_(options) {
    bool exists = false;
    read_small_file(dir_ + "/segments", &exists);
    if (!exists) {
        if (!create || !options_.writable)
            throw Error("overlay layer " + dir_ + ": missing (no " + dir_ + "/segments)", ENOENT);
        make_directories(dir_);
        push_new_segment();
        save_list();
    } else {
        open_list();
    }
    if (options_.writable)
        remove_unlisted();
}

Layer::~Layer() = default;

std::string Layer::segment_dir(uint64_t number) const {
    return dir_ + "/segment-" + std::to_string(number);
}

void Layer::open_list() {
    const std::string path = dir_ + "/segments";
    std::istringstream in(read_small_file(path));
    std::string line;
    if (!std::getline(in, line) || line != list_magic)
        throw Error(path + ": not a segment list (first line '" + line + "')");
    unsigned line_no = 1;
    while (std::getline(in, line)) {
        ++line_no;
        if (line.empty())
            continue;
        std::istringstream words(line);
        std::string word, checkpoint;
        Member m{};
        if (!(words >> word >> m.number) || word != "segment")
            throw Error(path + ": line " + std::to_string(line_no) + ": expected 'segment N'");
        if (words >> word) {
            if (word != "checkpoint" || !(words >> m.checkpoint >> m.time))
                throw Error(path + ": line " + std::to_string(line_no) +
                            ": expected 'checkpoint NAME TIME'");
        }
        members_.push_back(std::move(m));
    }
    if (members_.empty() || !members_.back().checkpoint.empty())
        throw Error(path + ": the list has no writable top segment");
    for (size_t i = 0; i < members_.size(); ++i) {
        SegmentOptions o = options_;
        o.writable = options_.writable && i + 1 == members_.size();
        members_[i].segment = Segment::open(segment_dir(members_[i].number), geometry_, o);
    }
}

void Layer::save_list() {
    std::string text = std::string(list_magic) + "\n";
    for (const Member& m : members_) {
        text += "segment " + std::to_string(m.number);
        if (!m.checkpoint.empty())
            text += " checkpoint " + m.checkpoint + " " + std::to_string(m.time);
        text += "\n";
    }
    replace_file(dir_ + "/segments", text);
}

void Layer::push_new_segment() {
    const uint64_t number = members_.empty() ? 1 : members_.back().number + 1;
    const std::string d = segment_dir(number);
    remove_tree(d); // a leftover of a crash before the list named it
    Member m{};
    m.number = number;
    m.segment = Segment::create(d, geometry_, options_);
    members_.push_back(std::move(m));
}

void Layer::remove_unlisted() {
    std::set<std::string> listed;
    for (const Member& m : members_)
        listed.insert("segment-" + std::to_string(m.number));
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
        const std::string n = entry.path().filename().string();
        if (n.rfind("segment-", 0) == 0 && !listed.count(n)) {
            spdlog::info("overlay layer {}: removing {}, left by an interrupted operation", dir_, n);
            remove_tree(entry.path().string());
        }
    }
}

bool Layer::has(uint64_t c) const {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    for (const Member& m : members_)
        if (m.segment->has(c))
            return true;
    return false;
}

bool Layer::is_zero(uint64_t c) const {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    for (auto it = members_.rbegin(); it != members_.rend(); ++it)
        if (it->segment->has(c))
            return it->segment->is_zero(c);
    return false;
}

uint64_t Layer::next_present(uint64_t from, uint64_t end) const {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    return next_present_locked(from, end);
}

uint64_t Layer::next_absent(uint64_t from, uint64_t end) const {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    return next_absent_locked(from, end);
}

uint64_t Layer::next_present_locked(uint64_t from, uint64_t end) const {
    uint64_t best = end;
    for (const Member& m : members_)
        best = std::min(best, m.segment->next_present(from, best));
    return best;
}

uint64_t Layer::next_absent_locked(uint64_t from, uint64_t end) const {
    // Absent from the layer: absent from every segment. Step past each
    // segment's run of present chunks until none holds c.
    uint64_t c = from;
    for (bool moved = true; moved && c < end;) {
        moved = false;
        for (const Member& m : members_) {
            const uint64_t next = m.segment->next_absent(c, end);
            if (next != c) {
                c = next;
                moved = true;
            }
        }
    }
    return c;
}

void Layer::read_chunk(uint64_t c, unsigned char* out) {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    for (auto it = members_.rbegin(); it != members_.rend(); ++it)
        if (it->segment->has(c))
            return it->segment->read_chunk(c, out);
    throw Error("overlay layer " + dir_ + ": chunk " + std::to_string(c) + " is not in the layer");
}

void Layer::write_chunk(uint64_t c, const unsigned char* data) {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    members_.back().segment->write_chunk(c, data);
}

void Layer::sync() {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    members_.back().segment->sync();
}

void Layer::checkpoint(const std::string& checkpoint_name) {
    if (!valid_checkpoint_name(checkpoint_name))
        throw InvalidArgument("checkpoint name '" + checkpoint_name +
                              "': use letters, digits, '.', '_' and '-' (at most 100)");
    std::unique_lock<std::shared_mutex> lock(mutex_);
    if (!options_.writable)
        throw UnsupportedError("overlay layer " + dir_ + " is open read-only");
    for (const Member& m : members_)
        if (m.checkpoint == checkpoint_name)
            throw InvalidArgument("layer '" + name_ + "' already has a checkpoint named '" +
                                  checkpoint_name + "'");
    // Freeze the top: synced, then reopened read-only, then named in the list.
    Member& top = members_.back();
    top.segment->sync();
    const uint64_t number = top.number;
    top.segment.reset();
    SegmentOptions ro = options_;
    ro.writable = false;
    top.segment = Segment::open(segment_dir(number), geometry_, ro);
    top.checkpoint = checkpoint_name;
    top.time = static_cast<int64_t>(std::time(nullptr));
    push_new_segment();
    save_list();
    spdlog::info("overlay layer '{}': checkpoint '{}'", name_, checkpoint_name);
}

void Layer::rollback(const std::string& checkpoint_name) {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    if (!options_.writable)
        throw UnsupportedError("overlay layer " + dir_ + " is open read-only");
    size_t at = members_.size();
    std::string known;
    for (size_t i = 0; i < members_.size(); ++i) {
        if (members_[i].checkpoint == checkpoint_name)
            at = i;
        if (!members_[i].checkpoint.empty())
            known += (known.empty() ? "" : ", ") + members_[i].checkpoint;
    }
    if (at == members_.size())
        throw InvalidArgument("layer '" + name_ + "' has no checkpoint named '" + checkpoint_name +
                              "' (it has: " + (known.empty() ? "none" : known) + ")");
    // The segments above the checkpoint go; a new empty top replaces them.
    std::vector<Member> dropped;
    while (members_.size() > at + 1) {
        dropped.push_back(std::move(members_.back()));
        members_.pop_back();
    }
    // The new top takes the number after the highest ever used, so no
    // directory of a dropped segment is reused before it is deleted.
    const uint64_t next = dropped.empty() ? members_.back().number + 1 : dropped.front().number + 1;
    replace_dropped(std::move(dropped), next);
    spdlog::info("overlay layer '{}': rolled back to checkpoint '{}'", name_, checkpoint_name);
}

void Layer::replace_dropped(std::vector<Member> dropped, uint64_t next) {
    for (Member& d : dropped)
        d.segment.reset(); // (a writable one syncs as it closes; harmless)
    Member m{};
    m.number = next;
    remove_tree(segment_dir(next));
    m.segment = Segment::create(segment_dir(next), geometry_, options_);
    members_.push_back(std::move(m));
    // The list names the new top before the dropped segments go (see the
    // crash rules in layer.h).
    save_list();
    for (const Member& d : dropped)
        remove_tree(segment_dir(d.number));
}

void Layer::discard() {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    if (!options_.writable)
        throw UnsupportedError("overlay layer " + dir_ + " is open read-only");
    std::vector<Member> dropped = std::move(members_);
    members_.clear();
    const uint64_t next = dropped.back().number + 1;
    replace_dropped(std::move(dropped), next);
    spdlog::info("overlay layer '{}': discarded", name_);
}

LayerInfo Layer::info() const {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    LayerInfo info;
    info.name = name_;
    info.segments = members_.size();
    for (const Member& m : members_) {
        const SegmentStats s = m.segment->stats();
        info.stored_bytes += s.stored_bytes;
        info.disk_usage += m.segment->disk_usage();
        if (!m.checkpoint.empty())
            info.checkpoints.push_back({m.checkpoint, m.time, s});
    }
    // Chunks present in any segment, counted once.
    const uint64_t count = geometry_.chunk_count();
    for (uint64_t c = next_present_locked(0, count); c < count;) {
        const uint64_t q = next_absent_locked(c, count);
        info.chunks += q - c;
        c = next_present_locked(q, count);
    }
    return info;
}

} // namespace p2vfs::overlay
