#include "api/request.hpp"

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>

#include "migration/compress/codec.hpp"
#include "migration/precopy.hpp"
#include "migration/postcopy.hpp"
#include "migration/stream.hpp"

namespace popek::api {

namespace {

using nlohmann::json;

HttpError bad_request(std::string message) { return HttpError{400, std::move(message), {}}; }

std::string in_quotes(std::string_view text) { return "\"" + printable(text) + "\""; }

// ---- reading fields of a JSON object body -----------------------------------

std::string join(std::initializer_list<std::string_view> names) {
    std::string out;
    for (auto n : names) {
        if (!out.empty()) out += ", ";
        out += n;
    }
    return out;
}

std::optional<HttpError> only_fields(const json& obj, std::initializer_list<std::string_view> known) {
    for (const auto& [key, value] : obj.items()) {
        bool found = false;
        for (auto k : known) found = found || key == k;
        if (!found)
            return bad_request("unknown field " + in_quotes(key) +
                               (known.size() == 0 ? std::string(" (this request takes no fields)")
                                                  : " (expected " + join(known) + ")"));
    }
    return std::nullopt;
}

// Leaves `out` alone when the field is absent.
std::optional<HttpError> read_u32(const json& obj, const char* name, uint32_t& out) {
    auto it = obj.find(name);
    if (it == obj.end()) return std::nullopt;
    const bool fits = it->is_number_unsigned() && it->get<uint64_t>() <= std::numeric_limits<uint32_t>::max();
    if (!fits) {
        const std::string got = it->is_number_integer() ? it->dump() : std::string(it->type_name());
        return bad_request(std::string("field \"") + name + "\" must be an integer from 0 to 4294967295, got " + got);
    }
    out = it->get<uint32_t>();
    return std::nullopt;
}

// An absolute path on the host where popek runs.
std::optional<HttpError> read_path(const json& obj, const char* name, std::string& out) {
    const std::string field = std::string("field \"") + name + "\"";
    auto it = obj.find(name);
    if (it == obj.end()) return bad_request("missing " + field + " (a string: an absolute path)");
    if (!it->is_string()) return bad_request(field + " must be a string, got " + it->type_name());
    const auto& s = it->get_ref<const std::string&>();
    if (s.empty()) return bad_request(field + " must not be empty");
    if (s.find('\0') != std::string::npos) return bad_request(field + " must not contain NUL bytes");
    if (s.size() >= 4096) return bad_request(field + " is longer than 4095 bytes");
    if (s.front() != '/') return bad_request(field + " must be an absolute path, got " + in_quotes(s));
    out = s;
    return std::nullopt;
}

// ---- one function per route that reads a body ------------------------------
// Each gets the body as a JSON object, or nullptr when the request had none
// (only possible for routes whose body is optional).

ParsedRequest parse_shutdown(const json* body) {
    vmm::ShutdownCommand c;
    if (body != nullptr) {
        if (auto e = only_fields(*body, {"timeout_ms"})) return *e;
        if (auto e = read_u32(*body, "timeout_ms", c.timeout_ms)) return *e;
    }
    return vmm::Command{c};
}

ParsedRequest parse_snapshot(const json* body) {
    vmm::SnapshotCommand c;
    if (auto e = only_fields(*body, {"path"})) return *e;
    if (auto e = read_path(*body, "path", c.path)) return *e;
    return vmm::Command{std::move(c)};
}

ParsedRequest parse_migrate(const json* body) {
    vmm::MigrateCommand c;
    if (auto e = only_fields(*body, {"to", "downtime_ms", "max_rounds", "compress", "bandwidth", "auto_converge",
                                     "threads", "postcopy", "postcopy_after_rounds", "postcopy_recover_ms",
                                     "timeout_ms"}))
        return *e;
    auto to = body->find("to");
    if (to == body->end() || !to->is_string()) return bad_request("field \"to\" must be a string tcp:HOST:PORT");
    c.to = to->get<std::string>();
    if (auto a = migration::parse_tcp_address(c.to); !a) return bad_request("field \"to\": " + printable(a.error().message));
    if (auto e = read_u32(*body, "downtime_ms", c.downtime_ms)) return *e;
    if (auto e = read_u32(*body, "max_rounds", c.max_rounds)) return *e;
    if (auto it = body->find("compress"); it != body->end()) {
        if (!it->is_string()) return bad_request("field \"compress\" must be a string");
        c.compress = it->get<std::string>();
        if (auto codec = migration::compress::parse_codec(c.compress); !codec)
            return bad_request("field \"compress\": " + printable(codec.error().message));
    }
    if (auto it = body->find("bandwidth"); it != body->end()) {
        // A number of bytes per second, or a string like "100M".
        auto bw = it->is_number_unsigned() ? migration::parse_bandwidth(std::to_string(it->get<uint64_t>()))
                  : it->is_string()        ? migration::parse_bandwidth(it->get<std::string>())
                                           : base::Result<uint64_t>(base::Error{"must be bytes per second"});
        if (!bw) return bad_request("field \"bandwidth\": " + printable(bw.error().message));
        c.bandwidth = *bw;
    }
    if (auto it = body->find("auto_converge"); it != body->end()) {
        if (!it->is_boolean()) return bad_request("field \"auto_converge\" must be true or false");
        c.auto_converge = it->get<bool>();
    }
    if (auto e = read_u32(*body, "threads", c.threads)) return *e;
    if (c.threads < 1 || c.threads > migration::kMaxThreads)
        return bad_request("field \"threads\" must be 1 to " + std::to_string(migration::kMaxThreads));
    if (auto it = body->find("postcopy"); it != body->end()) {
        if (!it->is_string()) return bad_request("field \"postcopy\" must be a string: off, on or auto");
        c.postcopy = it->get<std::string>();
        if (auto m = migration::parse_postcopy_mode(c.postcopy); !m)
            return bad_request("field \"postcopy\": " + printable(m.error().message));
    }
    if (auto e = read_u32(*body, "postcopy_after_rounds", c.postcopy_after_rounds)) return *e;
    if (auto e = read_u32(*body, "postcopy_recover_ms", c.postcopy_recover_ms)) return *e;
    if (c.postcopy_recover_ms > migration::kMaxRecoverMs)
        return bad_request("field \"postcopy_recover_ms\" must be 0 to " + std::to_string(migration::kMaxRecoverMs));
    if (auto e = read_u32(*body, "timeout_ms", c.timeout_ms)) return *e;
    if (c.timeout_ms < migration::kMinTimeoutMs || c.timeout_ms > migration::kMaxTimeoutMs)
        return bad_request("field \"timeout_ms\" must be " + std::to_string(migration::kMinTimeoutMs) + " to " +
                           std::to_string(migration::kMaxTimeoutMs));
    return vmm::Command{std::move(c)};
}

template <class C>
ParsedRequest no_body(const json*) {
    return vmm::Command{C{}};
}

// ---- the routes ---------------------------------------------------------------

enum class Body { None, Optional, Required };

struct Route {
    std::string_view method;
    std::string_view path;
    Body body;
    ParsedRequest (*parse)(const json* body);
};

// Adding a route: one line here, and a parse_* function if it reads a body.
constexpr Route kRoutes[] = {
    {"GET", "/vm", Body::None, no_body<vmm::InfoCommand>},
    {"PUT", "/vm/pause", Body::None, no_body<vmm::PauseCommand>},
    {"PUT", "/vm/resume", Body::None, no_body<vmm::ResumeCommand>},
    {"PUT", "/vm/shutdown", Body::Optional, parse_shutdown},
    {"PUT", "/vm/snapshot", Body::Required, parse_snapshot},
    {"GET", "/metrics", Body::None, no_body<vmm::MetricsCommand>},
    {"PUT", "/vm/migrate", Body::Required, parse_migrate},
    {"GET", "/vm/migration", Body::None, no_body<vmm::MigrationStatusCommand>},
};

bool is_blank(std::string_view body) {
    return body.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

// The body as JSON, or the parse error with its position.
std::variant<json, HttpError> parse_json(std::string_view body) {
    try {
        return json::parse(body);
    } catch (const json::parse_error& e) {
        // what() is "[json.exception.parse_error.101] parse error at line 1, column 5: ..."
        std::string_view what = e.what();
        if (auto end = what.find("] "); end != std::string_view::npos) what.remove_prefix(end + 2);
        return bad_request("malformed JSON body: " + printable(what, 240));
    } catch (const json::exception& e) {
        return bad_request("malformed JSON body: " + printable(e.what(), 240));
    }
}

std::string describe(const Route& r) { return std::string(r.method) + " " + std::string(r.path); }

ParsedRequest parse_body(const Route& route, std::string_view body) {
    if (is_blank(body)) {
        if (route.body == Body::Required)
            return bad_request(describe(route) + " needs a JSON object body");
        return route.parse(nullptr);
    }
    if (route.body == Body::None) return bad_request(describe(route) + " takes no body");
    auto parsed = parse_json(body);
    if (auto* err = std::get_if<HttpError>(&parsed)) return *err;
    const json& value = std::get<json>(parsed);
    if (!value.is_object())
        return bad_request(std::string("the body must be a JSON object, got ") + value.type_name());
    return route.parse(&value);
}

}  // namespace

std::string printable(std::string_view text, size_t max) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (char ch : text) {
        if (out.size() >= max) {
            out += "...";
            break;
        }
        const auto c = static_cast<unsigned char>(ch);
        if (c >= 0x20 && c < 0x7f) {
            out += ch;
        } else {
            out += "\\x";
            out += kHex[c >> 4];
            out += kHex[c & 0xf];
        }
    }
    return out;
}

HttpError body_too_large() {
    return HttpError{413, "request body larger than " + std::to_string(kMaxBodyBytes) + " bytes", {}};
}

ParsedRequest parse_request(std::string_view method, std::string_view path, std::string_view body) {
    if (body.size() > kMaxBodyBytes) return body_too_large();
    std::string allow;
    for (const Route& r : kRoutes) {
        if (r.path != path) continue;
        if (r.method == method) return parse_body(r, body);
        if (!allow.empty()) allow += ", ";
        allow += r.method;
    }
    if (allow.empty()) return HttpError{404, "no such route: " + in_quotes(path), {}};
    return HttpError{405, "method " + printable(method, 16) + " not allowed on " + std::string(path) +
                              " (allowed: " + allow + ")",
                     allow};
}

}  // namespace popek::api
