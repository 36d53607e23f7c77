// The hardware-reduced ACPI sleep registers named in the FADT: writing
// SLP_TYP=S5 with SLP_EN to the control register powers the VM off.
#pragma once

#include "devices/bus.hpp"
#include "devices/guest_exit.hpp"

namespace popek::devices {

class AcpiPower final : public BusDevice {
public:
    // Registered over the control and status ports (2 bytes: offset 0 control, 1 status).
    AcpiPower(ExitHandler& exits, uint8_t s5_sleep_type, uint8_t sleep_enable)
        : exits_(exits), s5_(s5_sleep_type), enable_(sleep_enable) {}

    void read(uint64_t, std::span<uint8_t> data) override {
        for (auto& b : data) b = 0;  // status: not woken, nothing pending
    }
    void write(uint64_t offset, std::span<const uint8_t> data) override {
        if (offset != 0 || data.empty()) return;
        uint8_t v = data[0];
        uint8_t type = (v >> 2) & 0x7;
        if ((v & enable_) != 0 && type == s5_)
            exits_.request_exit({GuestExitKind::PowerOff, 0, "ACPI S5 (sleep control register)"});
    }

private:
    ExitHandler& exits_;
    uint8_t s5_;
    uint8_t enable_;
};

}  // namespace popek::devices
