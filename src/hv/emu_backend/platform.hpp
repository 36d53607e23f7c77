// The emu backend's platform: what KVM's in-kernel irqchip and PIT do, for
// the emulation engine. One CpuInterrupts (local APIC) per vCPU, and per VM
// the IOAPIC, the PIC pair and the PIT, wired together (a router delivers
// interrupt messages to the local APICs that accept them). The device models
// themselves live in hv/emu/platform; this is only their wiring.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "hv/emu/engine.hpp"

namespace popek::hv::emu::platform {
struct InterruptMessage;
}

namespace popek::hv::emu {

inline constexpr uint64_t kLapicDefaultBase = 0xfee00000;
inline constexpr uint64_t kIoapicBase = 0xfec00000;
inline constexpr uint64_t kIoapicSize = 0x1000;

class Platform;

// One vCPU's interrupt state: its local APIC and what the engine asks between blocks.
class CpuInterrupts final : public InterruptSource {
public:
    CpuInterrupts(Platform& platform, uint32_t index);
    ~CpuInterrupts() override;

    bool take_nmi() override;
    int acknowledge_interrupt() override;

    // Called from any thread when a new event may be pending for this CPU.
    void set_wakeup(std::function<void()> fn);
    // An interrupt or NMI is waiting that would end HLT (`interrupts_on`: RFLAGS.IF).
    [[nodiscard]] bool has_wake_event(bool interrupts_on);
    // INIT and SIPI (AP start-up): taken by the vCPU's run loop.
    bool take_init();
    int take_sipi();
    // An INIT or start-up IPI is waiting.
    [[nodiscard]] bool has_startup_event();
    // IA32_APIC_BASE as the LAPIC has it; false: the value is refused.
    [[nodiscard]] uint64_t apic_base() const;
    bool set_apic_base(uint64_t value);
    // The LAPIC's register page (xAPIC MMIO) at the current IA32_APIC_BASE.
    [[nodiscard]] bool in_lapic_page(uint64_t gpa) const;
    uint32_t lapic_read(uint32_t offset, uint64_t now);
    void lapic_write(uint32_t offset, uint32_t value, uint64_t now);
    // Local timer: deadline in guest-clock ns (UINT64_MAX: none); tick when due.
    [[nodiscard]] uint64_t next_timer_ns();
    void tick(uint64_t now);
    // IA32_TSC_DEADLINE in host-TSC terms (0: none armed; writes outside the
    // timer's TSC-deadline mode are ignored).
    [[nodiscard]] uint64_t tsc_deadline() const;
    void set_tsc_deadline(uint64_t host_tsc, uint64_t now);
    void set_lints_firmware_default();
    // Snapshot: the 1 KiB register page, IA32_APIC_BASE, timer and pending events.
    [[nodiscard]] std::vector<uint8_t> save();
    bool restore(std::span<const uint8_t>);

    struct Impl;
    Impl& impl() { return *impl_; }

private:
    std::unique_ptr<Impl> impl_;
};

class Platform {
public:
    Platform(uint32_t vcpu_count, uint64_t tsc_hz);
    ~Platform();

    CpuInterrupts& cpu(uint32_t index) { return *cpus_[index]; }
    [[nodiscard]] uint32_t cpu_count() const { return static_cast<uint32_t>(cpus_.size()); }
    [[nodiscard]] uint64_t tsc_hz() const { return tsc_hz_; }

    // Guest accesses the backend answers itself (true: handled).
    bool mmio_read(uint32_t cpu, uint64_t gpa, unsigned size, uint64_t& value, uint64_t now);
    bool mmio_write(uint32_t cpu, uint64_t gpa, unsigned size, uint64_t value, uint64_t now);
    bool pio_read(uint16_t port, unsigned size, uint32_t& value, uint64_t now);
    bool pio_write(uint16_t port, unsigned size, uint32_t value, uint64_t now);

    // Interrupt lines and messages (any thread). route() hands a message to
    // every local APIC that accepts it (lowest priority: the first one).
    void route(const platform::InterruptMessage& m);
    void set_gsi(uint32_t gsi, bool level);
    void deliver_msi(uint64_t address, uint32_t data);

    // VM-wide timers (the PIT): deadline in guest-clock ns, tick when due.
    [[nodiscard]] uint64_t next_timer_ns();
    void tick(uint64_t now);

    // Snapshot blobs of the VM-wide models ("emu-ioapic", "emu-pic", "emu-pit").
    [[nodiscard]] std::vector<std::pair<std::string, std::vector<uint8_t>>> save();
    // Checks every blob first; false names nothing changed.
    bool restore(const std::vector<std::pair<std::string, std::vector<uint8_t>>>& blobs, std::string& error);

    struct Impl;
    Impl& impl() { return *impl_; }

private:
    uint64_t tsc_hz_;
    std::unique_ptr<Impl> impl_;
    std::vector<std::unique_ptr<CpuInterrupts>> cpus_;
};

}  // namespace popek::hv::emu
