// Local APIC save/restore: KVM's 1 KiB register page plus timer and events.
#include "hv/emu/platform/lapic.hpp"

#include <cstring>
#include <utility>

#include "hv/emu/platform/blob.hpp"
#include "hv/emu/platform/lapic_internal.hpp"
#include "hv/emu/platform/muldiv.hpp"

namespace popek::hv::emu::platform {

using namespace lapic_detail;

// ---- save/restore ----

std::vector<uint8_t> Lapic::save() const {
    std::lock_guard lock(mu_);
    BlobWriter w(kMagic, kBlobVersion);
    // PPR is computed, not stored; the saved page carries it as KVM's does.
    std::array<uint8_t, kPageSize> page = regs_;
    const uint32_t ppr_value = ppr();
    std::memcpy(page.data() + kPpr, &ppr_value, 4);
    w.bytes(page);
    w.u64(apic_base_);
    w.u32(esr_pending_);
    w.u64(timer_.expire_ns);
    w.u64(timer_.period_ns);
    w.u64(timer_.deadline_tsc);
    w.u64(timer_.deadline_ns);
    w.boolean(lint_level_[0]);
    w.boolean(lint_level_[1]);
    w.boolean(nmi_pending_);
    w.boolean(extint_pending_);
    w.boolean(init_pending_);
    w.u16(static_cast<uint16_t>(sipi_vector_ < 0 ? 0xffff : sipi_vector_));
    return w.take();
}

bool Lapic::restore(std::span<const uint8_t> blob) {
    BlobReader r(blob, kMagic, kBlobVersion);
    std::array<uint8_t, kPageSize> regs{};
    r.bytes(regs);
    const uint64_t base = r.u64();
    const uint32_t esr_pending = r.u32();
    Timer t;
    t.expire_ns = r.u64();
    t.period_ns = r.u64();
    t.deadline_tsc = r.u64();
    t.deadline_ns = r.u64();
    const bool lint0 = r.boolean(), lint1 = r.boolean();
    const bool nmi = r.boolean(), extint = r.boolean(), init = r.boolean();
    const uint16_t sipi = r.u16();
    if (!r.done()) return false;

    auto get = [&](uint32_t off) {
        uint32_t v;
        std::memcpy(&v, regs.data() + off, 4);
        return v;
    };
    bool ok = (base & ~kBaseWritable) == 0 && ((base & kBaseBsp) != 0) == bsp_ &&
              (get(kId) & 0x00ffffffu) == 0 && get(kVersion) == kVersionValue && (get(kTpr) & ~0xffu) == 0 &&
              (get(kLdr) & 0x00ffffffu) == 0 && (get(kDfr) | 0xf0000000u) == 0xffffffffu && (get(kSvr) & ~0x3ffu) == 0 &&
              (get(kIcrLow) & ~kIcrLowBits) == 0 && (get(kIcrHigh) & 0x00ffffffu) == 0 &&
              (get(kTimerDivide) & ~0xbu) == 0 && (esr_pending & ~0xffu) == 0 && (get(kEsr) & ~0xffu) == 0 &&
              (sipi <= 0xff || sipi == 0xffff) && (t.period_ns != 0 || t.expire_ns == UINT64_MAX ||
                                                   ((get(kLvtTimer) >> 17) & 3) != kTimerPeriodic);
    for (uint32_t off : kLvts) ok = ok && (get(off) & ~(lvt_bits(off) | (1u << 14))) == 0;
    if (!ok) return false;

    std::memset(regs.data() + kPpr, 0, 4);  // recomputed from TPR and ISR
    Guard lock(*this);
    regs_ = regs;
    apic_base_ = base;
    esr_pending_ = esr_pending;
    timer_ = t;
    lint_level_[0] = lint0;
    lint_level_[1] = lint1;
    nmi_pending_ = nmi;
    extint_pending_ = extint;
    init_pending_ = init;
    sipi_vector_ = sipi == 0xffff ? -1 : sipi;
    return true;
}

}  // namespace popek::hv::emu::platform
