// The source side of pre-copy live migration (see precopy.hpp).
#include "migration/precopy.hpp"

#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>

#include "migration/compress/context.hpp"
#include "migration/memory_file.hpp"

namespace popek::migration {

using base::Error;
using base::Result;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

double ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

constexpr int kReplyTimeoutMs = 60000;

// Encodes pages into Pages frames of about kPagesFrameTarget bytes.
class PageSender {
public:
    PageSender(Connection& conn, const memory::GuestMemory& mem, compress::Codec codec, uint64_t cache_pages)
        : conn_(conn), mem_(mem), codec_(codec),
          ctx_(compress::CodecOptions{.cache_pages = cache_pages, .cache_sent_pages = false}) {
        batch_.reserve(kPagesFrameTarget + compress::kMaxRecordSize + 8);
    }
    void set_caching(bool on) {
        const bool xbzrle = codec_ == compress::Codec::Xbzrle || codec_ == compress::Codec::Auto;
        ctx_.set_cache_sent_pages(on && xbzrle);
    }
    Result<void> send_page(uint64_t index) {
        // A private copy: the guest may write the page while it is encoded,
        // and the record's check must match what the destination decodes.
        // (The write is in the dirty log; the page goes again next round.)
        std::memcpy(page_.data(), base() + index * compress::kPageSize, compress::kPageSize);
        for (int i = 0; i < 8; ++i) batch_.push_back(static_cast<uint8_t>(index >> (8 * i)));
        compress::encode_page(codec_, index, compress::ConstPage(page_), ctx_, batch_);
        ++pages_;
        if (batch_.size() >= kPagesFrameTarget) return flush();
        return {};
    }
    Result<void> flush() {
        if (batch_.empty()) return {};
        POPEK_TRY(conn_.send(FrameType::Pages, batch_));
        bytes_ += batch_.size() + kFrameHeaderSize;
        batch_.clear();
        return {};
    }
    Result<void> send_json(FrameType t, const json& j) {
        auto frame = encode_json_frame(t, j);
        bytes_ += frame.size();
        return conn_.send_raw(frame);
    }
    [[nodiscard]] uint64_t bytes() const { return bytes_; }
    [[nodiscard]] uint64_t pages() const { return pages_; }
    [[nodiscard]] const compress::CodecStats& stats() const { return ctx_.stats(); }

private:
    const uint8_t* base() const { return mem_.regions().front().host; }
    Connection& conn_;
    const memory::GuestMemory& mem_;
    compress::Codec codec_;
    compress::CodecContext ctx_;
    std::vector<uint8_t> batch_;
    alignas(64) std::array<uint8_t, compress::kPageSize> page_{};
    uint64_t bytes_ = 0;
    uint64_t pages_ = 0;
};

uint64_t count_bits(const std::vector<uint64_t>& bits) {
    uint64_t n = 0;
    for (uint64_t w : bits) n += static_cast<uint64_t>(std::popcount(w));
    return n;
}

Result<void> send_dirty(PageSender& out, std::vector<uint64_t>& bits, uint64_t pages) {
    for (size_t w = 0; w < bits.size(); ++w) {
        uint64_t word = bits[w];
        while (word != 0) {
            const uint64_t index = w * 64 + static_cast<uint64_t>(std::countr_zero(word));
            word &= word - 1;
            if (index < pages) POPEK_TRY(out.send_page(index));
        }
        bits[w] = 0;
    }
    return out.flush();
}

Result<json> expect_reply(Connection& conn, const char* what) {
    auto f = conn.receive(kReplyTimeoutMs);
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
           {"bandwidth_mbps", s.bandwidth_mbps}, {"bytes_sent", s.bytes_sent}, {"pages_sent", s.pages_sent}};
    if (!s.error.empty()) j["error"] = s.error;
    if (!s.report.is_null()) j["report"] = s.report;
    return j;
}

// ---- the source ---------------------------------------------------------------

namespace {

struct Sender {
    Sender(MigrationSource& s, Connection& c, const MigrateOptions& o, MigrationProgress& p, const std::atomic<bool>& k)
        : src(s), conn(c), opt(o), progress(p), cancel(k) {}
    MigrationSource& src;
    Connection& conn;
    const MigrateOptions& opt;
    MigrationProgress& progress;
    const std::atomic<bool>& cancel;
    Clock::time_point t0 = Clock::now();
    json rounds = json::array();
    bool paused = false;
    double downtime_ms = 0;
    std::string postcopy_reason;  // post-copy hook: non-empty once pre-copy hands over to post-copy
    bool handed_over = false;     // post-copy: the switch went out, the VM must not resume here

    Result<json> run();
    Result<json> postcopy(PageSender& out, std::vector<uint64_t>& bits, uint64_t pages);
    Result<void> precopy(PageSender& out, std::vector<uint64_t>& bits, uint64_t pages);
};

Result<void> Sender::precopy(PageSender& out, std::vector<uint64_t>& bits, uint64_t pages) {
    const auto t_pass = Clock::now();
    // The destination's RAM starts zeroed: holes and zero pages need not go.
    const uint8_t* base = src.memory().regions().front().host;
    uint64_t nonzero = 0;
    auto pass = for_each_data_range(src.memory(), [&](uint64_t start, uint64_t end) -> Result<void> {
        for (uint64_t off = start; off < end; off += compress::kPageSize) {
            if (cancel.load()) return Error{"cancelled"};
            if (is_zero_page(base + off)) continue;
            POPEK_TRY(out.send_page(off / compress::kPageSize));
            if ((++nonzero & 0xfff) == 0) progress.update(0, pages - nonzero, 0, out.bytes(), out.pages());
        }
        return {};
    });
    if (!pass.ok()) return pass.error();
    const uint64_t skipped = pages - nonzero;
    POPEK_TRY(out.flush());
    double ms = ms_between(t_pass, Clock::now());
    double mbps = static_cast<double>(out.bytes()) / (1 << 20) / std::max(ms / 1000.0, 1e-6);
    rounds.push_back({{"round", 0}, {"pages", pages - skipped}, {"zero_pages_skipped", skipped}, {"ms", ms},
                      {"bytes", out.bytes()}, {"mbps", mbps}});
    log_phase("precopy", "round 0 (full pass): " + std::to_string(pages - skipped) + " pages (" +
                             std::to_string(skipped) + " zero skipped) in " + std::to_string(static_cast<int>(ms)) +
                             " ms, " + std::to_string(static_cast<int>(mbps)) + " MiB/s");
    POPEK_TRY(out.send_json(FrameType::RoundEnd, json{{"round", 0}, {"pages", pages - skipped}}));

    out.set_caching(true);
    double bytes_per_page = static_cast<double>(out.bytes()) / static_cast<double>(std::max<uint64_t>(out.pages(), 1));
    uint64_t prev_dirty = 0;
    for (uint32_t round = 1;; ++round) {
        if (cancel.load()) return Error{"cancelled"};
        POPEK_TRY(src.fetch_dirty(bits));
        const uint64_t dirty = count_bits(bits);
        // Would the dirty set go within the downtime limit at the measured rate?
        const double est_ms = static_cast<double>(dirty) * bytes_per_page / (mbps * (1 << 20)) * 1000.0;
        progress.update(round, dirty, mbps, out.bytes(), out.pages());
        // Post-copy hook (migration/postcopy.hpp): hand over instead of stop-and-copy?
        postcopy_reason = postcopy_switch_reason(opt.postcopy, round, opt.max_rounds, dirty, prev_dirty,
                                                 est_ms <= opt.downtime_ms);
        if (!postcopy_reason.empty()) break;
        prev_dirty = dirty;
        if (est_ms <= opt.downtime_ms || round > opt.max_rounds) {
            log_phase("precopy", "converged after " + std::to_string(round - 1) + " dirty rounds: " +
                                     std::to_string(dirty) + " dirty pages, ~" +
                                     std::to_string(static_cast<int>(est_ms)) + " ms to send" +
                                     (round > opt.max_rounds ? " (round cap reached)" : ""));
            // They go in stop-and-copy, with whatever is dirtied meanwhile.
            break;
        }
        const auto t_round = Clock::now();
        const uint64_t bytes0 = out.bytes();
        POPEK_TRY(send_dirty(out, bits, pages));
        ms = ms_between(t_round, Clock::now());
        const uint64_t sent = out.bytes() - bytes0;
        mbps = static_cast<double>(sent) / (1 << 20) / std::max(ms / 1000.0, 1e-6);
        bytes_per_page = static_cast<double>(sent) / static_cast<double>(std::max<uint64_t>(dirty, 1));
        rounds.push_back({{"round", round}, {"pages", dirty}, {"ms", ms}, {"bytes", sent}, {"mbps", mbps}});
        log_phase("precopy", "round " + std::to_string(round) + ": " + std::to_string(dirty) + " pages in " +
                                 std::to_string(static_cast<int>(ms)) + " ms, " +
                                 std::to_string(static_cast<int>(mbps)) + " MiB/s");
        POPEK_TRY(out.send_json(FrameType::RoundEnd, json{{"round", round}, {"pages", dirty}}));
    }
    return {};
}

Result<json> Sender::run() {
    const memory::GuestMemory& mem = src.memory();
    const uint64_t pages = mem.page_count();
    progress.set_phase("initialization");
    Hello hello{kProtocolVersion, POPEK_VERSION, pages, std::string(compress::codec_name(opt.codec)),
                opt.cache_pages, src.config_json()};
    log_phase("initialization", "to " + opt.to + ", " + std::to_string(pages) + " pages, codec " + hello.codec);
    POPEK_TRY(conn.send_json(FrameType::Hello, hello_to_json(hello)));
    progress.set_phase("reservation");
    POPEK_TRY(expect_reply(conn, "reservation"));
    log_phase("reservation", "the destination built the VM's memory and devices");

    progress.set_phase("precopy");
    POPEK_TRY(src.start_dirty_log());
    PageSender out(conn, mem, opt.codec, opt.cache_pages);
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
    POPEK_TRY(src.fetch_dirty(bits));
    const uint64_t last = count_bits(bits);
    POPEK_TRY(send_dirty(out, bits, pages));
    rounds.push_back({{"round", "stop-and-copy"}, {"pages", last}});
    POPEK_ASSIGN_OR_RETURN(uint64_t digest, memory_digest(mem));
    const double save_ms = ms_between(t_pause, Clock::now());
    log_phase("stop-and-copy", std::to_string(last) + " pages, state and digest " + std::to_string(digest) +
                                   " sent " + std::to_string(static_cast<int>(save_ms)) + " ms after the pause");
    POPEK_TRY(out.send_json(FrameType::State, json{{"state", std::move(state)}, {"digest", digest}, {"pages", pages}}));

    progress.set_phase("validation");
    POPEK_ASSIGN_OR_RETURN(json reply, expect_reply(conn, "validation"));
    downtime_ms = ms_between(t_pause, Clock::now());
    progress.set_phase("commitment");
    const uint64_t their = reply.value("digest", uint64_t{0});
    log_phase("commitment", "the destination checked digest " + std::to_string(their) + " and took the VM");

    const auto& st = out.stats();
    json report{{"to", opt.to},
                {"codec", compress::codec_name(opt.codec)},
                {"total_ms", ms_between(t0, Clock::now())},
                {"downtime_ms", downtime_ms},
                {"bytes_sent", out.bytes()},
                {"pages_sent", out.pages()},
                {"guest_pages", pages},
                {"rounds", rounds.size() - 1},
                {"pages_per_round", rounds},
                {"compression_ratio", st.ratio()},
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
    auto r = postcopy_send(sw);
    paused = sw.paused;
    handed_over = sw.handed_over;
    if (!r) return r.error();
    (*r)["total_ms"] = ms_between(t0, Clock::now());
    return r;
}

}  // namespace

Result<json> send_vm(MigrationSource& src, Connection& conn, const MigrateOptions& options,
                     MigrationProgress& progress, const std::atomic<bool>& cancel) {
    Sender s(src, conn, options, progress, cancel);
    auto r = s.run();
    if (!r) {
        // Tell the destination (best effort), then let the VM run on here.
        (void)conn.send_json(FrameType::Abort, json{{"error", r.error().message}});
        src.stop_dirty_log();
        if (s.handed_over)
            src.abandon(r.error().message);  // post-copy: the state is split, the VM cannot resume here
        else if (s.paused)
            src.resume();
        log_phase("failed", r.error().message + (s.handed_over ? " (after the post-copy switch: the VM is lost here)"
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
