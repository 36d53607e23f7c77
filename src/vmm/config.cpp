#include "vmm/config.hpp"

#include <unistd.h>

#include "arch/x86/layout.hpp"

namespace popek::vmm {

using base::Error;

static std::string mib(uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

base::Result<void> validate_config(const VmConfig& cfg) {
    if (cfg.cpus < 1 || cfg.cpus > kMaxVcpus)
        return Error{"--cpus " + std::to_string(cfg.cpus) + ": must be between 1 and " +
                     std::to_string(kMaxVcpus)};
    if (cfg.memory_bytes < arch::x86::kMinRam)
        return Error{"--memory " + mib(cfg.memory_bytes) + " is too small: at least " +
                     mib(arch::x86::kMinRam) + " is needed"};
    if (cfg.memory_bytes % 4096 != 0) return Error{"--memory must be a multiple of 4 KiB"};
    auto pages = ::sysconf(_SC_PHYS_PAGES);
    auto page = ::sysconf(_SC_PAGESIZE);
    uint64_t host = pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
    uint64_t limit = host != 0 && host < arch::x86::kMaxRam ? host : arch::x86::kMaxRam;
    if (cfg.memory_bytes > limit)
        return Error{"--memory " + mib(cfg.memory_bytes) + " is too large: this host allows at most " +
                     mib(limit)};
    if (cfg.kernel_path.empty()) return Error{"--kernel is required"};
    return {};
}

base::Result<void> parse_serial(const std::string& spec, VmConfig& cfg) {
    if (spec == "stdio") cfg.serial = SerialMode::Stdio;
    else if (spec == "pty") cfg.serial = SerialMode::Pty;
    else if (spec == "none") cfg.serial = SerialMode::None;
    else if (spec.rfind("file:", 0) == 0 && spec.size() > 5) {
        cfg.serial = SerialMode::File;
        cfg.serial_path = spec.substr(5);
    } else {
        return Error{"--serial " + spec + ": expected stdio, file:PATH, pty or none"};
    }
    return {};
}

}  // namespace popek::vmm
