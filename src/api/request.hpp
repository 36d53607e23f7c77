// The one place that reads API requests: (method, path, body) becomes a
// typed vmm::Command or an HTTP error. Pure (no I/O, no state) so the unit
// tests and the fuzz target call it directly; the server only moves bytes.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <variant>

#include "vmm/control.hpp"

namespace popek::api {

// Request bodies larger than this are refused with 413.
inline constexpr size_t kMaxBodyBytes = 64 * 1024;

// An HTTP error reply. `message` is printable ASCII (anything taken from the
// request is escaped), so it always serializes as JSON.
struct HttpError {
    unsigned status = 400;
    std::string message;
    std::string allow;  // for 405: the methods the path accepts, "GET, PUT"

    [[nodiscard]] nlohmann::json body() const { return nlohmann::json{{"error", message}}; }
};

// Either the command to execute or the error to send back.
using ParsedRequest = std::variant<vmm::Command, HttpError>;

[[nodiscard]] ParsedRequest parse_request(std::string_view method, std::string_view path, std::string_view body);

// The 413 the server sends when a body outgrows kMaxBodyBytes while it is
// still arriving (parse_request gives the same error for a complete body).
[[nodiscard]] HttpError body_too_large();

// `text` with everything but printable ASCII escaped as \xNN, cut to `max`
// bytes: safe to put in an error message and in JSON.
[[nodiscard]] std::string printable(std::string_view text, size_t max = 80);

}  // namespace popek::api
