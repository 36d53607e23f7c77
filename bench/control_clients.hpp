// The two control sockets the snapshot benchmark talks to, spoken directly so
// that a request's time is the VMM's and not a client process's start-up:
// popek's REST API (HTTP/1.1 over a Unix socket) and QEMU's QMP.
#pragma once

#include <chrono>
#include <deque>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace popek::bench {

// Connects to a Unix socket, retrying until `timeout` (the VMM may still be
// creating it). -1 on failure.
int connect_unix(const std::string& path, std::chrono::milliseconds timeout);

struct HttpReply {
    int status = 0;  // 0: no reply (connection failed or dropped)
    std::string body;
};

// One request on a fresh connection (Connection: close), read to EOF.
HttpReply http_request(const std::string& socket_path, const std::string& method, const std::string& path,
                       const std::string& json_body = {});

class Qmp {
public:
    Qmp() = default;
    Qmp(const Qmp&) = delete;
    Qmp& operator=(const Qmp&) = delete;
    ~Qmp();

    // Connects, reads the greeting and negotiates capabilities.
    bool open(const std::string& socket_path, std::chrono::milliseconds timeout);
    // Sends a command and returns its reply ({"return": ...} or {"error": ...});
    // events that arrive meanwhile are kept for wait_event. nullopt: socket lost.
    std::optional<nlohmann::json> execute(const std::string& command, const nlohmann::json& arguments = nullptr);
    // The next event named `name` (kept ones first); nullopt on timeout or loss.
    std::optional<nlohmann::json> wait_event(const std::string& name, std::chrono::milliseconds timeout);

private:
    std::optional<nlohmann::json> read_message(std::chrono::milliseconds timeout);

    int fd_ = -1;
    std::string buffered_;
    std::deque<nlohmann::json> events_;
};

}  // namespace popek::bench
