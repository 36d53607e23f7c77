// The PS/2 controller, reduced to what guests use it for: a self-test that
// passes and the "pulse reset line" command (0xFE on port 0x64) that reboots.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>

#include "devices/bus.hpp"
#include "devices/guest_exit.hpp"

namespace popek::devices {

class I8042 final : public BusDevice {
public:
    struct State {
        uint8_t command_byte = 0x45;  // translation on, kbd interrupt on, system flag
        uint8_t pending_command = 0;  // command waiting for its data byte
        std::deque<uint8_t> output;
    };

    // Registered at port 0x60 with length 5, so offset 0 is data and 4 is command/status.
    explicit I8042(ExitHandler& exits);
    I8042(ExitHandler& exits, State state) : exits_(exits), s_(std::move(state)) {}

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;
    [[nodiscard]] State save() const {
        std::lock_guard lock(mu_);
        return s_;
    }

private:
    void command(uint8_t cmd);
    mutable std::mutex mu_;
    ExitHandler& exits_;
    State s_;
};

}  // namespace popek::devices
