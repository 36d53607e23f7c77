#include "arch/x86/cpuid.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <vector>

namespace popek::arch::x86 {
namespace {

using hv::CpuidEntry;

// Trimmed from KVM_GET_SUPPORTED_CPUID on an AMD EPYC host.
std::vector<CpuidEntry> amd_supported() {
    return {
        {0x0, 0, false, 0x10, 0x68747541, 0x444d4163, 0x69746e65},  // "AuthenticAMD"
        {0x1, 0, false, 0x00a10f11, 0x01020800, 0x01202000, 0x078bfbff},
        {0x6, 0, false, 0x4, 0, 0, 0},
        {0x7, 0, true, 0x1, 0x01800002, 0x104, 0x20000000},
        {0xb, 0, true, 0, 0, 0, 1},
        {0xd, 0, true, 0xe7, 0x980, 0x980, 0},
        {0xd, 1, true, 0, 0, 0, 0},
        {0x40000000, 0, false, 0x40000001, 0x4b4d564b, 0x564b4d56, 0x4d},  // "KVMKVMKVM"
        {0x40000001, 0, false, 0x01007efb, 0, 0, 0},
        {0x80000000, 0, false, 0x80000021, 0x68747541, 0x444d4163, 0x69746e65},
        {0x80000001, 0, false, 0x00a10f11, 0x40000000, 0x00400393, 0x23d3fbff},
        {0x80000008, 0, false, 0x3030, 0x50020005, 0x7001, 0},
        {0x8000001d, 0, true, 0x121, 0x01c0003f, 0x3f, 0},
        {0x8000001d, 1, true, 0x122, 0x01c0003f, 0x3f, 0},
        {0x8000001d, 2, true, 0x143, 0x01c0003f, 0x7ff, 2},
        {0x8000001d, 3, true, 0x4163, 0x03c0003f, 0x7fff, 1},
        {0x8000001d, 4, true, 0, 0, 0, 0},
        {0x8000001e, 0, false, 0, 0, 0, 0},
    };
}

// Shaped like KVM on an Intel host with leaf 0x1F.
std::vector<CpuidEntry> intel_supported() {
    return {
        {0x0, 0, false, 0x1f, 0x756e6547, 0x6c65746e, 0x49656e69},  // "GenuineIntel"
        {0x1, 0, false, 0x000806f8, 0x00100800, 0x7ffefbff, 0xbfebfbff},
        {0x4, 0, true, 0x1c004121, 0x02c0003f, 0x3f, 0},
        {0x4, 1, true, 0x1c004122, 0x01c0003f, 0x3f, 0},
        {0x4, 2, true, 0x1c004143, 0x03c0003f, 0x7ff, 0},
        {0x4, 3, true, 0x1c03c163, 0x0380003f, 0xdfff, 4},
        {0x4, 4, true, 0, 0, 0, 0},
        {0xb, 0, true, 1, 2, 0x100, 7},
        {0xb, 1, true, 7, 64, 0x201, 7},
        {0x1f, 0, true, 1, 2, 0x100, 7},
        {0x1f, 1, true, 7, 64, 0x201, 7},
        {0x15, 0, false, 2, 200, 25000000, 0},
        {0x40000000, 0, false, 0x40000001, 0x4b4d564b, 0x564b4d56, 0x4d},
        {0x40000001, 0, false, 0x01007efb, 0, 0, 0},
        {0x80000000, 0, false, 0x80000008, 0, 0, 0},
        {0x80000001, 0, false, 0, 0, 0x121, 0x2c100800},
        {0x80000008, 0, false, 0x3030, 0, 0, 0},
    };
}

std::optional<CpuidEntry> leaf(const std::vector<CpuidEntry>& t, uint32_t fn, uint32_t idx = 0) {
    for (const auto& e : t)
        if (e.function == fn && e.index == idx) return e;
    return std::nullopt;
}

size_t subleaves(const std::vector<CpuidEntry>& t, uint32_t fn) {
    size_t n = 0;
    for (const auto& e : t) n += e.function == fn ? 1 : 0;
    return n;
}

TEST(Cpuid, DetectsVendor) {
    EXPECT_EQ(cpuid_vendor(amd_supported()), CpuVendor::Amd);
    EXPECT_EQ(cpuid_vendor(intel_supported()), CpuVendor::Intel);
    EXPECT_EQ(cpuid_vendor({}), CpuVendor::Other);
}

TEST(Cpuid, ApicIdsFollowTheVcpuIndex) {
    for (const auto& supported : {amd_supported(), intel_supported()}) {
        for (uint32_t i = 0; i < 4; ++i) {
            const auto t = cpuid_policy(supported, {i, 4, 0});
            const auto l1 = leaf(t, 1).value();
            EXPECT_EQ(l1.ebx >> 24, i);
            EXPECT_EQ((l1.ebx >> 16) & 0xff, 4u);
            EXPECT_EQ((l1.ebx >> 8) & 0xff, 8u);  // CLFLUSH: 64 bytes
            for (uint32_t sub = 0; sub < 3; ++sub) EXPECT_EQ(leaf(t, 0xb, sub).value().edx, i);
        }
    }
}

TEST(Cpuid, HypervisorAndHttBits) {
    auto t = cpuid_policy(amd_supported(), {0, 1, 0});
    EXPECT_NE(leaf(t, 1)->ecx & (1u << 31), 0u);
    EXPECT_EQ(leaf(t, 1)->edx & (1u << 28), 0u);
    t = cpuid_policy(amd_supported(), {0, 2, 0});
    EXPECT_NE(leaf(t, 1)->edx & (1u << 28), 0u);
}

TEST(Cpuid, X2ApicTopologyLeaves) {
    struct Case { uint32_t count, shift; };
    for (const Case c : {Case{1, 0}, Case{2, 1}, Case{3, 2}, Case{4, 2}, Case{5, 3}, Case{64, 6}}) {
        const auto t = cpuid_policy(intel_supported(), {1, c.count, 0});
        for (uint32_t fn : {0xbu, 0x1fu}) {
            ASSERT_EQ(subleaves(t, fn), 3u);
            const auto smt = leaf(t, fn, 0).value();
            EXPECT_EQ(smt.eax, 0u);
            EXPECT_EQ(smt.ebx, 1u);
            EXPECT_EQ(smt.ecx, 0x100u);  // level 0, type SMT
            EXPECT_TRUE(smt.index_significant);
            const auto core = leaf(t, fn, 1).value();
            EXPECT_EQ(core.eax, c.shift) << c.count;
            EXPECT_EQ(core.ebx, c.count);
            EXPECT_EQ(core.ecx, 0x201u);  // level 1, type core
            const auto end = leaf(t, fn, 2).value();
            EXPECT_EQ(end.ebx, 0u);
            EXPECT_EQ((end.ecx >> 8) & 0xff, 0u);  // invalid level ends the list
        }
    }
    // 0x1F is only rewritten where the hypervisor reports it.
    EXPECT_EQ(subleaves(cpuid_policy(amd_supported(), {0, 4, 0}), 0x1f), 0u);
}

TEST(Cpuid, IntelCacheLeafCountsCores) {
    const auto t = cpuid_policy(intel_supported(), {0, 6, 0});
    for (uint32_t sub = 0; sub < 4; ++sub) {
        const auto e = leaf(t, 4, sub).value();
        EXPECT_EQ(e.eax >> 26, 5u) << sub;
        const uint32_t level = (e.eax >> 5) & 7;
        EXPECT_EQ((e.eax >> 14) & 0xfff, level == 3 ? 5u : 0u) << sub;
        EXPECT_EQ(e.eax & 0x3fff, intel_supported()[2 + sub].eax & 0x3fff);
    }
    EXPECT_EQ(leaf(t, 4, 4)->eax, 0u);
}

TEST(Cpuid, AmdTopologyLeaves) {
    auto t = cpuid_policy(amd_supported(), {3, 8, 0});
    EXPECT_NE(leaf(t, 0x80000001)->ecx & 2u, 0u);  // CmpLegacy
    const auto sizes = leaf(t, 0x80000008).value();
    EXPECT_EQ(sizes.ecx & 0xff, 7u);          // NC = cores - 1
    EXPECT_EQ((sizes.ecx >> 12) & 0xf, 3u);   // ApicIdSize = log2(8)
    const auto topo = leaf(t, 0x8000001e).value();
    EXPECT_EQ(topo.eax, 3u);                  // extended APIC id
    EXPECT_EQ(topo.ebx & 0xff, 3u);           // core id
    EXPECT_EQ((topo.ebx >> 8) & 0xff, 0u);    // one thread per core
    EXPECT_EQ(topo.ecx, 0u);
    EXPECT_EQ((leaf(t, 0x8000001d, 0)->eax >> 14) & 0xfff, 0u);  // L1d per core
    EXPECT_EQ((leaf(t, 0x8000001d, 3)->eax >> 14) & 0xfff, 7u);  // L3 shared
    EXPECT_EQ(leaf(t, 0x8000001d, 3)->eax & 0x3fff, 0x163u);

    t = cpuid_policy(amd_supported(), {0, 1, 0});
    EXPECT_EQ(leaf(t, 0x80000001)->ecx & 2u, 0u);
    EXPECT_EQ(leaf(t, 0x80000008)->ecx & 0xf0ff, 0u);
}

TEST(Cpuid, TimingLeavesWithKnownTscFrequency) {
    const uint32_t tsc_khz = 2450000;
    const auto t = cpuid_policy(amd_supported(), {0, 2, tsc_khz});
    const auto base = leaf(t, 0x40000000).value();
    EXPECT_EQ(base.eax, 0x40000010u);
    EXPECT_EQ(base.ebx, 0x4b4d564bu);  // still "KVMKVMKVM"
    const auto timing = leaf(t, 0x40000010).value();
    EXPECT_EQ(timing.eax, tsc_khz);
    EXPECT_EQ(timing.ebx, 1000000u);
    EXPECT_EQ(leaf(t, 0)->eax, 0x16u);  // max basic leaf raised from 0x10
    const auto crystal = leaf(t, 0x15).value();
    ASSERT_NE(crystal.eax, 0u);
    EXPECT_EQ(uint64_t{crystal.ecx} * crystal.ebx / crystal.eax, uint64_t{tsc_khz} * 1000);
    EXPECT_EQ(leaf(t, 0x16)->eax, 2450u);
    // Intel's own 0x15 is replaced and its higher max leaf kept.
    const auto intel = cpuid_policy(intel_supported(), {0, 2, tsc_khz});
    EXPECT_EQ(leaf(intel, 0)->eax, 0x1fu);
    EXPECT_EQ(uint64_t{leaf(intel, 0x15)->ecx} * leaf(intel, 0x15)->ebx / leaf(intel, 0x15)->eax,
              uint64_t{tsc_khz} * 1000);
}

// Linux's native_calibrate_tsc computes (ECX / 1000) * EBX / EAX in 32-bit
// arithmetic: the leaf must not overflow it, and must still give the rate
// (within 2e-4: EBX is at most 4294; exact for whole-MHz rates).
TEST(Cpuid, CrystalLeafSurvivesLinuxThirtyTwoBitArithmetic) {
    for (uint32_t tsc_khz : {1989000u, 2450000u, 2893210u, 3700000u, 5123450u, 999990u}) {
        const auto t = cpuid_policy(intel_supported(), {0, 1, tsc_khz});
        const auto c = leaf(t, 0x15).value();
        ASSERT_NE(c.eax, 0u);
        const uint32_t crystal_khz = c.ecx / 1000;
        ASSERT_LE(uint64_t{crystal_khz} * c.ebx, uint64_t{UINT32_MAX}) << tsc_khz;
        const uint32_t linux_khz = crystal_khz * c.ebx / c.eax;
        const double rel = (double(linux_khz) - double(tsc_khz)) / double(tsc_khz);
        EXPECT_LT(rel < 0 ? -rel : rel, 2e-4) << tsc_khz << " kHz became " << linux_khz;
        if (tsc_khz % 1000 == 0) {
            EXPECT_EQ(linux_khz, tsc_khz);
        }
    }
}

TEST(Cpuid, NoTimingLeavesWithoutTscFrequency) {
    const auto t = cpuid_policy(amd_supported(), {0, 2, 0});
    EXPECT_FALSE(leaf(t, 0x40000010).has_value());
    EXPECT_FALSE(leaf(t, 0x15).has_value());
    EXPECT_EQ(leaf(t, 0x40000000)->eax, 0x40000001u);
    EXPECT_EQ(leaf(t, 0)->eax, 0x10u);
}

TEST(Cpuid, OtherLeavesPassThroughAndOutputIsSorted) {
    const auto supported = amd_supported();
    const auto t = cpuid_policy(supported, {1, 4, 1000000});
    for (uint32_t fn : {0x6u, 0x7u, 0xdu, 0x40000001u}) {
        for (const auto& s : supported) {
            if (s.function != fn) continue;
            const auto e = leaf(t, fn, s.index).value();
            EXPECT_EQ(e.eax, s.eax);
            EXPECT_EQ(e.ebx, s.ebx);
            EXPECT_EQ(e.ecx, s.ecx);
            EXPECT_EQ(e.edx, s.edx);
            EXPECT_EQ(e.index_significant, s.index_significant);
        }
    }
    for (size_t i = 1; i < t.size(); ++i) {
        const bool ordered = t[i - 1].function < t[i].function ||
                             (t[i - 1].function == t[i].function && t[i - 1].index < t[i].index);
        EXPECT_TRUE(ordered) << i;
    }
}

}  // namespace
}  // namespace popek::arch::x86
