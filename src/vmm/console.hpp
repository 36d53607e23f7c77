// Where the serial console goes: stdout/stdin, a file, or a pseudo-terminal.
#pragma once

#include <string>

#include "base/result.hpp"
#include "base/unique_fd.hpp"
#include "vmm/config.hpp"

namespace popek::vmm {

struct ConsoleFds {
    int out_fd = -1;            // what the guest transmits goes here
    int in_fd = -1;             // what the guest receives comes from here (-1: nothing)
    base::UniqueFd owned_out;   // owned descriptors (file, pty master)
    base::UniqueFd pty_slave;   // held open so the master never reads EIO before a user attaches
    std::string pty_path;       // for SerialMode::Pty
};

base::Result<ConsoleFds> open_console(const VmConfig& cfg);

}  // namespace popek::vmm
