#include "api/server.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <list>
#include <mutex>
#include <string_view>
#include <thread>

#include "api/request.hpp"
#include "api/unix_listener.hpp"
#include "base/unique_fd.hpp"

namespace popek::api {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using boost::system::error_code;
using Socket = asio::local::stream_protocol::socket;

namespace {

constexpr size_t kMaxConnections = 32;
// A body over kMaxBodyBytes is read and dropped, then refused with 413:
// answering before it is read makes the client's send fail with EPIPE and
// lose the answer. Only a body larger than this is refused at once (when its
// Content-Length says so) or as soon as it passes it (chunked).
constexpr std::uint64_t kMaxDrainBytes = 1 << 20;
constexpr std::uint32_t kMaxHeaderBytes = 16 * 1024;
constexpr int kIdleTimeoutMs = 60'000;
constexpr const char* kJson = "application/json";
constexpr const char* kMetricsType = "text/plain; version=0.0.4";

struct HttpResponse {
    unsigned status = 200;
    std::string content_type = kJson;
    std::string body;
    std::string allow;
};

// Never throws: anything from the request is already printable ASCII, and a
// controller's odd bytes are replaced rather than failing the reply.
std::string dump(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

HttpResponse from_error(const HttpError& e) { return {e.status, kJson, dump(e.body()), e.allow}; }

unsigned http_status(vmm::ReplyStatus s) {
    switch (s) {
        case vmm::ReplyStatus::Ok: return 200;
        case vmm::ReplyStatus::BadRequest: return 400;
        case vmm::ReplyStatus::Conflict: return 409;
        case vmm::ReplyStatus::Internal: return 500;
    }
    return 500;
}

HttpResponse from_reply(const vmm::Command& command, const vmm::Reply& reply) {
    const unsigned status = http_status(reply.status);
    if (status != 200) {
        // Every error body is {"error": "..."}, whatever the controller filled in.
        if (reply.body.is_object() && reply.body.contains("error") && reply.body["error"].is_string())
            return {status, kJson, dump(reply.body), {}};
        const std::string message = reply.text.empty() ? "the VMM failed without a message" : reply.text;
        return {status, kJson, dump(nlohmann::json{{"error", message}}), {}};
    }
    if (std::holds_alternative<vmm::MetricsCommand>(command)) return {200, kMetricsType, reply.text, {}};
    if (!reply.text.empty()) return {200, "text/plain; charset=utf-8", reply.text, {}};
    return {200, kJson, dump(reply.body.is_null() ? nlohmann::json::object() : reply.body), {}};
}

std::string_view to_std(boost::beast::string_view s) { return {s.data(), s.size()}; }

int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// The path of a request target as the routes see it: without the query,
// %XX decoded (a malformed escape is kept as it is).
std::string route_path(std::string_view target) {
    target = target.substr(0, target.find('?'));
    std::string out;
    for (size_t i = 0; i < target.size(); ++i) {
        const int hi = target[i] == '%' && i + 2 < target.size() ? hex_digit(target[i + 1]) : -1;
        const int lo = hi >= 0 ? hex_digit(target[i + 2]) : -1;
        if (lo < 0) {
            out += target[i];
            continue;
        }
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
    }
    return out;
}

bool stop_requested(int stop_fd) {
    pollfd p{stop_fd, POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
}

// A connection's socket as Beast's SyncReadStream and SyncWriteStream. The
// socket is non-blocking: every wait is a poll() that the server's stop
// event or kIdleTimeoutMs of silence ends, so no thread outlives the server.
class ConnectionStream {
public:
    ConnectionStream(Socket& socket, int stop_fd) : socket_(socket), stop_fd_(stop_fd) {}

    template <class Buffers>
    size_t read_some(const Buffers& buffers, error_code& ec) {
        for (;;) {
            const size_t n = socket_.read_some(buffers, ec);
            if (ec != asio::error::would_block || !wait(POLLIN, ec)) return n;
        }
    }
    template <class Buffers>
    size_t write_some(const Buffers& buffers, error_code& ec) {
        for (;;) {
            const size_t n = socket_.write_some(buffers, ec);
            if (ec != asio::error::would_block || !wait(POLLOUT, ec)) return n;
        }
    }
    // Declared for Beast's stream traits, never defined: only the
    // error_code overloads are used, so nothing here throws.
    template <class Buffers>
    size_t read_some(const Buffers& buffers);
    template <class Buffers>
    size_t write_some(const Buffers& buffers);

private:
    bool wait(short events, error_code& ec) {
        std::array<pollfd, 2> fds{{{socket_.native_handle(), events, 0}, {stop_fd_, POLLIN, 0}}};
        for (;;) {
            const int n = ::poll(fds.data(), fds.size(), kIdleTimeoutMs);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) ec.assign(errno, boost::system::system_category());
            else if (n == 0) ec = asio::error::timed_out;
            else if (fds[1].revents != 0) ec = asio::error::operation_aborted;
            else return true;  // readable, writable, or an error the next call reports
            return false;
        }
    }

    Socket& socket_;
    int stop_fd_;
};

// Serves the requests of one connection, in order, until the client closes
// it, an error, or the server stops.
class Session {
public:
    Session(Socket& socket, int stop_fd, vmm::Controller& controller)
        : stream_(socket, stop_fd), stop_fd_(stop_fd), controller_(controller) {}

    void serve() {
        while (!stop_requested(stop_fd_) && serve_one()) {
        }
    }

private:
    // One request and its response; false when the connection is done.
    bool serve_one() {
        http::request_parser<http::buffer_body> parser;
        parser.header_limit(kMaxHeaderBytes);
        parser.body_limit(kMaxDrainBytes);
        error_code ec;
        http::read_header(stream_, buffer_, parser, ec);
        if (ec) return refuse(ec);
        const auto& request = parser.get();
        const bool head = request.method() == http::verb::head;
        if (request.version() >= 11 && request.find(http::field::host) == request.end())
            return respond(from_error(HttpError{400, "an HTTP/1.1 request needs a Host header", {}}), false, head);
        if (!parser.is_done() && boost::beast::iequals(request[http::field::expect], "100-continue")) {
            http::response<http::empty_body> go_on{http::status::continue_, 11};
            http::write(stream_, go_on, ec);
            if (ec) return false;
        }

        std::string body;
        bool too_large = false;
        std::array<char, 16 * 1024> chunk;
        while (!parser.is_done()) {
            parser.get().body().data = chunk.data();
            parser.get().body().size = chunk.size();
            http::read(stream_, buffer_, parser, ec);
            if (ec == http::error::need_buffer) ec = {};
            if (ec) return refuse(ec);
            const size_t n = chunk.size() - parser.get().body().size;
            if (too_large) continue;
            too_large = body.size() + n > kMaxBodyBytes;
            if (too_large) body = std::string();  // drop it, keep reading
            else body.append(chunk.data(), n);
        }
        const bool keep_alive = request.keep_alive();
        if (too_large) return respond(from_error(body_too_large()), keep_alive, head);

        const ParsedRequest parsed = parse_request(to_std(request.method_string()), route_path(to_std(request.target())), body);
        if (const auto* err = std::get_if<HttpError>(&parsed)) return respond(from_error(*err), keep_alive, head);
        const auto& command = std::get<vmm::Command>(parsed);
        HttpResponse response;
        try {
            response = from_reply(command, controller_.execute(command));
        } catch (const std::exception& e) {
            response = from_error(HttpError{500, "the VMM failed: " + printable(e.what(), 200), {}});
        }
        return respond(response, keep_alive, head);
    }

    // A request that could not be read: answer what HTTP can answer, then close.
    bool refuse(const error_code& ec) {
        if (ec == http::error::body_limit) return respond(from_error(body_too_large()), false, false);
        if (ec == http::error::header_limit)
            return respond(from_error(HttpError{431, "request headers larger than " +
                                                         std::to_string(kMaxHeaderBytes) + " bytes", {}}),
                           false, false);
        // A client that closed between requests, a timeout, the server
        // stopping, a broken socket: nothing to answer, or nobody to hear it.
        if (ec.category() != http::make_error_code(http::error::bad_version).category() ||
            ec == http::error::end_of_stream || ec == http::error::partial_message)
            return false;
        return respond(from_error(HttpError{400, "malformed HTTP request: " + ec.message(), {}}), false, false);
    }

    bool respond(const HttpResponse& r, bool keep_alive, bool head) {
        http::response<http::string_body> response{static_cast<http::status>(r.status), 11};
        response.set(http::field::content_type, r.content_type);
        if (!r.allow.empty()) response.set(http::field::allow, r.allow);
        response.keep_alive(keep_alive);
        response.body() = r.body;
        response.prepare_payload();
        if (head) response.body().clear();  // the Content-Length stays that of the GET
        error_code ec;
        http::write(stream_, response, ec);
        return !ec && keep_alive;
    }

    ConnectionStream stream_;
    int stop_fd_;
    vmm::Controller& controller_;
    boost::beast::flat_buffer buffer_;  // bytes read past the current request
};

}  // namespace

struct ApiServer::Threads {
    struct Connection {
        std::thread thread;
        bool done = false;
    };

    explicit Threads(vmm::Controller& c) : controller(c) {}

    // Waits for connections until the stop event, and starts a thread for each.
    void accept_loop() {
        const int listen_fd = acceptor.native_handle();
        for (;;) {
            std::array<pollfd, 2> fds{{{listen_fd, POLLIN, 0}, {stop_event.get(), POLLIN, 0}}};
            if (::poll(fds.data(), fds.size(), -1) < 0) {
                if (errno == EINTR) continue;
                return;
            }
            if (fds[1].revents != 0) return;
            if (fds[0].revents == 0) continue;
            // accept4 rather than acceptor.accept(): close-on-exec from the start.
            base::UniqueFd fd(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
            if (!fd.valid()) {
                if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                    // EMFILE and the like: the connection stays queued; don't spin on it.
                    pollfd stop{stop_event.get(), POLLIN, 0};
                    ::poll(&stop, 1, 100);
                }
                continue;
            }
            try {
                join_finished();
                serve(std::move(fd));
            } catch (...) {  // no thread or no memory for this one: it is closed, the others go on
            }
        }
    }

    void serve(base::UniqueFd fd) {
        Socket socket(io);
        error_code ec;
        socket.assign(asio::local::stream_protocol(), fd.get(), ec);
        if (ec) return;
        fd.release();
        socket.non_blocking(true, ec);  // so read_some reports would_block rather than waiting itself
        if (ec) return;
        std::lock_guard lock(mu);
        size_t open = 0;
        for (const auto& c : connections) open += c.done ? 0 : 1;
        if (open >= kMaxConnections) return;  // closed at once, as a busy server does
        auto it = connections.emplace(connections.end());
        try {
            it->thread = std::thread([this, it, s = std::move(socket)]() mutable { run_connection(s, it); });
        } catch (...) {
            connections.erase(it);
            throw;
        }
    }

    void run_connection(Socket& socket, std::list<Connection>::iterator self) {
        try {
            Session(socket, stop_event.get(), controller).serve();
        } catch (...) {  // bad_alloc and the like: drop this connection, keep serving
        }
        error_code ignored;
        socket.close(ignored);
        std::lock_guard lock(mu);
        self->done = true;
    }

    void join_finished() {
        std::list<Connection> finished;
        {
            std::lock_guard lock(mu);
            for (auto it = connections.begin(); it != connections.end();) {
                auto next = std::next(it);
                if (it->done) finished.splice(finished.end(), connections, it);
                it = next;
            }
        }
        for (auto& c : finished) c.thread.join();
    }

    // Ends the accept thread, then waits for every connection thread: idle
    // ones see the stop event at once, busy ones after their response.
    void stop() {
        const std::uint64_t one = 1;
        [[maybe_unused]] const ssize_t n = ::write(stop_event.get(), &one, sizeof(one));  // cannot fail: counter 0
        if (accept_thread.joinable()) accept_thread.join();
        std::list<Connection> all;
        {
            std::lock_guard lock(mu);
            all.splice(all.end(), connections);  // iterators the threads hold stay valid
        }
        for (auto& c : all) c.thread.join();
    }

    vmm::Controller& controller;
    asio::io_context io;  // never run: the acceptor and sockets only need one to belong to
    asio::local::stream_protocol::acceptor acceptor{io};
    base::UniqueFd stop_event;
    std::mutex mu;
    std::list<Connection> connections;  // guarded by mu
    std::thread accept_thread;
};

ApiServer::ApiServer(std::string path) : path_(std::move(path)) {}

base::Result<std::unique_ptr<ApiServer>> ApiServer::start(const std::string& socket_path,
                                                          vmm::Controller& controller) {
    POPEK_ASSIGN_OR_RETURN(UnixListener listener, listen_unix(socket_path));
    std::unique_ptr<ApiServer> server(new ApiServer(socket_path));
    server->dev_ = listener.dev;
    server->ino_ = listener.ino;
    auto fail = [&](const std::string& what) -> base::Error {
        remove_socket_file(socket_path, listener.dev, listener.ino);
        return base::Error{"starting the API server on " + socket_path + ": " + what};
    };
    try {
        auto threads = std::make_unique<Threads>(controller);
        threads->stop_event.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!threads->stop_event.valid()) return fail(std::string("eventfd: ") + std::strerror(errno));
        error_code ec;
        threads->acceptor.assign(asio::local::stream_protocol(), listener.fd.get(), ec);
        if (ec) return fail(ec.message());
        listener.fd.release();  // the acceptor closes it
        Threads& t = *threads;
        t.accept_thread = std::thread([&t] { t.accept_loop(); });
        server->threads_ = std::move(threads);
    } catch (const std::exception& e) {  // no thread, no memory
        return fail(e.what());
    }
    return server;
}

ApiServer::~ApiServer() {
    if (threads_) threads_->stop();
    threads_.reset();  // closes the listening socket
    remove_socket_file(path_, dev_, ino_);
}

}  // namespace popek::api
