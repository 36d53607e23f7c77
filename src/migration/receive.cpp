// The destination side of live migration: pre-copy (see precopy.hpp) and
// the switch to post-copy (postcopy.hpp).
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>

#include "migration/compress/context.hpp"
#include "migration/memory_file.hpp"
#include "migration/pages_frame.hpp"
#include "migration/postcopy.hpp"
#include "migration/precopy.hpp"

namespace popek::migration {

using base::Error;
using base::Result;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// Until the hello says the source's timeout: a source silent this long is gone.
constexpr int kHelloTimeoutMs = 60000;

void refuse(Connection& conn, const std::string& why) {
    (void)conn.send_json(FrameType::Reply, json{{"ok", false}, {"error", why}});
}

struct Receiver {
    Receiver(MigrationTarget& t, Connection& c, std::unique_ptr<PostcopyIncoming>* pc, base::UniqueFd* l)
        : target(t), conn(c), postcopy(pc), listener(l) {}
    MigrationTarget& target;
    Connection& conn;
    std::unique_ptr<PostcopyIncoming>* postcopy;  // null: post-copy is refused
    base::UniqueFd* listener;                     // null: a lost post-copy link cannot come back
    std::vector<uint64_t> digests;                 // post-copy's digest of each page received
    memory::GuestMemory* mem = nullptr;
    std::unique_ptr<compress::CodecContext> ctx;
    uint64_t pages = 0;
    uint64_t received = 0;
    uint64_t bytes = 0;
    int timeout_ms = static_cast<int>(kDefaultTimeoutMs);

    // Pages decode straight into guest RAM: a record that fails its check
    // fails the migration, and this VM never runs (the source resumes).
    // `compressed`: a PagesZ frame's, whose records may go without checks.
    Result<void> apply_pages(std::span<const uint8_t> payload, bool compressed) {
        uint8_t* base = mem->regions().front().host;
        auto n = parse_page_batch(payload, [&](uint64_t index, std::span<const uint8_t> record) -> Result<void> {
            if (index >= pages)
                return Error{"page " + std::to_string(index) + " is outside guest RAM (" + std::to_string(pages) +
                             " pages)"};
            populate(base, index);
            uint8_t* page = base + index * compress::kPageSize;
            uint64_t hash = 0;
            POPEK_TRY(compress::decode_page(record, index, compress::MutPage(page, compress::kPageSize), *ctx, &hash,
                                            compressed));
            digests[index] = page_digest_from_hash(page, hash);
            return {};
        });
        if (!n) return n.error();
        received += *n;
        return {};
    }
    // The first page to arrive in a chunk of kPopulatePages faults the whole
    // chunk in with one madvise instead of a fault per page (a fault costs
    // more than the copy here). Best effort: without it pages fault as usual.
    static constexpr uint64_t kPopulatePages = 16;
    std::vector<uint64_t> populated;  // bit per chunk
    void populate(uint8_t* base, uint64_t index) {
        const uint64_t chunk = index / kPopulatePages;
        if (populated.empty()) populated.assign((pages + kPopulatePages * 64 - 1) / (kPopulatePages * 64), 0);
        uint64_t& word = populated[chunk / 64];
        const uint64_t bit = 1ull << (chunk % 64);
        if ((word & bit) != 0) return;
        word |= bit;
        const uint64_t first = chunk * kPopulatePages;
        const uint64_t count = std::min(kPopulatePages, pages - first);
        (void)::madvise(base + first * compress::kPageSize, count * compress::kPageSize, MADV_POPULATE_WRITE);
    }
    PagesInflater inflater;

    Result<json> run();
    Result<json> switch_to_postcopy(const json& j);
    // The VM runs here only once the source's Commit arrives; without it
    // (timeout, closed link, abort) it must not (the source may resume it).
    Result<void> wait_commit() {
        auto f = conn.receive(timeout_ms);
        const std::string not_run = "; the VM does not run here (the source resumes it unless its commit was lost)";
        if (!f) return Error{"no commit from the source: " + f.error().message + not_run};
        if (f->type == FrameType::Commit) return {};
        if (f->type == FrameType::Abort) {
            auto j = frame_json(*f);
            return Error{"the source aborted at commitment: " +
                         (j.ok() ? j->value("error", std::string("no reason given")) : std::string("?")) + not_run};
        }
        return Error{std::string("the source sent a ") + frame_type_name(f->type) + " frame instead of its commit" +
                     not_run};
    }
};

// The source paused and handed the VM over; pages it still holds follow
// while the VM runs here.
Result<json> Receiver::switch_to_postcopy(const json& j) {
    const auto t_switch = Clock::now();
    if (postcopy == nullptr) {
        refuse(conn, "this destination does not take post-copy");
        return Error{"the source switched to post-copy, which this destination does not take"};
    }
    auto st = j.find("state");
    auto nd = j.find("needed");
    if (st == j.end() || nd == j.end() || !nd->is_binary() || nd->get_binary().size() % 8 != 0) {
        refuse(conn, "post-copy state frame without state or needed-pages bitmap");
        return Error{"the source's post-copy state frame has no state or needed-pages bitmap"};
    }
    const auto& bitmap = nd->get_binary();
    std::vector<uint64_t> needed(bitmap.size() / 8, 0);
    for (size_t i = 0; i < bitmap.size(); ++i) needed[i / 8] |= static_cast<uint64_t>(bitmap[i]) << (8 * (i % 8));
    // A source that names a token and a window may come back after a lost link.
    PostcopyIncoming::Recovery recovery;
    auto tok = j.find("resume_token");
    auto win = j.find("recover_ms");
    if (listener != nullptr && listener->valid() && tok != j.end() && tok->is_number_unsigned() && win != j.end() &&
        win->is_number_unsigned() && win->get<uint64_t>() > 0) {
        recovery.listener = std::move(*listener);
        recovery.token = tok->get<uint64_t>();
        recovery.window_ms = static_cast<uint32_t>(std::min<uint64_t>(win->get<uint64_t>(), kMaxRecoverMs));
        recovery.send_timeout_ms = static_cast<uint32_t>(timeout_ms);
    }
    auto pc = PostcopyIncoming::start(*mem, conn, std::move(needed), std::move(digests), 0, std::move(recovery));
    if (!pc) {
        refuse(conn, pc.error().message);
        return pc.error();
    }
    // Building the VM may touch guest RAM (the pages come on demand already).
    if (auto b = target.build(*st); !b.ok()) {
        (void)(*pc)->send_json(FrameType::Reply, json{{"ok", false}, {"error", "building the VM: " + b.error().message}});
        return b.error().context("building the VM from the source's state");
    }
    if (auto f = (*pc)->failure(); !f.empty()) return Error{"post-copy: " + f};
    // A lost reply is the receive thread's to notice (and, with recovery,
    // the resumed link says running); without recovery post-copy fails then.
    (void)(*pc)->announce_running();
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t_switch).count();
    log_phase("postcopy", "VM built " + std::to_string(static_cast<int>(ms)) + " ms after the switch; it runs while " +
                              std::to_string((*pc)->figures().needed - (*pc)->figures().received) + " pages are missing");
    *postcopy = std::move(pc).value();
    return json{{"postcopy", true}, {"pages_received", received}, {"bytes_received", bytes}, {"build_ms", ms}};
}

Result<json> Receiver::run() {
    const auto t0 = Clock::now();
    auto first = conn.receive(kHelloTimeoutMs);
    if (!first) return first.error().context("waiting for the source's hello");
    if (first->type != FrameType::Hello) {
        refuse(conn, "expected a hello frame");
        return Error{std::string("the source sent a ") + frame_type_name(first->type) + " frame before its hello"};
    }
    auto hello = frame_json(*first).ok() ? hello_from_json(*frame_json(*first)) : Result<Hello>(frame_json(*first).error());
    if (!hello) {
        refuse(conn, hello.error().message);
        return hello.error();
    }
    if (hello->timeout_ms != 0) timeout_ms = static_cast<int>(hello->timeout_ms);
    conn.set_send_timeout(static_cast<uint32_t>(timeout_ms));
    log_phase("initialization", "popek " + hello->popek_version + ", " + std::to_string(hello->pages) +
                                    " pages, codec " + hello->codec);
    auto reserved = target.reserve(*hello);
    if (!reserved) {
        log_phase("reservation", "refused: " + reserved.error().message);
        refuse(conn, reserved.error().message);
        return reserved.error().context("reservation");
    }
    mem = *reserved;
    pages = mem->page_count();
    if (pages != hello->pages) {
        const std::string why = "the configuration gives " + std::to_string(pages) + " pages, the source has " +
                                std::to_string(hello->pages);
        refuse(conn, why);
        return Error{why};
    }
    ctx = std::make_unique<compress::CodecContext>(compress::CodecOptions{.cache_pages = hello->cache_pages});
    digests.assign(pages, 0);
    POPEK_TRY(conn.send_json(FrameType::Reply, json{{"ok", true}}));
    log_phase("reservation", "memory and devices ready");

    for (;;) {
        auto f = conn.receive(timeout_ms);
        if (!f) return f.error().context("receiving pages");
        bytes += f->payload.size() + kFrameHeaderSize;
        switch (f->type) {
            case FrameType::Pages:
            case FrameType::PagesZ: {
                auto payload = f->type == FrameType::Pages ? Result<std::span<const uint8_t>>(f->payload)
                                                            : inflater.inflate(f->payload);
                auto r = payload.ok() ? apply_pages(*payload, f->type == FrameType::PagesZ)
                                      : Result<void>(payload.error());
                if (!r.ok()) {
                    refuse(conn, r.error().message);
                    return r.error();
                }
                break;
            }
            case FrameType::RoundEnd: {
                POPEK_ASSIGN_OR_RETURN(json j, frame_json(*f));
                log_phase("precopy", "round " + j.value("round", json(0)).dump() + " received, " +
                                         std::to_string(received) + " pages so far");
                // Every page before it is applied: the source measures the
                // round up to this acknowledgement.
                POPEK_TRY(conn.send_json(FrameType::Reply, json{{"ok", true},
                                                                {"round", j.value("round", json(0))},
                                                                {"applied", received}}));
                break;
            }
            case FrameType::Abort: {
                auto j = frame_json(*f);
                return Error{"the source aborted: " +
                             (j.ok() ? j->value("error", std::string("no reason given")) : std::string("?"))};
            }
            case FrameType::State: {
                POPEK_ASSIGN_OR_RETURN(json j, frame_json(*f));
                if (j.value("postcopy", false)) return switch_to_postcopy(j);
                auto st = j.find("state");
                auto dg = j.find("digest");
                if (st == j.end() || dg == j.end() || !dg->is_number_unsigned()) {
                    refuse(conn, "state frame without state or digest");
                    return Error{"the source's state frame has no state or digest"};
                }
                // Every page written here came through apply_pages, which
                // kept its digest: one pass over that array, not over RAM.
                const uint64_t mine = combine_page_digests(digests);
                const uint64_t theirs = dg->get<uint64_t>();
                if (mine != theirs) {
                    const std::string why = "guest RAM digest " + std::to_string(mine) +
                                            " differs from the source's " + std::to_string(theirs);
                    log_phase("validation", "failed: " + why);
                    refuse(conn, why);
                    return Error{why};
                }
                log_phase("validation", "digest " + std::to_string(mine) + " matches over " + std::to_string(pages) +
                                            " pages");
                if (auto b = target.build(*st); !b.ok()) {
                    refuse(conn, "building the VM: " + b.error().message);
                    return b.error().context("building the VM from the source's state");
                }
                POPEK_TRY(conn.send_json(FrameType::Reply, json{{"ok", true}, {"ready", true}, {"digest", mine}}));
                log_phase("commitment", "ready; waiting for the source's commit");
                POPEK_TRY(wait_commit());
                log_phase("commitment", "the source committed: the VM is ours");
                return json{{"pages_received", received},
                            {"bytes_received", bytes},
                            {"digest", mine},
                            {"total_ms", std::chrono::duration<double, std::milli>(Clock::now() - t0).count()}};
            }
            case FrameType::Hello:
            case FrameType::Reply:
            case FrameType::PageRequest:
            case FrameType::Commit:
            case FrameType::Resume:
                refuse(conn, std::string("unexpected ") + frame_type_name(f->type) + " frame");
                return Error{std::string("the source sent an unexpected ") + frame_type_name(f->type) + " frame"};
        }
    }
}

}  // namespace

Result<json> receive_vm(MigrationTarget& target, Connection& conn) { return receive_vm(target, conn, nullptr, nullptr); }

Result<json> receive_vm(MigrationTarget& target, Connection& conn, std::unique_ptr<PostcopyIncoming>* postcopy,
                        base::UniqueFd* listener) {
    Receiver r(target, conn, postcopy, listener);
    auto out = r.run();
    if (!out) log_phase("failed", out.error().message);
    return out;
}

}  // namespace popek::migration
