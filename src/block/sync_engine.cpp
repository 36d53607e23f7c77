#include "block/sync_engine.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include "block/sync_io.hpp"

namespace popek::block {

using base::Error;
using base::Result;

Result<std::unique_ptr<IoEngine>> SyncEngine::create() {
    base::UniqueFd event(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!event.valid()) return Error::from_errno("sync I/O engine: eventfd");
    return std::unique_ptr<IoEngine>(new SyncEngine(std::move(event)));
}

Result<void> SyncEngine::prepare(const IoRequest& req) {
    pending_.push_back(Pending{req.op, req.fd, req.token, req.offset, req.length,
                               std::vector<iovec>(req.iov.begin(), req.iov.end())});
    return {};
}

int64_t SyncEngine::run(Pending& p) {
    switch (p.op) {
        case IoOp::Read:
            return readv_all(p.fd, std::move(p.iov), p.offset);
        case IoOp::Write:
            return writev_all(p.fd, std::move(p.iov), p.offset);
        case IoOp::Flush:
            return flush_sync(p.fd);
        case IoOp::Discard:
            return discard_sync(p.fd, p.offset, p.length);
        case IoOp::WriteZeroes:
            return write_zeroes_sync(p.fd, p.offset, p.length);
    }
    return -EINVAL;
}

Result<void> SyncEngine::submit() {
    if (pending_.empty()) return {};
    for (auto& p : pending_) done_.push_back(IoCompletion{p.token, run(p)});
    pending_.clear();
    const uint64_t one = 1;
    if (::write(event_.get(), &one, sizeof one) != sizeof one)
        return Error::from_errno("sync I/O engine: signalling its eventfd");
    return {};
}

void SyncEngine::reap(std::vector<IoCompletion>& out) {
    uint64_t count;
    (void)!::read(event_.get(), &count, sizeof count);
    out.insert(out.end(), done_.begin(), done_.end());
    done_.clear();
}

void SyncEngine::wait() {
    // Everything submitted is already done; do what was only prepared.
    (void)submit();
}

}  // namespace popek::block
