#include "nbd-bridge/nbd_source.h"

#include "common/error.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <libnbd.h>
#include <map>
#include <mutex>
#include <optional>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <thread>
#include <unistd.h>
#include <unordered_set>

namespace p2vfs {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// The NBD protocol carries lengths in 32 bits; ask for block status in
// pieces well below that.
constexpr uint64_t block_status_span = 1ull << 30;
// Servers that do not advertise a maximum accept 32 MiB (the NBD spec's
// default for the maximum block size).
constexpr uint64_t default_max_block = 32ull << 20;
constexpr milliseconds first_backoff{100};
constexpr milliseconds max_backoff{5000};

double seconds(milliseconds ms) {
    return std::chrono::duration<double>(ms).count();
}

std::string nbd_error_text() {
    const char* e = nbd_get_error();
    return e && *e ? e : "unknown libnbd error";
}

// What one caller waits for: the requests of one read or block status.
struct Batch {
    std::mutex mutex;
    std::condition_variable done;
    size_t outstanding = 0;
    int error = 0; // the first failure wins
    std::string message;
};

class Connection;

struct Request {
    enum class Kind { Read, BlockStatus };
    Kind kind = Kind::Read;
    void* buf = nullptr;
    uint64_t offset = 0;
    uint64_t length = 0;
    std::vector<Extent>* extents = nullptr; // BlockStatus: what the server said
    Batch* batch = nullptr;
    Clock::time_point queued;
    // When a lost or stalled connection first sent this request back: from
    // then on it waits at most the retry timeout, however often it is sent.
    std::optional<Clock::time_point> disrupted;
    // Set by libnbd's callbacks, on the I/O thread of `owner`.
    Connection* owner = nullptr;
    int error = 0;
};

std::string describe(const Request& r) {
    return std::string(r.kind == Request::Kind::Read ? "read" : "block status") + " of " +
           std::to_string(r.length) + " bytes at offset " + hex(r.offset);
}

struct Handle {
    nbd_handle* h = nullptr;
    Handle() = default;
    explicit Handle(nbd_handle* handle) : h(handle) {}
    Handle(Handle&& o) noexcept : h(std::exchange(o.h, nullptr)) {}
    Handle& operator=(Handle&& o) noexcept {
        reset();
        h = std::exchange(o.h, nullptr);
        return *this;
    }
    ~Handle() { reset(); }
    void reset() {
        if (h)
            nbd_close(std::exchange(h, nullptr));
    }
    explicit operator bool() const { return h != nullptr; }
};

int forward_debug(void*, const char* context, const char* msg) {
    spdlog::trace("libnbd: {}: {}", context, msg);
    return 0;
}

// A handle set up the same way for the first connection and every
// reconnection. Local files named in the URI (tls-psk-file,
// tls-certificates) are the user's own command line, so they are allowed.
Handle make_handle(const std::string& uri, unsigned index) {
    Handle handle(nbd_create());
    if (!handle)
        throw Error("NBD server " + uri + ": " + nbd_error_text());
    nbd_handle* h = handle.h;
    const std::string name = "p2vfs-" + std::to_string(index);
    if (nbd_set_handle_name(h, name.c_str()) == -1 || nbd_set_uri_allow_local_file(h, true) == -1 ||
        nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1)
        throw Error("NBD server " + uri + ": " + nbd_error_text());
    if (spdlog::should_log(spdlog::level::trace)) {
        nbd_set_debug_callback(h, nbd_debug_callback{forward_debug, nullptr, nullptr});
        nbd_set_debug(h, true);
    }
    return handle;
}

} // namespace

// Everything the connections share: the export's shape, the request queue,
// and whether any connection is up.
struct NbdSource::State {
    std::string uri;
    NbdOptions options;
    uint64_t size = 0;
    uint64_t min_block = 1;
    uint64_t request_size = 0;
    bool has_allocation = false;

    std::mutex queue_mutex;
    std::deque<Request*> queue;
    unsigned ready_count = 0;     // under queue_mutex
    Clock::time_point down_since; // when ready_count fell to 0
    std::string last_error;       // under queue_mutex

    std::vector<std::unique_ptr<Connection>> connections;
    std::atomic<bool> stopping{false};

    // What block status has said so far, by offset; extents do not overlap.
    std::mutex known_mutex;
    std::map<uint64_t, Extent> known;
    std::atomic<uint64_t> requests{0};
    std::atomic<uint64_t> reconnects{0};

    void submit(std::vector<Request>& reqs);
    void wake_all();
    // Fails queued requests that have waited past the retry timeout with no
    // connection up.
    void expire_waiting();
};

namespace {

void complete(Request* r, int error, const std::string& message) {
    Batch* b = r->batch;
    std::lock_guard lock(b->mutex);
    if (error && !b->error) {
        b->error = error;
        b->message = message;
    }
    // Notify under the lock: once it is released the waiter may return and
    // destroy the batch and its requests.
    if (--b->outstanding == 0)
        b->done.notify_all();
}

// One NBD connection and the thread that drives it. libnbd is only ever
// called from this thread (callbacks included), so the handle needs no lock.
class Connection {
public:
    Connection(NbdSource::State& s, unsigned index, Handle connected)
        : s_(s), index_(index), handle_(std::move(connected)), ready_(true) {
        wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (wake_fd_ == -1)
            throw Error("NBD server " + s_.uri + ": eventfd: " + errno_text(errno), errno);
    }
    ~Connection() {
        if (thread_.joinable())
            thread_.join();
        if (wake_fd_ != -1)
            close(wake_fd_);
    }

    void start() {
        thread_ = std::thread([this] { run(); });
    }
    void join() {
        if (thread_.joinable())
            thread_.join();
    }
    void wake() {
        const uint64_t one = 1;
        [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
    }

    // libnbd callbacks (on this connection's thread).
    static int on_complete(void* user, int* error) {
        auto* r = static_cast<Request*>(user);
        r->error = *error;
        r->owner->completed_.push_back(r);
        return 1; // retire the command: nobody polls for it
    }
    static int on_extents(void* user, const char* context, uint64_t offset, uint32_t* entries,
                          size_t count, int*) {
        if (std::strcmp(context, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
            return 0;
        auto* r = static_cast<Request*>(user);
        for (size_t i = 0; i + 1 < count; i += 2) {
            const uint32_t flags = entries[i + 1];
            // HOLE without ZERO may read as anything: only ZERO is zeros.
            const ExtentType type = !(flags & LIBNBD_STATE_ZERO)  ? ExtentType::Data
                                    : (flags & LIBNBD_STATE_HOLE) ? ExtentType::Hole
                                                                  : ExtentType::Zero;
            r->extents->push_back(Extent{offset, entries[i], type});
            offset += entries[i];
        }
        return 0;
    }

private:
    void run();
    void submit_from_queue();
    void poll_once();
    void check_stalled();
    std::string loss_reason() const;
    void disconnect();
    void after_events();
    void start_connect();
    void on_connected();
    void on_lost(const std::string& why);
    void requeue(Request* r);

    std::string label() const {
        return "NBD server " + s_.uri + ": connection " + std::to_string(index_ + 1);
    }

    NbdSource::State& s_;
    const unsigned index_;
    Handle handle_;
    bool ready_; // connected and negotiated
    int wake_fd_ = -1;
    std::thread thread_;
    std::unordered_set<Request*> in_flight_;
    std::vector<Request*> completed_;
    Clock::time_point next_attempt_{};
    milliseconds backoff_ = first_backoff;
    bool lost_ = false;
    Clock::time_point lost_at_{};
    // When the socket last moved (or a request was sent), to tell a server
    // that stopped answering from one that is slow.
    Clock::time_point last_activity_ = Clock::now();
};

void Connection::run() {
    while (!s_.stopping.load()) {
        if (!handle_ && Clock::now() >= next_attempt_)
            start_connect();
        if (handle_ && ready_)
            submit_from_queue();
        poll_once();
        after_events();
        check_stalled();
        s_.expire_waiting();
    }
    // Stopping: nothing waits any more (the source is being destroyed), but
    // leave no request unanswered.
    for (Request* r : in_flight_)
        complete(r, ESHUTDOWN, label() + ": closed");
    in_flight_.clear();
    disconnect();
    handle_.reset();
}

// Says goodbye (NBD_CMD_DISC, and the TLS close) so the server logs a clean
// disconnect rather than a broken connection; a server that does not close
// within half a second is closed on.
void Connection::disconnect() {
    if (!handle_ || !ready_ || nbd_aio_disconnect(handle_.h, 0) == -1)
        return;
    const auto deadline = Clock::now() + milliseconds(500);
    while (!nbd_aio_is_closed(handle_.h) && !nbd_aio_is_dead(handle_.h) &&
           Clock::now() < deadline) {
        const unsigned dir = nbd_aio_get_direction(handle_.h);
        pollfd fd{nbd_aio_get_fd(handle_.h), 0, 0};
        if (dir & LIBNBD_AIO_DIRECTION_READ)
            fd.events |= POLLIN;
        if (dir & LIBNBD_AIO_DIRECTION_WRITE)
            fd.events |= POLLOUT;
        if (fd.fd < 0 || ::poll(&fd, 1, 50) == -1)
            return;
        if (fd.revents & POLLOUT)
            nbd_aio_notify_write(handle_.h);
        if (fd.revents & (POLLIN | POLLHUP | POLLERR))
            nbd_aio_notify_read(handle_.h);
    }
}

void Connection::submit_from_queue() {
    while (in_flight_.size() < s_.options.max_in_flight) {
        Request* r;
        {
            std::lock_guard lock(s_.queue_mutex);
            if (s_.queue.empty())
                return;
            r = s_.queue.front();
            s_.queue.pop_front();
        }
        r->owner = this;
        r->error = 0;
        const nbd_completion_callback done{on_complete, r, nullptr};
        int64_t cookie;
        if (r->kind == Request::Kind::Read) {
            cookie = nbd_aio_pread(handle_.h, r->buf, r->length, r->offset, done, 0);
        } else {
            r->extents->clear();
            cookie = nbd_aio_block_status(handle_.h, r->length, r->offset,
                                          nbd_extent_callback{on_extents, r, nullptr}, done, 0);
        }
        if (cookie == -1) {
            if (nbd_aio_is_dead(handle_.h) || nbd_aio_is_closed(handle_.h)) {
                requeue(r);
                return; // after_events() sees the loss
            }
            complete(r, nbd_get_errno() ? nbd_get_errno() : EIO,
                     "NBD server " + s_.uri + ": " + describe(*r) + ": " + nbd_error_text());
            continue;
        }
        if (in_flight_.empty())
            last_activity_ = Clock::now();
        in_flight_.insert(r);
        s_.requests.fetch_add(1, std::memory_order_relaxed);
    }
}

void Connection::poll_once() {
    pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {-1, 0, 0}};
    nfds_t n = 1;
    if (handle_) {
        const int fd = nbd_aio_get_fd(handle_.h);
        const unsigned dir = nbd_aio_get_direction(handle_.h);
        short events = 0;
        if (dir & LIBNBD_AIO_DIRECTION_READ)
            events |= POLLIN;
        if (dir & LIBNBD_AIO_DIRECTION_WRITE)
            events |= POLLOUT;
        if (fd >= 0 && events) {
            fds[1] = {fd, events, 0};
            n = 2;
        }
    }
    // Wake up now and then while anything waits on a lost connection, to
    // retry and to expire requests on time.
    int timeout = -1;
    if (!handle_) {
        const auto until = std::max(next_attempt_ - Clock::now(), Clock::duration::zero());
        timeout = static_cast<int>(std::chrono::duration_cast<milliseconds>(until).count()) + 1;
    }
    if (lost_ || !ready_)
        timeout = timeout == -1 ? 250 : std::min(timeout, 250);
    {
        std::lock_guard lock(s_.queue_mutex);
        if (s_.ready_count == 0 && !s_.queue.empty())
            timeout = timeout == -1 ? 250 : std::min(timeout, 250);
    }
    // With requests out, wake up to notice a server that stopped answering.
    if (!in_flight_.empty())
        timeout = timeout == -1 ? 1000 : std::min(timeout, 1000);
    if (::poll(fds, n, timeout) == -1 && errno != EINTR)
        spdlog::warn("{}: poll: {}", label(), errno_text(errno));
    if (fds[0].revents & POLLIN) {
        uint64_t count;
        [[maybe_unused]] ssize_t r = ::read(wake_fd_, &count, sizeof count);
    }
    if (n == 2 && handle_) {
        const short ev = fds[1].revents;
        if (ev)
            last_activity_ = Clock::now();
        if (ev & POLLOUT)
            nbd_aio_notify_write(handle_.h);
        if (ev & (POLLIN | POLLHUP | POLLERR))
            nbd_aio_notify_read(handle_.h);
    }
}

// A connection that is up but has not moved for the retry timeout while
// requests wait on it (a server hung, a link silently gone, no RST ever
// coming) is treated as lost: its requests go to a new connection.
void Connection::check_stalled() {
    if (!handle_ || (ready_ && in_flight_.empty()))
        return;
    const auto quiet = Clock::now() - last_activity_;
    if (quiet < std::max<Clock::duration>(s_.options.retry_timeout, milliseconds(1000)))
        return;
    const double secs = std::chrono::duration<double>(quiet).count();
    on_lost(ready_ ? fmt::format("no reply to {} request(s) for {:g} s", in_flight_.size(), secs)
                   : fmt::format("no answer to the handshake for {:g} s", secs));
}

// libnbd sets no error when the server simply closes the socket (killed,
// restarted): that is the usual way a connection is lost.
std::string Connection::loss_reason() const {
    const char* e = nbd_get_error();
    if (e && *e)
        return e;
    return nbd_aio_is_closed(handle_.h) ? "the server closed the connection"
                                        : "the connection failed";
}

void Connection::after_events() {
    if (!handle_)
        return;
    const bool dead = nbd_aio_is_dead(handle_.h) || nbd_aio_is_closed(handle_.h);
    if (!ready_) {
        if (nbd_aio_is_ready(handle_.h))
            on_connected();
        else if (dead)
            on_lost(loss_reason());
        return;
    }
    // A command that failed because the connection died is retried, not
    // reported; one the server answered with an error is reported.
    std::vector<Request*> done;
    done.swap(completed_);
    for (Request* r : done) {
        in_flight_.erase(r);
        if (r->error == 0)
            complete(r, 0, {});
        else if (dead)
            requeue(r);
        else
            complete(r, r->error,
                     "NBD server " + s_.uri + ": " + describe(*r) +
                         " failed: " + errno_text(r->error));
    }
    if (dead)
        on_lost(loss_reason());
}

void Connection::start_connect() {
    try {
        handle_ = make_handle(s_.uri, index_);
    } catch (const Error& e) {
        on_lost(e.what());
        return;
    }
    ready_ = false;
    last_activity_ = Clock::now();
    if (nbd_aio_connect_uri(handle_.h, s_.uri.c_str()) == -1)
        on_lost(nbd_error_text());
}

void Connection::on_connected() {
    const int64_t size = nbd_get_size(handle_.h);
    if (size != static_cast<int64_t>(s_.size)) {
        on_lost("the export's size changed from " + std::to_string(s_.size) + " to " +
                std::to_string(size) + " bytes; not using it");
        return;
    }
    ready_ = true;
    backoff_ = first_backoff;
    {
        std::lock_guard lock(s_.queue_mutex);
        ++s_.ready_count;
    }
    if (lost_) {
        const auto down = std::chrono::duration<double>(Clock::now() - lost_at_).count();
        spdlog::info("{}: reconnected after {:.1f} s", label(), down);
        s_.reconnects.fetch_add(1, std::memory_order_relaxed);
        lost_ = false;
    }
}

// The connection is gone (or a reconnection attempt failed): put its
// requests back for any connection to take, and try again after back-off.
void Connection::on_lost(const std::string& why) {
    for (Request* r : completed_) {
        in_flight_.erase(r);
        if (r->error == 0)
            complete(r, 0, {});
        else
            requeue(r);
    }
    completed_.clear();
    for (Request* r : in_flight_)
        requeue(r);
    in_flight_.clear();
    handle_.reset();
    const auto now = Clock::now();
    {
        std::lock_guard lock(s_.queue_mutex);
        s_.last_error = why;
        if (ready_ && --s_.ready_count == 0)
            s_.down_since = now;
    }
    if (ready_ || !lost_) {
        spdlog::warn("{}: lost: {}; reconnecting (readers wait up to {} s)", label(), why,
                     seconds(s_.options.retry_timeout));
        lost_ = true;
        lost_at_ = now;
    } else {
        spdlog::debug("{}: reconnection failed: {}; next try in {} ms", label(), why,
                      backoff_.count());
    }
    ready_ = false;
    next_attempt_ = now + backoff_;
    backoff_ = std::min(backoff_ * 2, max_backoff);
    s_.wake_all(); // other connections may take the requests
}

void Connection::requeue(Request* r) {
    if (!r->disrupted)
        r->disrupted = Clock::now();
    std::lock_guard lock(s_.queue_mutex);
    s_.queue.push_front(r);
}

} // namespace

void NbdSource::State::submit(std::vector<Request>& reqs) {
    {
        std::lock_guard lock(queue_mutex);
        for (Request& r : reqs)
            queue.push_back(&r);
    }
    wake_all();
}

void NbdSource::State::wake_all() {
    for (auto& c : connections)
        c->wake();
}

void NbdSource::State::expire_waiting() {
    std::vector<Request*> expired;
    std::string why;
    {
        std::lock_guard lock(queue_mutex);
        if (queue.empty())
            return;
        const auto now = Clock::now();
        for (auto it = queue.begin(); it != queue.end();) {
            const Request& r = **it;
            const bool no_connection =
                ready_count == 0 && now - std::max(r.queued, down_since) >= options.retry_timeout;
            const bool disrupted_too_long =
                r.disrupted && now - *r.disrupted >= options.retry_timeout;
            if (no_connection || disrupted_too_long) {
                expired.push_back(*it);
                it = queue.erase(it);
            } else {
                ++it;
            }
        }
        why = last_error;
    }
    for (Request* r : expired)
        complete(r, ETIMEDOUT,
                 fmt::format("NBD server {}: {}: no answer for {:g} s (last error: {})", uri,
                             describe(*r), seconds(options.retry_timeout), why));
}

namespace {

// Sends `reqs` and waits for all of them; throws the first failure.
void run_batch(NbdSource::State& s, std::vector<Request>& reqs) {
    Batch batch;
    batch.outstanding = reqs.size();
    const auto now = Clock::now();
    for (Request& r : reqs) {
        r.batch = &batch;
        r.queued = now;
    }
    s.submit(reqs);
    std::unique_lock lock(batch.mutex);
    batch.done.wait(lock, [&] { return batch.outstanding == 0; });
    if (batch.error)
        throw Error(batch.message, batch.error);
}

// gnutls says how a handshake ended, not why; when a key or certificate is
// the likely cause, say so.
std::string tls_hint(const std::string& uri, const std::string& message) {
    if (message.find("gnutls_handshake") == std::string::npos)
        return {};
    if (uri.find("tls-psk-file=") != std::string::npos)
        return " (the TLS handshake failed: does the server have this pre-shared key for "
               "this username?)";
    return " (the TLS handshake failed: is the server's certificate signed by a CA in the "
           "certificates directory, for this host name?)";
}

Handle connect_now(const std::string& uri, unsigned index) {
    Handle h = make_handle(uri, index);
    if (nbd_connect_uri(h.h, uri.c_str()) == -1) {
        const std::string message = nbd_error_text();
        throw Error("NBD server " + uri + ": " + message + tls_hint(uri, message),
                    nbd_get_errno() ? nbd_get_errno() : EIO);
    }
    return h;
}

uint64_t round_down(uint64_t x, uint64_t a) {
    return x / a * a;
}
uint64_t round_up(uint64_t x, uint64_t a) {
    return (x + a - 1) / a * a;
}

} // namespace

NbdSource::NbdSource(const std::string& uri, NbdOptions options)
    : state_(std::make_unique<State>()) {
    validate(options);
    State& s = *state_;
    s.uri = uri;
    s.options = options;

    Handle first = connect_now(uri, 0);
    const int64_t size = nbd_get_size(first.h);
    if (size < 0)
        throw Error("NBD server " + uri + ": " + nbd_error_text());
    if (size == 0)
        throw Error("NBD server " + uri + ": the export is empty");
    s.size = static_cast<uint64_t>(size);
    const int64_t min_block = nbd_get_block_size(first.h, LIBNBD_SIZE_MINIMUM);
    const int64_t max_block = nbd_get_block_size(first.h, LIBNBD_SIZE_MAXIMUM);
    s.min_block = min_block > 0 ? static_cast<uint64_t>(min_block) : 1;
    const uint64_t max = max_block > 0 ? static_cast<uint64_t>(max_block) : default_max_block;
    s.request_size = std::max(
        round_down(std::min<uint64_t>(options.request_size, max), s.min_block), s.min_block);
    s.has_allocation = nbd_can_meta_context(first.h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
    const bool multi_conn = nbd_can_multi_conn(first.h) == 1;
    const unsigned wanted = multi_conn ? options.connections : 1;

    std::vector<Handle> handles;
    handles.push_back(std::move(first));
    for (unsigned i = 1; i < wanted; ++i) {
        try {
            handles.push_back(connect_now(uri, i));
        } catch (const Error& e) {
            // qemu-nbd --shared=N, a server's connection limit: fewer
            // connections are slower, not wrong.
            spdlog::warn("{}; using {} connection(s)", e.what(), i);
            break;
        }
    }
    spdlog::debug("NBD server {}: {} bytes, block size min {} max {}, request size {}, "
                  "base:allocation {}, multi-conn {}, {} connection(s)",
                  uri, s.size, s.min_block, max, s.request_size, s.has_allocation, multi_conn,
                  handles.size());
    s.ready_count = static_cast<unsigned>(handles.size());
    for (unsigned i = 0; i < handles.size(); ++i)
        s.connections.push_back(std::make_unique<Connection>(s, i, std::move(handles[i])));
    for (auto& c : s.connections)
        c->start();
}

NbdSource::~NbdSource() {
    state_->stopping.store(true);
    state_->wake_all();
    for (auto& c : state_->connections)
        c->join();
}

std::string NbdSource::name() const {
    return state_->uri;
}

std::string NbdSource::identity() const {
    return "nbd:" + state_->uri + "|size=" + std::to_string(state_->size);
}

uint64_t NbdSource::size() const {
    return state_->size;
}

unsigned NbdSource::connection_count() const {
    return static_cast<unsigned>(state_->connections.size());
}

NbdStats NbdSource::stats() const {
    return NbdStats{state_->requests.load(), state_->reconnects.load()};
}

namespace {

// The parts of [start, end) that must come from the server: ranges block
// status called holes or zeros are zero-filled in dst instead (a raw view
// of a sparse remote disk would otherwise send every hole over the link).
// Ranges never asked about count as data. Fetched ranges are widened to the
// minimum block size; where they overlap a zeroed edge the server sends
// zeros there anyway.
std::vector<std::pair<uint64_t, uint64_t>> ranges_to_fetch(NbdSource::State& s, unsigned char* dst,
                                                           uint64_t start, uint64_t end) {
    std::vector<std::pair<uint64_t, uint64_t>> out;
    const auto add = [&](uint64_t a, uint64_t b) {
        a = round_down(a, s.min_block);
        b = std::min(round_up(b, s.min_block), s.size);
        if (!out.empty() && a <= out.back().second)
            out.back().second = std::max(out.back().second, b);
        else
            out.emplace_back(a, b);
    };
    std::lock_guard lock(s.known_mutex);
    uint64_t pos = start;
    auto it = s.known.upper_bound(pos);
    if (it != s.known.begin())
        --it;
    while (pos < end) {
        while (it != s.known.end() && it->second.offset + it->second.length <= pos)
            ++it;
        if (it == s.known.end() || it->first >= end) {
            add(pos, end);
            break;
        }
        const Extent& e = it->second;
        if (e.offset > pos) { // not asked about: data
            add(pos, e.offset);
            pos = e.offset;
        } else if (e.type == ExtentType::Data) {
            const uint64_t b = std::min(e.offset + e.length, end);
            add(pos, b);
            pos = b;
        } else {
            const uint64_t b = std::min(e.offset + e.length, end);
            std::memset(dst + (pos - start), 0, b - pos);
            pos = b;
        }
    }
    return out;
}

} // namespace

void NbdSource::read(void* buf, size_t length, uint64_t offset) {
    if (length == 0)
        return;
    State& s = *state_;
    // Requests must start and end on the server's minimum block size; the
    // last block of the export may be short.
    const uint64_t start = round_down(offset, s.min_block);
    const uint64_t end = std::min(round_up(offset + length, s.min_block), s.size);
    std::vector<unsigned char> bounce;
    auto* dst = static_cast<unsigned char*>(buf);
    if (start != offset || end != offset + length) {
        bounce.resize(end - start);
        dst = bounce.data();
    }
    std::vector<Request> reqs;
    for (const auto& [a, b] : ranges_to_fetch(s, dst, start, end)) {
        for (uint64_t pos = a; pos < b; pos += s.request_size) {
            Request r;
            r.buf = dst + (pos - start);
            r.offset = pos;
            r.length = std::min(s.request_size, b - pos);
            reqs.push_back(r);
        }
    }
    if (!reqs.empty())
        run_batch(s, reqs);
    if (!bounce.empty())
        std::memcpy(buf, bounce.data() + (offset - start), length);
}

namespace {

// Block status for exactly [offset, end): as many requests as the server
// needs (it may describe less than was asked, never less than one extent).
std::vector<Extent> fetch_extents(NbdSource::State& s, uint64_t offset, uint64_t end) {
    std::vector<Extent> out;
    std::vector<Extent> answer;
    uint64_t pos = offset;
    while (pos < end) {
        const uint64_t start = round_down(pos, s.min_block);
        const uint64_t stop = std::min({round_up(end, s.min_block), s.size,
                                        start + round_down(block_status_span, s.min_block)});
        std::vector<Request> reqs(1);
        reqs[0].kind = Request::Kind::BlockStatus;
        reqs[0].offset = start;
        reqs[0].length = stop - start;
        reqs[0].extents = &answer;
        run_batch(s, reqs);
        const uint64_t before = pos;
        for (const Extent& e : answer) {
            const uint64_t a = std::max(e.offset, pos);
            const uint64_t b = std::min(e.offset + e.length, end);
            if (e.offset > pos || a >= b)
                break; // a gap or past the end: ask again from pos
            append_extent(out, Extent{a, b - a, e.type});
            pos = b;
        }
        if (pos == before)
            throw Error("NBD server " + s.uri + ": block status at offset " + hex(pos) +
                        " described nothing there");
    }
    return out;
}

} // namespace

// Allocation is asked for again and again (every lseek(SEEK_DATA) on a view
// asks from there to the end), and over a WAN each ask is a round trip: what
// the server said is kept. A view's layout is fixed when it opens, so a
// changing remote disk changes nothing here that a view could use anyway.
std::vector<Extent> NbdSource::extents(uint64_t offset, uint64_t length) {
    State& s = *state_;
    std::vector<Extent> out;
    if (!s.has_allocation) {
        append_extent(out, Extent{offset, length, ExtentType::Data});
        return out;
    }
    const uint64_t end = offset + length;
    uint64_t pos = offset;
    while (pos < end) {
        uint64_t gap_end = end;
        {
            std::lock_guard lock(s.known_mutex);
            auto it = s.known.upper_bound(pos);
            if (it != s.known.begin()) {
                const Extent& e = std::prev(it)->second;
                if (pos < e.offset + e.length) {
                    const uint64_t b = std::min(e.offset + e.length, end);
                    append_extent(out, Extent{pos, b - pos, e.type});
                    pos = b;
                    continue;
                }
            }
            if (it != s.known.end())
                gap_end = std::min(gap_end, it->first);
        }
        const std::vector<Extent> fetched = fetch_extents(s, pos, gap_end);
        {
            std::lock_guard lock(s.known_mutex);
            for (const Extent& e : fetched) {
                // Another reader may have filled part of the gap meanwhile.
                auto next = s.known.lower_bound(e.offset);
                const bool overlaps_next =
                    next != s.known.end() && next->first < e.offset + e.length;
                const bool overlaps_prev =
                    next != s.known.begin() &&
                    std::prev(next)->second.offset + std::prev(next)->second.length > e.offset;
                if (!overlaps_next && !overlaps_prev)
                    s.known.emplace(e.offset, e);
            }
        }
        for (const Extent& e : fetched)
            append_extent(out, e);
        pos = gap_end;
    }
    return out;
}

bool is_nbd_uri(const std::string& spec) {
    for (const char* scheme :
         {"nbd://", "nbds://", "nbd+unix://", "nbds+unix://", "nbd+vsock://", "nbds+vsock://"})
        if (spec.rfind(scheme, 0) == 0)
            return true;
    return false;
}

void validate(const NbdOptions& o) {
    if (o.connections < 1 || o.connections > 16)
        throw InvalidArgument("NBD connections: " + std::to_string(o.connections) +
                              " is not between 1 and 16");
    if (o.max_in_flight < 1 || o.max_in_flight > 256)
        throw InvalidArgument("NBD requests in flight: " + std::to_string(o.max_in_flight) +
                              " is not between 1 and 256");
    if (o.request_size < 4096 || o.request_size > (32u << 20) ||
        (o.request_size & (o.request_size - 1)))
        throw InvalidArgument("NBD request size: " + std::to_string(o.request_size) +
                              " is not a power of two from 4 KiB to 32 MiB");
    if (o.retry_timeout.count() < 0)
        throw InvalidArgument("NBD retry timeout: must not be negative");
}

} // namespace p2vfs
