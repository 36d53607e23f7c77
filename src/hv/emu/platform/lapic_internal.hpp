// Internals shared by the Lapic's source files (lapic.cpp, lapic_timer.cpp,
// lapic_state.cpp): register constants, the side effects collected under
// the mutex, and the Guard that refreshes the lock-free event hint.
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

#include "hv/emu/platform/lapic.hpp"

namespace popek::hv::emu::platform {

namespace lapic_detail {

constexpr uint32_t kMagic = 0x43504c41;  // "ALPC"
constexpr uint32_t kBlobVersion = 1;
constexpr uint64_t kNsPerSec = 1'000'000'000;

constexpr uint32_t kVersionValue = 0x00050014;  // version 0x14, 6 LVT entries
constexpr uint32_t kLvtMasked = 1u << 16;
constexpr uint32_t kSvrEnable = 1u << 8;

constexpr uint64_t kBaseBsp = 1u << 8;
constexpr uint64_t kBaseX2apic = 1u << 10;
constexpr uint64_t kBaseEnable = 1u << 11;
// Writable bits of IA32_APIC_BASE: the page address (up to 52 physical
// address bits), BSP (kept: read-only to the guest) and the global enable.
constexpr uint64_t kBaseWritable = 0x000ffffffffff000ull | kBaseBsp | kBaseEnable;

// ESR bits (SDM 11.5.3).
constexpr uint32_t kEsrSendIllegalVector = 1u << 5;
constexpr uint32_t kEsrReceiveIllegalVector = 1u << 6;
constexpr uint32_t kEsrIllegalRegister = 1u << 7;

// Periodic interrupts come at most every 100 us (KVM clamps too): a guest
// cannot make the event loop spin with a 1-count period.
constexpr uint64_t kMinPeriodNs = 100'000;

constexpr uint32_t kTimerOneShot = 0;
constexpr uint32_t kTimerPeriodic = 1;
constexpr uint32_t kTimerTscDeadline = 2;

// Bits the guest may set in each LVT entry.
constexpr uint32_t kLvtTimerBits = 0x000700ff;    // vector, mask, mode
constexpr uint32_t kLvtDmBits = 0x000107ff;       // vector, delivery mode, mask
constexpr uint32_t kLvtLintBits = 0x0001a7ff;     // + polarity, trigger mode
constexpr uint32_t kLvtErrorBits = 0x000100ff;    // vector, mask
constexpr uint32_t kIcrLowBits = 0x000ccfff;      // vector, DM, dest mode, level, trigger, shorthand

constexpr uint32_t kLvts[] = {Lapic::kLvtTimer, Lapic::kLvtThermal, Lapic::kLvtPerf,
                              Lapic::kLvtLint0, Lapic::kLvtLint1, Lapic::kLvtError};

inline uint32_t lvt_bits(uint32_t offset) {
    switch (offset) {
    case Lapic::kLvtTimer: return kLvtTimerBits;
    case Lapic::kLvtLint0:
    case Lapic::kLvtLint1: return kLvtLintBits;
    case Lapic::kLvtError: return kLvtErrorBits;
    default: return kLvtDmBits;
    }
}

}  // namespace lapic_detail

struct Lapic::Effects {
    std::vector<uint8_t> eois;
    std::vector<InterruptMessage> ipis;
    bool wakeup = false;
};

// Every method that changes state holds a Guard: before the mutex is
// released it refreshes event_hint_, which has_event() and the fast path of
// pending_vector() read without locking (the engine asks between blocks).
struct Lapic::Guard {
    explicit Guard(Lapic& l) : lapic(l), lock(l.mu_) {}
    ~Guard() { lapic.event_hint_.store(lapic.event_locked(), std::memory_order_release); }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    Lapic& lapic;
    std::lock_guard<std::mutex> lock;
};

}  // namespace popek::hv::emu::platform
