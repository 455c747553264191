#include "overlay/overlay.h"

#include "common/error.h"
#include "common/stable_id.h"

#include <algorithm>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <map>
#include <spdlog/spdlog.h>
#include <sstream>
#include <sys/file.h>
#include <unistd.h>

namespace p2vfs {
namespace {

constexpr const char* conf_magic = "p2vfs-overlay 1";

std::map<std::string, std::string> parse_conf(const std::string& path) {
    std::istringstream in(read_small_file(path));
    std::string line;
    if (!std::getline(in, line) || line != conf_magic)
        throw Error(path + ": not an overlay description (first line '" + line + "')");
    std::map<std::string, std::string> conf;
    while (std::getline(in, line)) {
        const auto sp = line.find(' ');
        if (sp != std::string::npos)
            conf[line.substr(0, sp)] = line.substr(sp + 1);
    }
    for (const char* key : {"source", "identity", "size", "chunk-size", "compress", "id"})
        if (!conf.count(key))
            throw Error(path + ": no '" + key + "' line");
    return conf;
}

uint64_t conf_number(const std::map<std::string, std::string>& conf, const std::string& key,
                     const std::string& path) {
    try {
        size_t used = 0;
        const uint64_t v = std::stoull(conf.at(key), &used);
        if (used == conf.at(key).size())
            return v;
    } catch (const std::exception&) {
    }
    throw Error(path + ": '" + key + "' is not a number");
}

// The disk as the layers up to `top_` show it over the source.
class OverlayDevice : public BlockDevice {
public:
    OverlayDevice(OverlayPtr overlay, size_t top, int write_layer, bool delta)
        : overlay_(std::move(overlay)), source_(overlay_->source()), top_(top),
          write_layer_(write_layer), delta_(delta), g_(overlay_->geometry()) {
        for (size_t i = 0; i <= top_; ++i)
            layers_.push_back(overlay_->layers()[i].get());
    }

    std::string name() const override {
        std::string n = "'" + overlay_->source_name() + "' with its " + layers_.back()->name() +
                        " overlay";
        return delta_ ? "changes of " + n : n;
    }
    std::string identity() const override {
        return (delta_ ? "delta:" : "overlay:") + layers_.back()->name() + ":" +
               overlay_id() + ":" + source_->identity();
    }
    uint64_t size() const override { return g_.disk_size; }
    bool writable() const override { return write_layer_ >= 0; }

    void read(void* buf, size_t length, uint64_t offset) override {
        auto* out = static_cast<unsigned char*>(buf);
        const uint64_t end = offset + length;
        uint64_t at = offset;
        while (at < end) {
            const uint64_t c = at / g_.chunk_size;
            const int layer = topmost(c, layers_.size());
            if (layer < 0) {
                // A run of chunks no layer has: one read of the source.
                const uint64_t last = std::min(g_.chunk_count(), run_end(c, end));
                const uint64_t stop = std::min(end, last * g_.chunk_size);
                source_->read(out + (at - offset), stop - at, at);
                at = stop;
                continue;
            }
            const uint64_t chunk_start = c * g_.chunk_size;
            const uint32_t chunk_length = g_.chunk_length(c);
            const uint64_t stop = std::min(end, chunk_start + chunk_length);
            if (at == chunk_start && stop == chunk_start + chunk_length) {
                layers_[layer]->read_chunk(c, out + (at - offset));
            } else {
                thread_local std::vector<unsigned char> chunk;
                chunk.resize(g_.chunk_size);
                layers_[layer]->read_chunk(c, chunk.data());
                std::memcpy(out + (at - offset), chunk.data() + (at - chunk_start), stop - at);
            }
            at = stop;
        }
    }

    void write(const void* buf, size_t length, uint64_t offset) override {
        if (write_layer_ < 0)
            throw UnsupportedError(name() + " is read-only");
        const auto* in = static_cast<const unsigned char*>(buf);
        overlay::Layer& target = *layers_[static_cast<size_t>(write_layer_)];
        const uint64_t end = offset + length;
        thread_local std::vector<unsigned char> chunk;
        chunk.resize(g_.chunk_size);
        for (uint64_t at = offset; at < end;) {
            const uint64_t c = at / g_.chunk_size;
            const uint64_t chunk_start = c * g_.chunk_size;
            const uint32_t chunk_length = g_.chunk_length(c);
            const uint64_t stop = std::min(end, chunk_start + chunk_length);
            std::lock_guard<std::mutex> lock(overlay_->chunk_lock(c));
            // Views lay out Data only: a chunk new to the layer, or one that
            // turns from all-zero to data (or back), changes the allocation.
            const bool had = target.has(c);
            const bool was_zero = had && target.is_zero(c);
            const unsigned char* data = in + (at - offset);
            if (at != chunk_start || stop != chunk_start + chunk_length) {
                // Part of a chunk: the rest is what the write layer shows now.
                read_chunk_below(c, static_cast<size_t>(write_layer_) + 1, chunk.data());
                std::memcpy(chunk.data() + (at - chunk_start), in + (at - offset), stop - at);
                data = chunk.data();
            }
            target.write_chunk(c, data);
            overlay_->note_write(!had || was_zero != target.is_zero(c));
            at = stop;
        }
    }

    void flush() override {
        if (write_layer_ >= 0)
            layers_[static_cast<size_t>(write_layer_)]->sync();
    }

    std::vector<Extent> extents(uint64_t offset, uint64_t length) override {
        std::vector<Extent> out;
        const uint64_t end = offset + length;
        uint64_t at = offset;
        while (at < end) {
            const uint64_t c = at / g_.chunk_size;
            if (topmost(c, layers_.size()) < 0) {
                const uint64_t stop = std::min(end, run_end(c, end) * g_.chunk_size);
                if (delta_)
                    append_extent(out, {at, stop - at, ExtentType::Hole});
                else
                    for (const Extent& e : source_->extents(at, stop - at))
                        append_extent(out, e);
                at = stop;
                continue;
            }
            const uint64_t stop = std::min(end, c * g_.chunk_size + g_.chunk_length(c));
            const int layer = topmost(c, layers_.size());
            const bool zero = !delta_ && layers_[static_cast<size_t>(layer)]->is_zero(c);
            append_extent(out, {at, stop - at, zero ? ExtentType::Zero : ExtentType::Data});
            at = stop;
        }
        return out;
    }

    std::optional<FdSpan> fd_span(uint64_t offset, size_t length) override {
        // Only where no layer has any chunk of the range: then it is the source's.
        const uint64_t first = offset / g_.chunk_size;
        const uint64_t last = (offset + length + g_.chunk_size - 1) / g_.chunk_size;
        if (run_end(first, offset + length) < last)
            return std::nullopt;
        return source_->fd_span(offset, length);
    }

private:
    // The highest layer below `limit` holding chunk c, or -1.
    int topmost(uint64_t c, size_t limit) const {
        for (size_t i = limit; i-- > 0;)
            if (layers_[i]->has(c))
                return static_cast<int>(i);
        return -1;
    }

    // The first chunk from c on (up to the chunk holding byte end-1) that
    // some layer holds: the end of the run of source chunks starting at c.
    uint64_t run_end(uint64_t c, uint64_t end) const {
        const uint64_t limit = std::min(g_.chunk_count(), (end + g_.chunk_size - 1) / g_.chunk_size);
        uint64_t next = limit;
        for (const overlay::Layer* l : layers_)
            next = std::min(next, l->next_present(c, next));
        return next;
    }

    // Chunk c as the layers below `limit` (and the source) show it.
    void read_chunk_below(uint64_t c, size_t limit, unsigned char* out) {
        const int layer = topmost(c, limit);
        if (layer >= 0)
            layers_[static_cast<size_t>(layer)]->read_chunk(c, out);
        else
            source_->read(out, g_.chunk_length(c), c * g_.chunk_size);
    }

    std::string overlay_id() const { return overlay_->id(); }

    OverlayPtr overlay_;
    DevicePtr source_;
    std::vector<overlay::Layer*> layers_;
    size_t top_;
    int write_layer_;
    bool delta_;
    overlay::Geometry g_;
};

} // namespace

std::string Overlay::directory(const std::string& state_dir, const std::string& source_name) {
    return state_dir + "/overlays/" + source_name;
}

bool Overlay::exists(const std::string& state_dir, const std::string& source_name) {
    bool found = false;
    read_small_file(directory(state_dir, source_name) + "/overlay.conf", &found);
    return found;
}

std::string Overlay::recorded_source(const std::string& state_dir, const std::string& source_name) {
    const std::string path = directory(state_dir, source_name) + "/overlay.conf";
    bool found = false;
    read_small_file(path, &found);
    if (!found)
        throw Error("no overlay of '" + source_name + "' in " + state_dir + " (no " + path + ")",
                    ENOENT);
    return parse_conf(path).at("source");
}

std::shared_ptr<Overlay> Overlay::open(const std::string& state_dir, const std::string& name,
                                       DevicePtr source, const std::string& source_spec,
                                       const OverlayOptions& options, bool create) {
    std::shared_ptr<Overlay> o(new Overlay());
    o->dir_ = directory(state_dir, name);
    o->name_ = name;
    o->source_ = std::move(source);
    o->identity_ = o->source_->identity();
    o->options_ = options;
    const std::string conf_path = o->dir_ + "/overlay.conf";

    bool found = false;
    read_small_file(conf_path, &found);
    if (!found && !create)
        throw Error("no overlay of '" + name + "' in " + state_dir, ENOENT);
    make_directories(o->dir_);

    // One process at a time: the lock is held for the overlay's life.
    const std::string lock_path = o->dir_ + "/lock";
    o->lock_fd_ = open_file(lock_path, O_RDWR | O_CREAT, 0600);
    if (::flock(o->lock_fd_.get(), LOCK_EX | LOCK_NB) != 0) {
        const std::string holder = read_small_file(lock_path);
        throw Error("overlay of '" + name + "' (" + o->dir_ + ") is in use by another process" +
                        (holder.empty() ? "" : " (pid " + holder.substr(0, holder.find('\n')) + ")"),
                    EBUSY);
    }
    const std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(o->lock_fd_.get(), 0) == 0)
        pwrite_full(o->lock_fd_.get(), pid.data(), pid.size(), 0, lock_path);

    if (!found) {
        o->geometry_ = {options.chunk_size, o->source_->size()};
        const auto id = stable_uuid(o->dir_ + "\n" + o->identity_ + "\n" +
                                    std::to_string(std::time(nullptr)));
        std::string conf = std::string(conf_magic) + "\n";
        conf += "source " + source_spec + "\n";
        conf += "identity " + o->identity_ + "\n";
        conf += "size " + std::to_string(o->geometry_.disk_size) + "\n";
        conf += "chunk-size " + std::to_string(o->geometry_.chunk_size) + "\n";
        conf += std::string("compress ") + (options.compress ? "lz4" : "none") + "\n";
        conf += "id " + uuid_text(id) + "\n";
        conf += "created " + std::to_string(std::time(nullptr)) + "\n";
        // Layers first, the description last: a crash in between leaves no
        // overlay.conf, and the next start makes the overlay afresh.
        overlay::SegmentOptions so;
        so.writable = true;
        so.compress = options.compress;
        for (const char* l : {fixups_layer, user_layer}) {
            remove_tree(o->dir_ + "/" + l);
            overlay::Layer(o->dir_ + "/" + l, l, o->geometry_, so, true);
        }
        replace_file(conf_path, conf);
        spdlog::info("overlay of '{}': made in {} ({} KiB chunks{})", name, o->dir_,
                     o->geometry_.chunk_size / 1024, options.compress ? ", lz4" : "");
    }

    const auto conf = parse_conf(conf_path);
    o->id_ = conf.at("id");
    o->geometry_ = {static_cast<uint32_t>(conf_number(conf, "chunk-size", conf_path)),
                    conf_number(conf, "size", conf_path)};
    if (conf.at("identity") != o->identity_ || o->geometry_.disk_size != o->source_->size())
        throw Error("overlay of '" + name + "' (" + o->dir_ + ") was made over another disk: " +
                        conf.at("identity") + " (" + conf.at("size") + " bytes), not " +
                        o->identity_ + " (" + std::to_string(o->source_->size()) +
                        " bytes); give its source (" + conf.at("source") +
                        ") or remove the overlay",
                    EINVAL);
    overlay::SegmentOptions so;
    so.writable = options.writable;
    so.compress = conf.at("compress") == "lz4";
    for (const char* l : {fixups_layer, user_layer})
        o->layers_.push_back(
            std::make_unique<overlay::Layer>(o->dir_ + "/" + l, l, o->geometry_, so));
    return o;
}

Overlay::~Overlay() {
    layers_.clear(); // segments sync as they close
}

overlay::Layer& Overlay::layer(const std::string& name) const {
    std::string known;
    for (const auto& l : layers_) {
        if (l->name() == name)
            return *l;
        known += (known.empty() ? "" : ", ") + l->name();
    }
    throw InvalidArgument("no overlay layer named '" + name + "' (layers: " + known + ")");
}

DevicePtr Overlay::device(const std::string& top, const std::string& write_layer) {
    size_t top_index = 0;
    int write_index = -1;
    for (size_t i = 0; i < layers_.size(); ++i) {
        if (layers_[i]->name() == top)
            top_index = i;
        if (layers_[i]->name() == write_layer)
            write_index = static_cast<int>(i);
    }
    layer(top);
    if (!write_layer.empty()) {
        layer(write_layer);
        if (write_index > static_cast<int>(top_index))
            throw InvalidArgument("overlay layer '" + write_layer + "' is above '" + top + "'");
        if (!options_.writable)
            throw UnsupportedError("overlay of '" + name_ + "' is open read-only");
    }
    return std::make_shared<OverlayDevice>(shared_from_this(), top_index, write_index, false);
}

DevicePtr Overlay::delta(const std::string& top) {
    layer(top);
    size_t top_index = 0;
    for (size_t i = 0; i < layers_.size(); ++i)
        if (layers_[i]->name() == top)
            top_index = i;
    return std::make_shared<OverlayDevice>(shared_from_this(), top_index, -1, true);
}

void Overlay::sync() {
    if (!options_.writable)
        return;
    for (const auto& l : layers_)
        l->sync();
}

} // namespace p2vfs
