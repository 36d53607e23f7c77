// `popek migrate --api-sock PATH --to tcp:HOST:PORT [...]`: starts a live
// migration through the API, prints its progress on one line and the final
// JSON report.
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
    bool postcopy = false;            // --postcopy
    bool auto_postcopy = false;       // --auto-postcopy
    uint32_t postcopy_after_rounds = 1;
};

CLI::App* add_migrate_command(CLI::App& app, MigrateOptions& options);
// 0: the destination took the VM; 1: the migration failed (the VM runs on at the source).
int run_migrate(const MigrateOptions& options);

}  // namespace popek::cli
