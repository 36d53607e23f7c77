// `popek migrate --api-sock PATH --to tcp:HOST:PORT [...]`: starts a live
// migration through the API, shows its progress on stderr (one line redrawn
// in place on a terminal, a line a second otherwise) and prints the final
// JSON report on stdout.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace popek::cli {

struct MigrateOptions {
    std::string api_sock;
    std::string to;
    uint32_t downtime_ms = 300;
    uint32_t max_rounds = 30;
    std::string compress = "none";
    std::string bandwidth;  // "" = unlimited; else like 100M
    bool auto_converge = false;
    uint32_t threads = 2;
    uint32_t timeout_ms = 30000;      // --timeout-ms
    bool postcopy = false;            // --postcopy
    bool auto_postcopy = false;       // --auto-postcopy
    uint32_t postcopy_after_rounds = 1;
    uint32_t postcopy_recover_ms = 60000;  // --postcopy-recover-ms
};

CLI::App* add_migrate_command(CLI::App& app, MigrateOptions& options);
// 0: the destination took the VM; 1: the migration failed (the VM runs on at the source).
int run_migrate(const MigrateOptions& options);

}  // namespace popek::cli
