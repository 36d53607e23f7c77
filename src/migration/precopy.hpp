// Pre-copy live migration, both ends, over a Connection (migration/stream.hpp).
//
// Source (send_vm): initialization (Hello: versions, config) → reservation
// (the destination's Reply) → iterative pre-copy (a full pass, then rounds
// of the pages dirtied meanwhile; each round's bandwidth is measured and the
// loop stops when the remaining dirty set would go in the downtime limit, or
// at the round cap) → stop-and-copy (pause, last dirty pages, state tree and
// a digest of all guest RAM) → validation and commitment (the destination
// checks the digest, builds the VM and answers ready; the source answers
// Commit, and the destination runs the VM only once that arrives: see the
// handshake in stream.hpp). On any failure before the Commit goes out the
// source resumes; after it, never.
// Destination (receive_vm): the mirror image, activation left to the caller.
//
// Convergence aids on the source: a bandwidth cap (token bucket on the
// sender), auto-converge (throttle the vCPUs step by step while a round's
// dirty rate exceeds the link rate), a downtime rule that counts the fixed
// cost of the switch (pause, state, digests, the destination's build) as
// well as the pages, and several encoding threads (each owns stripes of the
// XBZRLE cache, compress/page_cache.hpp, so the receiver needs no change).
//
// The VMM plugs in through MigrationSource / MigrationTarget; post-copy
// would be a further phase and option here.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/result.hpp"
#include "memory/guest_memory.hpp"
#include "migration/compress/codec.hpp"
#include "migration/postcopy.hpp"
#include "migration/stream.hpp"

namespace popek::migration {

struct MigrateOptions {
    std::string to;                 // tcp:HOST:PORT
    uint32_t downtime_ms = 300;
    uint32_t max_rounds = 30;
    compress::Codec codec = compress::Codec::None;
    uint64_t cache_pages = 16384;   // XBZRLE cache (xbzrle, auto)
    uint64_t bandwidth = 0;         // bytes per second the sender may use; 0 = unlimited
    bool auto_converge = false;
    uint32_t throttle_initial = 20;   // auto-converge: first throttle, percent
    uint32_t throttle_increment = 10; // added per round that still does not converge
    uint32_t throttle_max = 99;
    uint32_t threads = 2;           // encoding threads, 1..kMaxThreads
    uint32_t timeout_ms = kDefaultTimeoutMs;  // a peer silent (or taking nothing) this long is gone
    PostcopyOptions postcopy{};     // migration/postcopy.hpp
};

inline constexpr uint32_t kMaxThreads = 8;  // = compress::kMigrationStripes

// "100M", "1G", "512K", "250000": bytes per second (K/M/G/T are powers of
// 1024, an optional trailing "B" or "/s" is accepted). A clear error otherwise.
base::Result<uint64_t> parse_bandwidth(const std::string& text);

// What pre-copy does once it has counted the pages dirtied during the last
// round: `pages_ms` is how long they would take to send at the measured rate,
// `fixed_ms` the switch's fixed cost, `last_round_pages` what the last round
// (or the full pass) sent.
enum class RoundDecision {
    Another,    // send the dirty pages in another round
    Converged,  // the pause fits --downtime-ms: stop and copy
    Futile,     // over the limit, but the fixed cost is most of it: rounds cannot help
    RoundCap,   // over the limit after --max-rounds dirty rounds
};
struct RoundFigures {
    double pages_ms = 0, fixed_ms = 0;
    uint32_t downtime_ms = 0, round = 1, max_rounds = 0;
    uint64_t dirty = 0, last_round_pages = 0;
};
// A pause that fits the limit still gets one more round while its pages take
// over 2 ms and the last round at least halved the dirty set: the round costs
// about pages_ms of total time and leaves a fraction of it for the pause (a
// guest dirtying 50 MiB/s of a 1 GiB VM: ~40 ms of pause -> ~4 ms).
RoundDecision decide_round(const RoundFigures& f);

// What GET /vm/migration shows; updated by the migration thread.
class MigrationProgress {
public:
    struct Snapshot {
        std::string phase = "none";  // none, initialization, reservation, precopy, stop-and-copy,
                                     // validation, commitment, completed, failed
        uint32_t round = 0;
        uint64_t dirty_pages = 0;
        double bandwidth_mbps = 0;   // MiB/s of the last round
        uint64_t bytes_sent = 0;
        uint64_t pages_sent = 0;
        uint64_t guest_pages = 0;
        uint32_t throttle = 0;       // auto-converge, percent
        double remaining_ms = -1;    // estimate; -1 = unknown
        std::string error;
        nlohmann::json report;       // set when completed or failed
    };
    void set_phase(const std::string& phase);
    void update(uint32_t round, uint64_t dirty, double mbps, uint64_t bytes, uint64_t pages);
    void update_extra(uint64_t guest_pages, uint32_t throttle, double remaining_ms);
    void finish(bool ok, const std::string& error, nlohmann::json report);
    [[nodiscard]] Snapshot get() const;
    [[nodiscard]] nlohmann::json to_json() const;

private:
    mutable std::mutex mu_;
    Snapshot s_;
};

class MigrationSource {
public:
    virtual ~MigrationSource() = default;
    virtual const memory::GuestMemory& memory() = 0;
    virtual nlohmann::json config_json() = 0;
    // The hypervisor backend running the VM ("kvm", "emu"): the destination
    // needs the same one (a VM's CPU state is the backend's).
    virtual std::string backend() { return "kvm"; }
    // Dirty logging on (guest writes through the hypervisor, host writes in GuestMemory).
    virtual base::Result<void> start_dirty_log() = 0;
    // ORs the pages (RAM layout) written since the previous call into `bits`.
    virtual base::Result<void> fetch_dirty(std::vector<uint64_t>& bits) = 0;
    virtual void stop_dirty_log() = 0;
    // Auto-converge: hold every vCPU out of the guest `percent` (0-99) of the
    // time; 0 lifts it. The default cannot throttle (auto-converge then only
    // reports that it would have).
    virtual void set_throttle(uint32_t percent) { (void)percent; }
    // Stop-and-copy: pauses vCPUs and devices, returns the state tree.
    virtual base::Result<nlohmann::json> pause_and_save() = 0;
    // Failure before commitment: the VM runs on here.
    virtual void resume() = 0;
    // Failure after a post-copy switch or once the Commit may have gone out:
    // the VM must not resume here; it ends with `why` (one sentence).
    virtual void abandon(const std::string& why) { (void)why; }
    // The destination owns the VM from now on (commitment, or a post-copy
    // destination about to run it): writable disks' locks go to it.
    virtual void release_disks() {}
};

class MigrationTarget {
public:
    virtual ~MigrationTarget() = default;
    // Reservation: build what the config needs (memory, devices' backends) or
    // refuse with a message for the source's user. Returns guest RAM to fill.
    virtual base::Result<memory::GuestMemory*> reserve(const Hello& hello) = 0;
    // After validation: build the VM from the state tree (not yet running).
    virtual base::Result<void> build(const nlohmann::json& state) = 0;
};

// Runs a migration to the end. Ok: the destination committed (the caller
// stops its VM); the report is in `progress`. Error: the source was resumed
// (if it had been paused) and keeps running. `cancel`/`conn` let another
// thread abort it (conn->shutdown() under `conn_mu`, which post-copy
// recovery holds while it puts a new connection in `conn`).
base::Result<nlohmann::json> send_vm(MigrationSource& src, Connection& conn, const MigrateOptions& options,
                                     MigrationProgress& progress, const std::atomic<bool>& cancel,
                                     std::mutex* conn_mu = nullptr);

// Receives a VM on an accepted connection; Ok: the target built it and the
// source was told to let go (activation is the caller's).
base::Result<nlohmann::json> receive_vm(MigrationTarget& target, Connection& conn);

// One stderr line: "popek: migration: <phase> <detail>".
void log_phase(const std::string& phase, const std::string& detail);

}  // namespace popek::migration
