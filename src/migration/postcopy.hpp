// Post-copy live migration: the destination runs the VM first and pulls the
// pages it still lacks through userfaultfd while the source pushes the rest.
//
// When: `postcopy = on` switches after `after_rounds` pre-copy rounds (round
// 0 is the full pass; 0 switches before anything was sent: pure post-copy).
// `postcopy = auto` runs pre-copy as usual and switches only when it cannot
// converge: the round cap is reached, or a dirty round (from round 2 on)
// finds at least as many dirty pages as the round before. A pre-copy that
// converges ends in stop-and-copy as without post-copy.
//
// The switch (source, postcopy_send): pause, fetch the last dirty pages, send
// the state tree and the `needed` bitmap (pages the destination must take
// from the source, not from its pre-copy copy). The destination (PostcopyIncoming)
// discards those pages (MADV_DONTNEED), registers guest RAM with a
// userfaultfd (missing mode), builds the VM and answers running: true; a vCPU
// (inside KVM) or a device thread touching a missing page blocks in the
// kernel until the page is placed (UFFDIO_COPY). Its fault thread asks the
// source for such pages (PageRequest frames); the source sends requested
// pages first and pushes the rest in increasing address order, skipping
// what it already sent. Pages never needed that are holes are zero pages and
// placed as such on a fault. Once every needed page is there the destination
// unregisters the userfaultfd, compares a digest of every page (taken as it
// arrived, or from pre-copy for pages it kept) with the source's digest at
// the pause and confirms; the source then ends.
//
// Failure: before the source sent the switch, failures leave the VM running
// at the source (pre-copy's rules). After it the state is split: the source
// never resumes (the destination may have run and touched disks).
//
// Recovery (`recover_ms`, default 60 s; 0: none): a lost link, a silent
// peer or a damaged frame after the switch pauses post-copy instead of
// ending it. The destination keeps running (a vCPU touching a missing page
// waits for it in the kernel) and keeps its listening socket; the source
// keeps its paused copy and reconnects to the same address, proving with
// the switch's random resume_token that it is the same migration. The
// destination answers with the pages it has; the source sends every needed
// page not among them, and the destination asks again for the pages its
// vCPUs wait on. Only when no reconnection succeeds within recover_ms (or a
// side dies, or the destination refuses) do both sides end: the source its
// paused VM, the destination its VM with incomplete memory, each with one
// error line. An Abort, a digest mismatch at the end or a protocol
// violation is not retried.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/result.hpp"
#include "base/unique_fd.hpp"
#include "memory/guest_memory.hpp"
#include "migration/compress/context.hpp"
#include "migration/stream.hpp"

namespace popek::migration {

class MigrationSource;
class MigrationProgress;
struct MigrateOptions;

enum class PostcopyMode { Off, On, Auto };
constexpr uint32_t kDefaultRecoverMs = 60000;
constexpr uint32_t kMaxRecoverMs = 3600000;
base::Result<PostcopyMode> parse_postcopy_mode(const std::string& s);  // off, on, auto
const char* postcopy_mode_name(PostcopyMode m);

struct PostcopyOptions {
    PostcopyMode mode = PostcopyMode::Off;
    uint32_t after_rounds = 1;  // mode On: pre-copy rounds before the switch (round 0 = the full pass)
    uint32_t recover_ms = kDefaultRecoverMs;  // how long either side waits for a lost link to come back; 0: never
};

// Whether pre-copy leaves for post-copy before dirty round `round` (1, 2, ...)
// with `dirty` pages dirty now and `prev_dirty` at the previous check. A
// non-empty string is the reason (logged and reported).
std::string postcopy_switch_reason(const PostcopyOptions& o, uint32_t round, uint32_t max_rounds, uint64_t dirty,
                                   uint64_t prev_dirty, bool converged);
// mode On with after_rounds 0: switch before the full pass.
inline bool postcopy_before_precopy(const PostcopyOptions& o) {
    return o.mode == PostcopyMode::On && o.after_rounds == 0;
}

// The post-copy digest: one XXH3-64 per page (0 for an all-zero page, else
// seeded with the page index), then XXH3-64 over that array. Both ends can
// build it page by page in any order.
uint64_t page_digest(uint64_t index, const uint8_t* page);
// The same from the page's compress::page_hash (which encode_page and
// decode_page hand back): no second pass over the page's bytes.
uint64_t page_digest_from_hash(const uint8_t* page, uint64_t hash);
uint64_t combine_page_digests(std::span<const uint64_t> digests);

// ---- source -----------------------------------------------------------------

// What pre-copy hands over at the switch point.
struct PostcopySwitch {
    MigrationSource& src;
    Connection& conn;
    const MigrateOptions& opt;
    MigrationProgress& progress;
    const std::atomic<bool>& cancel;
    std::vector<uint64_t>& dirty;  // pages dirtied and not yet sent (one bit per page)
    bool nothing_sent;             // pure post-copy: every page that may hold data is needed
    std::string reason;            // why the switch happened
    nlohmann::json report;         // pre-copy's figures so far (bytes_sent, rounds, ...)
    std::mutex* conn_mu = nullptr; // guards replacing `conn` (recovery) against another thread's shutdown()
    bool paused = false;           // out: the VM was paused here
    bool handed_over = false;      // out: the switch went out; the VM must not resume here
};
// Runs post-copy to its end: the report (pre-copy's plus post-copy's
// figures) once the destination confirmed every page.
base::Result<nlohmann::json> postcopy_send(PostcopySwitch& sw);

// ---- destination ------------------------------------------------------------

// How a lost source may come back (see the top): the socket the
// destination listened on, the switch's token and how long to wait. No
// listener or a window of 0: a lost source ends post-copy at once.
struct PostcopyRecovery {
    base::UniqueFd listener;
    uint64_t token = 0;
    uint32_t window_ms = 0;
    uint32_t send_timeout_ms = 0;  // for the connections it takes back
};

// Serves a running VM's missing pages until all arrived (see the top).
class PostcopyIncoming {
public:
    struct Figures {
        uint64_t needed = 0, requested = 0, received = 0, zero_filled = 0;
        double complete_ms = 0;  // from the switch frame to the last page
        bool complete = false;
        uint32_t recoveries = 0;  // links lost and taken back
        double paused_ms = 0;     // time spent without a link
    };
    using Recovery = PostcopyRecovery;
    // `page_digests`: pre-copy's digest of each page received (kept pages).
    // Discards the needed pages, registers the userfaultfd and starts the
    // fault and receive threads. The connection moves in when it succeeds.
    // Only the mapping of `mem` is kept: the Machine may take `mem` over.
    static base::Result<std::unique_ptr<PostcopyIncoming>> start(memory::GuestMemory& mem, Connection& conn,
                                                                 std::vector<uint64_t> needed,
                                                                 std::vector<uint64_t> page_digests,
                                                                 uint64_t cache_pages, Recovery recovery = {});
    ~PostcopyIncoming();
    PostcopyIncoming(const PostcopyIncoming&) = delete;
    PostcopyIncoming& operator=(const PostcopyIncoming&) = delete;

    base::Result<void> send_json(FrameType t, const nlohmann::json& j);
    // Sends the Reply that says the VM runs here (and remembers it: a
    // source that reconnects learns it from the resume reply).
    base::Result<void> announce_running();
    // Called once, from the receive thread, if post-copy fails; at once if it
    // already did. The VM must stop: its memory is incomplete.
    void on_failure(std::function<void(const std::string&)> fn);
    [[nodiscard]] std::string failure() const;
    [[nodiscard]] Figures figures() const;
    // Waits until every page arrived or post-copy failed (tests, shutdown).
    bool wait_complete(std::chrono::milliseconds timeout);

private:
    PostcopyIncoming() = default;
    void fault_loop();
    void receive_loop();
    void accept_loop();
    enum class Step { More, Done, Resync };
    // Resync: the frame's pages were damaged (nothing placed): drop this
    // link and wait for the source to come back. `why` says what was wrong.
    base::Result<Step> handle_frame(const Frame& f, std::string& why);
    // Waits (up to the recovery window) for the accept thread's connection,
    // then answers it and asks again for the pages still awaited. An empty
    // result: resumed; else why not (post-copy fails).
    std::string recover(const std::string& why);
    base::Result<void> resync();
    base::Result<void> place(uint64_t index, const uint8_t* page);
    void fail(const std::string& why);
    void release_faults();
    bool released_ = false;

    uint8_t* base_ = nullptr;
    uint64_t ram_size_ = 0;
    uint64_t pages_ = 0;
    Connection conn_;
    base::UniqueFd uffd_;
    base::UniqueFd stop_;         // eventfd: the fault thread ends (and the accept thread learns post-copy ended)
    base::UniqueFd accept_stop_;  // eventfd: the accept thread ends
    std::mutex send_mu_;
    std::vector<uint64_t> needed_;
    std::unique_ptr<std::atomic<uint64_t>[]> arrived_, requested_;
    std::vector<uint64_t> digests_;
    std::unique_ptr<compress::CodecContext> codec_;
    std::chrono::steady_clock::time_point t0_;

    std::atomic<uint64_t> requested_count_{0}, received_count_{0}, zero_filled_{0};
    uint64_t needed_count_ = 0;
    double complete_ms_ = 0;

    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::string failure_;
    bool done_ = false;
    bool stopping_ = false;
    std::function<void(const std::string&)> on_failure_;
    bool running_announced_ = false;
    nlohmann::json final_reply_;  // once complete (under mu_): a source that missed it gets it on resuming

    Recovery recovery_;
    bool can_recover_ = false;
    uint64_t cache_pages_ = 0;
    std::atomic<int> live_fd_{-1};      // conn_'s socket, for the accept thread's shutdown(2)
    std::optional<Connection> pending_;  // a resumed link the accept thread took (under mu_)
    uint32_t recoveries_ = 0;
    double paused_ms_ = 0;
    std::thread fault_thread_, receive_thread_, accept_thread_;
};

class MigrationTarget;
// receive.cpp: receive_vm that can take a post-copy switch. When it did,
// *postcopy is set and the VM is built over RAM still arriving: the caller
// runs it and keeps *postcopy until the VM ended.
// `listener` (may be null): the socket `conn` came from; post-copy keeps
// it to take the source back after a lost link.
base::Result<nlohmann::json> receive_vm(MigrationTarget& target, Connection& conn,
                                        std::unique_ptr<PostcopyIncoming>* postcopy,
                                        base::UniqueFd* listener = nullptr);

}  // namespace popek::migration
