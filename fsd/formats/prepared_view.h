// A view whose layout is only known after a pass over the data.
//
// Most views are laid out from size() and extents() alone, at open. A few
// cannot be: a stream-optimized VMDK stores compressed grains, so where each
// grain sits (and so the file's size) depends on how well the grains before
// it compress. Such a view is a BlockDevice that is also a PreparedView:
// made cheaply like any view, then prepared once — the pass over the data —
// before its bytes can be read.
//
// Contract:
//   - Before prepare() returns, ready() is false, size() is 0, and read(),
//     extents() and fd_span() throw Error ("not prepared").
//   - prepare() does the pass and fixes the layout; afterwards ready() is
//     true and size(), read(), extents() and fd_span() behave as for any
//     view: the bytes never change again.
//   - prepare() may be called from several threads at once (several opens of
//     the file): one of them does the work, the others block until it is done
//     and then return. Once ready, prepare() returns at once. If the pass
//     fails, the caller that ran it gets the Error, the view stays not ready,
//     and the next prepare() tries again from the start.
//   - `progress(done, total)` is called by the thread doing the work only,
//     from that thread: first with done = 0, then as the work advances, last
//     with done == total. Calls can be frequent (every few MiB): throttle in
//     the callback. It must not call back into the view. It may throw to
//     abandon the pass (a daemon shutting down): the exception leaves
//     prepare() as a failed pass does.
//   - ready() is safe to call at any time from any thread.
#pragma once

#include "block/block_device.h"

#include <cstdint>
#include <functional>
#include <string>

namespace p2vfs {

class PreparedView {
public:
    // Bytes of data processed so far and in all; total may be 0 (nothing to do).
    using Progress = std::function<void(uint64_t done, uint64_t total)>;

    virtual ~PreparedView() = default;
    virtual bool ready() const = 0;
    virtual void prepare(const Progress& progress) = 0;
};

// The PreparedView behind `dev`, looking through filter layers (such as the
// CheckedDevice make_view_files wraps every view in), or nullptr.
PreparedView* prepared_view_of(BlockDevice& dev);

// Prepares the view behind `dev` if it has to be, and returns a device to
// read it through: `dev` itself when there was nothing to prepare, otherwise
// a fresh checked wrapper of the prepared view (a wrapper made before
// preparation range-checks against the size of 0 it saw then).
DevicePtr prepared(const DevicePtr& dev, const PreparedView::Progress& progress = {});

// A Progress that logs "WHAT: preparing", then every 10% or 10 seconds, and
// the end (spdlog, info level), for the front ends that prepare views.
PreparedView::Progress logged_progress(std::string what);

} // namespace p2vfs
