// Blocking building blocks both engines share: whole-buffer preadv/pwritev
// loops, fdatasync, and discard / write-zeroes with their fallbacks.
// Each returns what an IoCompletion carries: bytes or 0 on success, -errno.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <span>
#include <vector>

namespace popek::block {

// Total bytes an iovec list describes.
uint64_t iov_bytes(std::span<const iovec> iov);
// Drops the first `n` bytes from the front of `iov` (after a partial transfer).
void advance_iov(std::vector<iovec>& iov, uint64_t n);

// Transfers all of `iov`, retrying short transfers and EINTR; a read stops
// early only at end of file. Lists longer than IOV_MAX are split.
int64_t readv_all(int fd, std::vector<iovec> iov, uint64_t offset);
int64_t writev_all(int fd, std::vector<iovec> iov, uint64_t offset);

int64_t flush_sync(int fd);
// Deallocates the range (PUNCH_HOLE | KEEP_SIZE). Where the file system
// cannot, discard is a successful no-op: it is only a hint.
int64_t discard_sync(int fd, uint64_t offset, uint64_t length);
// ZERO_RANGE, else PUNCH_HOLE, else writing zeros: afterwards the range
// reads back as zeros. The fallocate modes keep the file size; writing
// zeros past the end of the file would extend it (callers stay inside).
int64_t write_zeroes_sync(int fd, uint64_t offset, uint64_t length);
// The last resort of write_zeroes_sync, on its own for the io_uring engine.
int64_t write_zero_bytes(int fd, uint64_t offset, uint64_t length);

// Whether a fallocate mode failed because the file system lacks it (try the
// next fallback) rather than because of the request.
bool fallocate_unsupported(int err);

}  // namespace popek::block
