#include "hv/emu/mmu.hpp"

#include <cstring>

namespace popek::hv::emu {

namespace {

namespace pte {
inline constexpr uint64_t P = 1, RW = 2, US = 4, A = 1ULL << 5, D = 1ULL << 6, PS = 1ULL << 7;
inline constexpr uint64_t G = 1ULL << 8, NX = 1ULL << 63;
inline constexpr uint64_t AddrMask = ((1ULL << kPhysAddrBits) - 1) & kPageMask;
// Bits 51..MAXPHYADDR must be zero in every entry.
inline constexpr uint64_t HighReserved = ((1ULL << 52) - 1) & ~((1ULL << kPhysAddrBits) - 1);
}  // namespace pte

// Sets `bits` in the paging entry at `gpa` the way the CPU does (a locked OR).
void set_entry_bits(PhysMemory& mem, uint64_t gpa, uint64_t bits) {
    if (uint8_t* page = mem.host_page(gpa)) {
        auto* entry = reinterpret_cast<uint64_t*>(page + (gpa & ~kPageMask));
        __atomic_fetch_or(entry, bits, __ATOMIC_SEQ_CST);
        mem.mark_dirty(gpa);
        return;
    }
    mem.write(gpa, 8, mem.read(gpa, 8) | bits);
}

}  // namespace

void Mmu::flush_all() {
    ++generation_;
    for (auto& e : tlb_) e = TlbEntry{};
    large_entries_ = 0;
}

void Mmu::flush_nonglobal() {
    ++generation_;
    if ((cpu_.cr4 & cr4::PGE) == 0) {
        flush_all();
        return;
    }
    uint32_t large = 0;
    for (auto& e : tlb_) {
        if (!e.global) {
            e = TlbEntry{};
        } else if (e.shift != 12) {
            ++large;
        }
    }
    large_entries_ = large;
}

void Mmu::invlpg(uint64_t la) {
    ++generation_;
    const uint64_t tag = la >> 12;
    TlbEntry& e = tlb_[tag % kTlbEntries];
    if (e.tag == tag) e = TlbEntry{};
    if (large_entries_ == 0) return;
    // The 4K entries cut from a large page all go with it.
    for (auto& x : tlb_) {
        if (x.tag != ~0ULL && x.shift != 12 && (x.tag >> (x.shift - 12)) == (la >> x.shift)) {
            x = TlbEntry{};
            --large_entries_;
        }
    }
}

void Mmu::set_write_fast_path(uint64_t gpa_page, bool fast) {
    for (auto& e : tlb_) {
        if (e.tag != ~0ULL && e.gpa == gpa_page) e.host_write = fast ? e.host : nullptr;
    }
}

WalkResult Mmu::translate_slow(uint64_t la, Access access, bool user, Translation& out,
                               uint32_t& error) {
    ++walks_;
    TlbEntry fill;
    if ((cpu_.cr0 & cr0::PG) == 0) {
        fill.gpa = la & kPageMask & 0xffffffffULL;  // no paging: linear is physical (32-bit)
        fill.perm = 0x3f;
    } else if ((cpu_.efer & efer::LMA) != 0) {
        WalkResult r = walk4(la, access, user, fill, error);
        if (r != WalkResult::Ok) return r;
    } else {
        return WalkResult::Unsupported;  // legacy 32-bit and PAE paging: not implemented
    }
    fill.tag = la >> 12;
    fill.host = mem_.host_page(fill.gpa);
    if (mem_.dirty_logging()) {
        // Only a write may open the write fast path, and it logs the page first.
        if (access == Access::Write) {
            mem_.mark_dirty(fill.gpa);
        } else {
            fill.perm &= static_cast<uint8_t>(~(perm_bit(Access::Write, false) | perm_bit(Access::Write, true)));
        }
    }
    fill.host_write = (fill.host != nullptr && !mem_.is_code_page(fill.gpa)) ? fill.host : nullptr;
    TlbEntry& slot = tlb_[fill.tag % kTlbEntries];
    if (slot.tag != ~0ULL && slot.shift != 12) --large_entries_;
    if (fill.shift != 12) ++large_entries_;
    slot = fill;

    const uint64_t off = la & ~kPageMask;
    out.gpa = fill.gpa + off;
    uint8_t* host = access == Access::Write ? fill.host_write : fill.host;
    out.host = host != nullptr ? host + off : nullptr;
    return WalkResult::Ok;
}

WalkResult Mmu::walk4(uint64_t la, Access access, bool user, TlbEntry& fill, uint32_t& error) {
    const bool nxe = (cpu_.efer & efer::NXE) != 0;
    const bool write = access == Access::Write;
    error = (write ? pf::W : 0) | (user ? pf::U : 0) | (access == Access::Exec && nxe ? pf::ID : 0);

    uint64_t table = cpu_.cr3 & pte::AddrMask;
    bool rw = true, us = true, nx = false;
    uint64_t entry = 0, entry_gpa = 0;
    unsigned shift = 39;
    for (int level = 4; level >= 1; --level, shift -= 9) {
        entry_gpa = table + ((la >> shift) & 511) * 8;
        entry = mem_.read(entry_gpa, 8);
        if ((entry & pte::P) == 0) return WalkResult::PageFault;  // error has P=0
        const bool leaf = level == 1 || (level <= 3 && (entry & pte::PS) != 0);
        uint64_t reserved = pte::HighReserved | (nxe ? 0 : pte::NX);
        if (level == 4) reserved |= pte::PS;
        if (leaf && level > 1) {
            // PAT bit at 12; the frame's low bits below the page size must be zero.
            reserved |= ((1ULL << shift) - 1) & ~0x1fffULL;
        }
        if ((entry & reserved) != 0) {
            error |= pf::P | pf::RSVD;
            return WalkResult::PageFault;
        }
        rw = rw && (entry & pte::RW) != 0;
        us = us && (entry & pte::US) != 0;
        nx = nx || (nxe && (entry & pte::NX) != 0);
        if (leaf) break;
        table = entry & pte::AddrMask;
    }

    // Permission check before any A/D update: a faulting access sets neither.
    bool allowed = true;
    if (user && !us) allowed = false;
    if (write && !rw && (user || (cpu_.cr0 & cr0::WP) != 0)) allowed = false;
    if (access == Access::Exec && nx) allowed = false;
    if (!allowed) {
        error |= pf::P;
        return WalkResult::PageFault;
    }

    // Accessed bits on the path (the leaf's last), dirty on a write.
    {
        uint64_t t = cpu_.cr3 & pte::AddrMask;
        for (unsigned s = 39; s > shift; s -= 9) {
            const uint64_t g = t + ((la >> s) & 511) * 8;
            const uint64_t e = mem_.read(g, 8);
            if ((e & pte::A) == 0) set_entry_bits(mem_, g, pte::A);
            t = e & pte::AddrMask;
        }
    }
    uint64_t leaf_bits = pte::A | (write ? pte::D : 0);
    if ((entry & leaf_bits) != leaf_bits) {
        set_entry_bits(mem_, entry_gpa, leaf_bits);
        entry |= leaf_bits;
    }

    const bool dirty = (entry & pte::D) != 0;
    const bool wp = (cpu_.cr0 & cr0::WP) != 0;
    const auto bit = perm_bit;
    uint8_t perm = bit(Access::Read, false);
    if (dirty && (rw || !wp)) perm |= bit(Access::Write, false);
    if (!nx) perm |= bit(Access::Exec, false);
    if (us) {
        perm |= bit(Access::Read, true);
        if (dirty && rw) perm |= bit(Access::Write, true);
        if (!nx) perm |= bit(Access::Exec, true);
    }
    const uint64_t frame_mask = pte::AddrMask & ~((1ULL << shift) - 1);
    fill.gpa = ((entry & frame_mask) | (la & ((1ULL << shift) - 1))) & kPageMask;
    fill.perm = perm;
    fill.shift = static_cast<uint8_t>(shift);
    fill.global = (entry & pte::G) != 0 && (cpu_.cr4 & cr4::PGE) != 0;
    return WalkResult::Ok;
}

}  // namespace popek::hv::emu
