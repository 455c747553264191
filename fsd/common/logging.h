// Log setup shared by the daemon and the tools: one stderr sink, lines of
// the form "p2vfsd: error: <message>", which journald timestamps itself.
#pragma once

#include <string>

namespace p2vfs {

// Level names: trace, debug, info, warn, error. Throws on an unknown name.
void setup_logging(const std::string& program, const std::string& level);

} // namespace p2vfs
