// Wiring of the platform models (hv/emu/platform) into one machine, as KVM's
// in-kernel irqchip wires its own: a Lapic per vCPU, a router that hands
// interrupt messages (IOAPIC pins, MSIs, IPIs) to every Lapic that accepts
// them, the PIC pair's INTR on the BSP's LINT0, the PIT's channel 0 on PIC
// IRQ 0 and IOAPIC pin 2 (the MADT's override), level EOIs back to the IOAPIC.
#include "hv/emu_backend/platform.hpp"

#include <x86intrin.h>

#include <climits>

#include "hv/emu/platform/ioapic.hpp"
#include "hv/emu/platform/lapic.hpp"
#include "hv/emu/platform/pic.hpp"
#include "hv/emu/platform/pit.hpp"

namespace popek::hv::emu {

namespace plat = ::popek::hv::emu::platform;

namespace {
// The local APIC timer's input clock; KVM's is 1 GHz too.
constexpr uint64_t kApicBusHz = 1'000'000'000;
constexpr uint16_t kPitFirst = 0x40, kPitLast = 0x43, kPortB = 0x61;
}  // namespace

struct CpuInterrupts::Impl {
    Impl(Platform& p, uint32_t index)
        : platform(p), lapic(index, index == 0, p.tsc_hz(), kApicBusHz) {}
    Platform& platform;
    plat::Lapic lapic;
    std::mutex wake_mu;
    std::function<void()> wakeup;
};

struct Platform::Impl {
    explicit Impl(Platform& p) : ioapic([&p](const plat::InterruptMessage& m) { p.route(m); }) {}
    plat::IoApic ioapic;
    plat::PicPair pic;
    plat::Pit pit;
};

CpuInterrupts::CpuInterrupts(Platform& platform, uint32_t index)
    : impl_(std::make_unique<Impl>(platform, index)) {
    Impl* impl = impl_.get();
    impl->lapic.on_wakeup = [impl] {
        std::lock_guard lock(impl->wake_mu);
        if (impl->wakeup) impl->wakeup();
    };
    impl->lapic.on_ipi = [impl](const plat::InterruptMessage& m) { impl->platform.route(m); };
    impl->lapic.on_eoi = [impl](uint8_t vector) { impl->platform.impl().ioapic.eoi(vector); };
}

CpuInterrupts::~CpuInterrupts() = default;

void CpuInterrupts::set_wakeup(std::function<void()> fn) {
    std::lock_guard lock(impl_->wake_mu);
    impl_->wakeup = std::move(fn);
}

bool CpuInterrupts::take_nmi() { return impl_->lapic.take_nmi(); }

int CpuInterrupts::acknowledge_interrupt() {
    plat::Lapic& l = impl_->lapic;
    // ExtINT (the PIC through LINT0, or an ExtINT message): the PIC gives the vector.
    if (l.take_extint()) return impl_->platform.impl().pic.acknowledge();
    if (l.pending_vector() < 0) return -1;
    return l.acknowledge();
}

bool CpuInterrupts::has_wake_event(bool interrupts_on) {
    const plat::Lapic& l = impl_->lapic;
    if (!l.has_event()) return false;
    if (interrupts_on) return true;
    // With RFLAGS.IF clear only NMI, INIT and SIPI end HLT.
    return l.pending_vector() < 0 && !l.extint_pending();
}

bool CpuInterrupts::take_init() {
    if (!impl_->lapic.take_init()) return false;
    impl_->lapic.init_reset();
    return true;
}

int CpuInterrupts::take_sipi() { return impl_->lapic.take_sipi(); }

bool CpuInterrupts::has_startup_event() {
    const plat::Lapic& l = impl_->lapic;
    return l.has_event() && l.pending_vector() < 0 && !l.extint_pending();
}

uint64_t CpuInterrupts::apic_base() const { return impl_->lapic.apic_base(); }
bool CpuInterrupts::set_apic_base(uint64_t value) { return impl_->lapic.set_apic_base(value); }

bool CpuInterrupts::in_lapic_page(uint64_t gpa) const {
    const plat::Lapic& l = impl_->lapic;
    return l.enabled() && (gpa & ~0xfffULL) == (l.apic_base() & ~0xfffULL);
}

uint32_t CpuInterrupts::lapic_read(uint32_t offset, uint64_t now) { return impl_->lapic.read(offset, now); }
void CpuInterrupts::lapic_write(uint32_t offset, uint32_t value, uint64_t now) {
    impl_->lapic.write(offset, value, now);
}

uint64_t CpuInterrupts::next_timer_ns() { return impl_->lapic.next_timer_ns(); }
void CpuInterrupts::tick(uint64_t now) { impl_->lapic.tick(now, __rdtsc()); }
uint64_t CpuInterrupts::tsc_deadline() const { return impl_->lapic.tsc_deadline(); }
void CpuInterrupts::set_tsc_deadline(uint64_t host_tsc, uint64_t now) {
    impl_->lapic.set_tsc_deadline(host_tsc, __rdtsc(), now);
}

// The model's reset state is already what firmware leaves: the BSP in
// virtual-wire mode (LINT0 ExtINT, the only CPU the PIC's INTR reaches).
// Writing the LVTs here would not do: while the APIC is software-disabled
// (SVR at reset) a written LVT entry stays masked.
void CpuInterrupts::set_lints_firmware_default() {}

std::vector<uint8_t> CpuInterrupts::save() { return impl_->lapic.save(); }
bool CpuInterrupts::restore(std::span<const uint8_t> blob) { return impl_->lapic.restore(blob); }

Platform::Platform(uint32_t vcpu_count, uint64_t tsc_hz) : tsc_hz_(tsc_hz), impl_(std::make_unique<Impl>(*this)) {
    for (uint32_t i = 0; i < vcpu_count; i++) cpus_.push_back(std::make_unique<CpuInterrupts>(*this, i));
    impl_->pic.on_output = [this](bool level) { cpus_[0]->impl().lapic.set_lint(0, level); };
    impl_->pit.on_irq0 = [this](bool level) {
        impl_->pic.set_irq(0, level);
        impl_->ioapic.set_irq(2, level);
    };
}

Platform::~Platform() {
    impl_->pic.on_output = nullptr;
    impl_->pit.on_irq0 = nullptr;
}

void Platform::route(const plat::InterruptMessage& m) {
    for (auto& c : cpus_) {
        plat::Lapic& l = c->impl().lapic;
        if (!l.accepts(m)) continue;
        l.deliver(m);
        if (m.delivery_mode == plat::kLowestPriority) return;  // one target: the first that accepts
    }
}

bool Platform::mmio_read(uint32_t cpu, uint64_t gpa, unsigned size, uint64_t& value, uint64_t now) {
    CpuInterrupts& c = *cpus_[cpu];
    const bool lapic = c.in_lapic_page(gpa);
    const bool ioapic = (gpa & ~0xfffULL) == kIoapicBase;
    if (!lapic && !ioapic) return false;
    // 32-bit registers; other widths read the aligned register's bytes.
    const auto offset = static_cast<uint32_t>(gpa & 0xffc);
    const uint32_t reg = lapic ? c.lapic_read(offset, now) : impl_->ioapic.read(offset);
    value = size <= 4 ? (uint64_t{reg} >> ((gpa & 3) * 8)) : reg;
    return true;
}

bool Platform::mmio_write(uint32_t cpu, uint64_t gpa, unsigned size, uint64_t value, uint64_t now) {
    CpuInterrupts& c = *cpus_[cpu];
    const bool lapic = c.in_lapic_page(gpa);
    const bool ioapic = (gpa & ~0xfffULL) == kIoapicBase;
    if (!lapic && !ioapic) return false;
    // Only aligned 32-bit writes reach the registers (the SDM leaves the rest undefined).
    if (size != 4 || (gpa & 3) != 0) return true;
    const auto offset = static_cast<uint32_t>(gpa & 0xfff);
    if (lapic) {
        c.lapic_write(offset, static_cast<uint32_t>(value), now);
    } else {
        impl_->ioapic.write(offset, static_cast<uint32_t>(value));
    }
    return true;
}

namespace {
bool pic_port(uint16_t port) {
    return port == 0x20 || port == 0x21 || port == 0xa0 || port == 0xa1 || port == 0x4d0 || port == 0x4d1;
}
bool pit_port(uint16_t port) { return (port >= kPitFirst && port <= kPitLast) || port == kPortB; }
}  // namespace

bool Platform::pio_read(uint16_t port, unsigned size, uint32_t& value, uint64_t now) {
    if (size != 1) return false;
    if (pic_port(port)) {
        value = impl_->pic.read(port);
        return true;
    }
    if (pit_port(port)) {
        value = impl_->pit.read(port, now);
        return true;
    }
    return false;
}

bool Platform::pio_write(uint16_t port, unsigned size, uint32_t value, uint64_t now) {
    if (size != 1) return false;
    if (pic_port(port)) {
        impl_->pic.write(port, static_cast<uint8_t>(value));
        return true;
    }
    if (pit_port(port)) {
        impl_->pit.write(port, static_cast<uint8_t>(value), now);
        return true;
    }
    return false;
}

void Platform::set_gsi(uint32_t gsi, bool level) {
    if (gsi < 16) impl_->pic.set_irq(gsi, level);
    if (gsi < plat::IoApic::kPins) impl_->ioapic.set_irq(gsi, level);
}

void Platform::deliver_msi(uint64_t address, uint32_t data) {
    if (!plat::is_msi_address(address)) return;  // a write nowhere: dropped, as on hardware
    route(plat::decode_msi(address, data));
}

uint64_t Platform::next_timer_ns() { return impl_->pit.next_event_ns(); }
void Platform::tick(uint64_t now) { impl_->pit.tick(now); }

std::vector<std::pair<std::string, std::vector<uint8_t>>> Platform::save() {
    std::vector<std::pair<std::string, std::vector<uint8_t>>> blobs;
    blobs.emplace_back("emu-ioapic", impl_->ioapic.save());
    blobs.emplace_back("emu-pic", impl_->pic.save());
    blobs.emplace_back("emu-pit", impl_->pit.save());
    for (size_t i = 0; i < cpus_.size(); i++) blobs.emplace_back("emu-lapic-" + std::to_string(i), cpus_[i]->save());
    return blobs;
}

bool Platform::restore(const std::vector<std::pair<std::string, std::vector<uint8_t>>>& blobs, std::string& error) {
    // Checked on scratch models first, so a bad blob changes nothing.
    const std::vector<uint8_t>* ioapic = nullptr;
    const std::vector<uint8_t>* pic = nullptr;
    const std::vector<uint8_t>* pit = nullptr;
    std::vector<const std::vector<uint8_t>*> lapics(cpus_.size(), nullptr);
    for (const auto& [name, bytes] : blobs) {
        if (name == "emu-ioapic") {
            ioapic = &bytes;
        } else if (name == "emu-pic") {
            pic = &bytes;
        } else if (name == "emu-pit") {
            pit = &bytes;
        } else if (name.rfind("emu-lapic-", 0) == 0) {
            size_t i = 0;
            try {
                i = std::stoul(name.substr(10));
            } catch (...) {
                i = SIZE_MAX;
            }
            if (i >= lapics.size()) {
                error = "VM state: '" + name + "' does not match this VM's " + std::to_string(cpus_.size()) + " vCPUs";
                return false;
            }
            lapics[i] = &bytes;
        } else {
            error = "VM state: unknown emu platform blob '" + name + "'";
            return false;
        }
    }
    if (ioapic == nullptr || pic == nullptr || pit == nullptr) {
        error = "VM state: the emu platform's IOAPIC, PIC or PIT state is missing";
        return false;
    }
    {
        plat::IoApic a([](const plat::InterruptMessage&) {});
        plat::PicPair b;
        plat::Pit c;
        if (!a.restore(*ioapic) || !b.restore(*pic) || !c.restore(*pit)) {
            error = "VM state: the emu IOAPIC, PIC or PIT state is malformed";
            return false;
        }
        for (size_t i = 0; i < lapics.size(); i++) {
            if (lapics[i] == nullptr) {
                error = "VM state: local APIC " + std::to_string(i) + " is missing";
                return false;
            }
            plat::Lapic l(static_cast<uint32_t>(i), i == 0, tsc_hz_, kApicBusHz);
            if (!l.restore(*lapics[i])) {
                error = "VM state: local APIC " + std::to_string(i) + " is malformed";
                return false;
            }
        }
    }
    (void)impl_->ioapic.restore(*ioapic);
    (void)impl_->pic.restore(*pic);
    (void)impl_->pit.restore(*pit);
    for (size_t i = 0; i < lapics.size(); i++) (void)cpus_[i]->restore(*lapics[i]);
    return true;
}

}  // namespace popek::hv::emu
