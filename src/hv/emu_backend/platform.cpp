// Placeholder platform until the models of hv/emu/platform are wired: a
// local APIC register page that answers its ID and version and stores the
// rest, no interrupt sources.
#include "hv/emu_backend/platform.hpp"

#include <array>
#include <climits>
#include <cstring>

namespace popek::hv::emu {

struct CpuInterrupts::Impl {
    uint32_t index;
    std::mutex mu;
    std::array<uint32_t, 256> regs{};  // 1 KiB page, 4-byte registers at 16-byte strides
    std::function<void()> wakeup;
};

CpuInterrupts::CpuInterrupts(Platform&, uint32_t index) : impl_(std::make_unique<Impl>()) {
    impl_->index = index;
    impl_->regs[0x20 / 4] = index << 24;
    impl_->regs[0x30 / 4] = 0x50014;
    impl_->regs[0xf0 / 4] = 0xff;
}
CpuInterrupts::~CpuInterrupts() = default;

bool CpuInterrupts::take_nmi() { return false; }
int CpuInterrupts::acknowledge_interrupt() { return -1; }
void CpuInterrupts::set_wakeup(std::function<void()> fn) {
    std::lock_guard lock(impl_->mu);
    impl_->wakeup = std::move(fn);
}
bool CpuInterrupts::has_wake_event(bool) { return false; }
bool CpuInterrupts::take_init() { return false; }
int CpuInterrupts::take_sipi() { return -1; }
bool CpuInterrupts::has_startup_event() { return false; }
bool CpuInterrupts::in_lapic_page(uint64_t gpa) const { return (gpa & ~0xfffULL) == kLapicDefaultBase; }

uint32_t CpuInterrupts::lapic_read(uint32_t offset, uint64_t) {
    std::lock_guard lock(impl_->mu);
    return offset < 0x400 ? impl_->regs[offset / 4] : 0;
}

void CpuInterrupts::lapic_write(uint32_t offset, uint32_t value, uint64_t) {
    std::lock_guard lock(impl_->mu);
    if (offset < 0x400 && offset != 0x20 && offset != 0x30) impl_->regs[offset / 4] = value;
}

uint64_t CpuInterrupts::next_timer_ns() { return UINT64_MAX; }
void CpuInterrupts::tick(uint64_t) {}
void CpuInterrupts::set_lints_firmware_default() {}

std::vector<uint8_t> CpuInterrupts::save() {
    std::lock_guard lock(impl_->mu);
    std::vector<uint8_t> out(1024);
    std::memcpy(out.data(), impl_->regs.data(), out.size());
    return out;
}

bool CpuInterrupts::restore(std::span<const uint8_t> page) {
    if (page.size() != 1024) return false;
    std::lock_guard lock(impl_->mu);
    std::memcpy(impl_->regs.data(), page.data(), page.size());
    return true;
}

struct Platform::Impl {};

Platform::Platform(uint32_t vcpu_count, uint64_t tsc_hz) : tsc_hz_(tsc_hz), impl_(std::make_unique<Impl>()) {
    for (uint32_t i = 0; i < vcpu_count; i++) cpus_.push_back(std::make_unique<CpuInterrupts>(*this, i));
}
Platform::~Platform() = default;

bool Platform::mmio_read(uint32_t cpu, uint64_t gpa, unsigned size, uint64_t& value, uint64_t now) {
    CpuInterrupts& c = *cpus_[cpu];
    if (c.in_lapic_page(gpa)) {
        value = size == 4 ? c.lapic_read(static_cast<uint32_t>(gpa & 0xff0), now) : 0;
        return true;
    }
    return false;
}

bool Platform::mmio_write(uint32_t cpu, uint64_t gpa, unsigned size, uint64_t value, uint64_t now) {
    CpuInterrupts& c = *cpus_[cpu];
    if (c.in_lapic_page(gpa)) {
        if (size == 4) c.lapic_write(static_cast<uint32_t>(gpa & 0xff0), static_cast<uint32_t>(value), now);
        return true;
    }
    return false;
}

bool Platform::pio_read(uint16_t, unsigned, uint32_t&, uint64_t) { return false; }
bool Platform::pio_write(uint16_t, unsigned, uint32_t, uint64_t) { return false; }
void Platform::set_gsi(uint32_t, bool) {}
void Platform::deliver_msi(uint64_t, uint32_t) {}
uint64_t Platform::next_timer_ns() { return UINT64_MAX; }
void Platform::tick(uint64_t) {}
std::vector<std::pair<std::string, std::vector<uint8_t>>> Platform::save() { return {}; }

bool Platform::restore(const std::vector<std::pair<std::string, std::vector<uint8_t>>>& blobs, std::string& error) {
    if (!blobs.empty()) {
        error = "emu: unknown platform state '" + blobs.front().first + "'";
        return false;
    }
    return true;
}

}  // namespace popek::hv::emu
