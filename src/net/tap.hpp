// A Linux TAP device as a network backend: /dev/net/tun with IFF_TAP |
// IFF_NO_PI | IFF_VNET_HDR, non-blocking, 12-byte virtio_net_hdr in front of
// every frame (TUNSETVNETHDRSZ), offloads set with TUNSETOFFLOAD.
//
// A TAP named NAME is created if it does not exist (needs CAP_NET_ADMIN; it
// goes away when popek exits) or attached if it does (a persistent one made
// with `ip tuntap add dev NAME mode tap [user USER]`). Single queue: a second
// process attaching gets EBUSY.
#pragma once

#include <memory>
#include <string>

#include "base/result.hpp"
#include "base/unique_fd.hpp"
#include "net/backend.hpp"

namespace popek::net {

class Tap final : public NetBackend {
public:
    // Errors are one line for the user and start with "--net tap=NAME: "
    // (no /dev/net/tun, permission denied, busy, not a TAP, bad name).
    static base::Result<std::unique_ptr<Tap>> open(const std::string& name);

    [[nodiscard]] int fd() const override { return fd_.get(); }
    // The interface name the kernel gave the device.
    [[nodiscard]] const std::string& name() const { return name_; }

    base::Result<std::optional<size_t>> receive(std::span<const iovec> iov) override;
    base::Result<std::optional<size_t>> send(std::span<const iovec> iov) override;

    // Found out at open(): every kernel since 2.6.27 takes all four.
    [[nodiscard]] unsigned supported_offloads() const override { return supported_; }
    // TUNSETOFFLOAD: which offloaded frames the kernel may hand us.
    base::Result<void> set_offloads(unsigned offloads) override;
    // The kernel takes any frame a virtio_net_hdr describes.
    [[nodiscard]] bool accepts_offloaded_frames() const override { return true; }
    [[nodiscard]] std::string description() const override { return "tap " + name_; }

private:
    Tap(base::UniqueFd fd, std::string name)
        : fd_(std::move(fd)), name_(std::move(name)), read_what_("reading from tap " + name_),
          write_what_("writing to tap " + name_) {}
    base::UniqueFd fd_;
    std::string name_;
    std::string read_what_, write_what_;  // error context, built once
    unsigned supported_ = 0;
};

}  // namespace popek::net
