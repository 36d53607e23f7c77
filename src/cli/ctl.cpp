#include "cli/ctl.hpp"

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <system_error>

#include "api/client.hpp"

namespace popek::cli {

namespace {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr const char* kActions = "info, pause, resume, shutdown, snapshot or metrics";

int fail(int status, const std::string& message) {
    std::fprintf(stderr, "popek: error: %s\n", message.c_str());
    return status;
}

// The server's {"error": "..."}, or the raw body if it is something else.
std::string error_message(const api::Response& r) {
    const auto j = nlohmann::json::parse(r.body, nullptr, false);
    if (j.is_object() && j.contains("error") && j["error"].is_string()) return j["error"].get<std::string>();
    if (!r.body.empty()) return "HTTP " + std::to_string(r.status) + ": " + r.body;
    return "HTTP " + std::to_string(r.status);
}

void print_json(const std::string& body) {
    const auto j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_discarded()) {
        std::fputs(body.c_str(), stdout);
        if (!body.empty() && body.back() != '\n') std::fputc('\n', stdout);
        return;
    }
    std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
}

struct Call {
    const char* method;
    const char* path;
    std::string body;
};

}  // namespace

CLI::App* add_ctl_command(CLI::App& app, CtlOptions& options) {
    auto* ctl = app.add_subcommand("ctl", "Control a running popek through its API socket");
    ctl->add_option("--api-sock", options.api_sock, "The API socket of the popek to control (popek run --api-sock)")
        ->required();
    // Not require_subcommand: its message for `ctl frob` is "A subcommand is
    // required"; run_ctl names the stray argument instead.
    ctl->allow_extras();
    ctl->final_callback([&options, ctl] { options.unexpected = ctl->remaining(); });
    auto action = [&options, ctl](const char* name, const char* help, CtlAction a) {
        auto* sub = ctl->add_subcommand(name, help)->fallthrough();
        sub->callback([&options, a] { options.action = a; });
        return sub;
    };
    action("info", "Print the VM's state, configuration and devices (JSON)", CtlAction::Info);
    action("pause", "Pause every vCPU", CtlAction::Pause);
    action("resume", "Resume a paused VM", CtlAction::Resume);
    auto* shutdown = action("shutdown", "Press the ACPI power button; force off after the timeout",
                            CtlAction::Shutdown);
    shutdown->add_option_function<uint32_t>(
        "--timeout-ms", [&options](const uint32_t& ms) { options.timeout_ms = ms; },
        "Milliseconds to wait for the guest before forcing it off (the VMM's default if not given)");
    auto* snapshot = action("snapshot", "Save the VM's state into a directory", CtlAction::Snapshot);
    snapshot->add_option("DIR", options.snapshot_dir, "Directory to save into (made absolute here)")->required();
    action("metrics", "Print the VMM's metrics (Prometheus text)", CtlAction::Metrics);
    return ctl;
}

int run_ctl(const CtlOptions& options) {
    Call call{"GET", "/vm", {}};
    std::string snapshot_path;
    if (!options.unexpected.empty())
        return fail(kExitUsage, "ctl: unexpected argument '" + options.unexpected.front() + "' (expected " +
                                    std::string(kActions) + "; see popek ctl --help)");
    switch (options.action) {
        case CtlAction::None:
            return fail(kExitUsage, "ctl: no action given (expected " + std::string(kActions) + ")");
        case CtlAction::Info: break;
        case CtlAction::Pause: call = {"PUT", "/vm/pause", {}}; break;
        case CtlAction::Resume: call = {"PUT", "/vm/resume", {}}; break;
        case CtlAction::Shutdown: {
            nlohmann::json body = nlohmann::json::object();
            if (options.timeout_ms) body["timeout_ms"] = *options.timeout_ms;
            call = {"PUT", "/vm/shutdown", body.dump()};
            break;
        }
        case CtlAction::Snapshot: {
            if (options.snapshot_dir.empty()) return fail(kExitUsage, "ctl snapshot: DIR must not be empty");
            std::error_code ec;
            const auto dir = std::filesystem::absolute(options.snapshot_dir, ec).lexically_normal();
            if (ec) return fail(kExitUsage, "ctl snapshot: " + options.snapshot_dir + ": " + ec.message());
            snapshot_path = dir.string();
            try {
                call = {"PUT", "/vm/snapshot", nlohmann::json{{"path", snapshot_path}}.dump()};
            } catch (const nlohmann::json::type_error&) {  // the API speaks JSON, whose strings are UTF-8
                return fail(kExitUsage, "ctl snapshot: " + snapshot_path + " is not valid UTF-8");
            }
            break;
        }
        case CtlAction::Metrics: call = {"GET", "/metrics", {}}; break;
    }

    const api::Client client(options.api_sock);
    auto response = client.request(call.method, call.path, call.body);
    if (!response) return fail(kExitFailed, response.error().message);
    if (response->status < 200 || response->status >= 300) return fail(kExitFailed, error_message(*response));

    switch (options.action) {
        case CtlAction::Info: print_json(response->body); break;
        case CtlAction::Metrics: std::fputs(response->body.c_str(), stdout); break;
        case CtlAction::Pause: std::puts("paused"); break;
        case CtlAction::Resume: std::puts("resumed"); break;
        case CtlAction::Shutdown: std::puts("shutdown requested"); break;
        case CtlAction::Snapshot:
            std::printf("snapshot saved in %s\n", snapshot_path.c_str());
            break;
        case CtlAction::None: break;
    }
    return 0;
}

}  // namespace popek::cli
