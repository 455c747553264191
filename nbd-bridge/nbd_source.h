// A remote disk read over NBD with libnbd: nbd://, nbds://, nbd+unix://,
// nbds+unix:// URIs (export names, TLS by PSK file or X.509 certificates as
// query parameters, exactly as nbd_connect_uri(3) takes them).
//
// Reads are asynchronous: a read is cut into requests no larger than the
// server's maximum block size (and aligned to its minimum; an unaligned read
// goes through a bounce buffer), the requests go into one queue, and every
// connection's I/O thread takes from it, keeping up to `max_in_flight`
// requests pipelined on its socket. When the server advertises multi-conn,
// up to `connections` connections share the queue; otherwise one.
//
// A dropped connection is not an error a reader sees: its requests go back
// into the queue, where other connections or the same one, once reconnected,
// take them. Reconnection retries with exponential back-off (100 ms to 5 s).
// Only when no connection has been up for `retry_timeout` does a waiting
// request fail, with ETIMEDOUT and the last connection error. A server that
// answers a request with an error (EIO from a bad sector) is different: that
// read fails at once, naming the offset and the server.
//
// Allocation comes from block status (base:allocation): holes read as zeros
// and stay holes in dynamic views. A server without it reports all data.
#pragma once

#include "block/block_device.h"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace p2vfs {

struct NbdOptions {
    unsigned connections = 4;         // at most, when the server allows multi-conn
    unsigned max_in_flight = 16;      // pipelined requests per connection
    uint32_t request_size = 1u << 20; // largest request (clamped to the server's maximum)
    std::chrono::milliseconds retry_timeout{60'000};
};

struct NbdStats {
    uint64_t requests = 0;   // requests sent (reads and block status)
    uint64_t reconnects = 0; // connections re-established after a loss
};

class NbdSource : public BlockDevice {
public:
    // Connects every connection before returning; throws Error naming the
    // URI when the server cannot be reached, refuses TLS or the export.
    NbdSource(const std::string& uri, NbdOptions options);
    ~NbdSource() override;
    NbdSource(const NbdSource&) = delete;
    NbdSource& operator=(const NbdSource&) = delete;

    std::string name() const override;
    std::string identity() const override;
    uint64_t size() const override;
    void read(void* buf, size_t length, uint64_t offset) override;
    std::vector<Extent> extents(uint64_t offset, uint64_t length) override;

    unsigned connection_count() const;
    NbdStats stats() const;

    struct State;

private:
    std::unique_ptr<State> state_;
};

// True when `spec` names an NBD URI (any scheme libnbd accepts).
bool is_nbd_uri(const std::string& spec);

// Throws InvalidArgument naming the bad option.
void validate(const NbdOptions& options);

} // namespace p2vfs
