// How devices tell the VMM that the guest is done (power-off, reset, debug
// exit) and how they raise interrupts, without knowing the VMM or backend.
#pragma once

#include <cstdint>
#include <string>

namespace popek::devices {

enum class GuestExitKind { PowerOff, Reset, DebugExit, Crash, Terminated /* by a signal to popek; code = signal */ };

struct GuestExit {
    GuestExitKind kind;
    uint32_t code = 0;     // debug-exit value
    std::string detail;    // for reports (crash register dump, which device)
};

class ExitHandler {
public:
    virtual ~ExitHandler() = default;
    // Thread-safe; the first request wins.
    virtual void request_exit(GuestExit exit) = 0;
};

// An interrupt line into the platform's interrupt controller.
class IrqLine {
public:
    virtual ~IrqLine() = default;
    virtual void set_level(bool level) = 0;
};

}  // namespace popek::devices
