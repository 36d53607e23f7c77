// How the virtio-pci transport asks for queue notifications to bypass the
// VMM: a guest MMIO write of any width to `addr` signals `eventfd` inside
// the hypervisor (KVM_IOEVENTFD with len 0 = any length, no data match).
// An injected interface so tests (and a backend without ioeventfds) can
// stand in; writes that still reach the BAR signal the same eventfd.
#pragma once

#include <cstdint>

#include "base/result.hpp"
#include "hv/hypervisor.hpp"

namespace popek::virtio::pci {

class IoeventfdRegistrar {
public:
    virtual ~IoeventfdRegistrar() = default;
    virtual base::Result<void> add(int eventfd, uint64_t addr) = 0;
    virtual base::Result<void> remove(int eventfd, uint64_t addr) = 0;
};

// The real one: MMIO ioeventfds on an hv::Vm.
class VmIoeventfds final : public IoeventfdRegistrar {
public:
    explicit VmIoeventfds(hv::Vm& vm) : vm_(vm) {}
    base::Result<void> add(int eventfd, uint64_t addr) override {
        return vm_.add_ioeventfd(eventfd, addr, 0, false);
    }
    base::Result<void> remove(int eventfd, uint64_t addr) override {
        return vm_.remove_ioeventfd(eventfd, addr, 0, false);
    }

private:
    hv::Vm& vm_;
};

}  // namespace popek::virtio::pci
