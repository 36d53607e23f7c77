// virtio-net end to end, in a network namespace of the test's own (only
// addresses and interfaces in there are touched): a persistent TAP ptap0,
// popek_tap_echo sending frames of ethertype 0x88B5 back, and either popek
// running the probe's net-test or the test itself on the TAP's other end.
// Needs root, `ip` and /dev/net/tun; skipped with a message otherwise.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <thread>

#include "net/tap.hpp"
#include "process.hpp"

extern char** environ;

namespace popek::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kTap = "ptap0";

std::string find_ip() {
    for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
        if (::access(p, X_OK) == 0) return p;
    return "";
}

std::string why_not() {
    if (::geteuid() != 0) return "the net e2e tests need root (network namespaces, TAP devices)";
    if (find_ip().empty()) return "the net e2e tests need `ip` (iproute2)";
    if (::access("/dev/net/tun", R_OK | W_OK) != 0) return "the net e2e tests need /dev/net/tun (modprobe tun)";
    return "";
}

// A network namespace with the TAP ptap0 in it, up; deleted on every way out.
class Netns {
public:
    Netns() : ip_(find_ip()) {
        static int counter = 0;
        name_ = "popek-net-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
    }
    ~Netns() {
        if (created_) run_process({ip_, "netns", "del", name_}, 30s);
    }
    Netns(const Netns&) = delete;
    Netns& operator=(const Netns&) = delete;

    // "" on success, else what failed.
    std::string create() {
        auto add = run_process({ip_, "netns", "add", name_}, 30s);
        if (add.exit_code != 0) return "ip netns add " + name_ + ": " + add.err;
        created_ = true;
        for (std::vector<std::string> cmd : {std::vector<std::string>{"tuntap", "add", "dev", kTap, "mode", "tap"},
                                             std::vector<std::string>{"link", "set", kTap, "up"}}) {
            cmd.insert(cmd.begin(), {ip_, "-n", name_});
            auto r = run_process(cmd, 30s);
            if (r.exit_code != 0) return "ip -n " + name_ + " " + cmd[3] + ": " + r.err;
        }
        return "";
    }
    // argv run inside the namespace.
    [[nodiscard]] std::vector<std::string> exec(std::vector<std::string> argv) const {
        argv.insert(argv.begin(), {ip_, "netns", "exec", name_});
        return argv;
    }
    [[nodiscard]] const std::string& name() const { return name_; }

private:
    std::string ip_, name_;
    bool created_ = false;
};

// A program running while the test goes on; its output goes to a file.
// Killed (SIGKILL) if still running when this goes away.
class Background {
public:
    explicit Background(const std::vector<std::string>& argv)
        : out_path_("/tmp/popek-net-test-" + std::to_string(::getpid()) + "-" + std::to_string(++counter_)) {
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 1, out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        posix_spawn_file_actions_adddup2(&fa, 1, 2);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        std::vector<char*> args;
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        if (::posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ) != 0) pid_ = -1;
        posix_spawn_file_actions_destroy(&fa);
    }
    ~Background() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        ::unlink(out_path_.c_str());
    }
    Background(const Background&) = delete;
    Background& operator=(const Background&) = delete;

    [[nodiscard]] std::string output() const {
        std::ifstream in(out_path_);
        std::stringstream s;
        s << in.rdbuf();
        return s.str();
    }
    // Waits until the output contains `text` (false after `timeout` or if it exited).
    bool wait_for_output(const std::string& text, std::chrono::milliseconds timeout) {
        for (auto end = std::chrono::steady_clock::now() + timeout; std::chrono::steady_clock::now() < end;) {
            if (output().find(text) != std::string::npos) return true;
            if (pid_ > 0 && ::waitpid(pid_, &status_, WNOHANG) == pid_) {
                pid_ = -1;
                return output().find(text) != std::string::npos;
            }
            std::this_thread::sleep_for(10ms);
        }
        return false;
    }
    // Its exit status, or -1 if it is still running after `timeout` (then killed).
    int wait(std::chrono::milliseconds timeout) {
        for (auto end = std::chrono::steady_clock::now() + timeout; pid_ > 0;) {
            if (::waitpid(pid_, &status_, WNOHANG) == pid_) {
                pid_ = -1;
                break;
            }
            if (std::chrono::steady_clock::now() >= end) return -1;
            std::this_thread::sleep_for(10ms);
        }
        return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
    }

private:
    static inline int counter_ = 0;
    std::string out_path_;
    pid_t pid_ = -1;
    int status_ = 0;
};

// A uint64 after `key=` in `text`, or nullopt.
std::optional<uint64_t> field(const std::string& text, const std::string& key) {
    std::smatch m;
    if (!std::regex_search(text, m, std::regex(key + "=([0-9]+)"))) return std::nullopt;
    return std::stoull(m[1].str());
}

// Opens ptap0 from inside the namespace (setns moves only this thread).
base::Result<std::unique_ptr<net::Tap>> open_tap_in(const Netns& ns) {
    base::Result<std::unique_ptr<net::Tap>> result = base::Error{"not run"};
    std::thread([&] {
        base::UniqueFd nsfd(::open(("/run/netns/" + ns.name()).c_str(), O_RDONLY | O_CLOEXEC));
        if (!nsfd.valid() || ::setns(nsfd.get(), CLONE_NEWNET) != 0) {
            result = base::Error::from_errno("entering network namespace " + ns.name());
            return;
        }
        result = net::Tap::open(kTap);
    }).join();
    return result;
}

#define NET_E2E_PRECONDITIONS()                                      \
    do {                                                             \
        if (auto why = why_not(); !why.empty()) GTEST_SKIP() << why; \
    } while (0)

// The echo tool on its own: the test writes frames into the TAP as a VM
// would and reads the replies.
TEST(NetE2E, TapEchoSendsFramesBack) {
    NET_E2E_PRECONDITIONS();
    Netns ns;
    ASSERT_EQ(ns.create(), "");
    auto tap = open_tap_in(ns);
    ASSERT_TRUE(tap.ok()) << tap.error().message;
    constexpr int kFrames = 20;
    Background echo(ns.exec({POPEK_TAP_ECHO, kTap, std::to_string(kFrames), "20"}));
    ASSERT_TRUE(echo.wait_for_output("ECHO-READY", 10s)) << echo.output();

    const uint8_t mac[6] = {0x02, 0, 0, 0, 0, 0x42};
    for (int i = 0; i < kFrames; ++i) {
        uint8_t hdr[net::kVnetHdrSize] = {};
        uint8_t f[14 + 64];
        std::memset(f, 0xff, 6);
        std::memcpy(f + 6, mac, 6);
        f[12] = 0x88, f[13] = 0xb5;
        for (size_t j = 14; j < sizeof f; ++j) f[j] = static_cast<uint8_t>(static_cast<size_t>(i) + j);
        const iovec iov[2] = {{hdr, sizeof hdr}, {f, sizeof f}};
        auto sent = (*tap)->send(iov);
        ASSERT_TRUE(sent.ok() && sent->has_value()) << (sent.ok() ? "would block" : sent.error().message);
    }
    int echoed = 0;
    const auto end = std::chrono::steady_clock::now() + 10s;
    while (echoed < kFrames && std::chrono::steady_clock::now() < end) {
        pollfd p{(*tap)->fd(), POLLIN, 0};
        if (::poll(&p, 1, 100) != 1) continue;
        uint8_t hdr[net::kVnetHdrSize];
        uint8_t f[2048];
        const iovec iov[2] = {{hdr, sizeof hdr}, {f, sizeof f}};
        auto got = (*tap)->receive(iov);
        ASSERT_TRUE(got.ok()) << got.error().message;
        if (!got->has_value() || **got < sizeof hdr + 14 || f[12] != 0x88 || f[13] != 0xb5) continue;  // IPv6 chatter
        EXPECT_EQ(**got, sizeof hdr + 14 + 64);
        EXPECT_EQ(std::memcmp(f, mac, 6), 0) << "sent back to the sender";
        EXPECT_EQ(f[14], static_cast<uint8_t>(echoed + 14)) << "in order, payload intact";
        ++echoed;
    }
    EXPECT_EQ(echoed, kFrames);
    EXPECT_EQ(echo.wait(10s), 0) << echo.output();
    EXPECT_EQ(line_starting(echo.output(), "ECHO frames="), "ECHO frames=20 bytes=1280") << echo.output();
}

// The probe guest's net-test through popek's virtio-net and a TAP.
TEST(NetE2E, ProbeFramesComeBackThroughTheTap) {
    NET_E2E_PRECONDITIONS();
    Netns ns;
    ASSERT_EQ(ns.create(), "");
    constexpr int kFrames = 100;
    Background echo(ns.exec({POPEK_TAP_ECHO, kTap, std::to_string(kFrames), "60"}));
    ASSERT_TRUE(echo.wait_for_output("ECHO-READY", 10s)) << echo.output();

    auto r = run_process(ns.exec({POPEK_BIN, "run", "--kernel", POPEK_PROBE, "--cmdline",
                                  "net-test " + std::to_string(kFrames), "--memory", "128M", "--net",
                                  std::string("tap=") + kTap}),
                         120s);
    ASSERT_FALSE(r.timed_out) << r.out << r.err;
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    const std::string done = line_starting(r.out, "PROBE-DONE net-test");
    ASSERT_NE(done, "") << r.out << r.err;
    EXPECT_EQ(field(done, "sent"), kFrames) << done;
    EXPECT_EQ(field(done, "received"), kFrames) << done;

    EXPECT_EQ(echo.wait(10s), 0) << echo.output();
    const std::string echoed = line_starting(echo.output(), "ECHO frames=");
    EXPECT_EQ(field(echoed, "frames"), kFrames) << echo.output();
    EXPECT_EQ(field(echoed, "bytes"), field(done, "bytes")) << echoed << "\n" << done;
}

}  // namespace
}  // namespace popek::test
