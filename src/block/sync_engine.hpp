// The engine that always works: submit() does each request with blocking
// syscalls on the calling thread, then signals the eventfd, so completions
// still arrive through the event loop like the io_uring engine's.
#pragma once

#include <vector>

#include "base/unique_fd.hpp"
#include "block/io_engine.hpp"

namespace popek::block {

class SyncEngine final : public IoEngine {
public:
    static base::Result<std::unique_ptr<IoEngine>> create();

    base::Result<void> prepare(const IoRequest& req) override;
    base::Result<void> submit() override;
    [[nodiscard]] int event_fd() const override { return event_.get(); }
    void reap(std::vector<IoCompletion>& out) override;
    void wait() override;
    [[nodiscard]] size_t in_flight() const override { return pending_.size() + done_.size(); }
    [[nodiscard]] EngineKind kind() const override { return EngineKind::Sync; }

private:
    explicit SyncEngine(base::UniqueFd event) : event_(std::move(event)) {}

    struct Pending {
        IoOp op;
        int fd;
        uint64_t token, offset, length;
        std::vector<iovec> iov;
    };
    static int64_t run(Pending& p);

    base::UniqueFd event_;
    std::vector<Pending> pending_;
    std::vector<IoCompletion> done_;
};

}  // namespace popek::block
