// Failure safety of live migration between two "hosts": network namespaces
// joined by a veth pair (netns.hpp). The source runs in namespace a, the
// destination in b; a frame-aware proxy of this test, listening in b, sits
// between them so that each phase is hit deterministically: it holds the
// stream at a chosen frame (the sides then wait right in that phase), then
// the test kills a side, takes the link down or corrupts a frame.
//
// Whatever fails before the destination's commit reply reaches the source,
// the VM must keep running on exactly one side: the source, finishing its
// computation with the uninterrupted result.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <ostream>
#include <regex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "migration/stream.hpp"
#include "netns.hpp"
#include "process.hpp"

namespace popek::test {
namespace {

using namespace std::chrono_literals;
using migration::FrameType;

// Long enough (~6 s here, idle) that the migration and the failure happen while it runs.
constexpr const char* kCompute = "compute 120000";
// popek migrate --timeout-ms of these tests.
constexpr int kTimeoutMs = 5000;

const std::string& reference_checksum() {
    static const std::string sum = [] {
        auto r = run_process({POPEK_BIN, "run", "--kernel", POPEK_PROBE, "--cmdline", kCompute, "--memory", "64M"}, 180s);
        return checksum_of(r.out);
    }();
    return sum;
}

// ---- the proxy ------------------------------------------------------------------

enum class Dir { ToDest, ToSource };
enum class Action { Forward, Hold, Corrupt, CorruptResealed };
// nth: how many frames of this type this direction has carried, this one included.
using Policy = std::function<Action(Dir dir, FrameType type, int nth)>;

bool read_exact(int fd, uint8_t* p, size_t n) {
    while (n > 0) {
        const ssize_t r = ::read(fd, p, n);
        if (r <= 0) return false;
        p += r;
        n -= static_cast<size_t>(r);
    }
    return true;
}

bool write_all(int fd, const uint8_t* p, size_t n) {
    while (n > 0) {
        const ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
        if (r <= 0) return false;
        p += r;
        n -= static_cast<size_t>(r);
    }
    return true;
}

// Listens on ADDR:PORT in a namespace, accepts the source, connects to the
// destination and forwards frames both ways as the policy says. Hold stops a
// direction at that frame (not forwarded) until close(). Either end of a link
// closing closes that link. Later connections (a post-copy source
// reconnecting) get links of their own, forwarded without the policy.
class MigrationProxy {
public:
    MigrationProxy(const std::string& ns, const std::string& addr, uint16_t port, uint16_t dest_port, Policy policy)
        : policy_(std::move(policy)) {
        NetnsEnter in(ns);
        if (!in.ok()) return;
        listen_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        // Sockets belong to the namespace they are made in: those for the
        // destination side of every link are made here.
        for (int& fd : spare_dest_) fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        ::setsockopt(listen_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a = sockaddr_of(addr, port);
        if (::bind(listen_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listen_, 4) != 0) return;
        dest_addr_ = sockaddr_of(addr, dest_port);
        ok_ = true;
        accept_ = std::thread([this] { run(); });
    }
    ~MigrationProxy() {
        close();
        if (accept_.joinable()) accept_.join();
        for (auto& t : pumps_) t.join();
        for (int fd : spare_dest_)
            if (fd >= 0) ::close(fd);
        for (const Link& l : links_)
            for (int fd : {l.source, l.dest}) ::close(fd);
        if (listen_ >= 0) ::close(listen_);
    }
    MigrationProxy(const MigrationProxy&) = delete;
    MigrationProxy& operator=(const MigrationProxy&) = delete;

    [[nodiscard]] bool ok() const { return ok_; }
    // Waits until a frame is held; the description of that frame or "".
    std::string wait_held(std::chrono::milliseconds timeout) {
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, timeout, [&] { return !held_.empty() || closed_; });
        return held_;
    }
    // Ends every link and takes no more (the sides see them close).
    void close() {
        std::lock_guard lock(mu_);
        closed_ = true;
        if (listen_ >= 0) ::shutdown(listen_, SHUT_RDWR);
        for (const Link& l : links_) {
            ::shutdown(l.source, SHUT_RDWR);
            ::shutdown(l.dest, SHUT_RDWR);
        }
        cv_.notify_all();
    }
    // Resets the links so far (both sides see them close) but takes new ones.
    void drop() {
        std::lock_guard lock(mu_);
        for (const Link& l : links_) {
            ::shutdown(l.source, SHUT_RDWR);
            ::shutdown(l.dest, SHUT_RDWR);
        }
    }
    // How many connections the source made through the proxy.
    [[nodiscard]] size_t links() {
        std::lock_guard lock(mu_);
        return links_.size();
    }
    [[nodiscard]] bool corrupted() const { return corrupted_; }

private:
    struct Link {
        int source, dest;
    };
    static constexpr size_t kMaxLinks = 4;

    static sockaddr_in sockaddr_of(const std::string& addr, uint16_t port) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        ::inet_pton(AF_INET, addr.c_str(), &a.sin_addr);
        return a;
    }

    void run() {
        for (size_t n = 0; n < kMaxLinks; ++n) {
            const int s = ::accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
            if (s < 0) return;
            const int d = std::exchange(spare_dest_[n], -1);
            {
                std::lock_guard lock(mu_);
                links_.push_back({s, d});
                if (closed_) return;
            }
            if (::connect(d, reinterpret_cast<sockaddr*>(&dest_addr_), sizeof dest_addr_) != 0) {
                end_link(s, d);
                continue;
            }
            const bool first = n == 0;
            pumps_.emplace_back([this, s, d, first] { pump(Dir::ToDest, s, d, first); });
            pumps_.emplace_back([this, s, d, first] { pump(Dir::ToSource, d, s, first); });
        }
    }

    void end_link(int s, int d) {
        std::lock_guard lock(mu_);
        ::shutdown(s, SHUT_RDWR);
        ::shutdown(d, SHUT_RDWR);
    }

    void pump(Dir dir, int from, int to, bool with_policy) {
        int counts[static_cast<int>(migration::kLastFrameType) + 1] = {};
        for (;;) {
            std::vector<uint8_t> frame(migration::kFrameHeaderSize);
            if (!read_exact(from, frame.data(), frame.size())) break;
            uint32_t len;
            std::memcpy(&len, frame.data() + 4, 4);  // little-endian on x86
            const uint8_t type = frame[2];
            if (len > migration::kMaxFramePayload || type == 0 ||
                type > static_cast<uint8_t>(migration::kLastFrameType))
                break;
            frame.resize(migration::kFrameHeaderSize + len);
            if (!read_exact(from, frame.data() + migration::kFrameHeaderSize, len)) break;
            const Action a =
                with_policy ? policy_(dir, static_cast<FrameType>(type), ++counts[type]) : Action::Forward;
            if (a == Action::Hold) {
                std::unique_lock lock(mu_);
                held_ = std::string(dir == Dir::ToDest ? "to the destination: " : "to the source: ") +
                        migration::frame_type_name(static_cast<FrameType>(type)) + " #" +
                        std::to_string(counts[type]);
                cv_.notify_all();
                cv_.wait(lock, [&] { return closed_; });
                return;
            }
            if ((a == Action::Corrupt || a == Action::CorruptResealed) && len > 0) {
                frame[migration::kFrameHeaderSize + len / 2] ^= 0x40;
                if (a == Action::CorruptResealed) {
                    // A fresh frame check over the damaged payload: only the
                    // layers above the frame can notice now.
                    uint64_t seed;
                    std::memcpy(&seed, frame.data(), 8);
                    const uint64_t check = XXH3_64bits_withSeed(frame.data() + migration::kFrameHeaderSize, len, seed);
                    std::memcpy(frame.data() + 8, &check, 8);
                }
                corrupted_ = true;
            }
            if (!write_all(to, frame.data(), frame.size())) break;
        }
        end_link(from, to);
    }

    Policy policy_;
    int listen_ = -1;
    int spare_dest_[kMaxLinks] = {-1, -1, -1, -1};
    sockaddr_in dest_addr_{};
    bool ok_ = false;
    std::atomic<bool> corrupted_{false};
    std::mutex mu_;
    std::condition_variable cv_;
    std::string held_;
    bool closed_ = false;
    std::vector<Link> links_;
    std::thread accept_;
    std::vector<std::thread> pumps_;
};

// ---- two hosts, a source VM, a destination, a proxy --------------------------------

uint16_t next_port() {
    static uint16_t p = static_cast<uint16_t>(20000 + ::getpid() % 20000);
    return ++p;
}

struct Hosts {
    NetnsPair net;
    TempDir dir;
    uint16_t dest_port = next_port(), proxy_port = next_port();
    std::string sock = dir.path("api.sock");

    std::unique_ptr<Child> start_dest() {
        auto d = std::make_unique<Child>(net.exec_in(
            1, {POPEK_BIN, "run", "--incoming", "tcp:" + net.addr(1) + ":" + std::to_string(dest_port)}));
        const auto deadline = std::chrono::steady_clock::now() + 30s;
        while (!pid_listens(d->pid(), dest_port) && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(5ms);
        return d;
    }
    std::unique_ptr<Child> start_source(const std::string& cmdline = kCompute, const std::string& memory = "256M") {
        return std::make_unique<Child>(net.exec_in(0, {POPEK_BIN, "run", "--kernel", POPEK_PROBE, "--cmdline", cmdline,
                                                       "--memory", memory, "--api-sock", sock}));
    }
    // Between the source and the destination's host, the stream as `policy` says.
    std::unique_ptr<MigrationProxy> start_proxy(Policy policy) {
        return std::make_unique<MigrationProxy>(net.name(1), net.addr(1), proxy_port, dest_port, std::move(policy));
    }
    // A short deadline: a dead link or a silent peer fails the migration in 5 s.
    std::unique_ptr<Child> start_migrate(const std::vector<std::string>& extra = {}) {
        std::vector<std::string> argv{POPEK_BIN, "migrate", "--api-sock", sock, "--to",
                                      "tcp:" + net.addr(1) + ":" + std::to_string(proxy_port),
                                      "--timeout-ms", std::to_string(kTimeoutMs)};
        argv.insert(argv.end(), extra.begin(), extra.end());
        return std::make_unique<Child>(argv);
    }
};

// The usual start of a test: both hosts, the destination, the proxy as
// `policy` says, and a source VM that printed `ready`.
struct TwoHostRun {
    Hosts h;
    std::unique_ptr<Child> dest, source, migrate;
    std::unique_ptr<MigrationProxy> proxy;

    void start(Policy policy, const std::string& cmdline = kCompute, const std::string& memory = "256M",
               const char* ready = "PROBE-READY") {
        ASSERT_TRUE(h.net.ok()) << h.net.error();
        dest = h.start_dest();
        proxy = h.start_proxy(std::move(policy));
        ASSERT_TRUE(proxy->ok());
        source = h.start_source(cmdline, memory);
        ASSERT_TRUE(source->wait_for_line(ready, 60s)) << source->err();
    }
    // Starts `popek migrate`; waits until the proxy holds a frame and says which ("": none).
    std::string migrate_until_held(const std::vector<std::string>& extra = {}) {
        migrate = h.start_migrate(extra);
        return proxy->wait_held(120s);
    }
};

// The source is running (API) and completes the whole computation correctly.
void expect_source_finishes(Child& source, const std::string& sock) {
    auto info = run_process({POPEK_BIN, "ctl", "--api-sock", sock, "info"}, 30s);
    EXPECT_EQ(info.exit_code, 0) << info.err;
    EXPECT_NE(info.out.find("\"running\""), std::string::npos) << info.out;
    auto src = source.finish(180s);
    ASSERT_EQ(src.exit_code, 0) << src.err;
    EXPECT_EQ(checksum_of(src.out), reference_checksum()) << src.out;
    EXPECT_NE(src.err.find("popek: migration: failed"), std::string::npos) << src.err;
    EXPECT_EQ(src.err.find("popek: migration: commitment"), std::string::npos) << src.err;
}

// The destination ended without running the guest.
void expect_no_vm_on(ProcessResult& d) {
    EXPECT_NE(d.exit_code, 0);
    EXPECT_EQ(d.out.find("PROBE-"), std::string::npos) << "the guest ran on the destination: " << d.out;
}

// ---- the destination dies at each phase --------------------------------------------

struct Phase {
    const char* name;
    Policy hold;               // where the proxy stops the stream
    const char* dest_logged;   // the destination's last phase line (proves where it was)
    const char* dest_not_yet;  // a line it must not have reached ("" for none)
};

// gtest prints parameters in test listings: the name, not the bytes.
void PrintTo(const Phase& p, std::ostream* os) { *os << p.name; }

Policy hold_at(Dir d, FrameType t, int nth) {
    return [=](Dir dir, FrameType type, int n) { return dir == d && type == t && n == nth ? Action::Hold : Action::Forward; };
}

// The destination's ready reply: the first reply after the state went by
// (each round end is acknowledged with a reply too, so its number varies).
Policy hold_ready_reply() {
    auto state_seen = std::make_shared<std::atomic<bool>>(false);
    return [=](Dir dir, FrameType type, int) {
        if (dir == Dir::ToDest && type == FrameType::State) *state_seen = true;
        return dir == Dir::ToSource && type == FrameType::Reply && state_seen->load() ? Action::Hold : Action::Forward;
    };
}

class DestinationKilled : public ::testing::TestWithParam<Phase> {};

TEST_P(DestinationKilled, SourceResumesAndFinishesItsWork) {
    const Phase& phase = GetParam();
    ASSERT_FALSE(reference_checksum().empty());
    TwoHostRun s;
    ASSERT_NO_FATAL_FAILURE(s.start(phase.hold));
    const std::string held = s.migrate_until_held();
    ASSERT_NE(held, "") << "the migration never reached " << phase.name << s.migrate->err();
    // The destination logs a phase just after acting on it: read its stderr
    // until the line is there (it waits in the next phase meanwhile).
    for (auto t0 = std::chrono::steady_clock::now();
         s.dest->err().find(phase.dest_logged) == std::string::npos && std::chrono::steady_clock::now() - t0 < 10s;)
        (void)s.dest->wait_for_line("PROBE-NEVER", 50ms);
    ::kill(s.dest->pid(), SIGKILL);
    auto d = s.dest->finish(30s);
    EXPECT_NE(d.err.find(phase.dest_logged), std::string::npos) << held << "\n" << d.err;
    if (*phase.dest_not_yet) {
        EXPECT_EQ(d.err.find(phase.dest_not_yet), std::string::npos) << d.err;
    }
    s.proxy->close();  // the dead destination's connection closes
    auto m = s.migrate->finish(120s);
    EXPECT_EQ(m.exit_code, 1) << m.out << m.err;
    EXPECT_NE(m.err.find("migration failed"), std::string::npos) << m.err;
    expect_source_finishes(*s.source, s.h.sock);
}

INSTANTIATE_TEST_SUITE_P(
    EachPhase, DestinationKilled,
    ::testing::Values(
        // Accepted, the hello not yet arrived.
        Phase{"initialization", hold_at(Dir::ToDest, FrameType::Hello, 1), "migration: listening",
              "migration: initialization"},
        // Memory and devices reserved, its ok not yet at the source.
        Phase{"reservation", hold_at(Dir::ToSource, FrameType::Reply, 1), "reservation memory and devices ready",
              "precopy round"},
        // Pages of the full pass arriving.
        Phase{"precopy", hold_at(Dir::ToDest, FrameType::Pages, 1), "reservation memory and devices ready",
              "validation"},
        // The source paused and sent the last pages and its state; the state frame is held.
        Phase{"stop-and-copy", hold_at(Dir::ToDest, FrameType::State, 1), "migration: precopy round 0 received",
              "validation"},
        // The destination checked everything and said yes; the source has not heard it.
        Phase{"before commitment", hold_ready_reply(), "validation digest", ""}),
    [](const auto& param_info) {
        std::string n = param_info.param.name;
        for (char& c : n)
            if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
        return n;
    });

// ---- the source dies during pre-copy --------------------------------------------------

TEST(MigrationFailure, SourceKilledDuringPrecopyLeavesNoVmOnTheDestination) {
    TwoHostRun s;
    ASSERT_NO_FATAL_FAILURE(s.start(hold_at(Dir::ToDest, FrameType::Pages, 1)));
    ASSERT_NE(s.migrate_until_held(), "") << s.migrate->err();
    ::kill(s.source->pid(), SIGKILL);
    (void)s.source->finish(30s);
    s.proxy->close();  // the dead source's connection closes
    auto d = s.dest->finish(60s);
    EXPECT_EQ(d.exit_code, 1) << d.err;
    expect_no_vm_on(d);
    // One clear line says why.
    EXPECT_NE(d.err.find("popek: error: incoming migration: receiving pages"), std::string::npos) << d.err;
    (void)s.migrate->finish(30s);
}

// ---- the link goes down ---------------------------------------------------------------

// The source paused and sent its state, which never arrives: the link to the
// destination's host goes down. The source gives up waiting for the
// validation reply after its reply timeout (--timeout-ms) and resumes; the
// destination gives up too and runs nothing.
TEST(MigrationFailure, LinkDownDuringStopAndCopyResumesTheSourceWithinItsTimeout) {
    TwoHostRun s;
    ASSERT_NO_FATAL_FAILURE(s.start(hold_at(Dir::ToDest, FrameType::State, 1)));
    ASSERT_NE(s.migrate_until_held(), "") << s.migrate->err();
    ASSERT_TRUE(s.h.net.set_link(0, false));
    const auto t0 = std::chrono::steady_clock::now();
    auto m = s.migrate->finish(120s);
    const auto waited = std::chrono::steady_clock::now() - t0;
    EXPECT_EQ(m.exit_code, 1) << m.out << m.err;
    EXPECT_NE(m.err.find("sent nothing for " + std::to_string(kTimeoutMs) + " ms"), std::string::npos) << m.err;
    EXPECT_LT(waited, std::chrono::milliseconds(kTimeoutMs) + 10s);
    expect_source_finishes(*s.source, s.h.sock);
    auto d = s.dest->finish(90s);
    expect_no_vm_on(d);
}

// The link goes down while the source is sending pages (its socket buffers
// full): the send deadline (--timeout-ms, TCP_USER_TIMEOUT) fails the
// migration and the source resumes within it, not when TCP gives up (~15 min).
TEST(MigrationFailure, LinkDownDuringPrecopyResumesTheSourceWithinItsTimeout) {
    TwoHostRun s;
    // 256 MiB of data: far more than the socket buffers hold, so the source
    // is still sending when the link goes.
    ASSERT_NO_FATAL_FAILURE(s.start(hold_at(Dir::ToDest, FrameType::Pages, 1), "dirty-rate 256 0", "512M", "PROBE-CLOCK"));
    ASSERT_NE(s.migrate_until_held(), "") << s.migrate->err();
    ASSERT_TRUE(s.h.net.set_link(0, false));
    const auto t0 = std::chrono::steady_clock::now();
    auto m = s.migrate->finish(90s);
    const auto waited = std::chrono::steady_clock::now() - t0;
    EXPECT_FALSE(m.timed_out) << "the source did not give up within 90 s";
    EXPECT_EQ(m.exit_code, 1) << m.out << m.err;
    EXPECT_NE(m.err.find("took nothing for " + std::to_string(kTimeoutMs) + " ms"), std::string::npos) << m.err;
    // One deadline, not one per sending lane queued behind the first (each
    // used to wait its own --timeout-ms, until TCP's backstop at twice it
    // failed the last one with "Network is unreachable").
    EXPECT_LT(waited, std::chrono::milliseconds(kTimeoutMs) + 4s);
    auto info = run_process({POPEK_BIN, "ctl", "--api-sock", s.h.sock, "info"}, 30s);
    EXPECT_NE(info.out.find("\"running\""), std::string::npos) << info.out << info.err;
}

// The destination validated and built the VM, and its ready reply is lost
// with the link: the source times out waiting for it and resumes; the
// destination, which runs the VM only on the source's commit, times out too
// and exits without running it. Before the commit handshake both ran it.
TEST(MigrationFailure, LostCommitReplyLeavesTheVmRunningOnOneSideOnly) {
    ASSERT_FALSE(reference_checksum().empty());
    TwoHostRun s;
    ASSERT_NO_FATAL_FAILURE(s.start(hold_ready_reply()));
    ASSERT_NE(s.migrate_until_held(), "") << s.migrate->err();
    ASSERT_TRUE(s.h.net.set_link(0, false));
    (void)s.migrate->finish(120s);
    auto src = s.source->finish(180s);
    auto d = s.dest->finish(180s);
    const bool src_ran = !checksum_of(src.out).empty(), dst_ran = !checksum_of(d.out).empty();
    EXPECT_TRUE(src_ran != dst_ran) << "source finished: " << src_ran << ", destination finished: " << dst_ran;
}

// The source heard ready and sent its commit, which is lost with the link:
// the source, having let go, stays stopped; the destination never hears the
// commit and does not run the VM either. The VM is lost, never run twice:
// the two-generals limit the handshake documents (migration/stream.hpp).
TEST(MigrationFailure, LostCommitLeavesTheVmRunningNowhereNotTwice) {
    TwoHostRun s;
    ASSERT_NO_FATAL_FAILURE(s.start(hold_at(Dir::ToDest, FrameType::Commit, 1)));
    ASSERT_NE(s.migrate_until_held(), "") << s.migrate->err();
    ASSERT_TRUE(s.h.net.set_link(0, false));
    (void)s.migrate->finish(60s);
    auto d = s.dest->finish(60s);
    expect_no_vm_on(d);
    EXPECT_NE(d.err.find("no commit from the source"), std::string::npos) << d.err;
    auto src = s.source->finish(60s);
    EXPECT_FALSE(src.timed_out) << "the source VM did not stop after its commit";
    EXPECT_TRUE(checksum_of(src.out).empty()) << "the source resumed after its commit: " << src.out;
    EXPECT_NE(src.err.find("popek: migration: commitment"), std::string::npos) << src.err;
}

// ---- post-copy: the link is lost after the switch ---------------------------------------
//
// The VM runs on the destination while pages still come from the source: a
// lost link cannot send the VM back. Both sides pause post-copy instead (the
// destination's vCPUs run on, waiting on the pages they touch), the source
// reconnects with the switch's token and the migration finishes with every
// page: the computation ends on the destination with the uninterrupted result.

// Pushed pages trickle (32 pages every 300 ms) so that post-copy lasts
// seconds and the link can fail in the middle of it.
constexpr const char* kSlowPushUs = "300000";

struct PostcopyRun : TwoHostRun {
    ScopedEnv slow{"POPEK_TEST_POSTCOPY_PUSH_DELAY_US", kSlowPushUs};

    // Starts the migration in pure post-copy and waits until the destination
    // runs the VM with pages missing.
    void start_postcopy(Policy policy = [](Dir, FrameType, int) { return Action::Forward; }) {
        ASSERT_NO_FATAL_FAILURE(start(std::move(policy)));
        migrate = h.start_migrate({"--postcopy", "--postcopy-after-rounds", "0", "--postcopy-recover-ms", "60000"});
        wait_for_text(*dest, "pages are missing", 60s);
    }
    static void wait_for_text(Child& c, const char* text, std::chrono::seconds timeout) {
        for (auto t0 = std::chrono::steady_clock::now();
             c.err().find(text) == std::string::npos && std::chrono::steady_clock::now() - t0 < timeout;)
            (void)c.wait_for_line("PROBE-NEVER", 50ms);
        ASSERT_NE(c.err().find(text), std::string::npos) << "no '" << text << "' in:\n" << c.err();
    }
    // The migration completed after a lost link, the destination finishes
    // the computation with the uninterrupted result, the source not.
    // `resumed`: the source took post-copy back (else it reconnected only
    // to hear the destination had completed).
    void expect_completed_after_recovery(bool resumed = true) {
        auto m = migrate->finish(180s);
        ASSERT_EQ(m.exit_code, 0) << m.out << m.err;
        const auto report = report_of(m);
        EXPECT_TRUE(report.value("digest_match", false)) << m.out;
        const auto pc = report.value("postcopy", nlohmann::json::object());
        EXPECT_GE(pc.value("recoveries", 0u), 1u) << m.out;
        if (resumed) {
            EXPECT_GE(pc.value("destination", nlohmann::json::object()).value("recoveries", 0u), 1u) << m.out;
        }
        EXPECT_GE(proxy->links(), 2u);
        auto src = source->finish(60s);
        EXPECT_EQ(src.exit_code, 0) << src.err;
        EXPECT_EQ(checksum_of(src.out), "") << "the source must not finish what it handed over";
        EXPECT_NE(src.err.find(resumed ? "postcopy resumed after" : "the destination had completed post-copy"),
                  std::string::npos)
            << src.err;
        auto d = dest->finish(180s);
        EXPECT_EQ(d.exit_code, 0) << d.err;
        EXPECT_EQ(checksum_of(d.out), reference_checksum()) << d.out;
        EXPECT_NE(d.err.find("matches the source's"), std::string::npos) << d.err;
        std::printf("recovered %u time(s), paused %.0f ms\nsource: %s\ndestination: %s\n", pc.value("recoveries", 0u),
                    pc.value("paused_ms", 0.0), line_starting(src.err, "popek: migration: postcopy paused").c_str(),
                    line_starting(d.err, "popek: migration: postcopy resumed").c_str());
    }
};

// The link is reset (both ends see it close) while pages are missing.
TEST(PostcopyRecovery, ALinkResetAfterTheSwitchIsTakenBackAndNothingIsLost) {
    ASSERT_FALSE(reference_checksum().empty());
    PostcopyRun r;
    ASSERT_NO_FATAL_FAILURE(r.start_postcopy());
    r.proxy->drop();
    ASSERT_NO_FATAL_FAILURE(r.expect_completed_after_recovery());
    EXPECT_EQ(r.dest->err().find("postcopy complete"), r.dest->err().rfind("postcopy complete"));
}

// The link goes down and stays down past the source's --timeout-ms: the
// source gives up on that connection (nothing taken for 5 s), keeps trying
// to reconnect, and does once the link is back.
TEST(PostcopyRecovery, ALinkDownLongerThanTheTimeoutIsTakenBackWhenItReturns) {
    ASSERT_FALSE(reference_checksum().empty());
    PostcopyRun r;
    ASSERT_NO_FATAL_FAILURE(r.start_postcopy());
    ASSERT_TRUE(r.h.net.set_link(0, false));
    ASSERT_NO_FATAL_FAILURE(PostcopyRun::wait_for_text(*r.source, "postcopy paused", 60s));
    EXPECT_EQ(r.dest->err().find("postcopy complete"), std::string::npos) << "lost the link too late:\n"
                                                                          << r.dest->err();
    // popek migrate's progress shows the pause (a line a second off a terminal).
    ASSERT_NO_FATAL_FAILURE(PostcopyRun::wait_for_text(*r.migrate, "postcopy-paused", 30s));
    ASSERT_TRUE(r.h.net.set_link(0, true));
    ASSERT_NO_FATAL_FAILURE(r.expect_completed_after_recovery());
}

// A post-copy frame damaged on the way: the destination drops the link at
// once (the page in it was not placed) and the source sends it again.
TEST(PostcopyRecovery, ACorruptedFrameAfterTheSwitchIsSentAgain) {
    ASSERT_FALSE(reference_checksum().empty());
    PostcopyRun r;
    ASSERT_NO_FATAL_FAILURE(r.start_postcopy([](Dir dir, FrameType type, int n) {
        return dir == Dir::ToDest && type == FrameType::Pages && n == 6 ? Action::Corrupt : Action::Forward;
    }));
    ASSERT_NO_FATAL_FAILURE(PostcopyRun::wait_for_text(*r.dest, "postcopy paused", 60s));
    EXPECT_TRUE(r.proxy->corrupted());
    EXPECT_NE(r.dest->err().find("checksum mismatch"), std::string::npos) << r.dest->err();
    ASSERT_NO_FATAL_FAILURE(r.expect_completed_after_recovery());
}

// The destination's final reply (every page there, digests equal) is lost
// with the link: the source reconnects and the destination, done, answers
// it again, so the migration ends as completed instead of failed.
TEST(PostcopyRecovery, ALostFinalReplyIsAnsweredAgainOnTheResumedLink) {
    ASSERT_FALSE(reference_checksum().empty());
    PostcopyRun r;
    // Replies to the source: the reservation's, running, then the final one.
    ASSERT_NO_FATAL_FAILURE(r.start_postcopy(hold_at(Dir::ToSource, FrameType::Reply, 3)));
    ASSERT_NE(r.proxy->wait_held(120s), "") << r.migrate->err();
    ASSERT_NO_FATAL_FAILURE(PostcopyRun::wait_for_text(*r.dest, "matches the source's", 60s));
    r.proxy->drop();
    ASSERT_NO_FATAL_FAILURE(r.expect_completed_after_recovery(false));
    EXPECT_NE(r.dest->err().find("gets the final reply again"), std::string::npos) << r.dest->err();
}

// ---- a corrupted stream ------------------------------------------------------------------

Policy corrupt_at(FrameType t, int nth, Action how) {
    return [=](Dir dir, FrameType type, int n) {
        return dir == Dir::ToDest && type == t && n == nth ? how : Action::Forward;
    };
}

// A byte flipped in the middle of a pages frame: the frame check catches it,
// the destination refuses with one line and the source resumes.
TEST(MigrationFailure, CorruptedFrameIsRefusedAndTheSourceResumes) {
    ASSERT_FALSE(reference_checksum().empty());
    TwoHostRun s;
    ASSERT_NO_FATAL_FAILURE(s.start(corrupt_at(FrameType::Pages, 1, Action::Corrupt)));
    auto m = s.h.start_migrate()->finish(120s);
    EXPECT_TRUE(s.proxy->corrupted());
    EXPECT_EQ(m.exit_code, 1) << m.out << m.err;
    auto d = s.dest->finish(60s);
    EXPECT_EQ(d.exit_code, 1) << d.err;
    EXPECT_NE(d.err.find("checksum mismatch in a pages frame"), std::string::npos) << d.err;
    expect_no_vm_on(d);
    expect_source_finishes(*s.source, s.h.sock);
}

// A byte flipped in the `n`-th frame of `type` with the frame check
// recomputed, as if the damage happened before the frame was sealed. The
// layers above the frame usually catch it and the destination refuses; a
// damaged page the source sends again later (compute rewrites its buffer)
// may also be repaired before validation. Either way nothing is lost: the
// guest finishes with the right result on exactly one side.
void expect_resealed_damage_loses_nothing(FrameType type, const std::vector<std::string>& migrate_args) {
    ASSERT_FALSE(reference_checksum().empty());
    TwoHostRun s;
    ASSERT_NO_FATAL_FAILURE(s.start(corrupt_at(type, 1, Action::CorruptResealed)));
    auto m = s.h.start_migrate(migrate_args)->finish(120s);
    EXPECT_TRUE(s.proxy->corrupted());
    if (m.exit_code != 0) {
        EXPECT_EQ(m.exit_code, 1) << m.out << m.err;
        auto d = s.dest->finish(60s);
        EXPECT_EQ(d.exit_code, 1) << d.err;
        EXPECT_NE(d.err.find("popek: error: incoming migration: "), std::string::npos) << d.err;
        const size_t at = d.err.find("popek: error: incoming migration: ");
        std::printf("damage caught: %s\n", at == std::string::npos ? "?" : d.err.substr(at, d.err.find('\n', at) - at).c_str());
        expect_no_vm_on(d);
        expect_source_finishes(*s.source, s.h.sock);
    } else {
        std::printf("damaged page sent again before the switch: the migration went through\n");
        auto src = s.source->finish(60s);
        EXPECT_EQ(checksum_of(src.out), "") << "both sides ran the guest";
        auto d = s.dest->finish(180s);
        EXPECT_EQ(d.exit_code, 0) << d.err;
        EXPECT_EQ(checksum_of(d.out), reference_checksum()) << "a corrupted page reached the guest: " << d.out;
    }
}

// Plain Pages frames: each record's own check, the page index in it, or the
// RAM digest catches the damage.
TEST(MigrationFailure, CorruptedPageBehindAValidFrameCheckLosesNothing) {
    expect_resealed_damage_loses_nothing(FrameType::Pages, {});
}

// Compressed frames (auto: zstd frames of records without checks): the
// lane's zstd stream refuses the damage, or a record decodes to other bytes
// and the digest of every page, compared before the destination runs, does.
TEST(MigrationFailure, CorruptedCompressedFrameLosesNothing) {
    expect_resealed_damage_loses_nothing(FrameType::PagesZ, {"--compress", "auto"});
}

// The same damage to a guest that does not rewrite its pages (idle after its
// fill): nothing repairs it, so the destination must refuse — its zstd
// stream, a record's framing, or the digest of every page catches it — and
// the source keeps the VM.
TEST(MigrationFailure, CorruptedCompressedFrameOfAQuietGuestIsRefused) {
    TwoHostRun s;
    ASSERT_NO_FATAL_FAILURE(s.start(corrupt_at(FrameType::PagesZ, 1, Action::CorruptResealed), "idle 64", "256M", "PROBE-IDLE"));
    auto m = s.h.start_migrate({"--compress", "auto"})->finish(120s);
    EXPECT_TRUE(s.proxy->corrupted());
    EXPECT_EQ(m.exit_code, 1) << m.out << m.err;
    auto d = s.dest->finish(60s);
    const size_t at = d.err.find("popek: error: incoming migration: ");
    ASSERT_NE(at, std::string::npos) << d.err;
    std::printf("damage caught: %s\n", d.err.substr(at, d.err.find('\n', at) - at).c_str());
    expect_no_vm_on(d);
    auto info = run_process({POPEK_BIN, "ctl", "--api-sock", s.h.sock, "info"}, 30s);
    EXPECT_EQ(info.exit_code, 0) << info.err;
    EXPECT_NE(info.out.find("\"running\""), std::string::npos) << "the source must keep the VM: " << info.out;
}

}  // namespace
}  // namespace popek::test
