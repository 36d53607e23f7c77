// Interrupt plumbing devices can ask for, without knowing the backend:
// message-signalled interrupts (one per MSI-X vector) and legacy lines.
// The VMM implements it on top of hv::Vm (irqfd + MSI routes on KVM).
#pragma once

#include <cstdint>
#include <memory>

#include "base/result.hpp"
#include "devices/guest_exit.hpp"

namespace popek::devices {

// One MSI message. trigger() may be called from any thread and is cheap
// (on KVM: one eventfd write, delivered by the kernel through an irqfd).
class MsiVector {
public:
    virtual ~MsiVector() = default;
    // The address/data the guest programmed (MSI-X table entry). Until the
    // first update the vector delivers nothing.
    virtual base::Result<void> update(uint64_t address, uint32_t data) = 0;
    virtual void trigger() = 0;
};

class InterruptManager {
public:
    virtual ~InterruptManager() = default;
    virtual base::Result<std::unique_ptr<MsiVector>> create_msi_vector() = 0;
    // A level-triggered legacy line (PCI INTx) wired to IOAPIC input `gsi`.
    virtual IrqLine& legacy_line(uint32_t gsi) = 0;
};

}  // namespace popek::devices
