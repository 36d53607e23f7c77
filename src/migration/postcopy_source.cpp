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

// Reads the destination's frames while pages go out: page requests, the
// "running" reply, the final reply, or an abort.
struct RequestReader {
    Connection& conn;
    uint64_t pages;
    std::mutex mu;
    std::condition_variable cv;
    std::deque<uint64_t> requests;
    uint64_t requested = 0;
    std::optional<json> running, final_reply;
    std::string error;
    bool done = false;
    std::thread thread;

    RequestReader(Connection& c, uint64_t p) : conn(c), pages(p) {}
    void start() { thread = std::thread([this] { loop(); }); }
    void finish(std::string why) {
        std::lock_guard lock(mu);
        if (error.empty()) error = std::move(why);
        done = true;
        cv.notify_all();
    }
    void loop() {
        for (;;) {
            auto f = conn.receive(0);
            if (!f) return finish("lost the destination during post-copy: " + f.error().message);
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

}  // namespace

Result<json> postcopy_send(PostcopySwitch& sw) {
    const memory::GuestMemory& mem = sw.src.memory();
    const uint64_t pages = mem.page_count();
    const uint8_t* base = mem.regions().front().host;
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

    json::binary_t bitmap;
    bitmap.reserve(needed.size() * 8);
    for (uint64_t w : needed)
        for (int i = 0; i < 8; ++i) bitmap.push_back(static_cast<uint8_t>(w >> (8 * i)));
    auto frame = encode_json_frame(FrameType::State, json{{"state", std::move(state)},
                                                          {"postcopy", true},
                                                          {"needed", json::binary(std::move(bitmap))},
                                                          {"needed_pages", needed_count}});
    uint64_t bytes = frame.size();
    POPEK_TRY(sw.conn.send_raw(frame));
    sw.handed_over = true;  // from here the destination may run: never resume here
    const auto t_switch = Clock::now();
    log_phase("postcopy", "state and " + std::to_string(needed_count) + " needed pages announced " +
                              std::to_string(static_cast<int>(ms_since(t_pause))) + " ms after the pause");

    RequestReader reader(sw.conn, pages);
    reader.start();
    struct Joiner {
        RequestReader& r;
        Connection& c;
        ~Joiner() {
            bool done;
            {
                std::lock_guard lock(r.mu);
                done = r.done;
            }
            if (!done) c.shutdown();
            r.thread.join();
        }
    } joiner{reader, sw.conn};

    compress::CodecContext ctx(compress::CodecOptions{.cache_pages = 0, .cache_sent_pages = false});
    std::vector<uint64_t> sent(needed.size(), 0);
    std::vector<uint8_t> batch;
    uint64_t on_demand = 0, pushed = 0, sent_count = 0, cursor = 0;
    auto add_page = [&](uint64_t p) {
        for (int i = 0; i < 8; ++i) batch.push_back(static_cast<uint8_t>(p >> (8 * i)));
        compress::encode_page(sw.opt.codec, p, compress::ConstPage(base + p * compress::kPageSize, compress::kPageSize),
                              ctx, batch);
        set_bit(sent, p);
        ++sent_count;
    };
    auto flush = [&]() -> Result<void> {
        if (batch.empty()) return {};
        POPEK_TRY(sw.conn.send(FrameType::Pages, batch));
        bytes += batch.size() + kFrameHeaderSize;
        batch.clear();
        return {};
    };

    const auto delay = push_delay();
    bool hold_push = false;  // the socket is full or the test knob says wait: serve requests only
    auto next_push = Clock::now(), hold_until = next_push;
    double downtime_ms = -1, all_sent_ms = -1;
    uint64_t source_digest = 0;
    bool end_sent = false;
    json running, final_reply;
    for (;;) {
        std::deque<uint64_t> requests;
        {
            std::unique_lock lock(reader.mu);
            if (end_sent) {
                if (!reader.cv.wait_for(lock, std::chrono::milliseconds(sw.opt.timeout_ms),
                                        [&] { return reader.done || !reader.requests.empty(); }))
                    return Error{"the destination did not confirm post-copy within " + std::to_string(sw.opt.timeout_ms) + " ms"};
            } else if (hold_push) {
                reader.cv.wait_until(lock, hold_until, [&] { return reader.done || !reader.requests.empty(); });
            }
            if (!reader.error.empty()) return Error{reader.error};
            requests.swap(reader.requests);
            if (reader.running && running.is_null()) {
                running = *reader.running;
                if (!running.value("ok", false)) {
                    // Refused before it ran: the VM may go on here.
                    sw.handed_over = false;
                    auto e = running.find("error");
                    return Error{"the destination refused post-copy: " +
                                 (e != running.end() && e->is_string() ? e->get<std::string>() : "no reason given")};
                }
                downtime_ms = ms_since(t_pause);
                // It locks writable disks before its vCPUs start: hand them over
                // (flushed at the pause; this side never resumes from here).
                sw.src.release_disks();
                log_phase("postcopy", "the destination runs the VM " + std::to_string(static_cast<int>(downtime_ms)) +
                                          " ms after the pause");
            }
            if (reader.final_reply && !running.is_null()) {
                final_reply = *reader.final_reply;
                break;
            }
        }
        if (sw.cancel.load()) return Error{"cancelled (after the switch: the VM cannot resume here)"};
        for (uint64_t p : requests) {
            if (!test_bit(needed, p) || test_bit(sent, p)) continue;
            add_page(p);
            ++on_demand;
        }
        POPEK_TRY(flush());
        const auto now = Clock::now();
        const bool socket_full = sw.conn.unsent_bytes() > kMaxQueuedPush;
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
            POPEK_TRY(flush());
            if ((sent_count & 0x3ff) == 0 || cursor >= pages)
                sw.progress.update(0, needed_count - sent_count, 0, bytes, sent_count);
            if (cursor >= pages) {
                POPEK_ASSIGN_OR_RETURN(source_digest, digest.get());
                auto end = encode_json_frame(FrameType::RoundEnd, json{{"postcopy_end", true}, {"digest", source_digest},
                                                                       {"pages", sent_count}});
                bytes += end.size();
                POPEK_TRY(sw.conn.send_raw(end));
                all_sent_ms = ms_since(t_switch);
                end_sent = true;
                log_phase("postcopy", "all " + std::to_string(sent_count) + " needed pages sent (" +
                                          std::to_string(on_demand) + " on demand) " +
                                          std::to_string(static_cast<int>(all_sent_ms)) + " ms after the switch");
            }
        }
    }
    if (!final_reply.value("ok", false)) {
        auto e = final_reply.find("error");
        return Error{"the destination failed post-copy: " +
                     (e != final_reply.end() && e->is_string() ? e->get<std::string>() : "no reason given")};
    }
    const uint64_t theirs = final_reply.value("digest", uint64_t{0});
    const uint64_t mine = source_digest;
    json& r = sw.report;
    r["bytes_sent"] = r.value("bytes_sent", uint64_t{0}) + bytes;
    r["pages_sent"] = r.value("pages_sent", uint64_t{0}) + sent_count;
    r["downtime_ms"] = downtime_ms;
    r["digest_source"] = mine;
    r["digest_destination"] = theirs;
    r["digest_match"] = mine == theirs;
    r["postcopy"] = json{{"mode", postcopy_mode_name(sw.opt.postcopy.mode)},
                         {"reason", sw.reason},
                         {"needed_pages", needed_count},
                         {"pages_on_demand", on_demand},
                         {"pages_requested", reader.requested},
                         {"pages_pushed", pushed},
                         {"bytes", bytes},
                         {"all_sent_ms", all_sent_ms},
                         {"complete_ms", ms_since(t_switch)},
                         {"destination", final_reply.value("postcopy", json::object())}};
    log_phase("commitment", "the destination has every page (digest " + std::to_string(theirs) + ")");
    return r;
}

}  // namespace popek::migration
