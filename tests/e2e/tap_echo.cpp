// popek_tap_echo IFACE COUNT TIMEOUT_SECONDS
//
// The host side of the net e2e test: an AF_PACKET socket on IFACE (a TAP a
// VM is attached to) that sends every frame of ethertype 0x88B5 back with
// the MAC addresses swapped (from the interface's own MAC when the frame
// went to a group address). Prints "ECHO-READY" once listening, and at the
// end "ECHO frames=N bytes=B" (B: bytes after the Ethernet header, as the
// probe guest counts them). Exit status 0 after COUNT frames, 1 if
// TIMEOUT_SECONDS passed first, 2 if it could not start.
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

constexpr uint16_t kEtherType = 0x88b5;
constexpr size_t kEthHeader = 14;

int fail(const char* what) {
    std::fprintf(stderr, "popek_tap_echo: %s: %s\n", what, std::strerror(errno));
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: popek_tap_echo IFACE COUNT TIMEOUT_SECONDS\n");
        return 2;
    }
    const char* iface = argv[1];
    const unsigned long count = std::strtoul(argv[2], nullptr, 10);
    const long timeout_s = std::strtol(argv[3], nullptr, 10);
    const unsigned ifindex = ::if_nametoindex(iface);
    if (ifindex == 0) return fail(iface);

    const int sock = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(kEtherType));
    if (sock < 0) return fail("socket(AF_PACKET)");
    sockaddr_ll addr{};
    addr.sll_family = AF_PACKET;
    addr.sll_protocol = htons(kEtherType);
    addr.sll_ifindex = static_cast<int>(ifindex);
    if (::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return fail("bind");
#ifdef PACKET_IGNORE_OUTGOING
    int one = 1;
    (void)::setsockopt(sock, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);  // our own replies
#endif
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, iface, IFNAMSIZ - 1);
    if (::ioctl(sock, SIOCGIFHWADDR, &ifr) != 0) return fail("SIOCGIFHWADDR");
    unsigned char own_mac[6];
    std::memcpy(own_mac, ifr.ifr_hwaddr.sa_data, 6);

    std::printf("ECHO-READY\n");
    std::fflush(stdout);

    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    unsigned long frames = 0, bytes = 0;
    unsigned char buf[65536];
    while (frames < count) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        pollfd p{sock, POLLIN, 0};
        const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
        if (ready < 0 && errno != EINTR) return fail("poll");
        if (ready <= 0) continue;
        sockaddr_ll from{};
        socklen_t from_len = sizeof from;
        const ssize_t n = ::recvfrom(sock, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &from_len);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return fail("recvfrom");
        }
        if (from.sll_pkttype == PACKET_OUTGOING) continue;
        const auto len = static_cast<size_t>(n);
        if (len < kEthHeader || buf[12] != (kEtherType >> 8) || buf[13] != (kEtherType & 0xff)) continue;
        unsigned char dst[6], src[6];
        std::memcpy(dst, buf, 6);
        std::memcpy(src, buf + 6, 6);
        std::memcpy(buf, src, 6);
        std::memcpy(buf + 6, (dst[0] & 1) != 0 ? own_mac : dst, 6);  // never send from a group address
        if (::send(sock, buf, len, 0) != n) return fail("send");
        ++frames;
        bytes += len - kEthHeader;
    }
    std::printf("ECHO frames=%lu bytes=%lu\n", frames, bytes);
    return frames >= count ? 0 : 1;
}
