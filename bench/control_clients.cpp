#include "control_clients.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "bench_util.hpp"

namespace popek::bench {

namespace {

bool write_all(int fd, const std::string& s) {
    size_t done = 0;
    while (done < s.size()) {
        const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
        if (n <= 0) return false;
        done += static_cast<size_t>(n);
    }
    return true;
}

}  // namespace

int connect_unix(const std::string& path, std::chrono::milliseconds timeout) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) return -1;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    const auto t0 = Clock::now();
    for (;;) {
        const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return -1;
        if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) return fd;
        ::close(fd);
        if (Clock::now() - t0 > timeout) return -1;
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
}

HttpReply http_request(const std::string& socket_path, const std::string& method, const std::string& path,
                       const std::string& json_body) {
    HttpReply reply;
    const int fd = connect_unix(socket_path, std::chrono::milliseconds(2000));
    if (fd < 0) return reply;
    std::string req = method + " " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n";
    if (!json_body.empty())
        req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(json_body.size()) + "\r\n";
    req += "\r\n" + json_body;
    std::string in;
    if (write_all(fd, req)) {
        char buf[4096];
        ssize_t n;
        while ((n = ::read(fd, buf, sizeof buf)) > 0) in.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    // "HTTP/1.1 200 OK\r\n...\r\n\r\nBODY"
    const auto head_end = in.find("\r\n\r\n");
    if (in.rfind("HTTP/1.", 0) != 0 || head_end == std::string::npos || in.size() < 12) return reply;
    reply.status = std::atoi(in.c_str() + 9);
    reply.body = in.substr(head_end + 4);
    return reply;
}

Qmp::~Qmp() {
    if (fd_ >= 0) ::close(fd_);
}

bool Qmp::open(const std::string& socket_path, std::chrono::milliseconds timeout) {
    fd_ = connect_unix(socket_path, timeout);
    if (fd_ < 0) return false;
    auto greeting = read_message(timeout);
    if (!greeting || !greeting->contains("QMP")) return false;
    auto r = execute("qmp_capabilities");
    return r && r->contains("return");
}

std::optional<nlohmann::json> Qmp::read_message(std::chrono::milliseconds timeout) {
    const auto t0 = Clock::now();
    for (;;) {
        const auto nl = buffered_.find('\n');
        if (nl != std::string::npos) {
            auto j = nlohmann::json::parse(buffered_.substr(0, nl), nullptr, false);
            buffered_.erase(0, nl + 1);
            if (j.is_discarded()) return std::nullopt;
            return j;
        }
        const auto left = timeout.count() - static_cast<long>(ms_since(t0));
        pollfd p{fd_, POLLIN, 0};
        if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) return std::nullopt;
        char buf[4096];
        const ssize_t n = ::read(fd_, buf, sizeof buf);
        if (n <= 0) return std::nullopt;
        buffered_.append(buf, static_cast<size_t>(n));
    }
}

std::optional<nlohmann::json> Qmp::execute(const std::string& command, const nlohmann::json& arguments) {
    nlohmann::json req{{"execute", command}};
    if (!arguments.is_null()) req["arguments"] = arguments;
    if (fd_ < 0 || !write_all(fd_, req.dump() + "\n")) return std::nullopt;
    for (;;) {
        auto m = read_message(std::chrono::milliseconds(60000));
        if (!m) return std::nullopt;
        if (m->contains("event")) {
            events_.push_back(std::move(*m));
            continue;
        }
        return m;
    }
}

std::optional<nlohmann::json> Qmp::wait_event(const std::string& name, std::chrono::milliseconds timeout) {
    const auto t0 = Clock::now();
    for (;;) {
        while (!events_.empty()) {
            auto e = std::move(events_.front());
            events_.pop_front();
            if (e.value("event", "") == name) return e;
        }
        const auto left = timeout.count() - static_cast<long>(ms_since(t0));
        if (left <= 0) return std::nullopt;
        auto m = read_message(std::chrono::milliseconds(left));
        if (!m) return std::nullopt;
        if (m->contains("event")) events_.push_back(std::move(*m));
    }
}

}  // namespace popek::bench
