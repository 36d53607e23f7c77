// A listening AF_UNIX stream socket at a path, made the way a long-running
// daemon needs it: refuse a path a live server answers on, replace a stale
// socket file nobody listens on, mode 0600 before anyone can connect.
#pragma once

#include <sys/types.h>

#include <string>

#include "base/result.hpp"
#include "base/unique_fd.hpp"

namespace popek::api {

struct UnixListener {
    base::UniqueFd fd;  // bound and listening, close-on-exec, non-blocking
    dev_t dev = 0;      // the socket file's identity, so that only our own
    ino_t ino = 0;      // socket is unlinked at the end (see remove_socket_file)
};

[[nodiscard]] base::Result<UnixListener> listen_unix(const std::string& path);

// Unlinks `path` if it is still the socket `listener` created.
void remove_socket_file(const std::string& path, dev_t dev, ino_t ino);

}  // namespace popek::api
