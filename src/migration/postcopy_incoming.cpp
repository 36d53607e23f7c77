// The destination side of post-copy (see postcopy.hpp): a userfaultfd over
// guest RAM, a thread turning faults into page requests, a thread placing
// the pages that arrive and, with recovery, a thread taking the source back
// on the listening socket after a lost link.
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <optional>

#include "migration/postcopy.hpp"
#include "migration/precopy.hpp"

namespace popek::migration {

using base::Error;
using base::Result;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kSourceSilenceMs = 30000;  // the source pushes without pause: this long silent, it is gone
constexpr int kResumeFrameMs = 2000;     // a new connection says resume within this, or is dropped
constexpr uint32_t kMaxRecoveries = 100; // a link lost this often is not coming back for good
constexpr uint64_t kPage = compress::kPageSize;

bool bit(const std::vector<uint64_t>& b, uint64_t i) { return (b[i / 64] >> (i % 64)) & 1; }
bool bit(const std::atomic<uint64_t>* b, uint64_t i) {
    return (b[i / 64].load(std::memory_order_acquire) >> (i % 64)) & 1;
}

alignas(4096) const std::array<uint8_t, kPage> kZeroPage{};

}  // namespace

Result<std::unique_ptr<PostcopyIncoming>> PostcopyIncoming::start(memory::GuestMemory& mem, Connection& conn,
                                                                  std::vector<uint64_t> needed,
                                                                  std::vector<uint64_t> page_digests,
                                                                  uint64_t cache_pages, Recovery recovery) {
    const uint64_t pages = mem.page_count();
    const size_t words = (pages + 63) / 64;
    if (needed.size() != words)
        return Error{"post-copy: the needed-pages bitmap has " + std::to_string(needed.size() * 8) + " bytes, " +
                     std::to_string(pages) + " pages need " + std::to_string(words * 8)};
    if (pages % 64 != 0 && (needed.back() >> (pages % 64)) != 0)
        return Error{"post-copy: the needed-pages bitmap marks pages beyond guest RAM"};
    if (page_digests.size() != pages) return Error{"post-copy: one digest per page is needed"};
    if (mem.private_file()) return Error{"post-copy: guest RAM is a file mapping, not anonymous memory"};

    std::unique_ptr<PostcopyIncoming> pc(new PostcopyIncoming());
    pc->t0_ = Clock::now();
    pc->base_ = mem.regions().front().host;
    pc->ram_size_ = mem.ram_size();
    pc->pages_ = pages;
    pc->needed_ = std::move(needed);
    pc->digests_ = std::move(page_digests);
    pc->arrived_ = std::make_unique<std::atomic<uint64_t>[]>(words);
    pc->requested_ = std::make_unique<std::atomic<uint64_t>[]>(words);
    pc->cache_pages_ = cache_pages;
    pc->codec_ = std::make_unique<compress::CodecContext>(compress::CodecOptions{.cache_pages = cache_pages});

    // The pre-copy copies of needed pages go: discarded, they are missing
    // pages the userfaultfd reports.
    for (uint64_t p = 0; p < pages;) {
        if (!bit(pc->needed_, p)) {
            ++p;
            continue;
        }
        uint64_t q = p;
        while (q < pages && bit(pc->needed_, q)) pc->digests_[q++] = 0;
        pc->needed_count_ += q - p;
        if (auto d = mem.discard(p * kPage, (q - p) * kPage); !d.ok())
            return d.error().context("post-copy: dropping the stale copies of needed pages");
        p = q;
    }

    pc->uffd_ = base::UniqueFd(static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK)));
    if (!pc->uffd_.valid()) return Error::from_errno("post-copy: userfaultfd (needs root or vm.unprivileged_userfaultfd=1)");
    uffdio_api api{};
    api.api = UFFD_API;
    if (::ioctl(pc->uffd_.get(), UFFDIO_API, &api) != 0) return Error::from_errno("post-copy: userfaultfd API handshake");
    uffdio_register reg{};
    reg.range.start = reinterpret_cast<uintptr_t>(pc->base_);
    reg.range.len = mem.ram_size();
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (::ioctl(pc->uffd_.get(), UFFDIO_REGISTER, &reg) != 0)
        return Error::from_errno("post-copy: registering guest RAM with userfaultfd");
    if ((reg.ioctls & (1ull << _UFFDIO_COPY)) == 0) return Error{"post-copy: userfaultfd cannot copy into guest RAM"};
    pc->stop_ = base::UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    pc->accept_stop_ = base::UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!pc->stop_.valid() || !pc->accept_stop_.valid()) return Error::from_errno("post-copy: eventfd");

    pc->conn_ = std::move(conn);
    pc->live_fd_ = pc->conn_.native_handle();
    pc->recovery_ = std::move(recovery);
    pc->can_recover_ = pc->recovery_.listener.valid() && pc->recovery_.window_ms > 0;
    PostcopyIncoming* self = pc.get();
    pc->fault_thread_ = std::thread([self] { self->fault_loop(); });
    pc->receive_thread_ = std::thread([self] { self->receive_loop(); });
    if (pc->can_recover_) pc->accept_thread_ = std::thread([self] { self->accept_loop(); });
    log_phase("postcopy", std::to_string(pc->needed_count_) + " pages to come; guest RAM registered with userfaultfd" +
                              (pc->can_recover_ ? "; a lost source may reconnect within " +
                                                      std::to_string(pc->recovery_.window_ms) + " ms"
                                                : std::string()));
    return pc;
}

PostcopyIncoming::~PostcopyIncoming() {
    {
        // Under mu_: the receive thread swaps in a resumed link under it too,
        // so this shuts down whichever link it has.
        std::lock_guard lock(mu_);
        stopping_ = true;
        const int fd = live_fd_.load();
        if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
        cv_.notify_all();
    }
    if (receive_thread_.joinable()) receive_thread_.join();
    release_faults();
    uint64_t one = 1;
    (void)!::write(accept_stop_.get(), &one, sizeof one);
    if (accept_thread_.joinable()) accept_thread_.join();
}

Result<void> PostcopyIncoming::send_json(FrameType t, const json& j) {
    std::lock_guard lock(send_mu_);
    return conn_.send_json(t, j);
}

Result<void> PostcopyIncoming::announce_running() {
    std::lock_guard lock(send_mu_);
    running_announced_ = true;  // runs even if this reply is lost: a resumed source hears it then
    return conn_.send_json(FrameType::Reply, json{{"ok", true}, {"running", true}});
}

void PostcopyIncoming::on_failure(std::function<void(const std::string&)> fn) {
    std::string already;
    {
        std::lock_guard lock(mu_);
        if (failure_.empty()) {
            on_failure_ = std::move(fn);
            return;
        }
        already = failure_;
    }
    fn(already);
}

std::string PostcopyIncoming::failure() const {
    std::lock_guard lock(mu_);
    return failure_;
}

PostcopyIncoming::Figures PostcopyIncoming::figures() const {
    std::lock_guard lock(mu_);
    return Figures{needed_count_, requested_count_.load(), received_count_.load(), zero_filled_.load(), complete_ms_,
                   done_, recoveries_, paused_ms_};
}

bool PostcopyIncoming::wait_complete(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return done_ || !failure_.empty(); }) && done_;
}

// ---- faults -------------------------------------------------------------------

void PostcopyIncoming::fault_loop() {
    pthread_setname_np(pthread_self(), "popek-uffd");
    std::array<uffd_msg, 64> msgs;
    std::vector<uint64_t> wanted;
    for (;;) {
        pollfd fds[2] = {{uffd_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (fds[1].revents != 0) return;
        const ssize_t n = ::read(uffd_.get(), msgs.data(), sizeof msgs);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            return;
        }
        wanted.clear();
        for (size_t i = 0; i < static_cast<size_t>(n) / sizeof(uffd_msg); ++i) {
            if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
            const uint64_t addr = msgs[i].arg.pagefault.address & ~(kPage - 1);
            const uint64_t p = (addr - reinterpret_cast<uintptr_t>(base_)) / kPage;
            if (addr < reinterpret_cast<uintptr_t>(base_) || p >= pages_) continue;
            if (bit(needed_, p) && !bit(arrived_.get(), p)) {
                const uint64_t mask = 1ull << (p % 64);
                if ((requested_[p / 64].fetch_or(mask, std::memory_order_acq_rel) & mask) == 0) wanted.push_back(p);
                continue;  // the page's arrival wakes the thread
            }
            // A page the destination keeps (a hole: zero), or one already
            // placed (the event is stale, or it was zeroed since): zero-fill
            // if it is missing, else just wake the thread.
            uffdio_copy c{};
            c.dst = addr;
            c.src = reinterpret_cast<uintptr_t>(kZeroPage.data());
            c.len = kPage;
            if (::ioctl(uffd_.get(), UFFDIO_COPY, &c) == 0) {
                ++zero_filled_;
            } else if (errno == EEXIST) {
                uffdio_range r{addr, kPage};
                (void)::ioctl(uffd_.get(), UFFDIO_WAKE, &r);
            }
        }
        requested_count_ += wanted.size();
        for (size_t i = 0; i < wanted.size(); i += kMaxPageRequest) {
            const size_t k = std::min(kMaxPageRequest, wanted.size() - i);
            std::lock_guard lock(send_mu_);
            if (!conn_.send(FrameType::PageRequest, encode_page_request(std::span(wanted).subspan(i, k))).ok()) {
                // The receive thread sees the link go; a resumed link asks
                // again for every requested page not yet arrived.
                conn_.shutdown();
                break;
            }
        }
    }
}

// ---- arrivals -----------------------------------------------------------------

Result<void> PostcopyIncoming::place(uint64_t index, const uint8_t* page) {
    digests_[index] = page_digest(index, page);
    uffdio_copy c{};
    c.dst = reinterpret_cast<uintptr_t>(base_) + index * kPage;
    c.src = reinterpret_cast<uintptr_t>(page);
    c.len = kPage;
    for (;;) {
        if (::ioctl(uffd_.get(), UFFDIO_COPY, &c) == 0) break;
        if (errno == EAGAIN || errno == EINTR) {
            c.copy = 0;
            continue;
        }
        if (errno == EEXIST)
            return Error{"post-copy: page " + std::to_string(index) + " was populated before it arrived"};
        return Error::from_errno("post-copy: placing page " + std::to_string(index));
    }
    arrived_[index / 64].fetch_or(1ull << (index % 64), std::memory_order_acq_rel);
    ++received_count_;
    return {};
}

Result<PostcopyIncoming::Step> PostcopyIncoming::handle_frame(const Frame& f, std::string& why) {
    switch (f.type) {
        case FrameType::Pages: {
            // A record that fails its check is not placed: with recovery the
            // link is dropped and the source sends the page again.
            bool placing_failed = false;
            auto n = parse_page_batch(f.payload, [&](uint64_t index, std::span<const uint8_t> record) -> Result<void> {
                if (index >= pages_ || !bit(needed_, index))
                    return Error{"post-copy: the source sent page " + std::to_string(index) + ", which is not needed"};
                alignas(64) std::array<uint8_t, kPage> page;
                POPEK_TRY(compress::decode_page(record, index, compress::MutPage(page), *codec_));
                if (bit(arrived_.get(), index)) return {};  // requested and pushed both: the first counts
                auto r = place(index, page.data());
                placing_failed = !r.ok();
                return r;
            });
            if (n.ok()) return Step::More;
            if (placing_failed || !can_recover_) return n.error();
            why = "a damaged pages frame: " + n.error().message;
            return Step::Resync;
        }
        case FrameType::RoundEnd: {
            POPEK_ASSIGN_OR_RETURN(json j, frame_json(f));
            auto dg = j.find("digest");
            if (!j.value("postcopy_end", false) || dg == j.end() || !dg->is_number_unsigned())
                return Error{"post-copy: a round-end frame without postcopy_end and digest"};
            if (received_count_.load() != needed_count_)
                return Error{"post-copy: the source ended with " + std::to_string(needed_count_ - received_count_.load()) +
                             " of " + std::to_string(needed_count_) + " needed pages missing"};
            uffdio_range r{reinterpret_cast<uintptr_t>(base_), ram_size_};
            if (::ioctl(uffd_.get(), UFFDIO_UNREGISTER, &r) != 0)
                return Error::from_errno("post-copy: unregistering guest RAM from userfaultfd");
            const uint64_t mine = combine_page_digests(digests_);
            const uint64_t theirs = dg->get<uint64_t>();
            if (mine != theirs)
                return Error{"post-copy: guest RAM digest " + std::to_string(mine) + " differs from the source's " +
                             std::to_string(theirs)};
            {
                std::lock_guard lock(mu_);
                complete_ms_ = std::chrono::duration<double, std::milli>(Clock::now() - t0_).count();
            }
            const Figures fig = figures();
            json reply{{"ok", true},
                       {"digest", mine},
                       {"postcopy", {{"needed_pages", fig.needed},
                                     {"pages_requested", fig.requested},
                                     {"pages_received", fig.received},
                                     {"pages_zero_filled", fig.zero_filled},
                                     {"complete_ms", fig.complete_ms},
                                     {"recoveries", fig.recoveries},
                                     {"paused_ms", fig.paused_ms}}}};
            {
                std::lock_guard lock(mu_);
                final_reply_ = reply;
            }
            // Every page is here and checked: the VM runs on whatever
            // happens to this reply (a source that resumes gets it again).
            if (auto sent = send_json(FrameType::Reply, reply); !sent.ok())
                log_phase("postcopy", "complete, but the final reply did not go out: " + sent.error().message);
            log_phase("postcopy", "complete: " + std::to_string(fig.received) + " pages (" +
                                      std::to_string(fig.requested) + " requested on demand, " +
                                      std::to_string(fig.zero_filled) + " zero-filled) in " +
                                      std::to_string(static_cast<int>(fig.complete_ms)) + " ms; digest " +
                                      std::to_string(mine) + " matches the source's");
            return Step::Done;
        }
        case FrameType::Abort: {
            auto j = frame_json(f);
            return Error{"the source aborted post-copy: " +
                         (j.ok() ? j->value("error", std::string("no reason given")) : std::string("?"))};
        }
        default:
            return Error{std::string("post-copy: the source sent an unexpected ") + frame_type_name(f.type) + " frame"};
    }
}

void PostcopyIncoming::receive_loop() {
    pthread_setname_np(pthread_self(), "popek-postcopy");
    for (;;) {
        std::string lost;
        auto f = conn_.receive(kSourceSilenceMs);
        if (!f) {
            lost = "lost the source before every page arrived: " + f.error().message;
        } else {
            auto r = handle_frame(*f, lost);
            if (!r) {
                // Abort, not a refusing Reply: the source must not take it for a
                // refusal before the VM ran here and resume.
                (void)send_json(FrameType::Abort, json{{"error", r.error().message}});
                fail(r.error().message);
                break;
            }
            if (*r == Step::Done) {
                std::lock_guard lock(mu_);
                done_ = true;
                cv_.notify_all();
                break;
            }
            if (*r == Step::More) continue;
        }
        if (auto why = recover(lost); !why.empty()) {
            fail(why);
            break;
        }
    }
    release_faults();
}

// ---- recovery -----------------------------------------------------------------

std::string PostcopyIncoming::recover(const std::string& lost) {
    if (!can_recover_) return lost;
    std::string why = lost;
    {
        // Done with this link (it may still stand after damage or silence):
        // the source sees it close and reconnects.
        std::lock_guard send_lock(send_mu_);
        conn_.shutdown();
    }
    const auto t0 = Clock::now();
    const auto deadline = t0 + std::chrono::milliseconds(recovery_.window_ms);
    log_phase("postcopy", "paused: " + lost + "; the VM runs on, waiting up to " +
                              std::to_string(recovery_.window_ms) + " ms for the source to reconnect");
    for (;;) {
        std::unique_lock lock(mu_);
        if (recoveries_ >= kMaxRecoveries)
            return why + "; gave up after " + std::to_string(kMaxRecoveries) + " reconnections";
        cv_.wait_until(lock, deadline, [&] { return pending_.has_value() || stopping_; });
        if (stopping_) return why;
        if (!pending_)
            return why + "; the source did not reconnect within " + std::to_string(recovery_.window_ms) + " ms";
        {
            std::lock_guard send_lock(send_mu_);
            conn_ = std::move(*pending_);  // closes the lost link
            live_fd_ = conn_.native_handle();
        }
        pending_.reset();
        lock.unlock();
        if (auto r = resync(); !r.ok()) {
            why = "resuming: " + r.error().message;
            continue;
        }
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        {
            std::lock_guard relock(mu_);
            ++recoveries_;
            paused_ms_ += ms;
        }
        log_phase("postcopy", "resumed: the source reconnected after " + std::to_string(static_cast<int>(ms)) + " ms; " +
                                  std::to_string(needed_count_ - received_count_.load()) + " pages still to come");
        return "";
    }
}

// The resumed link's first words: what arrived (the source sends every
// needed page not in it) and, again, the pages vCPUs wait for.
Result<void> PostcopyIncoming::resync() {
    codec_ = std::make_unique<compress::CodecContext>(compress::CodecOptions{.cache_pages = cache_pages_});
    json::binary_t arrived;
    const size_t words = (pages_ + 63) / 64;
    arrived.reserve(words * 8);
    std::vector<uint64_t> again;
    for (size_t w = 0; w < words; ++w) {
        const uint64_t a = arrived_[w].load(std::memory_order_acquire);
        for (int i = 0; i < 8; ++i) arrived.push_back(static_cast<uint8_t>(a >> (8 * i)));
        for (uint64_t r = requested_[w].load(std::memory_order_acquire) & ~a; r != 0; r &= r - 1)
            again.push_back(w * 64 + static_cast<uint64_t>(std::countr_zero(r)));
    }
    std::lock_guard lock(send_mu_);
    POPEK_TRY(conn_.send_json(FrameType::Reply, json{{"ok", true},
                                                     {"resumed", true},
                                                     {"running", running_announced_},
                                                     {"arrived", json::binary(std::move(arrived))},
                                                     {"arrived_pages", received_count_.load()}}));
    for (size_t i = 0; i < again.size(); i += kMaxPageRequest) {
        const size_t k = std::min(kMaxPageRequest, again.size() - i);
        POPEK_TRY(conn_.send(FrameType::PageRequest, encode_page_request(std::span(again).subspan(i, k))));
    }
    return {};
}

// Takes new connections on the socket the destination listened on; one
// whose first frame is a Resume with this migration's token replaces the
// link (the old one is shut down, which wakes the receive thread). Anything
// else gets a refusing Reply and is closed.
// After post-copy completed it goes on for the recovery window, answering
// a resume with the final reply (the source may have missed it).
void PostcopyIncoming::accept_loop() {
    pthread_setname_np(pthread_self(), "popek-pc-accept");
    std::optional<Clock::time_point> grace_end;
    for (;;) {
        int timeout_ms = -1;
        if (grace_end) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*grace_end - Clock::now()).count();
            if (left <= 0) break;
            timeout_ms = static_cast<int>(left);
        }
        pollfd fds[3] = {{recovery_.listener.get(), POLLIN, 0},
                         {accept_stop_.get(), POLLIN, 0},
                         {grace_end ? -1 : stop_.get(), POLLIN, 0}};
        const int ready = ::poll(fds, 3, timeout_ms);
        if (ready < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (fds[1].revents != 0) break;
        if (fds[2].revents != 0) {  // post-copy ended
            std::lock_guard lock(mu_);
            if (final_reply_.is_null()) break;
            grace_end = Clock::now() + std::chrono::milliseconds(recovery_.window_ms);
            continue;
        }
        if (ready == 0) continue;
        if ((fds[0].revents & POLLIN) == 0) {
            if (fds[0].revents != 0) break;  // the listener broke
            continue;
        }
        auto c = tcp_accept(recovery_.listener.get());
        if (!c) continue;
        c->set_send_timeout(recovery_.send_timeout_ms);
        auto f = c->receive(kResumeFrameMs);
        std::string refusal;
        if (!f) {
            refusal = "no resume frame: " + f.error().message;
        } else if (f->type != FrameType::Resume) {
            refusal = std::string("this destination is in post-copy and takes only a resume, not a ") +
                      frame_type_name(f->type) + " frame";
        } else {
            auto j = frame_json(*f);
            const json token = j.ok() ? j->value("token", json()) : json();
            if (!token.is_number_unsigned() || token.get<uint64_t>() != recovery_.token)
                refusal = "the resume token is not the one of the migration this destination runs";
        }
        if (!refusal.empty()) {
            log_phase("postcopy", "refused a connection: " + refusal);
            (void)c->send_json(FrameType::Reply, json{{"ok", false}, {"error", refusal}});
            continue;
        }
        std::unique_lock lock(mu_);
        if (!final_reply_.is_null()) {
            json reply = final_reply_;
            lock.unlock();
            reply["resumed"] = true;
            reply["completed"] = true;
            log_phase("postcopy", "the source reconnected after post-copy completed: it gets the final reply again");
            (void)c->send_json(FrameType::Reply, reply);
            continue;
        }
        if (stopping_ || !failure_.empty()) break;
        // The old link is dead to the source: wake the receive thread from it
        // (before publishing: the swap happens only after, so this is the old socket).
        const int fd = live_fd_.load();
        if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
        pending_ = std::move(c).value();
        cv_.notify_all();
    }
    recovery_.listener.reset();  // the port is free once post-copy ended
}

void PostcopyIncoming::fail(const std::string& why) {
    std::function<void(const std::string&)> cb;
    {
        std::lock_guard lock(mu_);
        if (stopping_) return;  // the VM ended first: nothing is lost
        failure_ = why;
        cb = on_failure_;
        cv_.notify_all();
    }
    log_phase("failed", "post-copy: " + why);
    if (cb) cb(why);
}

// Ends the fault thread and closes the userfaultfd: threads still blocked on
// a missing page retry it as an ordinary (zero-filled) fault. After success
// no page is missing; after a failure the VM is being stopped.
void PostcopyIncoming::release_faults() {
    if (released_) return;
    released_ = true;
    uint64_t one = 1;
    (void)!::write(stop_.get(), &one, sizeof one);
    if (fault_thread_.joinable()) fault_thread_.join();
    uffd_.reset();
}

}  // namespace popek::migration
