// The software MMU: linear → guest-physical translation by walking the
// guest's 4-level page tables (4K, 2M and 1G pages), with accessed/dirty
// updates, U/S, R/W under CR0.WP and NX under EFER.NXE, and a direct-mapped
// TLB that caches host pointers for RAM pages with separate permission bits
// per access kind and privilege.
#pragma once

#include <array>
#include <cstdint>

#include "hv/emu/cpu.hpp"
#include "hv/emu/phys_memory.hpp"

namespace popek::hv::emu {

enum class Access : uint8_t { Read = 0, Write = 1, Exec = 2 };

// #PF error-code bits.
namespace pf {
inline constexpr uint32_t P = 1, W = 2, U = 4, RSVD = 8, ID = 16;
}

// Physical address width the engine implements (CPUID 0x80000008).
inline constexpr unsigned kPhysAddrBits = 40;

struct Translation {
    uint64_t gpa = 0;
    uint8_t* host = nullptr;  // the byte at gpa if it may be accessed directly; null: use PhysMemory
};

enum class WalkResult : uint8_t { Ok, PageFault, Unsupported };

class Mmu {
public:
    static constexpr unsigned kTlbEntries = 1024;

    Mmu(PhysMemory& mem, const CpuState& cpu) : mem_(mem), cpu_(cpu) { flush_all(); }

    // Translates linear address `la` for an access of kind `access` at user
    // (CPL 3) or supervisor privilege. On a page fault, `error` receives the
    // #PF error code (the caller sets CR2 and delivers #PF).
    WalkResult translate(uint64_t la, Access access, bool user, Translation& out, uint32_t& error) {
        const uint64_t tag = la >> 12;
        TlbEntry& e = tlb_[tag % kTlbEntries];
        const uint8_t bit = perm_bit(access, user);
        if (e.tag == tag && (e.perm & bit) != 0) {
            const uint64_t off = la & ~kPageMask;
            out.gpa = e.gpa + off;
            uint8_t* host = access == Access::Write ? e.host_write : e.host;
            out.host = host != nullptr ? host + off : nullptr;
            return WalkResult::Ok;
        }
        return translate_slow(la, access, user, out, error);
    }

    void flush_all();
    void flush_nonglobal();               // CR3 write
    void invlpg(uint64_t la);             // one page (the whole large page it lies in)
    // A RAM page started or stopped holding translated code: writes to it
    // must (or need no longer) take the slow path that invalidates blocks.
    void set_write_fast_path(uint64_t gpa_page, bool fast);

    // Bumped by every flush and INVLPG: translations cached outside the TLB
    // (the engine's RIP → block cache) are valid while it stays the same.
    [[nodiscard]] uint64_t generation() const { return generation_; }
    // Statistics for tests and tuning.
    [[nodiscard]] uint64_t walks() const { return walks_; }

private:
    struct TlbEntry {
        uint64_t tag = ~0ULL;       // la >> 12; ~0 is never a valid tag
        uint64_t gpa = 0;           // of the 4K page
        uint8_t* host = nullptr;    // for reads and fetches
        uint8_t* host_write = nullptr;  // null if the page holds code or is not RAM
        uint8_t perm = 0;           // perm_bit()s granted
        uint8_t shift = 12;         // log2 of the guest page size it came from
        bool global = false;
    };

    static uint8_t perm_bit(Access a, bool user) {
        return static_cast<uint8_t>(1u << (static_cast<unsigned>(a) + (user ? 3u : 0u)));
    }
    WalkResult translate_slow(uint64_t la, Access access, bool user, Translation& out, uint32_t& error);
    WalkResult walk4(uint64_t la, Access access, bool user, TlbEntry& fill, uint32_t& error);

    PhysMemory& mem_;
    const CpuState& cpu_;
    std::array<TlbEntry, kTlbEntries> tlb_{};
    uint32_t large_entries_ = 0;  // entries from 2M/1G pages (INVLPG must scan)
    uint64_t walks_ = 0;
    uint64_t generation_ = 0;
};

}  // namespace popek::hv::emu
