#include "block/sync_io.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>

namespace popek::block {

uint64_t iov_bytes(std::span<const iovec> iov) {
    uint64_t n = 0;
    for (const auto& v : iov) n += v.iov_len;
    return n;
}

void advance_iov(std::vector<iovec>& iov, uint64_t n) {
    size_t drop = 0;
    while (drop < iov.size() && n >= iov[drop].iov_len) {
        n -= iov[drop].iov_len;
        ++drop;
    }
    iov.erase(iov.begin(), iov.begin() + static_cast<std::ptrdiff_t>(drop));
    if (n > 0 && !iov.empty()) {
        iov.front().iov_base = static_cast<uint8_t*>(iov.front().iov_base) + n;
        iov.front().iov_len -= n;
    }
}

namespace {

template <class Syscall>
int64_t transfer_all(Syscall call, int fd, std::vector<iovec> iov, uint64_t offset) {
    uint64_t done = 0;
    while (!iov.empty()) {
        const int count = static_cast<int>(std::min<size_t>(iov.size(), IOV_MAX));
        const ssize_t n = call(fd, iov.data(), count, static_cast<off_t>(offset + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (n == 0) break;  // end of file
        done += static_cast<uint64_t>(n);
        advance_iov(iov, static_cast<uint64_t>(n));
    }
    return static_cast<int64_t>(done);
}

int fallocate_retry(int fd, int mode, uint64_t offset, uint64_t length) {
    int rc;
    do {
        rc = ::fallocate(fd, mode, static_cast<off_t>(offset), static_cast<off_t>(length));
    } while (rc != 0 && errno == EINTR);
    return rc == 0 ? 0 : -errno;
}

}  // namespace

int64_t readv_all(int fd, std::vector<iovec> iov, uint64_t offset) {
    return transfer_all(::preadv, fd, std::move(iov), offset);
}

int64_t writev_all(int fd, std::vector<iovec> iov, uint64_t offset) {
    return transfer_all(::pwritev, fd, std::move(iov), offset);
}

int64_t flush_sync(int fd) {
    int rc;
    do {
        rc = ::fdatasync(fd);
    } while (rc != 0 && errno == EINTR);
    return rc == 0 ? 0 : -errno;
}

bool fallocate_unsupported(int err) { return err == EOPNOTSUPP || err == ENOSYS || err == EINVAL; }

int64_t discard_sync(int fd, uint64_t offset, uint64_t length) {
    if (length == 0) return 0;
    const int rc = fallocate_retry(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
    return rc != 0 && fallocate_unsupported(-rc) ? 0 : rc;
}

int64_t write_zero_bytes(int fd, uint64_t offset, uint64_t length) {
    std::vector<uint8_t> zeros(std::min<uint64_t>(length, 64 * 1024));
    uint64_t done = 0;
    while (done < length) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), length - done));
        const ssize_t w = ::pwrite(fd, zeros.data(), n, static_cast<off_t>(offset + done));
        if (w < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (w == 0) return -EIO;
        done += static_cast<uint64_t>(w);
    }
    return 0;
}

int64_t write_zeroes_sync(int fd, uint64_t offset, uint64_t length) {
    if (length == 0) return 0;
    int rc = fallocate_retry(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length);
    if (rc == 0 || !fallocate_unsupported(-rc)) return rc;
    rc = fallocate_retry(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
    if (rc == 0 || !fallocate_unsupported(-rc)) return rc;
    return write_zero_bytes(fd, offset, length);
}

}  // namespace popek::block
