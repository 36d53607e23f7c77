// Interrupt messages as the local APICs see them: what an IOAPIC pin, an MSI
// write or an ICR write turns into. The backend's router hands one to every
// Lapic whose accepts() says yes (lowest priority: the first one).
#pragma once

#include <cstdint>

namespace popek::hv::emu::platform {

// Delivery modes (Intel SDM vol. 3, 11.6.1 and 11.11.2).
enum DeliveryMode : uint8_t {
    kFixed = 0,
    kLowestPriority = 1,
    kSmi = 2,
    kNmi = 4,
    kInit = 5,
    kStartup = 6,
    kExtInt = 7,
};

// Destination shorthands of the ICR (only ICR writes use them).
enum Shorthand : uint8_t {
    kNoShorthand = 0,
    kSelf = 1,
    kAllIncludingSelf = 2,
    kAllExcludingSelf = 3,
};

struct InterruptMessage {
    uint8_t vector = 0;
    uint8_t delivery_mode = kFixed;  // DeliveryMode
    bool level = false;              // trigger mode: true = level-triggered
    bool assert = true;              // level: false = de-assert (INIT level de-assert)
    uint32_t dest = 0;               // APIC id (physical) or logical mask; 0xff = broadcast
    bool logical = false;
    uint8_t shorthand = kNoShorthand;  // Shorthand
    uint32_t source_apic = 0;          // sender's APIC id (for shorthands)
};

// True for an address in the MSI window 0xFEExxxxx.
constexpr bool is_msi_address(uint64_t address) { return (address >> 20) == 0xfee; }

// MSI address/data -> message (SDM 11.11.1/11.11.2): destination id from
// address bits 19:12, destination mode from bit 2, vector, delivery mode,
// level/assert from the data word. The caller checks is_msi_address().
InterruptMessage decode_msi(uint64_t address, uint32_t data);

}  // namespace popek::hv::emu::platform
