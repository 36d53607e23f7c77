#include <time.h>
#include <x86intrin.h>

#include "hv/emu_backend/emu_backend.hpp"

namespace popek::hv {

base::Result<std::unique_ptr<Hypervisor>> open_emu() {
    const uint64_t hz = emu::host_tsc_hz();
    if (hz == 0) return base::Error{"emu: could not measure the host's TSC frequency"};
    return std::unique_ptr<Hypervisor>(new emu::EmuHypervisor(static_cast<uint32_t>(hz / 1000)));
}

}  // namespace popek::hv

namespace popek::hv::emu {

uint64_t now_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

// The engine's RDTSC reads the host TSC (plus the guest's offset), so the
// guest's TSC runs at the host's rate: measured here, reported as tsc_khz()
// so that CPUID 0x15/0x16 tell the guest the truth. Two 10 ms windows, the
// shorter-jitter one wins; rounded to 10 kHz.
uint64_t host_tsc_hz() {
    static const uint64_t hz = [] {
        uint64_t best = 0;
        uint64_t best_spread = UINT64_MAX;
        for (int round = 0; round < 2; round++) {
            const uint64_t t0 = now_ns();
            const uint64_t c0 = __rdtsc();
            const uint64_t t0b = now_ns();
            timespec pause{0, 10'000'000};
            ::nanosleep(&pause, nullptr);
            const uint64_t t1 = now_ns();
            const uint64_t c1 = __rdtsc();
            const uint64_t t1b = now_ns();
            const uint64_t spread = (t0b - t0) + (t1b - t1);
            const uint64_t ns = ((t1 + t1b) - (t0 + t0b)) / 2;
            if (ns == 0 || c1 <= c0) continue;
            if (spread < best_spread) {
                best_spread = spread;
                best = static_cast<uint64_t>(static_cast<double>(c1 - c0) * 1e9 / static_cast<double>(ns));
            }
        }
        return (best + 5000) / 10000 * 10000;
    }();
    return hz;
}

// The engine's own leaves plus what the backend's platform adds: the local
// APIC (CPUID.1:EDX bit 9) and its TSC-deadline timer mode (CPUID.1:ECX bit
// 24; the engine's IA32_TSC_DEADLINE reaches the LAPIC through sync_tsc_deadline).
base::Result<std::vector<CpuidEntry>> EmuHypervisor::supported_cpuid() {
    std::vector<CpuidEntry> entries = emu::supported_cpuid();
    for (CpuidEntry& e : entries) {
        if (e.function == 1) {
            e.edx |= 1u << 9;
            e.ecx |= 1u << 24;
        }
    }
    return entries;
}

base::Result<std::unique_ptr<Vm>> EmuHypervisor::create_vm(const VmOptions& opts) {
    if (opts.vcpu_count == 0 || opts.vcpu_count > kMaxEmuVcpus)
        return base::Error{"emu: " + std::to_string(opts.vcpu_count) + " vCPUs (1-" +
                           std::to_string(kMaxEmuVcpus) + " supported)"};
    auto vm = std::unique_ptr<Vm>(new EmuVm(opts.vcpu_count, uint64_t{tsc_khz_} * 1000));
    for (uint32_t slot = 0; slot < opts.ram.size(); slot++) {
        const RamMapping& r = opts.ram[slot];
        POPEK_TRY(vm->map_memory(slot, r.gpa, r.size, r.host));
    }
    return vm;
}

}  // namespace popek::hv::emu
