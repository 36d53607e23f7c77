// Stub bodies: the interface is final, the implementation follows.
#include "hv/emu/platform/lapic.hpp"

namespace popek::hv::emu::platform {

Lapic::Lapic(uint32_t apic_id, bool bsp, uint64_t tsc_hz, uint64_t bus_hz)
    : id_(apic_id), bsp_(bsp), tsc_hz_(tsc_hz), bus_hz_(bus_hz),
      apic_base_(kDefaultBase | (1u << 11) | (bsp ? (1u << 8) : 0u)) {}
uint64_t Lapic::apic_base() const { return apic_base_; }
bool Lapic::set_apic_base(uint64_t) { return false; }
bool Lapic::enabled() const { return true; }
uint32_t Lapic::read(uint32_t, uint64_t) { return 0; }
void Lapic::write(uint32_t, uint32_t, uint64_t) {}
bool Lapic::accepts(const InterruptMessage&) const { return false; }
void Lapic::deliver(const InterruptMessage&) {}
void Lapic::set_lint(unsigned, bool) {}
int Lapic::pending_vector() const { return -1; }
uint8_t Lapic::acknowledge() { return 0xff; }
bool Lapic::has_event() const { return false; }
bool Lapic::extint_pending() const { return false; }
bool Lapic::take_nmi() { return false; }
bool Lapic::take_extint() { return false; }
bool Lapic::take_init() { return false; }
int Lapic::take_sipi() { return -1; }
void Lapic::init_reset() {}
uint64_t Lapic::tsc_deadline() const { return 0; }
void Lapic::set_tsc_deadline(uint64_t, uint64_t, uint64_t) {}
void Lapic::tick(uint64_t, uint64_t) {}
uint64_t Lapic::next_timer_ns() const { return UINT64_MAX; }
uint32_t Lapic::id() const { return id_; }
bool Lapic::is_bsp() const { return bsp_; }
std::vector<uint8_t> Lapic::save() const { return {}; }
bool Lapic::restore(std::span<const uint8_t>) { return false; }

}  // namespace popek::hv::emu::platform
