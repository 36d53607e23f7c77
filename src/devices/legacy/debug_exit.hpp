// A port that ends the VM with a status the guest chooses: tests' way out.
// Same place and width as QEMU's isa-debug-exit (iobase 0xf4, iosize 4).
#pragma once

#include "base/bytes.hpp"
#include "devices/bus.hpp"
#include "devices/guest_exit.hpp"

namespace popek::devices {

class DebugExit final : public BusDevice {
public:
    explicit DebugExit(ExitHandler& exits) : exits_(exits) {}
    void read(uint64_t, std::span<uint8_t> data) override {
        for (auto& b : data) b = 0;
    }
    void write(uint64_t, std::span<const uint8_t> data) override {
        auto value = static_cast<uint32_t>(base::load_le(data));
        exits_.request_exit({GuestExitKind::DebugExit, value, "debug-exit port"});
    }

private:
    ExitHandler& exits_;
};

}  // namespace popek::devices
