// MSI-X (PCI Local Bus 3.0, section 6.8.2): the capability, the vector
// table and the pending-bit array, which live in one of the device's BARs.
//
// Each table entry drives one MsiVector from the InterruptManager. The
// vector's route (MsiVector::update) is programmed when the entry is
// unmasked with a new address/data, or when the guest rewrites it while
// unmasked, not on every partial table write: routing updates are costly
// (KVM replaces its whole routing table). A trigger while the entry or the
// whole function is masked sets the pending bit; unmasking delivers it.
//
// Threading: trigger() comes from device threads, table and capability
// accesses from vCPU threads; one internal mutex, no callbacks under it
// other than MsiVector::update/trigger.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "base/result.hpp"
#include "devices/interrupts.hpp"
#include "devices/pci/config_space.hpp"

namespace popek::devices::pci {

constexpr uint16_t kMsixMaxVectors = 2048;
constexpr uint32_t kMsixEntrySize = 16;
constexpr uint16_t kMsixNoVector = 0xffff;  // for callers' "no vector assigned"

// Message Control bits.
constexpr uint16_t kMsixControlEnable = 1u << 15;
constexpr uint16_t kMsixControlFunctionMask = 1u << 14;

class Msix {
public:
    struct Entry {
        uint64_t address = 0;
        uint32_t data = 0;
        uint32_t control = 1;  // bit 0: masked (the reset value)
    };
    struct State {
        bool enabled = false;
        bool function_masked = false;
        std::vector<Entry> entries;
        std::vector<bool> pending;
    };

    // `vectors` entries; table and PBA at those offsets of BAR `bar`
    // (8-byte aligned, not overlapping: checked).
    static base::Result<std::unique_ptr<Msix>> create(InterruptManager& irqs, uint16_t vectors, uint8_t bar,
                                                      uint32_t table_offset, uint32_t pba_offset);

    // Adds the MSI-X capability to `config` (build time).
    base::Result<uint16_t> add_capability(PciConfigSpace& config);
    // Call after every guest write to `config`: picks up Enable and Function
    // Mask from Message Control and delivers what became deliverable.
    void config_written(const PciConfigSpace& config);

    [[nodiscard]] bool enabled() const { return enabled_.load(std::memory_order_acquire); }
    [[nodiscard]] uint16_t vector_count() const { return static_cast<uint16_t>(vectors_.size()); }
    [[nodiscard]] uint32_t table_offset() const { return table_offset_; }
    [[nodiscard]] uint32_t table_bytes() const { return vector_count() * kMsixEntrySize; }
    [[nodiscard]] uint32_t pba_offset() const { return pba_offset_; }
    [[nodiscard]] uint32_t pba_bytes() const { return (vector_count() + 63u) / 64u * 8u; }

    // Sends `vector`, or marks it pending while masked. Nothing while MSI-X
    // is disabled or for a vector out of range.
    void trigger(uint16_t vector);

    // BAR accesses, `offset` relative to the table / PBA. Aligned 4- and
    // 8-byte accesses only (others read 0 and are ignored); the PBA is
    // read-only.
    void table_read(uint64_t offset, std::span<uint8_t> data);
    void table_write(uint64_t offset, std::span<const uint8_t> data);
    void pba_read(uint64_t offset, std::span<uint8_t> data);

    [[nodiscard]] State save() const;
    // Takes a saved state (vector count must match), programs every route
    // and delivers what is pending and deliverable.
    base::Result<void> restore(const State& state);

private:
    Msix(std::vector<std::unique_ptr<MsiVector>> vectors, uint8_t bar, uint32_t table_offset, uint32_t pba_offset);
    [[nodiscard]] bool masked(size_t vector) const;
    void unmasked(size_t vector);  // entry `vector` may have just become deliverable
    void deliver(size_t vector);

    std::vector<std::unique_ptr<MsiVector>> vectors_;
    uint8_t bar_;
    uint32_t table_offset_, pba_offset_;
    uint16_t cap_offset_ = 0;

    mutable std::mutex mu_;
    std::atomic<bool> enabled_{false};
    bool function_masked_ = false;
    std::vector<Entry> entries_;
    std::vector<bool> pending_;
    std::vector<bool> stale_;  // address/data changed since the last MsiVector::update
};

}  // namespace popek::devices::pci
