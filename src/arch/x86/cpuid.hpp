// The CPUID a vCPU sees: what the hypervisor supports, with the topology
// (APIC ids, core counts), the hypervisor bit and the TSC frequency made to
// describe this VM rather than the host.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "hv/x86_state.hpp"

namespace popek::arch::x86 {

struct CpuidConfig {
    uint32_t vcpu_index;  // also the vCPU's (x2)APIC id
    uint32_t vcpu_count;  // one package, one thread per core: vcpu_count cores
    uint32_t tsc_khz;     // 0 if unknown: no timing leaves
};

enum class CpuVendor { Intel, Amd, Other };

// The vendor named by leaf 0 (EBX, EDX, ECX). Hygon counts as AMD.
CpuVendor cpuid_vendor(std::span<const hv::CpuidEntry> entries);

constexpr uint32_t kCpuidTimingLeaf = 0x40000010;  // EAX = TSC kHz, EBX = APIC bus kHz
constexpr uint32_t kApicBusKhz = 1000000;           // KVM's LAPIC timer ticks once per ns

// The CPUID table for one vCPU, derived from `supported` (the hypervisor's
// list, e.g. KVM_GET_SUPPORTED_CPUID). Leaves it does not mention pass
// through unchanged. The result is sorted by (function, index).
std::vector<hv::CpuidEntry> cpuid_policy(std::span<const hv::CpuidEntry> supported,
                                         const CpuidConfig& cfg);

}  // namespace popek::arch::x86
