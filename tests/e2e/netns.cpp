#include "netns.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "process.hpp"

namespace popek::test {

namespace {

constexpr const char* kPrefix = "popek-e2e-";

bool ip(const std::vector<std::string>& args, std::string* err = nullptr) {
    std::vector<std::string> argv{"/usr/sbin/ip"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = run_process(argv, std::chrono::seconds(20));
    if (r.exit_code != 0 && err != nullptr) {
        std::string cmd;
        for (const auto& a : argv) cmd += a + " ";
        *err = cmd + "failed: " + r.err;
    }
    return r.exit_code == 0;
}

// Namespaces named popek-e2e-PID-* whose test process is gone.
void remove_stale() {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/run/netns", ec)) {
        const std::string n = e.path().filename().string();
        if (n.rfind(kPrefix, 0) != 0) continue;
        const int pid = std::atoi(n.c_str() + std::char_traits<char>::length(kPrefix));
        if (pid > 0 && ::kill(pid, 0) != 0) ip({"netns", "del", n});
    }
}

}  // namespace

NetnsPair::NetnsPair() {
    static std::atomic<int> counter{0};
    if (::geteuid() != 0) {
        error_ = "network namespaces need root";
        return;
    }
    if (::access("/usr/sbin/ip", X_OK) != 0) {
        error_ = "ip(8) (iproute2) is not installed";
        return;
    }
    remove_stale();
    const std::string base = std::string(kPrefix) + std::to_string(::getpid()) + "-" + std::to_string(counter++);
    names_[0] = base + "a";
    names_[1] = base + "b";
    for (int s = 0; s < 2; s++)
        if (!ip({"netns", "add", names_[s]}, &error_)) return;
    if (!ip({"link", "add", "va", "netns", names_[0], "type", "veth", "peer", "name", "vb", "netns", names_[1]},
            &error_))
        return;
    for (int s = 0; s < 2; s++) {
        if (!ip({"-n", names_[s], "addr", "add", addr(s) + "/24", "dev", veth(s)}, &error_) ||
            !ip({"-n", names_[s], "link", "set", veth(s), "up"}, &error_) ||
            !ip({"-n", names_[s], "link", "set", "lo", "up"}, &error_))
            return;
    }
}

NetnsPair::~NetnsPair() {
    for (const auto& n : names_)
        if (!n.empty()) ip({"netns", "del", n});
}

std::vector<std::string> NetnsPair::exec_in(int side, const std::vector<std::string>& argv) const {
    std::vector<std::string> out{"/usr/sbin/ip", "netns", "exec", names_[side]};
    out.insert(out.end(), argv.begin(), argv.end());
    return out;
}

bool NetnsPair::set_link(int side, bool up) const {
    return ip({"-n", names_[side], "link", "set", veth(side), up ? "up" : "down"});
}

NetnsEnter::NetnsEnter(const std::string& name) {
    home_ = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    const int fd = ::open(("/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC);
    ok_ = home_ >= 0 && fd >= 0 && ::setns(fd, CLONE_NEWNET) == 0;
    if (fd >= 0) ::close(fd);
}

NetnsEnter::~NetnsEnter() {
    if (home_ < 0) return;
    if (ok_ && ::setns(home_, CLONE_NEWNET) != 0) std::perror("setns back");
    ::close(home_);
}

bool pid_listens(int pid, uint16_t port) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/net/tcp");
    char want[32];
    std::snprintf(want, sizeof want, ":%04X", port);
    std::string line;
    while (std::getline(f, line))
        if (line.find(want) != std::string::npos && line.find(" 0A ") != std::string::npos) return true;
    return false;
}

}  // namespace popek::test
