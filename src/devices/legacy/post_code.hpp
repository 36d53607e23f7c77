// Port 0x80: the POST-code / I/O-delay port. Guests write progress codes or
// use it to pause (Linux's outb_p), never expecting an answer, so the VMM
// asks the backend to batch these writes instead of exiting for each one.
#pragma once

#include <atomic>
#include <cstdint>

#include "devices/bus.hpp"

namespace popek::devices {

class PostCode final : public BusDevice {
public:
    struct State {
        uint8_t last_code = 0;
        uint64_t writes = 0;
    };
    PostCode() = default;
    explicit PostCode(State s) : last_(s.last_code), writes_(s.writes) {}

    void read(uint64_t, std::span<uint8_t> data) override {
        for (auto& b : data) b = 0xff;  // write-only, like the ISA port
    }
    void write(uint64_t, std::span<const uint8_t> data) override {
        if (data.empty()) return;
        last_.store(data[0], std::memory_order_relaxed);
        writes_.fetch_add(1, std::memory_order_relaxed);
    }
    [[nodiscard]] State save() const {
        return State{last_.load(std::memory_order_relaxed), writes_.load(std::memory_order_relaxed)};
    }

private:
    std::atomic<uint8_t> last_{0};
    std::atomic<uint64_t> writes_{0};
};

}  // namespace popek::devices
