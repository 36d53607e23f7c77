#include "net/backend.hpp"

#include <unistd.h>

#include <cerrno>

namespace popek::net {

namespace {

base::Result<std::optional<size_t>> frame_io(int fd, std::span<const iovec> iov, const std::string& what,
                                             bool write) {
    if (iov.size() > kMaxFrameIov)
        return base::Error{what + ": " + std::to_string(iov.size()) + " pieces in one frame (at most " +
                           std::to_string(kMaxFrameIov) + ")"};
    const int count = static_cast<int>(iov.size());
    for (;;) {
        const ssize_t n = write ? ::writev(fd, iov.data(), count) : ::readv(fd, iov.data(), count);
        if (n > 0 || (n == 0 && write)) return std::optional<size_t>(static_cast<size_t>(n));
        if (n == 0) return base::Error{what + ": end of file (the other side closed)"};
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return std::optional<size_t>();
        return base::Error::from_errno(what);
    }
}

}  // namespace

base::Result<std::optional<size_t>> readv_frame(int fd, std::span<const iovec> iov, const std::string& what) {
    return frame_io(fd, iov, what, false);
}

base::Result<std::optional<size_t>> writev_frame(int fd, std::span<const iovec> iov, const std::string& what) {
    return frame_io(fd, iov, what, true);
}

}  // namespace popek::net
