// The I/O engine interface: asynchronous reads, writes, flushes, discards
// and zeroing on file descriptors, kept apart from what the bytes mean
// (the image format) and from who asked (the device).
//
// Usage: prepare() any number of requests, submit() them, then whenever
// event_fd() is readable, reap() the completions. Each completion carries
// the caller's token and a result: bytes transferred for reads and writes
// (less than asked only at end of file), 0 for the others, or -errno.
// An engine is used from one thread (the device's event loop).
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/result.hpp"

namespace popek::block {

enum class IoOp : uint8_t {
    Read,         // preadv into iov at offset
    Write,        // pwritev from iov at offset
    Flush,        // fdatasync
    Discard,      // deallocate [offset, offset+length); reads back zero on raw files
    WriteZeroes,  // [offset, offset+length) reads back zero afterwards
};

struct IoRequest {
    IoOp op = IoOp::Read;
    int fd = -1;
    uint64_t token = 0;               // returned in the completion
    uint64_t offset = 0;
    uint64_t length = 0;              // Discard, WriteZeroes
    std::span<const iovec> iov = {};  // Read, Write: copied by prepare(); the memory
                                      // they point to must stay valid until completion
};

struct IoCompletion {
    uint64_t token;
    int64_t result;  // bytes, 0, or -errno
};

enum class EngineKind { Sync, IoUring };
[[nodiscard]] const char* engine_name(EngineKind kind);

class IoEngine {
public:
    virtual ~IoEngine() = default;

    // Queues a request; nothing reaches the kernel before submit(). An error
    // here means the request was not queued (no completion will come).
    virtual base::Result<void> prepare(const IoRequest& req) = 0;
    // Starts everything prepared since the last submit.
    virtual base::Result<void> submit() = 0;
    // Readable when completions are waiting; add it to an EventLoop.
    [[nodiscard]] virtual int event_fd() const = 0;
    // Appends every finished request to `out` (non-blocking).
    virtual void reap(std::vector<IoCompletion>& out) = 0;
    // Blocks until reap() would return something, or returns at once when
    // nothing is in flight (used to drain before a reset or snapshot).
    virtual void wait() = 0;
    // Requests prepared and not yet reaped.
    [[nodiscard]] virtual size_t in_flight() const = 0;
    [[nodiscard]] virtual EngineKind kind() const = 0;
};

constexpr unsigned kDefaultQueueDepth = 128;

// The Sync engine always works. IoUring fails with a clear error when the
// kernel refuses io_uring (old kernel, kernel.io_uring_disabled, seccomp);
// the caller may then fall back to Sync.
base::Result<std::unique_ptr<IoEngine>> make_engine(EngineKind kind, unsigned queue_depth = kDefaultQueueDepth);

}  // namespace popek::block
