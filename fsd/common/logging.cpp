#include "common/logging.h"

#include "common/error.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace p2vfs {

void setup_logging(const std::string& program, const std::string& level) {
    auto lvl = spdlog::level::from_str(level);
    if (lvl == spdlog::level::off && level != "off")
        throw InvalidArgument("unknown log level '" + level +
                              "' (use trace, debug, info, warn or error)");
    auto logger = spdlog::stderr_logger_mt(program);
    logger->set_pattern(program + ": %l: %v");
    logger->set_level(lvl);
    logger->flush_on(spdlog::level::trace);
    spdlog::set_default_logger(logger);
}

} // namespace p2vfs
