// `popek ctl`: talks to a running popek through its API socket.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace popek::cli {

enum class CtlAction { None, Info, Pause, Resume, Shutdown, Snapshot, Metrics };

struct CtlOptions {
    std::string api_sock;
    CtlAction action = CtlAction::None;
    std::optional<uint32_t> timeout_ms;  // shutdown --timeout-ms
    std::string snapshot_dir;            // snapshot DIR, as given (made absolute when sent)
    std::vector<std::string> unexpected;  // arguments that are no action or option
};

// Adds `ctl` and its subcommands to `app`; parsing fills `options`.
CLI::App* add_ctl_command(CLI::App& app, CtlOptions& options);

// Sends the request and prints the result. Returns popek ctl's exit status:
// 0 done, 1 the VM refused or popek could not be reached, 2 bad usage.
int run_ctl(const CtlOptions& options);

}  // namespace popek::cli
