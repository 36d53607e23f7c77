#include "arch/x86/cpuid.hpp"

#include <algorithm>
#include <cstring>
#include <string_view>
#include <utility>

namespace popek::arch::x86 {

namespace {

using hv::CpuidEntry;
using Table = std::vector<CpuidEntry>;

constexpr uint32_t kLeafVendor = 0x0;
constexpr uint32_t kLeafFeatures = 0x1;
constexpr uint32_t kLeafCacheParams = 0x4;
constexpr uint32_t kLeafTopology = 0xb;
constexpr uint32_t kLeafTscCrystal = 0x15;
constexpr uint32_t kLeafFrequency = 0x16;
constexpr uint32_t kLeafTopologyV2 = 0x1f;
constexpr uint32_t kLeafHypervisor = 0x40000000;
constexpr uint32_t kLeafExtFeatures = 0x80000001;
constexpr uint32_t kLeafAddressSizes = 0x80000008;
constexpr uint32_t kLeafAmdCacheTopology = 0x8000001d;
constexpr uint32_t kLeafAmdTopology = 0x8000001e;

constexpr uint32_t kLeaf1EcxHypervisor = 1u << 31;
constexpr uint32_t kLeaf1EdxHtt = 1u << 28;
constexpr uint32_t kClflushLineQwords = 8;           // 64-byte cache lines
constexpr uint32_t kExtEcxCmpLegacy = 1u << 1;
constexpr uint32_t kTopologyLevelSmt = 1;
constexpr uint32_t kTopologyLevelCore = 2;
constexpr uint32_t kCrystalHz = 1000000000;          // = the LAPIC timer clock (1 GHz)
// Linux (native_calibrate_tsc) computes crystal_khz * EBX / EAX in 32 bits,
// so with a 1 GHz crystal EBX must stay at or below this.
constexpr uint32_t kCrystalMaxNumerator = UINT32_MAX / (kCrystalHz / 1000);

// The ratio EBX/EAX of leaf 0x15 closest to tsc_khz / crystal kHz with EBX no
// larger than kCrystalMaxNumerator (exact for TSC rates rounded to 1 MHz).
std::pair<uint32_t, uint32_t> crystal_ratio(uint32_t tsc_khz) {
    constexpr uint64_t crystal_khz = kCrystalHz / 1000;
    uint32_t best_den = 1, best_num = 1;
    uint64_t best_err = UINT64_MAX;
    for (uint64_t den = 1; den <= kCrystalMaxNumerator; den++) {
        const uint64_t num = (uint64_t{tsc_khz} * den + crystal_khz / 2) / crystal_khz;
        if (num == 0) continue;
        if (num > kCrystalMaxNumerator) break;
        const uint64_t khz = crystal_khz * num / den;
        const uint64_t err = khz > tsc_khz ? khz - tsc_khz : tsc_khz - khz;
        if (err < best_err) {
            best_err = err;
            best_den = static_cast<uint32_t>(den);
            best_num = static_cast<uint32_t>(num);
            if (err == 0) break;
        }
    }
    return {best_den, best_num};
}

CpuidEntry* find(Table& t, uint32_t function, uint32_t index = 0) {
    for (auto& e : t)
        if (e.function == function && e.index == index) return &e;
    return nullptr;
}

bool has_leaf(const Table& t, uint32_t function) {
    return std::any_of(t.begin(), t.end(), [function](const CpuidEntry& e) { return e.function == function; });
}

void erase_leaf(Table& t, uint32_t function) {
    std::erase_if(t, [function](const CpuidEntry& e) { return e.function == function; });
}

void put(Table& t, const CpuidEntry& entry) {
    if (CpuidEntry* e = find(t, entry.function, entry.index)) {
        *e = entry;
    } else {
        t.push_back(entry);
    }
}

uint32_t ceil_log2(uint32_t n) {
    uint32_t shift = 0;
    while (shift < 32 && (uint64_t{1} << shift) < n) ++shift;
    return shift;
}

uint32_t set_bit(uint32_t reg, uint32_t bit, bool on) { return on ? reg | bit : reg & ~bit; }

// x2APIC topology (leaf 0xB / 0x1F): one thread per core, all cores in one package.
void put_topology(Table& t, uint32_t leaf, uint32_t apic_id, uint32_t count) {
    erase_leaf(t, leaf);
    t.push_back({leaf, 0, true, 0, 1, (kTopologyLevelSmt << 8) | 0, apic_id});
    t.push_back({leaf, 1, true, ceil_log2(count), count, (kTopologyLevelCore << 8) | 1, apic_id});
    t.push_back({leaf, 2, true, 0, 0, 2, apic_id});
}

// Deterministic cache parameter leaves (Intel leaf 4, AMD 0x8000001D): L1/L2
// private to a core, L3 and up shared by the whole package.
void set_cache_sharing(Table& t, uint32_t leaf, uint32_t count, bool cores_field) {
    for (auto& e : t) {
        if (e.function != leaf || (e.eax & 0x1f) == 0) continue;  // type 0: no more caches
        const uint32_t level = (e.eax >> 5) & 0x7;
        const uint32_t sharing = level >= 3 ? std::min(count - 1, 0xfffu) : 0;
        e.eax = (e.eax & ~(0xfffu << 14)) | (sharing << 14);
        if (cores_field) e.eax = (e.eax & 0x03ffffffu) | (std::min(count - 1, 0x3fu) << 26);
    }
}

}  // namespace

CpuVendor cpuid_vendor(std::span<const hv::CpuidEntry> entries) {
    for (const auto& e : entries) {
        if (e.function != kLeafVendor || e.index != 0) continue;
        char name[12];
        std::memcpy(name, &e.ebx, 4);
        std::memcpy(name + 4, &e.edx, 4);
        std::memcpy(name + 8, &e.ecx, 4);
        const std::string_view vendor(name, sizeof name);
        if (vendor == "GenuineIntel") return CpuVendor::Intel;
        if (vendor == "AuthenticAMD" || vendor == "HygonGenuine") return CpuVendor::Amd;
        return CpuVendor::Other;
    }
    return CpuVendor::Other;
}

std::vector<hv::CpuidEntry> cpuid_policy(std::span<const hv::CpuidEntry> supported,
                                         const CpuidConfig& cfg) {
    Table t(supported.begin(), supported.end());
    const uint32_t count = std::max(cfg.vcpu_count, 1u);
    const uint32_t id = cfg.vcpu_index;
    const CpuVendor vendor = cpuid_vendor(supported);
    CpuidEntry* leaf0 = find(t, kLeafVendor);
    const uint32_t max_basic = leaf0 != nullptr ? leaf0->eax : 0;

    if (CpuidEntry* e = find(t, kLeafFeatures)) {
        e->ebx = (e->ebx & 0xff) | (kClflushLineQwords << 8) | (std::min(count, 0xffu) << 16) |
                 ((id & 0xff) << 24);
        e->ecx |= kLeaf1EcxHypervisor;
        e->edx = set_bit(e->edx, kLeaf1EdxHtt, count > 1);
    }
    if (max_basic >= kLeafTopology) put_topology(t, kLeafTopology, id, count);
    if (max_basic >= kLeafTopologyV2 && has_leaf(t, kLeafTopologyV2))
        put_topology(t, kLeafTopologyV2, id, count);
    set_cache_sharing(t, kLeafCacheParams, count, true);

    if (vendor == CpuVendor::Amd) {
        if (CpuidEntry* e = find(t, kLeafExtFeatures)) e->ecx = set_bit(e->ecx, kExtEcxCmpLegacy, count > 1);
        if (CpuidEntry* e = find(t, kLeafAddressSizes))
            e->ecx = (e->ecx & ~0xf0ffu) | std::min(count - 1, 0xffu) | (ceil_log2(count) << 12);
        if (CpuidEntry* e = find(t, kLeafAmdTopology)) {
            e->eax = id;          // extended APIC id
            e->ebx = id & 0xff;   // core id; threads per core - 1 = 0
            e->ecx = 0;           // node 0, one node per package
            e->edx = 0;
        }
        set_cache_sharing(t, kLeafAmdCacheTopology, count, false);
    }

    if (cfg.tsc_khz != 0) {
        if (CpuidEntry* hv_base = find(t, kLeafHypervisor)) {
            hv_base->eax = std::max(hv_base->eax, kCpuidTimingLeaf);
            put(t, {kCpuidTimingLeaf, 0, false, cfg.tsc_khz, kApicBusKhz, 0, 0});
        }
        // TSC = crystal * EBX / EAX; the crystal is the LAPIC timer clock.
        const auto [den, num] = crystal_ratio(cfg.tsc_khz);
        put(t, {kLeafTscCrystal, 0, false, den, num, kCrystalHz, 0});
        const uint32_t mhz = cfg.tsc_khz / 1000;
        put(t, {kLeafFrequency, 0, false, mhz, mhz, 0, 0});
        if (CpuidEntry* l0 = find(t, kLeafVendor)) l0->eax = std::max(l0->eax, kLeafFrequency);
    }

    std::sort(t.begin(), t.end(), [](const CpuidEntry& a, const CpuidEntry& b) {
        return a.function != b.function ? a.function < b.function : a.index < b.index;
    });
    return t;
}

}  // namespace popek::arch::x86
