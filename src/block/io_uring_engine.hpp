// The io_uring engine (Debian's liburing): every request becomes one SQE,
// completions are announced on an eventfd registered with the ring. Short
// transfers are resubmitted for the rest, so results mean what the sync
// engine's mean (short only at end of file).
#pragma once

#include <liburing.h>

#include <vector>

#include "base/unique_fd.hpp"
#include "block/io_engine.hpp"

namespace popek::block {

class IoUringEngine final : public IoEngine {
public:
    // Fails when the kernel refuses io_uring; the message says so.
    static base::Result<std::unique_ptr<IoEngine>> create(unsigned queue_depth);
    ~IoUringEngine() override;
    IoUringEngine(const IoUringEngine&) = delete;
    IoUringEngine& operator=(const IoUringEngine&) = delete;

    base::Result<void> prepare(const IoRequest& req) override;
    base::Result<void> submit() override;
    [[nodiscard]] int event_fd() const override { return event_.get(); }
    void reap(std::vector<IoCompletion>& out) override;
    void wait() override;
    [[nodiscard]] size_t in_flight() const override { return busy_ + ready_.size(); }
    [[nodiscard]] EngineKind kind() const override { return EngineKind::IoUring; }

private:
    IoUringEngine() = default;

    // One request while the kernel has it; its slot index is the SQE's user_data.
    struct Op {
        IoOp op = IoOp::Read;
        int fd = -1;
        uint64_t token = 0, offset = 0, length = 0;
        std::vector<iovec> iov;  // what is left to transfer
        uint64_t done = 0;       // bytes transferred so far
        uint8_t stage = 0;       // WriteZeroes: 0 ZERO_RANGE, 1 PUNCH_HOLE
        uint8_t retries = 0;     // EINTR/EAGAIN resubmissions
        bool busy = false;
    };

    base::Result<void> queue(uint32_t slot);
    void on_cqe(uint32_t slot, int res);
    void requeue(uint32_t slot);
    void complete(uint32_t slot, int64_t result);

    io_uring ring_{};
    bool ring_ok_ = false;
    base::UniqueFd event_;
    std::vector<Op> ops_;
    std::vector<uint32_t> free_;
    std::vector<IoCompletion> ready_;
    size_t busy_ = 0;
    bool unsubmitted_ = false;  // SQEs in the ring the kernel has not taken yet
};

}  // namespace popek::block
