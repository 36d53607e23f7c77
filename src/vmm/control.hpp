// The typed commands a running VM accepts from outside (the REST API, and
// through it `popek ctl`). The API layer parses requests into these and
// hands them to a Controller; the Machine implements Controller by running
// each command on its own event-loop thread, one at a time.
#pragma once

#include <cstdint>
#include <string>
#include <variant>

#include <nlohmann/json.hpp>

namespace popek::vmm {

struct InfoCommand {};     // state, config, devices
struct PauseCommand {};
struct ResumeCommand {};
struct ShutdownCommand {   // ACPI power button, then forced after timeout_ms
    uint32_t timeout_ms = 5000;
};
struct SnapshotCommand {   // pause (if running), save into directory `path`, resume if it was running
    std::string path;
};
struct MetricsCommand {};  // Prometheus text
struct MigrateCommand {    // start a live migration on its own thread; returns at once
    std::string to;        // tcp:HOST:PORT
    uint32_t downtime_ms = 300;
    uint32_t max_rounds = 30;
    std::string compress = "none";  // none, zero, wkdm, xbzrle, zstd, lz4, sparse, auto
    uint64_t bandwidth = 0;         // bytes per second; 0 = unlimited
    bool auto_converge = false;
    uint32_t threads = 2;           // encoding threads, 1..8
    uint32_t timeout_ms = 30000;    // a silent destination is gone after this long
    std::string postcopy = "off";   // off, on, auto (migration/postcopy.hpp)
    uint32_t postcopy_after_rounds = 1;
    uint32_t postcopy_recover_ms = 60000;  // a lost post-copy link may come back this long; 0: never
};
struct MigrationStatusCommand {};  // phase, round, dirty pages, bandwidth, bytes; the report at the end

using Command = std::variant<InfoCommand, PauseCommand, ResumeCommand, ShutdownCommand, SnapshotCommand,
                             MetricsCommand, MigrateCommand, MigrationStatusCommand>;

enum class ReplyStatus {
    Ok,          // 200 (or 204 without a body)
    BadRequest,  // 400: the command's arguments are wrong (a path that cannot be written, ...)
    Conflict,    // 409: the VM is in the wrong state for it (resume while running, ...)
    Internal,    // 500: it failed inside popek
};

struct Reply {
    ReplyStatus status = ReplyStatus::Ok;
    nlohmann::json body;   // a JSON object; on errors {"error": "..."}
    std::string text;      // set instead of body for text replies (metrics)

    static Reply ok(nlohmann::json b = nlohmann::json::object()) { return Reply{ReplyStatus::Ok, std::move(b), {}}; }
    static Reply error(ReplyStatus s, const std::string& message) {
        return Reply{s, nlohmann::json{{"error", message}}, {}};
    }
};

class Controller {
public:
    virtual ~Controller() = default;
    // Thread-safe; blocks until the command is done (or has failed).
    virtual Reply execute(const Command& command) = 0;
};

}  // namespace popek::vmm
