// The source side of post-copy (see postcopy.hpp): pause, hand the state and
// the needed-pages bitmap over, then serve requested pages first and push
// the rest in increasing address order until the destination confirms.
#include <bit>
#include <cstdlib>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "migration/memory_file.hpp"
#include "migration/postcopy.hpp"
#include "migration/precopy.hpp"

namespace popek::migration {

using base::Error;
using base::Result;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

constexpr size_t kPushBatchPages = 32;  // small frames: a request never waits behind much
// Pushed pages are held back while this much is queued in the socket, so a
// requested page goes out (nearly) at once rather than behind megabytes.
constexpr size_t kMaxQueuedPush = 256u << 10;

// Test knob: POPEK_TEST_POSTCOPY_PUSH_DELAY_US pauses the background push
// after each batch (a slow link, long enough to kill a side in post-copy).
std::chrono::microseconds push_delay() {
    const char* v = std::getenv("POPEK_TEST_POSTCOPY_PUSH_DELAY_US");
    return std::chrono::microseconds(v != nullptr ? std::strtoul(v, nullptr, 10) : 0);
}

bool test_bit(const std::vector<uint64_t>& b, uint64_t i) { return (b[i / 64] >> (i % 64)) & 1; }
void set_bit(std::vector<uint64_t>& b, uint64_t i) { b[i / 64] |= 1ull << (i % 64); }

// Reads the destination's frames on one link while pages go out: page
// requests, the "running" reply, the final reply, or an abort.
struct RequestReader {
    Connection& conn;
    uint64_t pages;
    std::mutex mu;
    std::condition_variable cv;
    std::deque<uint64_t> requests;
    uint64_t requested = 0;
    std::optional<json> running, final_reply;
    std::string error;
    bool link_lost = false;  // the error is the link's (recoverable), not the destination's word
    bool done = false;
    std::thread thread;

    RequestReader(Connection& c, uint64_t p) : conn(c), pages(p) {}
    RequestReader(const RequestReader&) = delete;
    RequestReader& operator=(const RequestReader&) = delete;
    ~RequestReader() { stop(); }
    void start() { thread = std::thread([this] { loop(); }); }
    void stop() {
        if (!thread.joinable()) return;
        bool finished;
        {
            std::lock_guard lock(mu);
            finished = done;
        }
        if (!finished) conn.shutdown();
        thread.join();
    }
    void finish(std::string why, bool link = false) {
        std::lock_guard lock(mu);
        if (error.empty()) {
            error = std::move(why);
            link_lost = link;
        }
        done = true;
        cv.notify_all();
    }
    void loop() {
        for (;;) {
            auto f = conn.receive(0);
            if (!f) return finish("lost the destination during post-copy: " + f.error().message, true);
            if (f->type == FrameType::PageRequest) {
                auto r = parse_page_request(f->payload, pages);
                if (!r) return finish(r.error().message);
                std::lock_guard lock(mu);
                requests.insert(requests.end(), r->begin(), r->end());
                requested += r->size();
                cv.notify_all();
                continue;
            }
            if (f->type == FrameType::Abort) {
                auto j = frame_json(*f);
                return finish("the destination aborted post-copy: " +
                              (j.ok() ? j->value("error", std::string("no reason given")) : std::string("?")));
            }
            if (f->type != FrameType::Reply)
                return finish(std::string("the destination sent a ") + frame_type_name(f->type) +
                              " frame during post-copy");
            auto j = frame_json(*f);
            if (!j) return finish(j.error().message);
            // "running" (or a refusal before it) and the final reply may come
            // in either order: all pages can arrive before the VM is built.
            std::lock_guard lock(mu);
            const bool refusal = !running && !j->value("ok", false);
            if (j->value("running", false) || refusal)
                running = *j;
            else
                final_reply = *j;
            if (refusal || (running && final_reply)) done = true;
            cv.notify_all();
            if (done) return;
        }
    }
};

json::binary_t bitmap_bytes(const std::vector<uint64_t>& words) {
    json::binary_t b;
    b.reserve(words.size() * 8);
    for (uint64_t w : words)
        for (int i = 0; i < 8; ++i) b.push_back(static_cast<uint8_t>(w >> (8 * i)));
    return b;
}

uint64_t random_token() {
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ static_cast<uint64_t>(Clock::now().time_since_epoch().count());
}

}  // namespace

Result<json> postcopy_send(PostcopySwitch& sw) {
    const memory::GuestMemory& mem = sw.src.memory();
    const uint64_t pages = mem.page_count();
    const uint8_t* base = mem.regions().front().host;
    const uint32_t recover_ms = sw.opt.postcopy.recover_ms;
    sw.progress.set_phase("postcopy");
    log_phase("postcopy", "switching: " + sw.reason);

    const auto t_pause = Clock::now();
    POPEK_ASSIGN_OR_RETURN(json state, sw.src.pause_and_save());
    sw.paused = true;
    std::vector<uint64_t>& needed = sw.dirty;
    needed.resize((pages + 63) / 64, 0);
    POPEK_TRY(sw.src.fetch_dirty(needed));
    if (sw.nothing_sent) {
        POPEK_TRY(for_each_data_range(mem, [&](uint64_t start, uint64_t end) -> Result<void> {
            for (uint64_t p = start / compress::kPageSize; p < end / compress::kPageSize; ++p) set_bit(needed, p);
            return {};
        }));
    }
    if (pages % 64 != 0) needed.back() &= (1ull << (pages % 64)) - 1;
    uint64_t needed_count = 0;
    for (uint64_t w : needed) needed_count += static_cast<uint64_t>(std::popcount(w));

    // The digest of RAM as paused, computed while pages go out (RAM no longer changes here).
    auto digest = std::async(std::launch::async, [&mem, base, pages]() -> Result<uint64_t> {
        std::vector<uint64_t> d(pages, 0);
        POPEK_TRY(for_each_data_range(mem, [&](uint64_t start, uint64_t end) -> Result<void> {
            for (uint64_t off = start; off < end; off += compress::kPageSize)
                d[off / compress::kPageSize] = page_digest(off / compress::kPageSize, base + off);
            return {};
        }));
        return combine_page_digests(d);
    });

    // The token proves a reconnecting source is this migration's (postcopy.hpp).
    const uint64_t token = random_token();
    auto frame = encode_json_frame(FrameType::State, json{{"state", std::move(state)},
                                                          {"postcopy", true},
                                                          {"needed", json::binary(bitmap_bytes(needed))},
                                                          {"needed_pages", needed_count},
                                                          {"resume_token", token},
                                                          {"recover_ms", recover_ms}});
    uint64_t bytes = frame.size();
    POPEK_TRY(sw.conn.send_raw(frame));
    sw.handed_over = true;  // from here the destination may run: never resume here
    const auto t_switch = Clock::now();
    log_phase("postcopy", "state and " + std::to_string(needed_count) + " needed pages announced " +
                              std::to_string(static_cast<int>(ms_since(t_pause))) + " ms after the pause");

    auto reader = std::make_unique<RequestReader>(sw.conn, pages);
    reader->start();

    compress::CodecContext ctx(compress::CodecOptions{.cache_pages = 0, .cache_sent_pages = false});
    std::vector<uint64_t> sent(needed.size(), 0);  // needed pages the destination has or will have (this link)
    std::vector<uint8_t> batch;
    uint64_t on_demand = 0, pushed = 0, sent_count = 0, pages_sent = 0, cursor = 0, requested = 0;
    auto add_page = [&](uint64_t p) {
        for (int i = 0; i < 8; ++i) batch.push_back(static_cast<uint8_t>(p >> (8 * i)));
        compress::encode_page(sw.opt.codec, p, compress::ConstPage(base + p * compress::kPageSize, compress::kPageSize),
                              ctx, batch);
        set_bit(sent, p);
        ++sent_count;
        ++pages_sent;
    };
    auto flush = [&]() -> Result<void> {
        if (batch.empty()) return {};
        auto r = sw.conn.send(FrameType::Pages, batch);
        bytes += batch.size() + kFrameHeaderSize;
        batch.clear();
        return r;
    };

    const auto delay = push_delay();
    const auto timeout = std::chrono::milliseconds(sw.opt.timeout_ms);
    bool hold_push = false;  // the socket is full or the test knob says wait: serve requests only
    auto next_push = Clock::now(), hold_until = next_push;
    auto last_progress = Clock::now();  // the destination last took bytes (or was asked to)
    size_t last_unsent = 0;
    double downtime_ms = -1, all_sent_ms = -1, paused_ms = 0;
    uint32_t recoveries = 0;
    std::optional<uint64_t> source_digest;
    bool end_sent = false;
    json running, final_reply;

    auto on_running = [&](const json& reply) {
        running = reply;
        downtime_ms = ms_since(t_pause);
        // It locks writable disks before its vCPUs start: hand them over
        // (flushed at the pause; this side never resumes from here).
        sw.src.release_disks();
        log_phase("postcopy", "the destination runs the VM " + std::to_string(static_cast<int>(downtime_ms)) +
                                  " ms after the pause");
    };

    // A lost link (or a destination that stopped taking bytes): reconnect to
    // the same address within --postcopy-recover-ms and carry on from what
    // the destination says it has. Ok: resumed on a new link (false) or the
    // destination had completed and answered its final reply again (true).
    const std::string to = sw.opt.to;
    auto recover = [&](const std::string& why) -> Result<bool> {
        if (recover_ms == 0) return Error{why};
        reader.reset();  // joins it (shuts the old link down)
        log_phase("postcopy", "paused: " + why + "; reconnecting to " + to + " for up to " +
                                  std::to_string(recover_ms) + " ms");
        sw.progress.set_phase("postcopy-paused");
        const auto t0 = Clock::now();
        const auto deadline = t0 + std::chrono::milliseconds(recover_ms);
        POPEK_ASSIGN_OR_RETURN(TcpAddress addr, parse_tcp_address(to));
        std::string last = why;
        for (uint32_t attempt = 0;; ++attempt) {
            if (sw.cancel.load()) return Error{"cancelled while post-copy was paused (the VM cannot resume here)"};
            if (Clock::now() >= deadline)
                return Error{why + "; could not take the migration back within " + std::to_string(recover_ms) +
                             " ms (last: " + last + ")"};
            if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));  // between connection attempts
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
            auto c = tcp_connect(addr, static_cast<int>(std::clamp<int64_t>(left, 1, 1000)));
            if (!c) {
                last = c.error().message;
                continue;
            }
            c->set_send_timeout(sw.opt.timeout_ms);
            if (auto r = c->send_json(FrameType::Resume, json{{"token", token}}); !r.ok()) {
                last = r.error().message;
                continue;
            }
            auto f = c->receive(static_cast<int>(sw.opt.timeout_ms));
            if (!f) {
                last = f.error().message;
                continue;
            }
            auto j = f->type == FrameType::Reply ? frame_json(*f) : Result<json>(Error{"not a reply"});
            if (!j) {
                last = std::string("the destination answered the resume with a ") + frame_type_name(f->type) + " frame";
                continue;
            }
            if (!j->value("ok", false))
                return Error{why + "; the destination refused to resume: " + j->value("error", std::string("no reason given"))};
            if (j->value("completed", false)) {
                // Its final reply was lost with the link: this is it.
                if (running.is_null()) on_running(json{{"ok", true}, {"running", true}});
                final_reply = *j;
                paused_ms += ms_since(t0);
                ++recoveries;
                log_phase("postcopy", "reconnected: the destination had completed post-copy");
                return true;
            }
            auto a = j->find("arrived");
            if (a == j->end() || !a->is_binary() || a->get_binary().size() != needed.size() * 8)
                return Error{why + "; the destination's resume reply has no arrived-pages bitmap of " +
                             std::to_string(needed.size() * 8) + " bytes"};
            // Every needed page not there goes again, from the first.
            const auto& arrived = a->get_binary();
            sent_count = 0;
            for (size_t w = 0; w < needed.size(); ++w) {
                uint64_t word = 0;
                for (size_t i = 0; i < 8; ++i) word |= static_cast<uint64_t>(arrived[w * 8 + i]) << (8 * i);
                sent[w] = word & needed[w];
                sent_count += static_cast<uint64_t>(std::popcount(sent[w]));
            }
            cursor = 0;
            end_sent = false;
            hold_push = false;
            last_progress = Clock::now();
            last_unsent = 0;
            ctx = compress::CodecContext(compress::CodecOptions{.cache_pages = 0, .cache_sent_pages = false});
            {
                std::unique_lock lock = sw.conn_mu != nullptr ? std::unique_lock(*sw.conn_mu) : std::unique_lock<std::mutex>();
                sw.conn = std::move(*c);
                if (sw.cancel.load()) sw.conn.shutdown();
            }
            if (running.is_null() && j->value("running", false)) on_running(json{{"ok", true}, {"running", true}});
            reader = std::make_unique<RequestReader>(sw.conn, pages);
            reader->start();
            const double ms = ms_since(t0);
            paused_ms += ms;
            ++recoveries;
            sw.progress.set_phase("postcopy");
            log_phase("postcopy", "resumed after " + std::to_string(static_cast<int>(ms)) + " ms: the destination has " +
                                      std::to_string(sent_count) + " of " + std::to_string(needed_count) +
                                      " needed pages");
            return false;
        }
    };

    for (;;) {
        std::deque<uint64_t> requests;
        std::string lost;  // the link's failure, to recover from
        {
            RequestReader& rd = *reader;
            std::unique_lock lock(rd.mu);
            if (end_sent) {
                if (!rd.cv.wait_for(lock, timeout, [&] { return rd.done || !rd.requests.empty(); }))
                    lost = "the destination did not confirm post-copy within " + std::to_string(sw.opt.timeout_ms) + " ms";
            } else if (hold_push) {
                rd.cv.wait_until(lock, hold_until, [&] { return rd.done || !rd.requests.empty(); });
            }
            if (!rd.error.empty()) {
                if (!rd.link_lost) return Error{rd.error};
                lost = rd.error;
            }
            requests.swap(rd.requests);
            requested += requests.size();
            if (rd.running && running.is_null()) {
                if (!rd.running->value("ok", false)) {
                    // Refused before it ran: the VM may go on here.
                    sw.handed_over = false;
                    auto e = rd.running->find("error");
                    return Error{"the destination refused post-copy: " +
                                 (e != rd.running->end() && e->is_string() ? e->get<std::string>() : "no reason given")};
                }
                on_running(*rd.running);
            }
            if (rd.final_reply && !running.is_null()) {
                final_reply = *rd.final_reply;
                break;
            }
        }
        if (sw.cancel.load()) return Error{"cancelled (after the switch: the VM cannot resume here)"};
        if (lost.empty()) {
            for (uint64_t p : requests) {
                if (!test_bit(needed, p) || test_bit(sent, p)) continue;
                add_page(p);
                ++on_demand;
            }
            if (auto r = flush(); !r.ok()) lost = r.error().message;
        }
        const auto now = Clock::now();
        const size_t unsent = sw.conn.unsent_bytes();
        const bool socket_full = unsent > kMaxQueuedPush;
        // A destination that takes nothing for --timeout-ms is lost, though
        // the socket still stands (a dead link keeps the bytes queued).
        if (!socket_full || unsent < last_unsent) last_progress = now;
        last_unsent = unsent;
        if (lost.empty() && now - last_progress > timeout)
            lost = "the destination took nothing for " + std::to_string(sw.opt.timeout_ms) + " ms";
        if (!lost.empty()) {
            POPEK_ASSIGN_OR_RETURN(bool completed, recover(lost));
            if (completed) break;
            continue;
        }
        hold_push = !end_sent && (socket_full || now < next_push);
        hold_until = socket_full ? now + std::chrono::microseconds(200) : next_push;
        if (!end_sent && !hold_push) {
            next_push = now + delay;
            for (size_t n = 0; n < kPushBatchPages && cursor < pages; ++cursor) {
                if (!test_bit(needed, cursor) || test_bit(sent, cursor)) continue;
                add_page(cursor);
                ++pushed;
                ++n;
            }
            if (auto r = flush(); !r.ok()) {
                POPEK_ASSIGN_OR_RETURN(bool completed, recover(r.error().message));
                if (completed) break;
                continue;
            }
            if ((pages_sent & 0x3ff) == 0 || cursor >= pages)
                sw.progress.update(0, needed_count - sent_count, 0, bytes, pages_sent);
            if (cursor >= pages) {
                if (!source_digest) {
                    POPEK_ASSIGN_OR_RETURN(uint64_t d, digest.get());
                    source_digest = d;
                }
                auto end = encode_json_frame(FrameType::RoundEnd, json{{"postcopy_end", true}, {"digest", *source_digest},
                                                                       {"pages", sent_count}});
                bytes += end.size();
                if (auto r = sw.conn.send_raw(end); !r.ok()) {
                    POPEK_ASSIGN_OR_RETURN(bool completed, recover(r.error().message));
                    if (completed) break;
                    continue;
                }
                all_sent_ms = ms_since(t_switch);
                end_sent = true;
                log_phase("postcopy", "all " + std::to_string(sent_count) + " needed pages sent (" +
                                          std::to_string(on_demand) + " on demand) " +
                                          std::to_string(static_cast<int>(all_sent_ms)) + " ms after the switch");
            }
        }
    }
    reader.reset();
    if (!final_reply.value("ok", false)) {
        auto e = final_reply.find("error");
        return Error{"the destination failed post-copy: " +
                     (e != final_reply.end() && e->is_string() ? e->get<std::string>() : "no reason given")};
    }
    const uint64_t theirs = final_reply.value("digest", uint64_t{0});
    if (!source_digest) {  // (the destination completes only after the end frame, which carries it)
        POPEK_ASSIGN_OR_RETURN(uint64_t d, digest.get());
        source_digest = d;
    }
    const uint64_t mine = *source_digest;
    json& r = sw.report;
    r["bytes_sent"] = r.value("bytes_sent", uint64_t{0}) + bytes;
    r["pages_sent"] = r.value("pages_sent", uint64_t{0}) + pages_sent;
    r["downtime_ms"] = downtime_ms;
    r["digest_source"] = mine;
    r["digest_destination"] = theirs;
    r["digest_match"] = mine == theirs;
    r["postcopy"] = json{{"mode", postcopy_mode_name(sw.opt.postcopy.mode)},
                         {"reason", sw.reason},
                         {"needed_pages", needed_count},
                         {"pages_on_demand", on_demand},
                         {"pages_requested", requested},
                         {"pages_pushed", pushed},
                         {"bytes", bytes},
                         {"all_sent_ms", all_sent_ms},
                         {"complete_ms", ms_since(t_switch)},
                         {"recoveries", recoveries},
                         {"paused_ms", paused_ms},
                         {"destination", final_reply.value("postcopy", json::object())}};
    log_phase("commitment", "the destination has every page (digest " + std::to_string(theirs) + ")");
    return r;
}

}  // namespace popek::migration
