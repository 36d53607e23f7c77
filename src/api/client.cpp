#include "api/client.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <cerrno>
#include <cstdint>
#include <cstring>

namespace popek::api {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using boost::system::error_code;
using Socket = asio::local::stream_protocol::socket;

namespace {

constexpr time_t kConnectTimeoutSeconds = 5;
constexpr std::uint64_t kMaxReplyBytes = 64 << 20;

std::string hint(const std::string& path) { return " (is popek running with --api-sock " + path + "?)"; }

// Before connecting: "no such socket" says more than connect's ENOENT.
base::Result<void> check_socket(const std::string& path) {
    struct stat st{};
    if (::stat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return base::Error{"no API socket at " + path + hint(path), ENOENT};
        return base::Error::from_errno("API socket " + path);
    }
    if (!S_ISSOCK(st.st_mode)) return base::Error{path + " is not a socket" + hint(path), ENOTSOCK};
    return base::ok();
}

// connect(2) itself rather than asio's, which would wait without a limit
// when the server's backlog is full: on a Unix socket connect honours
// SO_SNDTIMEO (and fails with EAGAIN when it passes).
base::Result<void> connect(Socket& socket, const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof(addr.sun_path))
        return base::Error{"cannot connect to " + path + ": a Unix socket path must be shorter than " +
                               std::to_string(sizeof(addr.sun_path)) + " bytes",
                           ENAMETOOLONG};
    std::memcpy(addr.sun_path, path.data(), path.size());
    error_code ec;
    socket.open(asio::local::stream_protocol(), ec);
    if (ec) return base::Error{"socket(AF_UNIX): " + ec.message(), ec.value()};
    const int fd = socket.native_handle();
    timeval timeout{kConnectTimeoutSeconds, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
        const int e = errno == EAGAIN ? ETIMEDOUT : errno;
        return base::Error{"cannot connect to " + path + ": " + std::strerror(e) +
                               (e == ECONNREFUSED ? hint(path) : std::string()),
                           e};
    }
    timeout = {};  // no limit on sending the request: the server reads what it refuses
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    return base::ok();
}

std::string describe(const error_code& ec) {
    if (ec == http::error::end_of_stream) return "the server closed the connection without replying";
    if (ec == http::error::partial_message) return "the server closed the connection in the middle of its reply";
    return ec.message();
}

}  // namespace

base::Result<Response> Client::request(const std::string& method, const std::string& path,
                                       const std::string& body) const {
    POPEK_TRY(check_socket(path_));
    asio::io_context io;
    Socket socket(io);
    POPEK_TRY(connect(socket, path_));

    http::request<http::string_body> req;
    req.method_string(method);
    req.target(path);
    req.version(11);
    req.set(http::field::host, "localhost");
    req.keep_alive(false);  // one request per connection
    if (!body.empty() || method != "GET") {
        req.set(http::field::content_type, "application/json");
        req.body() = body;
    }
    req.prepare_payload();
    error_code write_error;
    http::write(socket, req, write_error);

    // Read even when sending failed: a server that refuses a request before
    // reading all of it may have answered why before it closed.
    boost::beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(kMaxReplyBytes);
    error_code read_error;
    http::read(socket, buffer, parser, read_error);
    if (read_error) {
        const error_code& cause = write_error && read_error == http::error::end_of_stream ? write_error : read_error;
        return base::Error{method + " " + path + " on " + path_ + ": " + describe(cause)};
    }

    Response response;
    response.status = static_cast<long>(parser.get().result_int());
    const auto type = parser.get()[http::field::content_type];
    response.content_type.assign(type.data(), type.size());
    response.body = std::move(parser.get().body());
    return response;
}

}  // namespace popek::api
