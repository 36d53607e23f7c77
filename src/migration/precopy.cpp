// The source side of pre-copy live migration (see precopy.hpp).
#include "migration/precopy.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>

#include "migration/compress/context.hpp"
#include "migration/memory_file.hpp"
#include "migration/page_sender.hpp"

namespace popek::migration {

using base::Error;
using base::Result;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

double ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}


Result<json> expect_reply(Connection& conn, const char* what, uint32_t timeout_ms) {
    auto f = conn.receive(static_cast<int>(timeout_ms));
    if (!f) return f.error().context(std::string("waiting for the destination's ") + what + " reply");
    if (f->type != FrameType::Reply)
        return Error{std::string("the destination sent a ") + frame_type_name(f->type) + " frame, expected a reply"};
    POPEK_ASSIGN_OR_RETURN(json j, frame_json(*f));
    if (!j.value("ok", false)) {
        auto e = j.find("error");
        return Error{std::string("the destination refused (") + what + "): " +
                     (e != j.end() && e->is_string() ? e->get<std::string>() : "no reason given")};
    }
    return j;
}

}  // namespace

namespace {

// "N MiB/s" on the wire, and the guest RAM it carried when compression made
// the two differ (a compressed round's wire rate alone reads like a stall).
std::string rates(double wire_mbps, uint64_t pages, double ms) {
    const double ram_mbps =
        static_cast<double>(pages * compress::kPageSize) / (1 << 20) / std::max(ms / 1000.0, 1e-6);
    std::string s = std::to_string(static_cast<int>(wire_mbps)) + " MiB/s";
    if (ram_mbps > 1.5 * wire_mbps) s += " (" + std::to_string(static_cast<int>(ram_mbps)) + " MiB/s of guest RAM)";
    return s;
}

}  // namespace

RoundDecision decide_round(const RoundFigures& f) {
    if (f.pages_ms + f.fixed_ms <= f.downtime_ms) {
        // Below ~2 ms of pages another round is noise whatever the ratio.
        // Each extra round costs about its pages_ms, which at least halves
        // round after round: at most twice the first one in all.
        constexpr double kWorthMs = 2.0;
        const bool worth_another =
            f.round <= f.max_rounds && f.pages_ms > kWorthMs && f.dirty * 2 <= f.last_round_pages;
        return worth_another ? RoundDecision::Another : RoundDecision::Converged;
    }
    if (f.round > f.max_rounds) return RoundDecision::RoundCap;
    // When the fixed cost alone is over the limit, rounds stop paying off
    // once the pages are a small part of the switch.
    if (f.fixed_ms > f.downtime_ms && f.pages_ms < 0.1 * f.fixed_ms) return RoundDecision::Futile;
    return RoundDecision::Another;
}

Result<uint64_t> parse_bandwidth(const std::string& text) {
    const auto bad = [&](const std::string& why) {
        return Error{"bandwidth '" + text + "': " + why + " (expected bytes per second like 250000, 512K, 100M or 1G)"};
    };
    std::string t = text;
    for (const char* tail : {"/s", "B", "b"})
        if (t.size() > std::strlen(tail) && t.ends_with(tail)) t.resize(t.size() - std::strlen(tail));
    if (t.empty()) return bad("empty");
    uint64_t mult = 1;
    switch (t.back()) {
        case 'k': case 'K': mult = 1ull << 10; break;
        case 'm': case 'M': mult = 1ull << 20; break;
        case 'g': case 'G': mult = 1ull << 30; break;
        case 't': case 'T': mult = 1ull << 40; break;
        default: break;
    }
    if (mult != 1) t.pop_back();
    if (t.empty() || t.size() > 12 || !std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return bad("not a whole number with an optional K, M, G or T");
    const uint64_t v = std::stoull(t);
    if (v == 0) return bad("must be more than 0 (leave the option out for no limit)");
    if (v > (UINT64_MAX >> 1) / mult) return bad("too large");
    const uint64_t bps = v * mult;
    if (bps < 65536) return bad("below 64K per second");
    return bps;
}

void log_phase(const std::string& phase, const std::string& detail) {
    std::fprintf(stderr, "popek: migration: %s%s%s\n", phase.c_str(), detail.empty() ? "" : " ", detail.c_str());
}

// ---- progress -----------------------------------------------------------------

void MigrationProgress::set_phase(const std::string& phase) {
    std::lock_guard lock(mu_);
    s_.phase = phase;
}
void MigrationProgress::update(uint32_t round, uint64_t dirty, double mbps, uint64_t bytes, uint64_t pages) {
    std::lock_guard lock(mu_);
    s_.round = round;
    s_.dirty_pages = dirty;
    s_.bandwidth_mbps = mbps;
    s_.bytes_sent = bytes;
    s_.pages_sent = pages;
}
void MigrationProgress::update_extra(uint64_t guest_pages, uint32_t throttle, double remaining_ms) {
    std::lock_guard lock(mu_);
    s_.guest_pages = guest_pages;
    s_.throttle = throttle;
    s_.remaining_ms = remaining_ms;
}
void MigrationProgress::finish(bool ok, const std::string& error, json report) {
    std::lock_guard lock(mu_);
    s_.phase = ok ? "completed" : "failed";
    s_.error = error;
    s_.report = std::move(report);
}
MigrationProgress::Snapshot MigrationProgress::get() const {
    std::lock_guard lock(mu_);
    return s_;
}
json MigrationProgress::to_json() const {
    const Snapshot s = get();
    json j{{"phase", s.phase},         {"round", s.round},           {"dirty_pages", s.dirty_pages},
           {"bandwidth_mbps", s.bandwidth_mbps}, {"bytes_sent", s.bytes_sent}, {"pages_sent", s.pages_sent},
           {"guest_pages", s.guest_pages}, {"throttle", s.throttle}, {"remaining_ms", s.remaining_ms}};
    if (!s.error.empty()) j["error"] = s.error;
    if (!s.report.is_null()) j["report"] = s.report;
    return j;
}

// ---- the source ---------------------------------------------------------------

namespace {

// Fixed costs of the switch that do not depend on the dirty set, learned
// from the first phases: the destination's reply time to the reservation
// (a round trip plus its allocation), combining the per-page digests (both ends
// compute one) and a guess for pausing, saving the state tree and the
// destination's build. The downtime rule adds them to the pages' time.
struct FixedCosts {
    double rtt_ms = 0;
    double digest_ms = 0;
    // Pausing, the state tree and the destination's finish: 1.5-2.5 ms for a
    // 1 GiB, one-vCPU probe over loopback on KVM-PVM, with the VM created at
    // reservation; 5 ms leaves room for more vCPUs and devices.
    static constexpr double kStateAndBuildMs = 5;
    [[nodiscard]] double total() const { return rtt_ms + 2 * digest_ms + kStateAndBuildMs; }
};

struct Sender {
    Sender(MigrationSource& s, Connection& c, const MigrateOptions& o, MigrationProgress& p, const std::atomic<bool>& k)
        : src(s), conn(c), opt(o), progress(p), cancel(k) {}
    MigrationSource& src;
    Connection& conn;
    const MigrateOptions& opt;
    MigrationProgress& progress;
    const std::atomic<bool>& cancel;
    std::mutex* conn_mu = nullptr;
    Clock::time_point t0 = Clock::now();
    json rounds = json::array();
    bool paused = false;
    bool converged = false;
    double downtime_ms = 0;
    uint32_t throttle = 0;
    FixedCosts fixed;
    std::vector<uint64_t> page_digests;  // page_digest of each page as last sent (0: zero, never sent)
    std::string postcopy_reason;  // post-copy hook: non-empty once pre-copy hands over to post-copy
    bool handed_over = false;     // post-copy: the switch went out, the VM must not resume here
    bool committed = false;       // the Commit may have gone out: the VM must not resume here

    Result<json> run();
    Result<json> postcopy(PageSender& out, std::vector<uint64_t>& bits, uint64_t pages);
    Result<void> precopy(PageSender& out, std::vector<uint64_t>& bits, uint64_t pages);
    // The destination acknowledges each round end once it has applied the
    // round's pages: the round's time (and so the rate the downtime rule
    // uses) is the destination's, not just the sender's (which runs ahead
    // when decoding is the bottleneck, e.g. compression on a busy host).
    Result<void> wait_applied(uint32_t round) {
        POPEK_ASSIGN_OR_RETURN(json ack, expect_reply(conn, "round end", opt.timeout_ms));
        if (ack.value("round", json(-1)) != json(round))
            return Error{"the destination acknowledged round " + ack.value("round", json(-1)).dump() + ", expected " +
                         std::to_string(round)};
        return {};
    }
    // Auto-converge: one throttle step up (initial, then + increment).
    void throttle_up(uint32_t round, double dirty_ratio);
};

void Sender::throttle_up(uint32_t round, double dirty_ratio) {
    const uint32_t next = throttle == 0 ? opt.throttle_initial
                                        : std::min(opt.throttle_max, throttle + opt.throttle_increment);
    if (next == throttle) return;
    throttle = std::min(next, 99u);
    src.set_throttle(throttle);
    char buf[128];
    std::snprintf(buf, sizeof buf, "round %u: dirtied %.0f%% of what it sent; vCPUs throttled to %u%%", round,
                  dirty_ratio * 100, throttle);
    log_phase("auto-converge", buf);
}

Result<void> Sender::precopy(PageSender& out, std::vector<uint64_t>& bits, uint64_t pages) {
    const auto t_pass = Clock::now();
    // The destination's RAM starts zeroed: holes and zero pages need not go.
    std::vector<uint64_t> candidates;
    auto pass = for_each_data_range(src.memory(), [&](uint64_t start, uint64_t end) -> Result<void> {
        for (uint64_t off = start; off < end; off += compress::kPageSize) candidates.push_back(off / compress::kPageSize);
        return {};
    });
    if (!pass.ok()) return pass.error();
    out.on_frame([&](uint64_t bytes, uint64_t sent) {
        const double secs = std::max(ms_between(t_pass, Clock::now()) / 1000.0, 1e-6);
        const double mbps_now = static_cast<double>(bytes) / (1 << 20) / secs;
        const double left = static_cast<double>(candidates.size() - std::min<uint64_t>(sent, candidates.size()));
        progress.update(0, static_cast<uint64_t>(left), mbps_now, bytes, sent);
        progress.update_extra(pages, throttle, sent == 0 ? -1.0 : left * secs * 1000.0 / static_cast<double>(sent));
    });
    POPEK_TRY(out.send_pages(candidates, true));
    const uint64_t skipped = pages - (candidates.size() - out.zero_skipped());
    POPEK_TRY(out.send_json(FrameType::RoundEnd, json{{"round", 0}, {"pages", pages - skipped}}));
    POPEK_TRY(wait_applied(0));
    double ms = ms_between(t_pass, Clock::now());
    double mbps = static_cast<double>(out.bytes()) / (1 << 20) / std::max(ms / 1000.0, 1e-6);
    rounds.push_back({{"round", 0}, {"pages", pages - skipped}, {"zero_pages_skipped", skipped}, {"ms", ms},
                      {"bytes", out.bytes()}, {"mbps", mbps}, {"throttle", throttle}});
    log_phase("precopy", "round 0 (full pass): " + std::to_string(pages - skipped) + " pages (" +
                             std::to_string(skipped) + " zero skipped) in " + std::to_string(static_cast<int>(ms)) +
                             " ms, " + rates(mbps, pages - skipped, ms) + ", " + std::to_string(out.threads()) +
                             " threads");

    // The validation digest at the switch combines the per-page digests
    // (both ends keep them as pages go): time that pass now.
    for (int i = 0; i < 2; ++i) {
        const auto t_digest = Clock::now();
        (void)combine_page_digests(page_digests);
        const double d = ms_between(t_digest, Clock::now());
        fixed.digest_ms = i == 0 ? d : std::min(fixed.digest_ms, d);
    }
    log_phase("precopy", "fixed cost of the switch ~" + std::to_string(static_cast<int>(fixed.total())) +
                             " ms (reply " + std::to_string(static_cast<int>(fixed.rtt_ms)) + " ms, digest " +
                             std::to_string(static_cast<int>(fixed.digest_ms)) + " ms x2, state and build ~" +
                             std::to_string(static_cast<int>(FixedCosts::kStateAndBuildMs)) + " ms)");
    if (fixed.total() >= opt.downtime_ms)
        log_phase("precopy", "the fixed cost alone exceeds --downtime-ms " + std::to_string(opt.downtime_ms) +
                                 ": only the round cap ends pre-copy");

    out.set_caching(true);
    double bytes_per_page = static_cast<double>(out.bytes()) / static_cast<double>(std::max<uint64_t>(out.pages(), 1));
    // Where encoding, not the link, is the bottleneck (compression on a busy
    // host), the time a page took is the better measure than its bytes.
    double ms_per_page = ms / static_cast<double>(std::max<uint64_t>(out.pages(), 1));
    uint64_t last_sent_bytes = out.bytes();
    uint64_t prev_dirty = 0;
    uint64_t last_round_pages = pages - skipped;
    for (uint32_t round = 1;; ++round) {
        if (cancel.load()) return Error{"cancelled"};
        POPEK_TRY(src.fetch_dirty(bits));
        const uint64_t dirty = count_bits(bits);
        // Would the dirty set, plus the switch's fixed cost, go within the
        // downtime limit at the measured rate (never above the cap)?
        double rate = mbps * (1 << 20);
        if (opt.bandwidth != 0) rate = std::min(rate, static_cast<double>(opt.bandwidth));
        const double pages_ms = static_cast<double>(dirty) *
                                std::max(bytes_per_page / std::max(rate, 1.0) * 1000.0, ms_per_page);
        const double est_ms = pages_ms + fixed.total();
        progress.update(round, dirty, mbps, out.bytes(), out.pages());
        progress.update_extra(pages, throttle, est_ms);
        // Post-copy hook (migration/postcopy.hpp): hand over instead of stop-and-copy?
        postcopy_reason = postcopy_switch_reason(opt.postcopy, round, opt.max_rounds, dirty, prev_dirty,
                                                 est_ms <= opt.downtime_ms);
        if (!postcopy_reason.empty()) break;
        prev_dirty = dirty;
        const RoundDecision decision = decide_round(RoundFigures{pages_ms, fixed.total(), opt.downtime_ms, round,
                                                                 opt.max_rounds, dirty, last_round_pages});
        if (decision != RoundDecision::Another) {
            converged = decision == RoundDecision::Converged;
            const bool futile = decision == RoundDecision::Futile;
            log_phase("precopy", (converged ? "converged after " : "stopping after ") + std::to_string(round - 1) +
                                     " dirty rounds: " +
                                     std::to_string(dirty) + " dirty pages, ~" +
                                     std::to_string(static_cast<int>(est_ms)) + " ms to switch" +
                                     (converged ? ""
                                      : futile  ? " (over the limit, but more rounds would not help)"
                                                : " (round cap reached)"));
            if (!converged && !futile && !opt.auto_converge)
                log_phase("precopy", "the guest dirties memory about as fast as the link carries it: the pause "
                                     "will be over --downtime-ms " + std::to_string(opt.downtime_ms) +
                                     " (--auto-converge throttles the guest, --auto-postcopy switches to post-copy)");
            // They go in stop-and-copy, with whatever is dirtied meanwhile.
            break;
        }
        if (est_ms <= opt.downtime_ms)
            log_phase("precopy", "the pause would fit (~" + std::to_string(static_cast<int>(est_ms)) +
                                     " ms) but the dirty set is still shrinking: one more round first");
        // Auto-converge: the guest dirtied, during the last round, more than
        // half of what the link carried in it (QEMU's rule): one step up.
        const double dirty_ratio =
            static_cast<double>(dirty) * bytes_per_page / static_cast<double>(std::max<uint64_t>(last_sent_bytes, 1));
        if (opt.auto_converge && dirty_ratio > 0.5) throttle_up(round, dirty_ratio);
        const auto t_round = Clock::now();
        const uint64_t bytes0 = out.bytes();
        out.on_frame([&](uint64_t bytes, uint64_t) {
            const double secs = std::max(ms_between(t_round, Clock::now()) / 1000.0, 1e-6);
            progress.update(round, dirty, static_cast<double>(bytes - bytes0) / (1 << 20) / secs, bytes, out.pages());
        });
        POPEK_TRY(send_dirty(out, bits, pages));
        POPEK_TRY(out.send_json(FrameType::RoundEnd, json{{"round", round}, {"pages", dirty}}));
        POPEK_TRY(wait_applied(round));
        ms = ms_between(t_round, Clock::now());
        const uint64_t sent = out.bytes() - bytes0;
        last_sent_bytes = sent;
        mbps = static_cast<double>(sent) / (1 << 20) / std::max(ms / 1000.0, 1e-6);
        last_round_pages = dirty;
        bytes_per_page = static_cast<double>(sent) / static_cast<double>(std::max<uint64_t>(dirty, 1));
        ms_per_page = ms / static_cast<double>(std::max<uint64_t>(dirty, 1));
        rounds.push_back({{"round", round}, {"pages", dirty}, {"ms", ms}, {"bytes", sent}, {"mbps", mbps},
                          {"throttle", throttle}});
        log_phase("precopy", "round " + std::to_string(round) + ": " + std::to_string(dirty) + " pages in " +
                                 std::to_string(static_cast<int>(ms)) + " ms, " + rates(mbps, dirty, ms) +
                                 (throttle != 0 ? ", throttle " + std::to_string(throttle) + "%" : ""));
    }
    out.on_frame({});
    return {};
}

Result<json> Sender::run() {
    const memory::GuestMemory& mem = src.memory();
    const uint64_t pages = mem.page_count();
    progress.set_phase("initialization");
    progress.update_extra(pages, 0, -1);
    Hello hello{kProtocolVersion, POPEK_VERSION, pages, std::string(compress::codec_name(opt.codec)),
                opt.cache_pages, src.config_json(), opt.timeout_ms, src.backend()};
    conn.set_send_timeout(opt.timeout_ms);
    log_phase("initialization", "to " + opt.to + ", " + std::to_string(pages) + " pages, codec " + hello.codec);
    const auto t_hello = Clock::now();
    POPEK_TRY(conn.send_json(FrameType::Hello, hello_to_json(hello)));
    progress.set_phase("reservation");
    POPEK_TRY(expect_reply(conn, "reservation", opt.timeout_ms));
    fixed.rtt_ms = ms_between(t_hello, Clock::now());
    log_phase("reservation", "the destination built the VM's memory and devices");

    progress.set_phase("precopy");
    POPEK_TRY(src.start_dirty_log());
    PageSender out(conn, mem, opt.codec, opt.cache_pages, opt.threads, opt.bandwidth, cancel);
    page_digests.assign(pages, 0);  // the destination's RAM starts zeroed: digest 0
    out.track_digests(&page_digests);
    std::vector<uint64_t> bits((pages + 63) / 64, 0);
    if (postcopy_before_precopy(opt.postcopy))
        postcopy_reason = "pure post-copy requested (no pre-copy round)";
    else
        POPEK_TRY(precopy(out, bits, pages));
    if (!postcopy_reason.empty()) return postcopy(out, bits, pages);  // post-copy hook

    progress.set_phase("stop-and-copy");
    const auto t_pause = Clock::now();
    POPEK_ASSIGN_OR_RETURN(json state, src.pause_and_save());
    paused = true;
    const double pause_ms = ms_between(t_pause, Clock::now());
    POPEK_TRY(src.fetch_dirty(bits));
    const uint64_t last = count_bits(bits);
    POPEK_TRY(send_dirty(out, bits, pages));
    const double pages_ms = ms_between(t_pause, Clock::now()) - pause_ms;
    rounds.push_back({{"round", "stop-and-copy"}, {"pages", last}, {"throttle", throttle}});
    const auto t_digest = Clock::now();
    // Over what was sent (every page dirtied since it went is in `bits` and
    // went again above): the destination combines what it decoded.
    const uint64_t digest = combine_page_digests(page_digests);
    const double digest_ms = ms_between(t_digest, Clock::now());
    const double save_ms = ms_between(t_pause, Clock::now());
    log_phase("stop-and-copy", std::to_string(last) + " pages, state and digest " + std::to_string(digest) +
                                   " sent " + std::to_string(static_cast<int>(save_ms)) + " ms after the pause");
    POPEK_TRY(out.send_json(FrameType::State, json{{"state", std::move(state)}, {"digest", digest}, {"pages", pages}}));

    progress.set_phase("validation");
    const auto t_validate = Clock::now();
    POPEK_ASSIGN_OR_RETURN(json reply, expect_reply(conn, "validation", opt.timeout_ms));
    if (!reply.value("ready", false))
        return Error{"the destination's validation reply does not say it is ready (protocol error)"};
    // Commitment: from the moment the Commit may be on its way, the VM
    // never resumes here (the destination runs it once the Commit arrives).
    progress.set_phase("commitment");
    committed = true;
    if (auto c = conn.send_json(FrameType::Commit, json::object()); !c.ok())
        return c.error().context("sending the commit");
    downtime_ms = ms_between(t_pause, Clock::now());
    const double destination_ms = ms_between(t_validate, Clock::now());
    const uint64_t their = reply.value("digest", uint64_t{0});
    log_phase("commitment", "the destination checked digest " + std::to_string(their) +
                                " and is ready; the commit was sent: the VM is the destination's");

    const auto st = out.stats();
    const double total_ms = ms_between(t0, Clock::now());
    json codec_pages = json::object();
    for (size_t c = 0; c < st.pages.size(); ++c)
        if (st.pages[c] != 0) codec_pages[std::string(compress::codec_name(static_cast<compress::Codec>(c)))] = st.pages[c];
    json report{{"to", opt.to},
                {"codec", compress::codec_name(opt.codec)},
                {"total_ms", total_ms},
                {"downtime_ms", downtime_ms},
                {"downtime_limit_ms", opt.downtime_ms},
                {"downtime_parts_ms",
                 {{"pause_and_save", pause_ms},
                  {"last_pages", pages_ms},
                  {"digest", digest_ms},
                  {"destination", destination_ms},
                  {"fixed_estimate", fixed.total()}}},
                {"converged", converged},
                {"bytes_sent", out.bytes()},
                {"pages_sent", out.pages()},
                {"guest_pages", pages},
                {"rounds", rounds.size() - 1},
                {"pages_per_round", rounds},
                {"compression_ratio", out.stream_ratio()},
                {"frame_compression", out.framed() ? "zstd" : "none"},
                {"codec_pages", codec_pages},
                {"threads", out.threads()},
                {"bandwidth_limit", opt.bandwidth},
                {"average_mbps", static_cast<double>(out.bytes()) / (1 << 20) / std::max(total_ms / 1000.0, 1e-6)},
                {"auto_converge", opt.auto_converge},
                {"throttle", throttle},
                {"digest_source", digest},
                {"digest_destination", their},
                {"digest_match", digest == their}};
    return report;
}

// Post-copy hook: migration/postcopy_source.cpp takes over at the switch.
Result<json> Sender::postcopy(PageSender& out, std::vector<uint64_t>& bits, uint64_t pages) {
    const uint64_t dirty_rounds = rounds.empty() ? 0 : rounds.size() - 1;
    PostcopySwitch sw{src, conn, opt, progress, cancel, bits, postcopy_before_precopy(opt.postcopy), postcopy_reason,
                      json{{"to", opt.to},
                           {"codec", compress::codec_name(opt.codec)},
                           {"bytes_sent", out.bytes()},
                           {"pages_sent", out.pages()},
                           {"guest_pages", pages},
                           {"rounds", dirty_rounds},
                           {"pages_per_round", rounds},
                           {"compression_ratio", out.stats().ratio()}}};
    sw.conn_mu = conn_mu;
    auto r = postcopy_send(sw);
    paused = sw.paused;
    handed_over = sw.handed_over;
    if (!r) return r.error();
    (*r)["total_ms"] = ms_between(t0, Clock::now());
    return r;
}

}  // namespace

Result<json> send_vm(MigrationSource& src, Connection& conn, const MigrateOptions& options,
                     MigrationProgress& progress, const std::atomic<bool>& cancel, std::mutex* conn_mu) {
    Sender s(src, conn, options, progress, cancel);
    s.conn_mu = conn_mu;
    auto r = s.run();
    if (!r) {
        // Tell the destination (best effort), then let the VM run on here.
        (void)conn.send_json(FrameType::Abort, json{{"error", r.error().message}});
        src.stop_dirty_log();
        if (s.throttle != 0) src.set_throttle(0);
        if (s.handed_over)
            src.abandon("post-copy failed after the switch: " + r.error().message +
                        "; the VM cannot resume here (its state is split with the destination)");
        else if (s.committed)
            src.abandon("the commit to the destination failed: " + r.error().message +
                        "; the VM does not resume here (the destination runs it if the commit reached it)");
        else if (s.paused)
            src.resume();
        log_phase("failed", r.error().message + (s.handed_over ? " (after the post-copy switch: the VM is lost here)"
                                                 : s.committed  ? " (after the commit: the VM does not resume here)"
                                                 : s.paused     ? " (the VM resumed here)"
                                                                : " (the VM runs on here)"));
        progress.finish(false, r.error().message,
                        json{{"error", r.error().message}, {"total_ms", ms_between(s.t0, Clock::now())}});
        return r.error();
    }
    src.stop_dirty_log();
    progress.finish(true, "", *r);
    log_phase("completed", r->dump());
    return r;
}

}  // namespace popek::migration
