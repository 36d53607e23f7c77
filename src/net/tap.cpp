#include "net/tap.hpp"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

namespace popek::net {

static_assert(kOffloadCsum == TUN_F_CSUM && kOffloadTso4 == TUN_F_TSO4 && kOffloadTso6 == TUN_F_TSO6 &&
              kOffloadTsoEcn == TUN_F_TSO_ECN);

namespace {

constexpr const char* kTunPath = "/dev/net/tun";
constexpr unsigned kAllOffloads = kOffloadCsum | kOffloadTso4 | kOffloadTso6 | kOffloadTsoEcn;

base::Error open_error(const std::string& prefix, int err) {
    switch (err) {
        case ENOENT:
        case ENODEV:
        case ENXIO:
            return base::Error{prefix + kTunPath + " does not exist (load the tun module: modprobe tun)", err};
        case EACCES:
        case EPERM:
            return base::Error{prefix + "permission denied opening " + kTunPath +
                                   " (run popek as root or give your user access to it)",
                               err};
        default:
            return base::Error::from_errno(prefix + "opening " + kTunPath, err);
    }
}

base::Error attach_error(const std::string& prefix, const std::string& name, int err) {
    switch (err) {
        case EBUSY:
            return base::Error{prefix + "TAP device " + name + " is busy (another process has it open)", err};
        case EPERM:
        case EACCES:
            return base::Error{prefix + "permission denied attaching TAP device " + name +
                                   " (creating one needs CAP_NET_ADMIN; as root, make one you may use with "
                                   "`ip tuntap add dev " + name + " mode tap user $USER`)",
                               err};
        case EINVAL:
            return base::Error{prefix + name + " exists and is not a single-queue TAP device (a TUN, multiqueue "
                                   "or other kind of interface?)",
                               err};
        default:
            return base::Error::from_errno(prefix + "TUNSETIFF " + name, err);
    }
}

}  // namespace

base::Result<std::unique_ptr<Tap>> Tap::open(const std::string& name) {
    const std::string prefix = "--net tap=" + name + ": ";
    if (name.empty() || name.size() >= IFNAMSIZ)
        return base::Error{prefix + "an interface name has 1 to " + std::to_string(IFNAMSIZ - 1) + " characters"};
    if (name.find_first_of("/: \t\n") != std::string::npos || name == "." || name == "..")
        return base::Error{prefix + "not a valid interface name"};

    base::UniqueFd fd(::open(kTunPath, O_RDWR | O_NONBLOCK | O_CLOEXEC));
    if (!fd.valid()) return open_error(prefix, errno);

    ifreq ifr{};
    std::memcpy(ifr.ifr_name, name.data(), name.size());
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) return attach_error(prefix, name, errno);
    std::string actual(ifr.ifr_name, ::strnlen(ifr.ifr_name, IFNAMSIZ));

    int hdr_size = static_cast<int>(kVnetHdrSize);
    if (::ioctl(fd.get(), TUNSETVNETHDRSZ, &hdr_size) != 0)
        return base::Error::from_errno(prefix + "TUNSETVNETHDRSZ " + std::to_string(hdr_size));

    std::unique_ptr<Tap> tap(new Tap(std::move(fd), std::move(actual)));
    // Which offloads this kernel takes: all, checksum only, or none.
    for (unsigned candidate : {kAllOffloads, static_cast<unsigned>(kOffloadCsum)}) {
        if (tap->set_offloads(candidate).ok()) {
            tap->supported_ = candidate;
            break;
        }
    }
    // Until a driver asks for offloads, frames arrive whole and checksummed.
    auto none = tap->set_offloads(0);
    if (!none.ok()) return none.error().context(prefix.substr(0, prefix.size() - 2));
    return tap;
}

base::Result<std::optional<size_t>> Tap::receive(std::span<const iovec> iov) {
    return readv_frame(fd_.get(), iov, read_what_);
}

base::Result<std::optional<size_t>> Tap::send(std::span<const iovec> iov) {
    return writev_frame(fd_.get(), iov, write_what_);
}

base::Result<void> Tap::set_offloads(unsigned offloads) {
    if (::ioctl(fd_.get(), TUNSETOFFLOAD, static_cast<unsigned long>(offloads)) != 0)
        return base::Error::from_errno("tap " + name_ + ": TUNSETOFFLOAD " + std::to_string(offloads));
    return {};
}

}  // namespace popek::net
