// libFuzzer target: hostile API requests against api::parse_request().
//
// Input layout (text, so seeds are readable): METHOD '\n' PATH '\n' BODY.
// A missing line is empty. Whatever the input, the parser must not throw,
// must answer with a command only for a known route with an acceptable
// body, and every error must be one of the documented statuses with a
// printable message that serializes as JSON.
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

#include "api/request.hpp"
#include "fuzz_common.hpp"

using popek::fuzz::check;
namespace api = popek::api;
namespace vmm = popek::vmm;

namespace {

std::string_view next_line(std::string_view& in) {
    const auto nl = in.find('\n');
    const std::string_view line = in.substr(0, nl);
    in = nl == std::string_view::npos ? std::string_view{} : in.substr(nl + 1);
    return line;
}

void check_error(const api::HttpError& e, std::string_view body) {
    check(e.status == 400 || e.status == 404 || e.status == 405 || e.status == 413);
    check((e.status == 413) == (body.size() > api::kMaxBodyBytes));
    check((e.status == 405) == !e.allow.empty());
    check(!e.message.empty());
    for (char c : e.message) check(c >= 0x20 && c < 0x7f);
    try {
        check(!e.body().dump().empty());
    } catch (...) {
        check(false);
    }
}

void check_command(const vmm::Command& c, std::string_view method, std::string_view path, std::string_view body) {
    check(body.size() <= api::kMaxBodyBytes);
    const bool get = method == "GET", put = method == "PUT";
    std::visit(
        [&](const auto& cmd) {
            using T = std::decay_t<decltype(cmd)>;
            if constexpr (std::is_same_v<T, vmm::InfoCommand>) check(get && path == "/vm");
            if constexpr (std::is_same_v<T, vmm::MetricsCommand>) check(get && path == "/metrics");
            if constexpr (std::is_same_v<T, vmm::PauseCommand>) check(put && path == "/vm/pause");
            if constexpr (std::is_same_v<T, vmm::ResumeCommand>) check(put && path == "/vm/resume");
            if constexpr (std::is_same_v<T, vmm::ShutdownCommand>) check(put && path == "/vm/shutdown");
            if constexpr (std::is_same_v<T, vmm::MigrateCommand>) check(put && path == "/vm/migrate" && cmd.to.rfind("tcp:", 0) == 0);
            if constexpr (std::is_same_v<T, vmm::MigrationStatusCommand>) check(get && path == "/vm/migration");
            if constexpr (std::is_same_v<T, vmm::SnapshotCommand>) {
                check(put && path == "/vm/snapshot");
                check(!cmd.path.empty() && cmd.path.front() == '/' && cmd.path.size() < 4096);
                check(cmd.path.find('\0') == std::string::npos);
            }
        },
        c);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view in(reinterpret_cast<const char*>(data), size);
    const std::string_view method = next_line(in);
    const std::string_view path = next_line(in);
    const std::string_view body = in;
    try {
        const api::ParsedRequest parsed = api::parse_request(method, path, body);
        if (const auto* e = std::get_if<api::HttpError>(&parsed))
            check_error(*e, body);
        else
            check_command(std::get<vmm::Command>(parsed), method, path, body);
    } catch (...) {
        check(false);  // the parser promises not to throw
    }
    return 0;
}
