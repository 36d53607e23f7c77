// ACPI power-management timer (ACPI 6.x, 4.8.2.1): a free-running 3.579545
// MHz counter, 24 bits wide (or 32 with FADT's TMR_VAL_EXT). Read-only; the
// backend decodes its port (PM_TMR_BLK) and calls read(). No overflow SCI.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <vector>

namespace popek::hv::emu::platform {

class PmTimer {
public:
    static constexpr uint64_t kHz = 3579545;

    explicit PmTimer(bool bits32 = false) : bits32_(bits32) {}

    [[nodiscard]] uint32_t read(uint64_t now_ns) const;

    // State: the width only (the count follows from the guest clock).
    [[nodiscard]] std::vector<uint8_t> save() const;
    [[nodiscard]] bool restore(std::span<const uint8_t> blob);

private:
    std::atomic<bool> bits32_;
};

}  // namespace popek::hv::emu::platform
