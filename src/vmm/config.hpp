// What a user asks for: the VM's configuration, as parsed from the CLI (and
// later the API). Plain data; validated by validate_config().
#pragma once

#include <cstdint>
#include <string>

#include "base/result.hpp"

namespace popek::vmm {

enum class SerialMode { Stdio, File, Pty, None };

struct VmConfig {
    std::string kernel_path;
    std::string initrd_path;        // empty: none
    std::string cmdline;
    uint32_t cpus = 1;
    uint64_t memory_bytes = 256ull << 20;
    SerialMode serial = SerialMode::Stdio;
    std::string serial_path;        // for SerialMode::File
    std::string kvm_device = "/dev/kvm";
};

constexpr uint32_t kMaxVcpus = 32;

// Checks ranges that do not need the host: CPU count, memory size bounds.
base::Result<void> validate_config(const VmConfig&);

// "stdio", "file:PATH", "pty", "none" -> mode and path.
base::Result<void> parse_serial(const std::string& spec, VmConfig& cfg);

}  // namespace popek::vmm
