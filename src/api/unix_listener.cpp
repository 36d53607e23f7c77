#include "api/unix_listener.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace popek::api {

namespace {

constexpr int kBacklog = 16;

base::Result<sockaddr_un> make_address(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.empty()) return base::Error{"API socket path is empty"};
    if (path.size() >= sizeof(addr.sun_path))
        return base::Error{"API socket path " + path + " is " + std::to_string(path.size()) +
                           " bytes long; a Unix socket path must be shorter than " +
                           std::to_string(sizeof(addr.sun_path)) + " bytes"};
    if (path.find('\0') != std::string::npos) return base::Error{"API socket path contains a NUL byte"};
    std::memcpy(addr.sun_path, path.data(), path.size());
    return addr;
}

base::Result<void> check_directory(const std::string& path) {
    const auto slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    struct stat st{};
    if (::stat(dir.c_str(), &st) != 0) {
        if (errno == ENOENT) return base::Error{"API socket directory " + dir + " does not exist", ENOENT};
        return base::Error::from_errno("API socket directory " + dir);
    }
    if (!S_ISDIR(st.st_mode)) return base::Error{"API socket directory " + dir + " is not a directory", ENOTDIR};
    return base::ok();
}

base::Result<base::UniqueFd> new_socket() {
    base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.valid()) return base::Error::from_errno("socket(AF_UNIX)");
    return fd;
}

// Something exists at `path`: a live server is an error; a socket file
// nobody listens on (popek was killed) is removed; anything else is left.
base::Result<void> clear_stale_socket(const std::string& path, const sockaddr_un& addr) {
    struct stat st{};
    if (::lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return base::ok();
        return base::Error::from_errno("API socket " + path);
    }
    if (!S_ISSOCK(st.st_mode))
        return base::Error{"API socket path " + path + " exists and is not a socket; not replacing it", EEXIST};
    POPEK_ASSIGN_OR_RETURN(base::UniqueFd probe, new_socket());
    // Non-blocking: a live server that is slow to accept gives EAGAIN, not a hang.
    if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0 || errno == EAGAIN)
        return base::Error{"API socket " + path + " is already in use by a running server", EADDRINUSE};
    if (errno != ECONNREFUSED && errno != ENOENT) return base::Error::from_errno("probing API socket " + path);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        return base::Error::from_errno("removing stale API socket " + path);
    return base::ok();
}

}  // namespace

base::Result<UnixListener> listen_unix(const std::string& path) {
    POPEK_ASSIGN_OR_RETURN(sockaddr_un addr, make_address(path));
    POPEK_TRY(check_directory(path));
    POPEK_TRY(clear_stale_socket(path, addr));
    POPEK_ASSIGN_OR_RETURN(base::UniqueFd fd, new_socket());
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
        if (errno == EADDRINUSE)  // another server won the race since clear_stale_socket
            return base::Error{"API socket " + path + " is already in use", EADDRINUSE};
        return base::Error::from_errno("bind " + path);
    }
    // Nobody can connect before listen(), so this chmod leaves no window.
    struct stat st{};
    if (::chmod(path.c_str(), 0600) != 0 || ::lstat(path.c_str(), &st) != 0) {
        const int err = errno;
        ::unlink(path.c_str());
        return base::Error::from_errno("chmod 0600 " + path, err);
    }
    if (::listen(fd.get(), kBacklog) != 0) {
        const int err = errno;
        ::unlink(path.c_str());
        return base::Error::from_errno("listen " + path, err);
    }
    return UnixListener{std::move(fd), st.st_dev, st.st_ino};
}

void remove_socket_file(const std::string& path, dev_t dev, ino_t ino) {
    struct stat st{};
    if (::lstat(path.c_str(), &st) == 0 && st.st_dev == dev && st.st_ino == ino) ::unlink(path.c_str());
}

}  // namespace popek::api
