#include "cli/migrate.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "api/client.hpp"
#include "migration/precopy.hpp"

namespace popek::cli {

using nlohmann::json;

namespace {

int fail(const std::string& message) {
    std::fprintf(stderr, "popek: error: %s\n", message.c_str());
    return 1;
}

std::string error_of(const api::Response& r) {
    const auto j = json::parse(r.body, nullptr, false);
    if (j.is_object() && j.contains("error") && j["error"].is_string()) return j["error"].get<std::string>();
    return "HTTP " + std::to_string(r.status) + ": " + r.body;
}

}  // namespace

CLI::App* add_migrate_command(CLI::App& app, MigrateOptions& o) {
    auto* m = app.add_subcommand("migrate", "Live-migrate a running VM to another popek (popek run --incoming)");
    m->add_option("--api-sock", o.api_sock, "The API socket of the source popek")->required();
    m->add_option("--to", o.to, "Destination: tcp:HOST:PORT")->required();
    m->add_option("--downtime-ms", o.downtime_ms, "Longest acceptable pause")->default_val(300);
    m->add_option("--max-rounds", o.max_rounds, "Dirty rounds before stop-and-copy regardless")->default_val(30);
    m->add_option("--compress", o.compress, "Page codec: none, zero, wkdm, xbzrle, zstd, lz4, sparse or auto")
        ->default_val("none");
    m->add_option("--bandwidth", o.bandwidth, "Bytes per second the migration may use: e.g. 100M, 1G (default: no limit)");
    m->add_flag("--auto-converge", o.auto_converge,
                "Throttle the vCPUs step by step (20%, +10% per round, up to 99%) while the guest dirties faster "
                "than the link carries");
    m->add_option("--threads", o.threads, "Threads compressing pages")->default_val(2)->check(CLI::Range(1, 8));
    m->add_option("--timeout-ms", o.timeout_ms,
                  "Give up (and resume the VM here) when the destination takes or sends nothing for this long")
        ->default_val(30000)
        ->check(CLI::Range(100, 3600000));
    // Post-copy (migration/postcopy.hpp).
    auto* pc = m->add_flag("--postcopy", o.postcopy,
                           "Post-copy: the destination runs the VM and pulls the pages it lacks, after "
                           "--postcopy-after-rounds pre-copy rounds");
    m->add_flag("--auto-postcopy", o.auto_postcopy,
                "Switch to post-copy when pre-copy does not converge (round cap, or a round that does not "
                "shrink the dirty set)")
        ->excludes(pc);
    m->add_option("--postcopy-after-rounds", o.postcopy_after_rounds,
                  "With --postcopy: pre-copy rounds first (round 0 is the full pass; 0: pure post-copy)")
        ->default_val(1);
    m->add_option("--postcopy-recover-ms", o.postcopy_recover_ms,
                  "After the switch to post-copy, how long both sides wait for a lost link to come back (the "
                  "source reconnects, the destination keeps the VM running); 0: end at once")
        ->default_val(60000)
        ->check(CLI::Range(0, 3600000));
    return m;
}

namespace {

std::string human_ms(double ms) {
    char buf[32];
    if (ms < 0) return "?";
    if (ms < 10000) std::snprintf(buf, sizeof buf, "%.0f ms", ms);
    else std::snprintf(buf, sizeof buf, "%.1f s", ms / 1000);
    return buf;
}

// One line: phase, round, dirty pages, bandwidth, sent, throttle, estimate.
std::string progress_line(const json& j) {
    char buf[256];
    const uint32_t throttle = j.value("throttle", 0u);
    std::snprintf(buf, sizeof buf, "%-13s round %-3u dirty %8llu pages  %7.1f MiB/s  sent %8.1f MiB%s  remaining ~%s",
                  j.value("phase", std::string("?")).c_str(), j.value("round", 0u),
                  static_cast<unsigned long long>(j.value("dirty_pages", uint64_t{0})), j.value("bandwidth_mbps", 0.0),
                  static_cast<double>(j.value("bytes_sent", uint64_t{0})) / (1 << 20),
                  throttle != 0 ? (std::string("  throttle ") + std::to_string(throttle) + "%").c_str() : "",
                  human_ms(j.value("remaining_ms", -1.0)).c_str());
    return buf;
}

}  // namespace

int run_migrate(const MigrateOptions& o) {
    json body{{"to", o.to},       {"downtime_ms", o.downtime_ms},     {"max_rounds", o.max_rounds},
              {"compress", o.compress}, {"auto_converge", o.auto_converge}, {"threads", o.threads},
              {"timeout_ms", o.timeout_ms}};
    if (!o.bandwidth.empty()) {
        auto bw = migration::parse_bandwidth(o.bandwidth);
        if (!bw) return fail("--bandwidth: " + bw.error().message);
        body["bandwidth"] = *bw;
    }
    const api::Client client(o.api_sock);
    if (o.postcopy || o.auto_postcopy) {
        body["postcopy"] = o.postcopy ? "on" : "auto";
        body["postcopy_after_rounds"] = o.postcopy_after_rounds;
        body["postcopy_recover_ms"] = o.postcopy_recover_ms;
    }
    auto started = client.request("PUT", "/vm/migrate", body.dump());
    if (!started) return fail(started.error().message);
    if (started->status < 200 || started->status >= 300) return fail(error_of(*started));
    const bool tty = ::isatty(STDERR_FILENO) != 0;
    auto last_line = std::chrono::steady_clock::now() - std::chrono::seconds(1);
    for (;;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        auto r = client.request("GET", "/vm/migration");
        if (!r) return fail("lost the source's API: " + r.error().message);
        const auto j = json::parse(r->body, nullptr, false);
        if (!j.is_object()) return fail("bad status reply: " + r->body);
        const std::string phase = j.value("phase", "?");
        const bool done = phase == "completed" || phase == "failed";
        const auto now = std::chrono::steady_clock::now();
        if (tty) {
            // Redrawn in place, cleared to the end of the line.
            std::fprintf(stderr, "\r%s\033[K%s", progress_line(j).c_str(), done ? "\n" : "");
        } else if (done || now - last_line >= std::chrono::seconds(1)) {
            std::fprintf(stderr, "%s\n", progress_line(j).c_str());
            last_line = now;
        }
        std::fflush(stderr);
        if (done) {
            std::printf("%s\n", j.value("report", json::object()).dump(2).c_str());
            if (phase == "failed") return fail("migration failed: " + j.value("error", std::string("?")));
            return 0;
        }
    }
}

}  // namespace popek::cli
