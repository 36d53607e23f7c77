// devices::InterruptManager on top of hv::Vm: MSI vectors are GSIs routed to
// the guest's MSI message and raised through an eventfd (irqfd), so device
// threads signal the guest without a syscall into the VMM's own code paths.
#pragma once

#include <map>
#include <memory>
#include <mutex>

#include "devices/interrupts.hpp"
#include "hv/hypervisor.hpp"

namespace popek::vmm {

class VmInterruptManager final : public devices::InterruptManager {
public:
    explicit VmInterruptManager(hv::Vm& vm);
    ~VmInterruptManager() override;
    base::Result<std::unique_ptr<devices::MsiVector>> create_msi_vector() override;
    devices::IrqLine& legacy_line(uint32_t gsi) override;

private:
    class Line;
    hv::Vm& vm_;
    std::mutex mu_;
    std::map<uint32_t, std::unique_ptr<Line>> lines_;
};

}  // namespace popek::vmm
