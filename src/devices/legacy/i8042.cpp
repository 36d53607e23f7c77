#include "devices/legacy/i8042.hpp"

namespace popek::devices {

namespace {
constexpr uint64_t kData = 0;
constexpr uint64_t kCmd = 4;
constexpr uint8_t kStatusObf = 0x01;     // output buffer full
constexpr uint8_t kStatusSystem = 0x04;  // self-test passed since power-on
constexpr uint8_t kStatusCmd = 0x08;     // last write was a command
constexpr size_t kOutputMax = 16;
}  // namespace

I8042::I8042(ExitHandler& exits) : I8042(exits, State{}) {}

void I8042::read(uint64_t offset, std::span<uint8_t> data) {
    if (data.empty()) return;
    std::lock_guard lock(mu_);
    for (auto& b : data) b = 0;
    if (offset == kCmd) {
        data[0] = static_cast<uint8_t>(kStatusSystem | kStatusCmd | (s_.output.empty() ? 0 : kStatusObf));
    } else if (offset == kData && !s_.output.empty()) {
        data[0] = s_.output.front();
        s_.output.pop_front();
    }
}

void I8042::write(uint64_t offset, std::span<const uint8_t> data) {
    if (data.empty()) return;
    bool reset = false;
    {
        std::lock_guard lock(mu_);
        if (offset == kCmd) {
            if (data[0] == 0xfe) reset = true;
            else command(data[0]);
        } else if (offset == kData) {
            if (s_.pending_command == 0x60) s_.command_byte = data[0];
            s_.pending_command = 0;
        }
    }
    // Outside the lock: the exit handler stops vCPUs, which may be in here.
    if (reset) exits_.request_exit({GuestExitKind::Reset, 0, "i8042 reset (0xfe on port 0x64)"});
}

void I8042::command(uint8_t cmd) {
    auto push = [this](uint8_t b) {
        if (s_.output.size() < kOutputMax) s_.output.push_back(b);
    };
    s_.pending_command = 0;  // a new command abandons one still waiting for its data byte
    switch (cmd) {
        case 0x20: push(s_.command_byte); break;  // read command byte
        case 0x60: s_.pending_command = cmd; break;  // write command byte (data follows)
        case 0xaa: push(0x55); break;              // controller self-test: passed
        case 0xab: push(0x00); break;              // keyboard interface test: ok
        case 0xa9: push(0xff); break;              // aux interface test: no aux port
        default: break;                            // enable/disable port etc.: accepted
    }
}

}  // namespace popek::devices
