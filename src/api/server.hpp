// The REST API on a Unix socket: libmicrohttpd does HTTP, request.hpp turns
// each request into a vmm::Command, the Controller executes it, and the
// Reply goes back as JSON (or text for metrics). Nothing else happens here.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "base/result.hpp"
#include "vmm/control.hpp"

struct MHD_Daemon;

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
    ApiServer(std::string path, vmm::Controller& controller) : path_(std::move(path)), controller_(controller) {}

    std::string path_;
    vmm::Controller& controller_;
    MHD_Daemon* daemon_ = nullptr;
    dev_t dev_ = 0;
    ino_t ino_ = 0;

    friend struct RequestHandler;
};

}  // namespace popek::api
