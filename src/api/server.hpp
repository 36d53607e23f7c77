// The REST API on a Unix socket: Boost.Beast does HTTP (in server.cpp only),
// request.hpp turns each request into a vmm::Command, the Controller executes
// it, and the Reply goes back as JSON (or text for metrics). Nothing else
// happens here.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "base/result.hpp"
#include "vmm/control.hpp"

namespace popek::api {

class ApiServer {
public:
    // Listens on `socket_path` (mode 0600) and serves until destroyed, one
    // thread per connection, so a slow command (a snapshot) holds up only
    // the connection that asked for it. `controller` must outlive the server.
    // Refuses a path a live server answers on; replaces a stale socket file.
    [[nodiscard]] static base::Result<std::unique_ptr<ApiServer>> start(const std::string& socket_path,
                                                                        vmm::Controller& controller);

    // Stops accepting, waits for requests in flight (their execute() calls
    // must return), closes the socket and unlinks its file.
    ~ApiServer();
    ApiServer(const ApiServer&) = delete;
    ApiServer& operator=(const ApiServer&) = delete;

    [[nodiscard]] const std::string& socket_path() const { return path_; }

private:
    struct Threads;  // the listening socket, the accept thread and one thread per connection

    explicit ApiServer(std::string path);

    std::string path_;
    std::unique_ptr<Threads> threads_;
    dev_t dev_ = 0;
    ino_t ino_ = 0;
};

}  // namespace popek::api
