#include "process.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <thread>
#include <sstream>

extern char** environ;

namespace popek::test {

Child::Child(const std::vector<std::string>& argv) {
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0) return;
    if (::pipe2(err, O_CLOEXEC) != 0) {
        ::close(out[0]);
        ::close(out[1]);
        return;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    int rc = ::posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    ::close(err[1]);
    fds_[0] = out[0];
    fds_[1] = err[0];
    if (rc != 0) {
        r_.err = "spawn failed: " + std::to_string(rc);
        pid_ = -1;
    }
}

Child::~Child() {
    if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        (void)finish(std::chrono::milliseconds(10000));
    }
    for (int& fd : fds_)
        if (fd >= 0) ::close(fd);
}

// Reads whatever is ready within `left`; false once both pipes are closed.
bool Child::pump(std::chrono::milliseconds left) {
    pollfd p[2] = {{fds_[0], POLLIN, 0}, {fds_[1], POLLIN, 0}};
    if (fds_[0] < 0 && fds_[1] < 0) return false;
    int n = ::poll(p, 2, static_cast<int>(std::max<int64_t>(0, left.count())));
    if (n < 0 && errno != EINTR) return false;
    for (int i = 0; i < 2; i++) {
        if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        char buf[4096];
        ssize_t got = ::read(p[i].fd, buf, sizeof buf);
        if (got <= 0) {
            ::close(fds_[i]);
            fds_[i] = -1;
            continue;
        }
        (i == 0 ? r_.out : r_.err).append(buf, static_cast<size_t>(got));
    }
    return fds_[0] >= 0 || fds_[1] >= 0;
}

bool Child::wait_for_line(const std::string& prefix, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (!line_starting(r_.out, prefix).empty()) return true;
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0 || !pump(left)) return !line_starting(r_.out, prefix).empty();
    }
}

ProcessResult Child::finish(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) return r_;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            r_.timed_out = true;
            ::kill(pid_, SIGKILL);
            break;
        }
        if (!pump(left)) break;
    }
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {}
    pid_ = -1;
    if (WIFEXITED(status) && !r_.timed_out) r_.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) r_.term_signal = WTERMSIG(status);
    return r_;
}

ProcessResult run_process(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
    Child child(argv);
    return child.finish(timeout);
}

std::vector<std::string> lines(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        out.push_back(line);
    }
    return out;
}

std::string line_starting(const std::string& text, const std::string& prefix) {
    for (const auto& l : lines(text))
        if (l.rfind(prefix, 0) == 0) return l;
    return "";
}

TempDir::TempDir() {
    char tmpl[] = "/tmp/popek-e2e-XXXXXX";
    const char* dir = ::mkdtemp(tmpl);
    path_ = dir != nullptr ? dir : "";
}

TempDir::~TempDir() {
    if (!path_.empty()) std::filesystem::remove_all(path_);
}

TempImage::TempImage(uint64_t size, const std::string& name) {
    char tmpl[] = "/tmp/popek-e2e-XXXXXX";
    const char* dir = ::mkdtemp(tmpl);
    path_ = std::string(dir != nullptr ? dir : "/tmp") + "/" + name;
    int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        if (::ftruncate(fd, static_cast<off_t>(size)) != 0) path_.clear();
        ::close(fd);
    }
}

TempImage::~TempImage() {
    ::unlink(path_.c_str());
    ::rmdir(path_.substr(0, path_.rfind('/')).c_str());
}

std::string TempImage::contents() const {
    std::ifstream f(path_, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

uint16_t free_port() {
    const int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(s);
    return ntohs(a.sin_port);
}

bool listening(uint16_t port) {
    std::ifstream f("/proc/net/tcp");
    char want[32];
    std::snprintf(want, sizeof want, ":%04X", port);
    std::string line;
    while (std::getline(f, line))
        if (line.find(want) != std::string::npos && line.find(" 0A ") != std::string::npos) return true;
    return false;
}

void wait_listening(uint16_t port) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!listening(port) && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

std::string checksum_of(const std::string& out) {
    static const std::regex re("checksum=([0-9a-f]{16})");
    std::smatch m;
    const std::string line = line_starting(out, "PROBE-DONE compute");
    return std::regex_search(line, m, re) ? m[1].str() : "";
}

std::string read_text(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), {}};
}

bool file_has(const std::string& path, const std::string& what, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (read_text(path).find(what) != std::string::npos) return true;
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

nlohmann::json report_of(const ProcessResult& r) {
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    return j.is_discarded() ? nlohmann::json::object() : j;
}

}  // namespace popek::test
