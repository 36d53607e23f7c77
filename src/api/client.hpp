// The other end of the API socket, over Boost.Beast (client.cpp only): what
// `popek ctl` and the tests use. One connection per request; blocks until
// the reply is in.
#pragma once

#include <string>

#include "base/result.hpp"

namespace popek::api {

struct Response {
    long status = 0;
    std::string content_type;
    std::string body;
};

class Client {
public:
    explicit Client(std::string socket_path) : path_(std::move(socket_path)) {}

    // Any HTTP status is a Response; only failing to talk to the server (no
    // socket, nobody listening, connection dropped) is an Error.
    [[nodiscard]] base::Result<Response> request(const std::string& method, const std::string& path,
                                                 const std::string& body = {}) const;

    [[nodiscard]] const std::string& socket_path() const { return path_; }

private:
    std::string path_;
};

}  // namespace popek::api
