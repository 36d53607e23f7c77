#include "block/io_uring_engine.hpp"

#include <linux/falloc.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "block/sync_io.hpp"

namespace popek::block {

using base::Error;
using base::Result;

namespace {
constexpr uint8_t kMaxRetries = 16;
}

Result<std::unique_ptr<IoEngine>> IoUringEngine::create(unsigned queue_depth) {
    std::unique_ptr<IoUringEngine> e(new IoUringEngine());
    io_uring_params params{};
    params.flags = IORING_SETUP_CQSIZE;
    params.cq_entries = std::max(queue_depth, 1u) * 4;  // room for requests resubmitted while others finish
    const int rc = io_uring_queue_init_params(std::max(queue_depth, 1u), &e->ring_, &params);
    if (rc < 0)
        return Error{std::string("io_uring is not available (io_uring_setup: ") + std::strerror(-rc) +
                         "); check the kernel.io_uring_disabled sysctl or seccomp policy, or use the sync "
                         "I/O engine",
                     -rc};
    e->ring_ok_ = true;
    e->event_ = base::UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!e->event_.valid()) return Error::from_errno("io_uring engine: eventfd");
    const int reg = io_uring_register_eventfd(&e->ring_, e->event_.get());
    if (reg < 0) return Error::from_errno("io_uring engine: registering its eventfd", -reg);
    return std::unique_ptr<IoEngine>(std::move(e));
}

IoUringEngine::~IoUringEngine() {
    if (!ring_ok_) return;
    // The kernel may still be writing into memory the requests point at:
    // wait for every one before the ring (and the caller's buffers) go away.
    std::vector<IoCompletion> dropped;
    while (busy_ > 0) {
        wait();
        reap(dropped);
        dropped.clear();
    }
    io_uring_queue_exit(&ring_);
}

Result<void> IoUringEngine::prepare(const IoRequest& req) {
    uint32_t slot;
    if (!free_.empty()) {
        slot = free_.back();
        free_.pop_back();
    } else {
        slot = static_cast<uint32_t>(ops_.size());
        ops_.emplace_back();
    }
    Op& o = ops_[slot];
    o = Op{req.op, req.fd, req.token, req.offset, req.length, {req.iov.begin(), req.iov.end()}, 0, 0, 0, true};
    ++busy_;
    auto queued = queue(slot);
    if (!queued.ok()) {
        o.busy = false;
        --busy_;
        free_.push_back(slot);
    }
    return queued;
}

Result<void> IoUringEngine::queue(uint32_t slot) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {  // the submission ring is full: hand it to the kernel and try again
        (void)submit();
        sqe = io_uring_get_sqe(&ring_);
        if (sqe == nullptr) return Error{"io_uring engine: submission queue full", EBUSY};
    }
    Op& o = ops_[slot];
    const auto nr = static_cast<unsigned>(std::min<size_t>(o.iov.size(), IOV_MAX));
    const uint64_t at = o.offset + o.done;
    switch (o.op) {
        case IoOp::Read:
            io_uring_prep_readv(sqe, o.fd, o.iov.data(), nr, at);
            break;
        case IoOp::Write:
            io_uring_prep_writev(sqe, o.fd, o.iov.data(), nr, at);
            break;
        case IoOp::Flush:
            io_uring_prep_fsync(sqe, o.fd, IORING_FSYNC_DATASYNC);
            break;
        case IoOp::Discard:
            io_uring_prep_fallocate(sqe, o.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                    static_cast<off_t>(o.offset), static_cast<off_t>(o.length));
            break;
        case IoOp::WriteZeroes:
            io_uring_prep_fallocate(sqe, o.fd,
                                    (o.stage == 0 ? FALLOC_FL_ZERO_RANGE : FALLOC_FL_PUNCH_HOLE) | FALLOC_FL_KEEP_SIZE,
                                    static_cast<off_t>(o.offset), static_cast<off_t>(o.length));
            break;
    }
    io_uring_sqe_set_data64(sqe, slot);
    unsubmitted_ = true;
    return {};
}

Result<void> IoUringEngine::submit() {
    if (!unsubmitted_) return {};
    int rc;
    do {
        rc = io_uring_submit(&ring_);
    } while (rc == -EINTR);
    // On failure the SQEs stay in the ring; the next submit() tries again.
    if (rc < 0) return Error::from_errno("io_uring_submit", -rc);
    unsubmitted_ = false;
    return {};
}

void IoUringEngine::complete(uint32_t slot, int64_t result) {
    Op& o = ops_[slot];
    ready_.push_back(IoCompletion{o.token, result});
    o.busy = false;
    o.iov = {};
    --busy_;
    free_.push_back(slot);
}

void IoUringEngine::requeue(uint32_t slot) {
    if (!queue(slot).ok()) complete(slot, -EBUSY);
}

void IoUringEngine::on_cqe(uint32_t slot, int res) {
    if (slot >= ops_.size() || !ops_[slot].busy) return;  // not ours: ignore
    Op& o = ops_[slot];
    if ((res == -EINTR || res == -EAGAIN) && o.retries < kMaxRetries) {
        ++o.retries;
        requeue(slot);
        return;
    }
    switch (o.op) {
        case IoOp::Read:
        case IoOp::Write:
            if (res < 0) return complete(slot, o.done > 0 ? static_cast<int64_t>(o.done) : res);
            if (res == 0) return complete(slot, static_cast<int64_t>(o.done));  // end of file
            o.done += static_cast<uint64_t>(res);
            advance_iov(o.iov, static_cast<uint64_t>(res));
            if (o.iov.empty()) return complete(slot, static_cast<int64_t>(o.done));
            o.retries = 0;
            return requeue(slot);
        case IoOp::Flush:
            return complete(slot, res);
        case IoOp::Discard:  // only a hint: a file system that cannot deallocate has done its part
            return complete(slot, res < 0 && fallocate_unsupported(-res) ? 0 : res);
        case IoOp::WriteZeroes:
            if (res >= 0 || !fallocate_unsupported(-res)) return complete(slot, res);
            if (o.stage == 0) {
                o.stage = 1;
                return requeue(slot);
            }
            // Neither fallocate mode: write the zeros (rare; only odd file systems).
            return complete(slot, write_zero_bytes(o.fd, o.offset, o.length));
    }
}

void IoUringEngine::reap(std::vector<IoCompletion>& out) {
    // Reset the eventfd first: a CQE posted after this read signals it again.
    uint64_t count;
    (void)!::read(event_.get(), &count, sizeof count);
    io_uring_cqe* cqe = nullptr;
    while (io_uring_peek_cqe(&ring_, &cqe) == 0 && cqe != nullptr) {
        const auto slot = io_uring_cqe_get_data64(cqe);
        const int res = cqe->res;
        io_uring_cqe_seen(&ring_, cqe);
        on_cqe(slot < UINT32_MAX ? static_cast<uint32_t>(slot) : UINT32_MAX, res);
    }
    (void)submit();  // the resubmitted rest of short transfers
    out.insert(out.end(), ready_.begin(), ready_.end());
    ready_.clear();
}

void IoUringEngine::wait() {
    if (!ready_.empty() || busy_ == 0) return;
    (void)submit();
    io_uring_cqe* cqe = nullptr;
    int rc;
    do {
        rc = io_uring_wait_cqe(&ring_, &cqe);  // leaves the CQE for reap()
    } while (rc == -EINTR);
}

}  // namespace popek::block
