#include <gtest/gtest.h>

#include <string>

#include "api/request.hpp"

namespace popek::api {
namespace {

vmm::Command command(std::string_view method, std::string_view path, std::string_view body = {}) {
    auto parsed = parse_request(method, path, body);
    if (const auto* e = std::get_if<HttpError>(&parsed)) {
        ADD_FAILURE() << method << " " << path << " refused: " << e->status << " " << e->message;
        return vmm::InfoCommand{};
    }
    return std::get<vmm::Command>(parsed);
}

HttpError error(std::string_view method, std::string_view path, std::string_view body = {}) {
    auto parsed = parse_request(method, path, body);
    if (const auto* e = std::get_if<HttpError>(&parsed)) return *e;
    ADD_FAILURE() << method << " " << path << " with body '" << body << "' was accepted";
    return {};
}

bool contains(const std::string& s, std::string_view part) { return s.find(part) != std::string::npos; }

TEST(ApiRequest, EveryRouteWithoutBodyGivesItsCommand) {
    EXPECT_TRUE(std::holds_alternative<vmm::InfoCommand>(command("GET", "/vm")));
    EXPECT_TRUE(std::holds_alternative<vmm::PauseCommand>(command("PUT", "/vm/pause")));
    EXPECT_TRUE(std::holds_alternative<vmm::ResumeCommand>(command("PUT", "/vm/resume")));
    EXPECT_TRUE(std::holds_alternative<vmm::MetricsCommand>(command("GET", "/metrics")));
}

TEST(ApiRequest, ShutdownTimeoutIsOptional) {
    auto c = command("PUT", "/vm/shutdown");
    ASSERT_TRUE(std::holds_alternative<vmm::ShutdownCommand>(c));
    EXPECT_EQ(std::get<vmm::ShutdownCommand>(c).timeout_ms, vmm::ShutdownCommand{}.timeout_ms);

    c = command("PUT", "/vm/shutdown", "{}");
    EXPECT_EQ(std::get<vmm::ShutdownCommand>(c).timeout_ms, vmm::ShutdownCommand{}.timeout_ms);

    c = command("PUT", "/vm/shutdown", R"({"timeout_ms": 250})");
    EXPECT_EQ(std::get<vmm::ShutdownCommand>(c).timeout_ms, 250u);
    c = command("PUT", "/vm/shutdown", R"({"timeout_ms": 0})");
    EXPECT_EQ(std::get<vmm::ShutdownCommand>(c).timeout_ms, 0u);
    c = command("PUT", "/vm/shutdown", R"({"timeout_ms": 4294967295})");
    EXPECT_EQ(std::get<vmm::ShutdownCommand>(c).timeout_ms, 4294967295u);
}

TEST(ApiRequest, SnapshotTakesAnAbsolutePath) {
    auto c = command("PUT", "/vm/snapshot", R"({"path": "/var/lib/popek/snap1"})");
    ASSERT_TRUE(std::holds_alternative<vmm::SnapshotCommand>(c));
    EXPECT_EQ(std::get<vmm::SnapshotCommand>(c).path, "/var/lib/popek/snap1");
}

TEST(ApiRequest, WhitespaceBodyCountsAsNoBody) {
    EXPECT_TRUE(std::holds_alternative<vmm::PauseCommand>(command("PUT", "/vm/pause", " \r\n\t")));
}

TEST(ApiRequest, UnknownPathIs404) {
    for (const char* path : {"/", "/vm/", "/vm/reboot", "/VM", "/metrics/x", ""}) {
        auto e = error("GET", path);
        EXPECT_EQ(e.status, 404u) << path;
        EXPECT_TRUE(contains(e.message, "no such route")) << e.message;
    }
}

TEST(ApiRequest, KnownPathWithWrongMethodIs405WithAllow) {
    auto e = error("PUT", "/vm");
    EXPECT_EQ(e.status, 405u);
    EXPECT_EQ(e.allow, "GET");
    EXPECT_TRUE(contains(e.message, "PUT")) << e.message;

    e = error("GET", "/vm/pause");
    EXPECT_EQ(e.status, 405u);
    EXPECT_EQ(e.allow, "PUT");

    e = error("POST", "/vm/snapshot", R"({"path": "/x"})");
    EXPECT_EQ(e.status, 405u);
    EXPECT_EQ(e.allow, "PUT");

    e = error("DELETE", "/metrics");
    EXPECT_EQ(e.status, 405u);
    EXPECT_EQ(e.allow, "GET");

    EXPECT_EQ(error("get", "/vm").status, 405u);  // methods are case-sensitive
}

TEST(ApiRequest, MalformedJsonIs400WithThePosition) {
    auto e = error("PUT", "/vm/shutdown", R"({"timeout_ms": 5)");
    EXPECT_EQ(e.status, 400u);
    EXPECT_TRUE(contains(e.message, "malformed JSON")) << e.message;
    EXPECT_TRUE(contains(e.message, "line 1, column 17")) << e.message;

    e = error("PUT", "/vm/snapshot", "{\n  \"path\": /x\n}");
    EXPECT_EQ(e.status, 400u);
    EXPECT_TRUE(contains(e.message, "line 2")) << e.message;
}

TEST(ApiRequest, BodyMustBeAnObject) {
    for (const char* body : {"[]", "null", "5", R"("path")"}) {
        auto e = error("PUT", "/vm/snapshot", body);
        EXPECT_EQ(e.status, 400u) << body;
        EXPECT_TRUE(contains(e.message, "must be a JSON object")) << e.message;
    }
}

TEST(ApiRequest, UnknownFieldIs400NamingIt) {
    auto e = error("PUT", "/vm/shutdown", R"({"timeout_ms": 5, "force": true})");
    EXPECT_EQ(e.status, 400u);
    EXPECT_TRUE(contains(e.message, "\"force\"")) << e.message;
    EXPECT_TRUE(contains(e.message, "timeout_ms")) << e.message;  // says what is expected

    e = error("PUT", "/vm/snapshot", R"({"path": "/x", "pth": "/y"})");
    EXPECT_EQ(e.status, 400u);
    EXPECT_TRUE(contains(e.message, "\"pth\"")) << e.message;
}

TEST(ApiRequest, WrongTypeIs400NamingFieldAndType) {
    for (const char* body : {R"({"timeout_ms": "5"})", R"({"timeout_ms": 1.5})", R"({"timeout_ms": -1})",
                             R"({"timeout_ms": 4294967296})", R"({"timeout_ms": null})", R"({"timeout_ms": true})"}) {
        auto e = error("PUT", "/vm/shutdown", body);
        EXPECT_EQ(e.status, 400u) << body;
        EXPECT_TRUE(contains(e.message, "\"timeout_ms\"")) << e.message;
        EXPECT_TRUE(contains(e.message, "integer")) << e.message;
    }
    auto e = error("PUT", "/vm/snapshot", R"({"path": 5})");
    EXPECT_EQ(e.status, 400u);
    EXPECT_TRUE(contains(e.message, "\"path\"")) << e.message;
    EXPECT_TRUE(contains(e.message, "must be a string, got number")) << e.message;
}

TEST(ApiRequest, SnapshotPathIsRequiredNonEmptyAndAbsolute) {
    EXPECT_TRUE(contains(error("PUT", "/vm/snapshot").message, "needs a JSON object body"));
    EXPECT_TRUE(contains(error("PUT", "/vm/snapshot", "{}").message, "missing field \"path\""));
    EXPECT_TRUE(contains(error("PUT", "/vm/snapshot", R"({"path": ""})").message, "must not be empty"));
    auto e = error("PUT", "/vm/snapshot", R"({"path": "snap/1"})");
    EXPECT_EQ(e.status, 400u);
    EXPECT_TRUE(contains(e.message, "absolute path")) << e.message;
    EXPECT_TRUE(contains(e.message, "snap/1")) << e.message;
    EXPECT_TRUE(contains(error("PUT", "/vm/snapshot", R"({"path": "/a\u0000b"})").message, "NUL"));
    EXPECT_TRUE(contains(error("PUT", "/vm/snapshot", R"({"path": "/)" + std::string(5000, 'a') + "\"}").message,
                         "longer than"));
}

TEST(ApiRequest, BodyWhereNoneIsAllowedIs400) {
    for (auto [method, path] : {std::pair{"GET", "/vm"}, {"PUT", "/vm/pause"}, {"PUT", "/vm/resume"},
                                {"GET", "/metrics"}}) {
        auto e = error(method, path, "{}");
        EXPECT_EQ(e.status, 400u) << path;
        EXPECT_TRUE(contains(e.message, "takes no body")) << e.message;
    }
}

TEST(ApiRequest, BodyOver64KiBIs413) {
    const std::string big = R"({"path": "/)" + std::string(kMaxBodyBytes, 'a') + "\"}";
    auto e = error("PUT", "/vm/snapshot", big);
    EXPECT_EQ(e.status, 413u);
    EXPECT_EQ(e.message, body_too_large().message);
    // Exactly the limit is still parsed (and then refused for what it says).
    const std::string at_limit = std::string(kMaxBodyBytes - 2, ' ') + "{}";
    EXPECT_TRUE(std::holds_alternative<vmm::Command>(parse_request("PUT", "/vm/shutdown", at_limit)));
}

TEST(ApiRequest, ErrorMessagesArePrintableAsciiAndSerialize) {
    // Request bytes that are not ASCII end up escaped, so the error body is
    // always valid JSON.
    const std::string nasty_path = "/\xff\x01vm";
    auto e = error("GET", nasty_path);
    EXPECT_TRUE(contains(e.message, "\\xff\\x01")) << e.message;
    e = error("PUT", "/vm/shutdown", "{\"\xc3\xa9t\xc3\xa9\": 1}");  // valid UTF-8 key "été"
    EXPECT_TRUE(contains(e.message, "\\xc3\\xa9t")) << e.message;
    e = error("PUT", "/vm/shutdown", "{\"timeout_ms\": \xff}");
    EXPECT_EQ(e.status, 400u);
    for (const auto& err : {e, error("GET", nasty_path)}) {
        for (char c : err.message) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << err.message;
        EXPECT_NO_THROW((void)err.body().dump());
    }
}

TEST(ApiRequest, PrintableEscapesAndTruncates) {
    EXPECT_EQ(printable("ab\ncd"), "ab\\x0acd");
    EXPECT_EQ(printable(std::string(100, 'x'), 10), std::string(10, 'x') + "...");
}

}  // namespace
}  // namespace popek::api
