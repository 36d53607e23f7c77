// Both I/O engines against a real temporary file: every operation, short
// reads at the end of the file, errors as -errno, completions through the
// eventfd.
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

#include "block/io_engine.hpp"

namespace popek::block {
namespace {

class TempFile {
public:
    explicit TempFile(uint64_t size) {
        const char* dir = std::getenv("TMPDIR");
        path_ = std::string(dir != nullptr ? dir : "/tmp") + "/popek-engine-XXXXXX";
        fd_ = ::mkstemp(path_.data());
        EXPECT_GE(fd_, 0);
        EXPECT_EQ(::ftruncate(fd_, static_cast<off_t>(size)), 0);
    }
    ~TempFile() {
        ::close(fd_);
        ::unlink(path_.c_str());
    }
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    [[nodiscard]] int fd() const { return fd_; }
    [[nodiscard]] const std::string& path() const { return path_; }

    void fill(uint64_t offset, uint64_t len, uint8_t byte) const {
        std::vector<uint8_t> b(len, byte);
        ASSERT_EQ(::pwrite(fd_, b.data(), b.size(), static_cast<off_t>(offset)), static_cast<ssize_t>(len));
    }
    [[nodiscard]] std::vector<uint8_t> read(uint64_t offset, uint64_t len) const {
        std::vector<uint8_t> b(len);
        EXPECT_EQ(::pread(fd_, b.data(), b.size(), static_cast<off_t>(offset)), static_cast<ssize_t>(len));
        return b;
    }

private:
    std::string path_;
    int fd_ = -1;
};

class BlockEngine : public ::testing::TestWithParam<EngineKind> {
protected:
    void SetUp() override {
        auto e = make_engine(GetParam(), 8);  // small: exercises a full submission ring
        ASSERT_TRUE(e.ok()) << e.error().message;
        engine_ = std::move(e).value();
    }

    // Submits, then waits on the eventfd (as an event loop would) until
    // `count` completions have arrived.
    std::vector<IoCompletion> finish(size_t count) {
        EXPECT_TRUE(engine_->submit().ok());
        std::vector<IoCompletion> out;
        while (out.size() < count) {
            pollfd p{engine_->event_fd(), POLLIN, 0};
            const int n = ::poll(&p, 1, 10000);
            EXPECT_EQ(n, 1) << "no completion signalled on the eventfd";
            if (n != 1) break;
            engine_->reap(out);
        }
        EXPECT_EQ(engine_->in_flight(), 0u);
        return out;
    }

    int64_t run_one(const IoRequest& req) {
        EXPECT_TRUE(engine_->prepare(req).ok());
        auto done = finish(1);
        EXPECT_EQ(done.size(), 1u);
        if (done.size() != 1) return INT64_MIN;
        EXPECT_EQ(done[0].token, req.token);
        return done[0].result;
    }

    std::unique_ptr<IoEngine> engine_;
};

TEST_P(BlockEngine, WritesAndReadsBackThroughIovecLists) {
    TempFile f(1 << 20);
    std::vector<uint8_t> a(1000), b(3096);
    for (size_t i = 0; i < a.size(); i++) a[i] = static_cast<uint8_t>(i * 7);
    for (size_t i = 0; i < b.size(); i++) b[i] = static_cast<uint8_t>(i * 13 + 1);
    const iovec out[] = {{a.data(), a.size()}, {b.data(), b.size()}};
    EXPECT_EQ(run_one({IoOp::Write, f.fd(), 42, 8192, 0, out}), 4096);

    auto on_disk = f.read(8192, 4096);
    EXPECT_TRUE(std::equal(a.begin(), a.end(), on_disk.begin()));
    EXPECT_TRUE(std::equal(b.begin(), b.end(), on_disk.begin() + 1000));

    std::vector<uint8_t> c(3000), d(1096);
    const iovec in[] = {{c.data(), c.size()}, {d.data(), d.size()}};
    EXPECT_EQ(run_one({IoOp::Read, f.fd(), 43, 8192, 0, in}), 4096);
    std::vector<uint8_t> back(c);
    back.insert(back.end(), d.begin(), d.end());
    EXPECT_EQ(back, on_disk);
}

TEST_P(BlockEngine, ManyRequestsInFlightCompleteWithTheirTokens) {
    TempFile f(1 << 20);
    constexpr size_t kCount = 40;  // more than the queue depth of 8
    std::vector<std::vector<uint8_t>> bufs(kCount);
    std::vector<iovec> iovs(kCount);
    for (size_t i = 0; i < kCount; i++) {
        bufs[i].assign(512, static_cast<uint8_t>(i + 1));
        iovs[i] = {bufs[i].data(), bufs[i].size()};
        ASSERT_TRUE(engine_->prepare({IoOp::Write, f.fd(), 1000 + i, 512 * i, 0, {&iovs[i], 1}}).ok());
    }
    auto done = finish(kCount);
    ASSERT_EQ(done.size(), kCount);
    std::vector<bool> seen(kCount);
    for (const auto& c : done) {
        ASSERT_GE(c.token, 1000u);
        ASSERT_LT(c.token, 1000 + kCount);
        EXPECT_EQ(c.result, 512);
        seen[c.token - 1000] = true;
    }
    for (size_t i = 0; i < kCount; i++) {
        EXPECT_TRUE(seen[i]);
        EXPECT_EQ(f.read(512 * i, 512), bufs[i]) << "block " << i;
    }
}

TEST_P(BlockEngine, FlushSucceeds) {
    TempFile f(4096);
    EXPECT_EQ(run_one({IoOp::Flush, f.fd(), 7, 0, 0, {}}), 0);
}

TEST_P(BlockEngine, DiscardPunchesAHoleThatReadsBackZero) {
    TempFile f(1 << 20);
    f.fill(0, 1 << 20, 0xaa);
    EXPECT_EQ(run_one({IoOp::Discard, f.fd(), 1, 64 << 10, 128 << 10, {}}), 0);
    EXPECT_EQ(f.read(64 << 10, 128 << 10), std::vector<uint8_t>(128 << 10, 0));
    EXPECT_EQ(f.read(0, 64 << 10), std::vector<uint8_t>(64 << 10, 0xaa));
    EXPECT_EQ(f.read(192 << 10, 64 << 10), std::vector<uint8_t>(64 << 10, 0xaa));
    struct stat st{};
    ASSERT_EQ(::fstat(f.fd(), &st), 0);
    EXPECT_EQ(st.st_size, 1 << 20) << "discard must keep the size";
}

TEST_P(BlockEngine, WriteZeroesZeroesExactlyTheRange) {
    TempFile f(1 << 20);
    f.fill(0, 1 << 20, 0x5c);
    const uint64_t start = 4096 + 512, len = 3 * 4096 + 1024;  // unaligned to pages on purpose
    EXPECT_EQ(run_one({IoOp::WriteZeroes, f.fd(), 2, start, len, {}}), 0);
    auto all = f.read(0, 1 << 20);
    for (uint64_t i = 0; i < all.size(); i++) {
        const bool inside = i >= start && i < start + len;
        ASSERT_EQ(all[i], inside ? 0 : 0x5c) << "byte " << i;
    }
    struct stat st{};
    ASSERT_EQ(::fstat(f.fd(), &st), 0);
    EXPECT_EQ(st.st_size, 1 << 20);
}

TEST_P(BlockEngine, ReadsShortAtEndOfFile) {
    TempFile f(10000);
    f.fill(8192, 10000 - 8192, 0x77);
    std::vector<uint8_t> buf(8192, 0xee);
    const iovec in[] = {{buf.data(), 4096}, {buf.data() + 4096, 4096}};
    EXPECT_EQ(run_one({IoOp::Read, f.fd(), 3, 8192, 0, in}), 10000 - 8192);
    EXPECT_EQ(buf[0], 0x77);
    EXPECT_EQ(buf[10000 - 8192 - 1], 0x77);
    EXPECT_EQ(buf[10000 - 8192], 0xee) << "bytes past the end of the file are left alone";
    EXPECT_EQ(run_one({IoOp::Read, f.fd(), 4, 20000, 0, in}), 0) << "entirely past the end";
}

TEST_P(BlockEngine, ErrorsArriveAsNegativeErrno) {
    TempFile f(4096);
    const int ro = ::open(f.path().c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(ro, 0);
    std::vector<uint8_t> buf(512, 1);
    const iovec io[] = {{buf.data(), buf.size()}};
    EXPECT_EQ(run_one({IoOp::Write, ro, 5, 0, 0, io}), -EBADF) << "writing through a read-only fd";
    EXPECT_EQ(run_one({IoOp::Discard, ro, 6, 0, 4096, {}}), -EBADF);
    EXPECT_EQ(run_one({IoOp::WriteZeroes, ro, 7, 0, 4096, {}}), -EBADF);
    ::close(ro);
    const int dir = ::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(dir, 0);
    EXPECT_EQ(run_one({IoOp::Read, dir, 8, 0, 0, io}), -EISDIR);
    ::close(dir);
}

// "BlockEngines/BlockEngine.<test>/Sync": the prefix keeps --gtest_filter=Block* matching.
INSTANTIATE_TEST_SUITE_P(BlockEngines, BlockEngine, ::testing::Values(EngineKind::Sync, EngineKind::IoUring),
                         [](const auto& p) { return std::string(p.param == EngineKind::Sync ? "Sync" : "IoUring"); });

}  // namespace
}  // namespace popek::block
