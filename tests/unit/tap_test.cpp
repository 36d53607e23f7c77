// net::Tap against the real kernel: needs root and /dev/net/tun. Each test
// runs on a thread in a network namespace of its own (unshare(CLONE_NEWNET)
// moves only the calling thread), so the TAPs it makes vanish with it and
// the host's interfaces are never touched.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "net/tap.hpp"

namespace popek::net {
namespace {

constexpr uint16_t kEtherType = 0x88b5;

// Why TAP tests cannot run here, or "" if they can.
std::string why_not() {
    if (::geteuid() != 0) return "TAP tests need root (CAP_NET_ADMIN)";
    if (::access("/dev/net/tun", R_OK | W_OK) != 0) return "/dev/net/tun is missing (modprobe tun)";
    return "";
}

// Runs fn on a thread in a new network namespace; false if that failed.
bool in_new_netns(const std::function<void()>& fn) {
    bool ok = false;
    std::thread t([&] {
        if (::unshare(CLONE_NEWNET) != 0) return;
        ok = true;
        fn();
    });
    t.join();
    return ok;
}

#define TAP_TEST_PRECONDITIONS()                                 \
    do {                                                         \
        if (auto why = why_not(); !why.empty()) GTEST_SKIP() << why; \
    } while (0)

#define RUN_IN_NETNS(...)                                                                  \
    do {                                                                                   \
        if (!in_new_netns(__VA_ARGS__)) GTEST_SKIP() << "cannot create a network namespace"; \
    } while (0)

std::vector<uint8_t> test_frame(size_t len) {
    std::vector<uint8_t> f(len);
    std::memset(f.data(), 0xff, 6);  // broadcast
    const uint8_t src[6] = {2, 0, 0, 0, 0, 9};
    std::memcpy(f.data() + 6, src, 6);
    f[12] = kEtherType >> 8, f[13] = kEtherType & 0xff;
    for (size_t i = 14; i < len; ++i) f[i] = static_cast<uint8_t>(i);
    return f;
}

void set_up(const char* name) {
    base::UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ASSERT_TRUE(s.valid());
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    ASSERT_EQ(::ioctl(s.get(), SIOCGIFFLAGS, &ifr), 0);
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    ASSERT_EQ(::ioctl(s.get(), SIOCSIFFLAGS, &ifr), 0);
}

base::UniqueFd packet_socket(const char* name) {
    base::UniqueFd s(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(kEtherType)));
    sockaddr_ll addr{};
    addr.sll_family = AF_PACKET;
    addr.sll_protocol = htons(kEtherType);
    addr.sll_ifindex = static_cast<int>(::if_nametoindex(name));
    if (!s.valid() || ::bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return {};
    return s;
}

bool readable(int fd, int ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, ms) == 1;
}

TEST(Tap, RejectsBadNames) {
    for (const std::string name : {"", "sixteen-chars-xx", "a/b"}) {
        auto t = Tap::open(name);
        ASSERT_FALSE(t.ok()) << name;
        EXPECT_EQ(t.error().message.rfind("--net tap=" + name + ": ", 0), 0u) << t.error().message;
    }
}

TEST(Tap, OpensNonBlockingWithOffloads) {
    TAP_TEST_PRECONDITIONS();
    RUN_IN_NETNS([] {
        auto tap = Tap::open("ptest0");
        ASSERT_TRUE(tap.ok()) << tap.error().message;
        EXPECT_EQ((*tap)->name(), "ptest0");
        EXPECT_EQ((*tap)->description(), "tap ptest0");
        EXPECT_EQ((*tap)->supported_offloads(), kOffloadCsum | kOffloadTso4 | kOffloadTso6 | kOffloadTsoEcn);
        EXPECT_TRUE((*tap)->set_offloads(kOffloadCsum | kOffloadTso4).ok());
        uint8_t buf[64];
        iovec iov{buf, sizeof buf};
        auto r = (*tap)->receive(std::span<const iovec>(&iov, 1));
        ASSERT_TRUE(r.ok()) << r.error().message;
        EXPECT_FALSE(r->has_value()) << "nothing to read: would block";
    });
}

TEST(Tap, SecondOpenIsBusy) {
    TAP_TEST_PRECONDITIONS();
    RUN_IN_NETNS([] {
        auto first = Tap::open("ptest0");
        ASSERT_TRUE(first.ok()) << first.error().message;
        auto second = Tap::open("ptest0");
        ASSERT_FALSE(second.ok());
        EXPECT_EQ(second.error().message, "--net tap=ptest0: TAP device ptest0 is busy (another process has it open)");
    });
}

TEST(Tap, CarriesFramesBothWays) {
    TAP_TEST_PRECONDITIONS();
    RUN_IN_NETNS([] {
        auto opened = Tap::open("ptest0");
        ASSERT_TRUE(opened.ok()) << opened.error().message;
        Tap& tap = **opened;
        set_up("ptest0");
        base::UniqueFd pkt = packet_socket("ptest0");
        ASSERT_TRUE(pkt.valid());

        // Guest to host: header + frame written to the TAP arrive as a frame.
        const auto out = test_frame(100);
        uint8_t hdr[kVnetHdrSize] = {};
        const iovec wiov[2] = {{hdr, sizeof hdr}, {const_cast<uint8_t*>(out.data()), out.size()}};
        auto sent = tap.send(wiov);
        ASSERT_TRUE(sent.ok()) << sent.error().message;
        EXPECT_EQ(sent->value_or(0), kVnetHdrSize + out.size());
        ASSERT_TRUE(readable(pkt.get(), 2000));
        std::vector<uint8_t> got(2048);
        ssize_t n = ::recv(pkt.get(), got.data(), got.size(), 0);
        ASSERT_EQ(n, static_cast<ssize_t>(out.size()));
        got.resize(static_cast<size_t>(n));
        EXPECT_EQ(got, out);

        // Host to guest: a frame sent on the interface is read with a header.
        const auto in = test_frame(80);
        ASSERT_EQ(::send(pkt.get(), in.data(), in.size(), 0), static_cast<ssize_t>(in.size()));
        std::vector<uint8_t> frame;
        for (int tries = 0; tries < 50 && frame.empty(); ++tries) {  // skip IPv6 chatter
            ASSERT_TRUE(readable(tap.fd(), 2000));
            uint8_t rhdr[kVnetHdrSize];
            std::memset(rhdr, 0xee, sizeof rhdr);
            std::vector<uint8_t> buf(2048);
            const iovec riov[2] = {{rhdr, sizeof rhdr}, {buf.data(), buf.size()}};
            auto r = tap.receive(riov);
            ASSERT_TRUE(r.ok()) << r.error().message;
            ASSERT_TRUE(r->has_value());
            buf.resize(**r - kVnetHdrSize);
            if (buf.size() >= 14 && buf[12] == (kEtherType >> 8) && buf[13] == (kEtherType & 0xff)) {
                frame = buf;
                EXPECT_EQ(rhdr[1], 0) << "gso_type NONE";
            }
        }
        EXPECT_EQ(frame, in);
    });
}

}  // namespace
}  // namespace popek::net
