// virtio-net against a hand-built driver in guest memory, with a
// SOCK_SEQPACKET socketpair as the backend (one datagram = header + frame).
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "memory/guest_memory.hpp"
#include "virtio/net/device.hpp"

namespace popek::virtio::net {
namespace {

using Bytes = std::vector<uint8_t>;
using namespace std::chrono_literals;

constexpr uint16_t kNext = 1, kWrite = 2;
constexpr uint16_t kSize = 16;
struct Ring {
    uint64_t desc, avail, used;
};
constexpr Ring kRings[2] = {{0x1000, 0x2000, 0x3000}, {0x4000, 0x5000, 0x6000}};
constexpr uint64_t kBase = 0x10000;  // buffer i of queue q at kBase + (q * 16 + i) * 0x10000
constexpr uint64_t kBaseFeatures = kFeatureVersion1 | kFMac | kFStatus | kFMtu | kFeatureEventIdx;

uint64_t buf_addr(uint16_t q, uint16_t i) { return kBase + (uint64_t{q} * kSize + i) * 0x10000; }

class SocketBackend final : public popek::net::NetBackend {
public:
    SocketBackend(int fd, unsigned offloads, bool accepts) : fd_(fd), supported_(offloads), accepts_(accepts) {}
    int fd() const override { return fd_.get(); }
    base::Result<std::optional<size_t>> receive(std::span<const iovec> iov) override {
        return popek::net::readv_frame(fd_.get(), iov, "socket");
    }
    base::Result<std::optional<size_t>> send(std::span<const iovec> iov) override {
        return popek::net::writev_frame(fd_.get(), iov, "socket");
    }
    unsigned supported_offloads() const override { return supported_; }
    base::Result<void> set_offloads(unsigned o) override {
        offload_calls.push_back(o);
        return {};
    }
    bool accepts_offloaded_frames() const override { return accepts_; }
    std::string description() const override { return "socketpair"; }
    std::vector<unsigned> offload_calls;

private:
    base::UniqueFd fd_;
    unsigned supported_;
    bool accepts_;
};

struct CountingInterrupt final : Interrupt {
    void signal_queue(uint16_t q) override { queue[q & 1]++; }
    void signal_config() override { config++; }
    std::atomic<int> queue[2] = {0, 0};
    std::atomic<int> config{0};
};

Bytes frame(size_t len, uint8_t seed) {
    Bytes f(len);
    for (size_t i = 0; i < len; ++i) f[i] = static_cast<uint8_t>(seed + i * 7);
    f[12] = 0x88, f[13] = 0xb5;
    return f;
}
Bytes with_hdr(const NetHdr& h, const Bytes& f) {
    Bytes out(kNetHdrSize + f.size());
    std::memcpy(out.data(), &h, kNetHdrSize);
    if (!f.empty()) std::memcpy(out.data() + kNetHdrSize, f.data(), f.size());
    return out;
}

class VirtioNet : public ::testing::Test {
protected:
    void SetUp() override {
        memory::RamRange ram[] = {{0, 64 << 20}};
        auto m = memory::GuestMemory::create(ram);
        ASSERT_TRUE(m.ok()) << m.error().message;
        mem_.emplace(std::move(m).value());
        auto l = base::EventLoop::create("net-test");
        ASSERT_TRUE(l.ok());
        loop_ = std::move(l).value();
        make_device();
    }
    void TearDown() override {
        if (dev_) call([&] { dev_->reset(); });
        loop_->stop();
    }
    void make_device(unsigned offloads = 0, bool accepts = false, State state = {{2, 0, 0, 0, 0, 7}}) {
        if (dev_) dev_->reset();
        int sv[2];
        ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
        peer_ = base::UniqueFd(sv[1]);
        auto b = std::make_unique<SocketBackend>(sv[0], offloads, accepts);
        backend_ = b.get();
        dev_ = std::make_unique<NetDevice>("net0", std::move(b), state);
    }
    base::Result<void> activate(uint64_t features = kBaseFeatures) {
        for (uint16_t q = 0; q < 2; ++q) {
            SplitQueue::State s;
            s.size = kSize;
            s.ready = true;
            s.desc_addr = kRings[q].desc, s.avail_addr = kRings[q].avail, s.used_addr = kRings[q].used;
            queues_[q] = SplitQueue(s);
            EXPECT_TRUE(queues_[q].activate(*mem_, features).ok());
            avail_[q] = 0;
            put<uint16_t>(kRings[q].avail + 2, 0);  // a fresh driver's empty rings
            put<uint16_t>(kRings[q].used + 2, 0);
        }
        return dev_->activate(ActivateContext{*mem_, queues_, irq_, *loop_, features, {}});
    }
    void call(const std::function<void()>& fn) { loop_->run_sync(fn); }
    base::Result<void> notify(uint16_t q) {
        base::Result<void> r;
        call([&] { r = dev_->process_queue(q); });
        return r;
    }

    template <class T>
    void put(uint64_t gpa, T v) {
        ASSERT_TRUE(mem_->write_obj(gpa, v).ok());
    }
    template <class T>
    T get(uint64_t gpa) {
        T v{};
        EXPECT_TRUE(mem_->read(gpa, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), sizeof v)).ok());
        return v;
    }
    void desc(uint16_t q, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next = 0) {
        const uint64_t at = kRings[q].desc + 16ull * i;
        put(at, addr), put(at + 8, len), put(at + 12, flags), put(at + 14, next);
    }
    void publish(uint16_t q, uint16_t head) {
        put(kRings[q].avail + 4 + 2ull * (avail_[q] % kSize), head);
        put(kRings[q].avail + 2, ++avail_[q]);
    }
    uint16_t used_idx(uint16_t q) { return get<uint16_t>(kRings[q].used + 2); }
    std::pair<uint32_t, uint32_t> used(uint16_t q, uint16_t n) {
        const uint64_t elem = kRings[q].used + 4 + 8ull * (n % kSize);
        return {get<uint32_t>(elem), get<uint32_t>(elem + 4)};
    }
    // One receive buffer of `len` bytes in descriptor i.
    void add_rx(uint16_t i, uint32_t len) {
        desc(0, i, buf_addr(0, i), len, kWrite);
        publish(0, i);
    }
    // A transmit chain in descriptor i holding `bytes` in one buffer.
    void add_tx(uint16_t i, const Bytes& bytes) {
        ASSERT_TRUE(mem_->write(buf_addr(1, i), bytes).ok());
        desc(1, i, buf_addr(1, i), static_cast<uint32_t>(bytes.size()), 0);
        publish(1, i);
    }
    Bytes guest(uint64_t gpa, size_t len) {
        Bytes b(len);
        EXPECT_TRUE(mem_->read(gpa, b).ok());
        return b;
    }
    void peer_send(const Bytes& b) {
        ASSERT_EQ(::send(peer_.get(), b.data(), b.size(), 0), static_cast<ssize_t>(b.size()));
    }
    // The next datagram the device sent, or empty after `wait`.
    Bytes peer_recv(std::chrono::milliseconds wait = 0ms) {
        pollfd p{peer_.get(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(wait.count())) <= 0) return {};
        Bytes b(70000);
        ssize_t n = ::recv(peer_.get(), b.data(), b.size(), 0);
        b.resize(n > 0 ? static_cast<size_t>(n) : 0);
        return b;
    }
    bool wait_for(const std::function<bool()>& cond) {
        for (auto end = std::chrono::steady_clock::now() + 5s; std::chrono::steady_clock::now() < end;) {
            if (cond()) return true;
            std::this_thread::sleep_for(1ms);
        }
        return cond();
    }

    std::optional<memory::GuestMemory> mem_;
    std::unique_ptr<base::EventLoop> loop_;
    std::unique_ptr<NetDevice> dev_;
    SocketBackend* backend_ = nullptr;
    base::UniqueFd peer_;
    SplitQueue queues_[2];
    uint16_t avail_[2] = {0, 0};
    CountingInterrupt irq_;
};

TEST_F(VirtioNet, OffersOnlyWhatTheBackendCanDo) {
    const uint64_t plain = kFMac | kFStatus | kFMtu | kFeatureEventIdx | kFeatureIndirectDesc;
    EXPECT_EQ(dev_->features(), plain);
    make_device(popek::net::kOffloadCsum | popek::net::kOffloadTso4 | popek::net::kOffloadTso6 |
                    popek::net::kOffloadTsoEcn,
                true);
    EXPECT_EQ(dev_->features(), plain | kFCsum | kFHostTso4 | kFHostTso6 | kFHostEcn | kFGuestCsum | kFGuestTso4 |
                                    kFGuestTso6 | kFGuestEcn);
    make_device(popek::net::kOffloadTso4, false);  // TSO without checksum offload is not usable
    EXPECT_EQ(dev_->features(), plain);
}

TEST_F(VirtioNet, ConfigSpace) {
    uint8_t cfg[16];
    std::memset(cfg, 0xaa, sizeof cfg);
    dev_->read_config(0, cfg);
    const uint8_t want[16] = {2, 0, 0, 0, 0, 7, 1, 0, 1, 0, 0xdc, 0x05, 0, 0, 0, 0};
    EXPECT_EQ(0, std::memcmp(cfg, want, sizeof want));
    uint8_t b = 0;
    dev_->read_config(5, std::span<uint8_t>(&b, 1));
    EXPECT_EQ(b, 7);
    const uint8_t junk[2] = {9, 9};
    dev_->write_config(0, junk);
    uint64_t far = 0xdead;
    dev_->read_config(UINT64_MAX - 2, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&far), 8));
    EXPECT_EQ(far, 0u);
    dev_->set_link_up(false);
    dev_->read_config(6, std::span<uint8_t>(&b, 1));
    EXPECT_EQ(b, 0);
    EXPECT_FALSE(dev_->save().link_up);
    EXPECT_EQ(dev_->save().mac[5], 7);
}

TEST_F(VirtioNet, TransmitsGatheredFrame) {
    ASSERT_TRUE(activate().ok());
    const Bytes f = frame(300, 1);
    const Bytes all = with_hdr(NetHdr{}, f);
    ASSERT_TRUE(mem_->write(buf_addr(1, 0), all).ok());
    desc(1, 4, buf_addr(1, 0), 5, kNext, 5);  // the header split, then the frame in two pieces
    desc(1, 5, buf_addr(1, 0) + 5, 100, kNext, 6);
    desc(1, 6, buf_addr(1, 0) + 105, static_cast<uint32_t>(all.size() - 105), 0);
    publish(1, 4);
    ASSERT_TRUE(notify(1).ok());
    EXPECT_EQ(peer_recv(), all);
    EXPECT_EQ(used_idx(1), 1);
    EXPECT_EQ(used(1, 0), std::make_pair(4u, 0u));
    EXPECT_EQ(irq_.queue[1], 1);
    EXPECT_EQ(dev_->counters().tx_packets, 1u);
    EXPECT_EQ(dev_->counters().tx_bytes, 300u);
}

TEST_F(VirtioNet, TransmitDropsWhatTheFeaturesDoNotAllow) {
    ASSERT_TRUE(activate().ok());
    NetHdr csum{};
    csum.flags = kHdrFNeedsCsum, csum.csum_start = 34, csum.csum_offset = 16;
    NetHdr gso = csum;
    gso.gso_type = kGsoTcpv4, gso.gso_size = 1448;
    NetHdr valid{};
    valid.flags = kHdrFDataValid;
    const std::vector<Bytes> bad = {Bytes(kNetHdrSize + 13), with_hdr(csum, frame(100, 0)),
                                    with_hdr(gso, frame(3000, 0)), with_hdr(valid, frame(100, 0)),
                                    with_hdr(NetHdr{}, frame(1500 + 18 + 1, 0))};
    for (uint16_t i = 0; i < bad.size(); ++i) add_tx(i, bad[i]);
    // A device-writable buffer in a transmit chain.
    desc(1, 9, buf_addr(1, 9), 100, kWrite);
    publish(1, 9);
    ASSERT_TRUE(notify(1).ok());
    EXPECT_EQ(used_idx(1), bad.size() + 1);
    EXPECT_EQ(dev_->counters().tx_dropped, bad.size() + 1);
    EXPECT_TRUE(peer_recv().empty());
    EXPECT_NE(dev_->last_drop(), "");
    const Bytes good = with_hdr(NetHdr{}, frame(1518, 3));  // MTU plus Ethernet and VLAN headers
    add_tx(10, good);
    ASSERT_TRUE(notify(1).ok());
    EXPECT_EQ(peer_recv(), good);
}

TEST_F(VirtioNet, TransmitsOffloadedFrameItNegotiated) {
    make_device(0, true);
    ASSERT_TRUE(activate(kBaseFeatures | kFCsum | kFHostTso4).ok());
    NetHdr h{};
    h.flags = kHdrFNeedsCsum, h.gso_type = kGsoTcpv4, h.gso_size = 1448, h.hdr_len = 54;
    h.csum_start = 34, h.csum_offset = 16, h.num_buffers = 0x5555;
    add_tx(0, with_hdr(h, frame(4000, 2)));
    NetHdr beyond = h;
    beyond.csum_start = 3990;
    add_tx(1, with_hdr(beyond, frame(4000, 2)));
    ASSERT_TRUE(notify(1).ok());
    h.num_buffers = 0;  // the device sends its own checked copy
    EXPECT_EQ(peer_recv(), with_hdr(h, frame(4000, 2)));
    EXPECT_TRUE(peer_recv().empty());
    EXPECT_EQ(dev_->counters().tx_dropped, 1u);
}

TEST_F(VirtioNet, TransmitQueueStructureErrorNeedsReset) {
    ASSERT_TRUE(activate().ok());
    publish(1, 99);  // head out of range
    EXPECT_FALSE(notify(1).ok());
    EXPECT_FALSE(notify(0).ok()) << "the device stays failed until reset";
    call([&] { dev_->reset(); });
    ASSERT_TRUE(activate().ok());
    EXPECT_TRUE(notify(1).ok());
}

TEST_F(VirtioNet, ReceivesFrameWithFittedHeader) {
    ASSERT_TRUE(activate().ok());
    NetHdr h{};
    h.flags = kHdrFDataValid;
    const Bytes f = frame(100, 5);
    peer_send(with_hdr(h, f));
    add_rx(3, 2048);
    ASSERT_TRUE(notify(0).ok());
    ASSERT_EQ(used_idx(0), 1);
    EXPECT_EQ(used(0, 0), std::make_pair(3u, 112u));
    NetHdr want{};
    want.num_buffers = 1;  // flags cleared: no GUEST_CSUM
    EXPECT_EQ(guest(buf_addr(0, 3), 112), with_hdr(want, f));
    EXPECT_EQ(irq_.queue[0], 1);
    EXPECT_EQ(dev_->counters().rx_packets, 1u);
    EXPECT_EQ(dev_->counters().rx_bytes, 100u);
}

TEST_F(VirtioNet, ReceiveOffloadsFollowTheDriver) {
    make_device(popek::net::kOffloadCsum | popek::net::kOffloadTso4, false);
    ASSERT_TRUE(activate(kBaseFeatures | kFGuestCsum).ok());
    EXPECT_EQ(backend_->offload_calls, std::vector<unsigned>{popek::net::kOffloadCsum});
    NetHdr h{};
    h.flags = kHdrFDataValid;
    peer_send(with_hdr(h, frame(60, 0)));
    NetHdr tso = h;
    tso.gso_type = kGsoTcpv4, tso.gso_size = 1000;  // not negotiated: dropped
    peer_send(with_hdr(tso, frame(60, 0)));
    add_rx(0, 2048);
    add_rx(1, 2048);
    ASSERT_TRUE(notify(0).ok());
    EXPECT_EQ(used_idx(0), 1);
    EXPECT_EQ(get<uint8_t>(buf_addr(0, 0)), kHdrFDataValid);
    EXPECT_EQ(dev_->counters().rx_dropped, 1u);
    call([&] { dev_->reset(); });
    EXPECT_EQ(backend_->offload_calls.back(), 0u);
    EXPECT_FALSE(activate(kBaseFeatures | kFGuestTso4).ok()) << "GUEST_TSO4 needs GUEST_CSUM";
}

TEST_F(VirtioNet, ReceivesIntoScatteredChainAndDropsWhatDoesNotFit) {
    ASSERT_TRUE(activate().ok());
    const Bytes big = frame(200, 1), small = frame(90, 2);
    peer_send(with_hdr(NetHdr{}, big));
    peer_send(with_hdr(NetHdr{}, small));
    desc(0, 0, buf_addr(0, 0), 8, kWrite | kNext, 1);  // 12 + 100 bytes in three pieces
    desc(0, 1, buf_addr(0, 1), 20, kWrite | kNext, 2);
    desc(0, 2, buf_addr(0, 2), 84, kWrite);
    publish(0, 0);
    ASSERT_TRUE(notify(0).ok());
    EXPECT_EQ(dev_->counters().rx_dropped, 1u) << "the 200-byte frame does not fit";
    ASSERT_EQ(used_idx(0), 1);
    EXPECT_EQ(used(0, 0), std::make_pair(0u, 102u)) << "the same chain took the next frame";
    Bytes got = guest(buf_addr(0, 0), 8);
    for (auto [at, len] : {std::pair{buf_addr(0, 1), 20}, std::pair{buf_addr(0, 2), 74}}) {
        Bytes piece = guest(at, static_cast<size_t>(len));
        got.insert(got.end(), piece.begin(), piece.end());
    }
    NetHdr want{};
    want.num_buffers = 1;
    EXPECT_EQ(got, with_hdr(want, small));
}

TEST_F(VirtioNet, BadReceiveChainsAreReturnedUnused) {
    ASSERT_TRUE(activate().ok());
    peer_send(with_hdr(NetHdr{}, frame(64, 0)));
    desc(0, 0, buf_addr(0, 0), 100, 0);  // device-readable
    publish(0, 0);
    add_rx(1, 20);  // too small for any frame
    add_rx(2, 2048);
    ASSERT_TRUE(notify(0).ok());
    ASSERT_EQ(used_idx(0), 3);
    EXPECT_EQ(used(0, 0), std::make_pair(0u, 0u));
    EXPECT_EQ(used(0, 1), std::make_pair(1u, 0u));
    EXPECT_EQ(used(0, 2), std::make_pair(2u, 76u));
    EXPECT_EQ(dev_->counters().rx_bad_buffers, 2u);
}

TEST_F(VirtioNet, WithoutBuffersFramesWaitInTheBackend) {
    loop_->start();
    ASSERT_TRUE(activate().ok());
    for (uint8_t i = 0; i < 3; ++i) peer_send(with_hdr(NetHdr{}, frame(60 + i, i)));
    std::this_thread::sleep_for(50ms);  // the loop sees the fd, finds no buffer and stops watching it
    EXPECT_EQ(used_idx(0), 0);
    for (uint16_t i = 0; i < 4; ++i) add_rx(i, 2048);
    ASSERT_TRUE(notify(0).ok());
    ASSERT_EQ(used_idx(0), 3);
    for (uint16_t i = 0; i < 3; ++i) {
        EXPECT_EQ(used(0, i).second, kNetHdrSize + 60 + i);
        EXPECT_EQ(guest(buf_addr(0, i) + kNetHdrSize, 60u + i), frame(60 + i, static_cast<uint8_t>(i)));
    }
    // With a buffer left, the next frame arrives through the loop alone.
    peer_send(with_hdr(NetHdr{}, frame(70, 9)));
    EXPECT_TRUE(wait_for([&] { return used_idx(0) == 4; }));
    EXPECT_EQ(dev_->counters().rx_packets, 4u);
}

TEST_F(VirtioNet, QueueErrorFoundByTheLoopIsReportedNext) {
    loop_->start();
    ASSERT_TRUE(activate().ok());
    publish(0, 77);
    peer_send(with_hdr(NetHdr{}, frame(60, 0)));
    EXPECT_TRUE(wait_for([&] { return !notify(1).ok(); }));
}

TEST_F(VirtioNet, TransmitWaitsWhileTheBackendIsFull) {
    int small = 1;
    ASSERT_EQ(::setsockopt(backend_->fd(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    loop_->start();
    ASSERT_TRUE(activate().ok());
    for (uint16_t i = 0; i < kSize; ++i) add_tx(i, with_hdr(NetHdr{}, frame(1000, static_cast<uint8_t>(i))));
    ASSERT_TRUE(notify(1).ok());
    EXPECT_LT(used_idx(1), kSize) << "the socket cannot hold all of them";
    for (uint16_t i = 0; i < kSize; ++i)
        EXPECT_EQ(peer_recv(5000ms), with_hdr(NetHdr{}, frame(1000, static_cast<uint8_t>(i)))) << i;
    EXPECT_TRUE(wait_for([&] { return used_idx(1) == kSize; }));
    EXPECT_EQ(dev_->counters().tx_packets, kSize);
}

TEST_F(VirtioNet, LinkDownDropsBothWays) {
    ASSERT_TRUE(activate().ok());
    dev_->set_link_up(false);
    EXPECT_EQ(irq_.config, 1);
    add_tx(0, with_hdr(NetHdr{}, frame(60, 0)));
    ASSERT_TRUE(notify(1).ok());
    EXPECT_EQ(used_idx(1), 1);
    EXPECT_TRUE(peer_recv().empty());
    peer_send(with_hdr(NetHdr{}, frame(60, 0)));
    add_rx(0, 2048);
    ASSERT_TRUE(notify(0).ok());
    EXPECT_EQ(used_idx(0), 0);
    EXPECT_EQ(dev_->counters().rx_dropped, 1u);
    EXPECT_EQ(dev_->counters().tx_dropped, 1u);
    dev_->set_link_up(true);
    EXPECT_EQ(irq_.config, 2);
    peer_send(with_hdr(NetHdr{}, frame(60, 0)));
    ASSERT_TRUE(notify(0).ok());
    EXPECT_EQ(used_idx(0), 1);
}

TEST_F(VirtioNet, MtuBindsReceivedFrames) {
    ASSERT_TRUE(activate().ok());
    peer_send(with_hdr(NetHdr{}, frame(1600, 0)));
    add_rx(0, 4096);
    ASSERT_TRUE(notify(0).ok());
    EXPECT_EQ(used_idx(0), 0);
    EXPECT_EQ(dev_->counters().rx_dropped, 1u);
}

}  // namespace
}  // namespace popek::virtio::net
