// The engine's memory paths: segmentation, the TLB fast path, page-crossing
// accesses, operands, the stack and port I/O permission.
#include <cstring>

#include "hv/emu/engine.hpp"

namespace popek::hv::emu {

namespace {

bool canonical(uint64_t la) { return static_cast<uint64_t>(static_cast<int64_t>(la << 16) >> 16) == la; }

uint64_t size_mask(unsigned size) { return size >= 8 ? ~0ULL : (1ULL << (size * 8)) - 1; }

// Fixed-size copies (the compiler turns them into single moves).
uint64_t load(const uint8_t* p, unsigned size) {
    switch (size) {
    case 1: return *p;
    case 2: { uint16_t v; std::memcpy(&v, p, 2); return v; }
    case 4: { uint32_t v; std::memcpy(&v, p, 4); return v; }
    default: { uint64_t v; std::memcpy(&v, p, 8); return v; }
    }
}

void store(uint8_t* p, unsigned size, uint64_t v) {
    switch (size) {
    case 1: *p = static_cast<uint8_t>(v); break;
    case 2: { const auto x = static_cast<uint16_t>(v); std::memcpy(p, &x, 2); break; }
    case 4: { const auto x = static_cast<uint32_t>(v); std::memcpy(p, &x, 4); break; }
    default: std::memcpy(p, &v, 8); break;
    }
}

}  // namespace

bool Engine::linear(uint8_t seg, uint64_t offset, uint64_t& la) {
    if (in_64bit_code(s)) {
        la = offset + ((seg == kFs || seg == kGs) ? s.seg[seg].base : 0);
        if (!canonical(la)) {
            raise(seg == kSs ? kVecSS : kVecGP, 0);
            return false;
        }
        return true;
    }
    la = (s.seg[seg].base + offset) & 0xffffffffULL;  // segment limits are not checked
    return true;
}

bool Engine::access_cross_page(uint64_t la, unsigned size, uint64_t& v, bool user, Access acc, bool write) {
    const unsigned first = static_cast<unsigned>(kPageSize - (la & ~kPageMask));
    Translation a, b;
    if (!translate(la, acc, user, a) || !translate(la + first, acc, user, b)) return false;
    uint8_t bytes[8];
    if (write) {
        std::memcpy(bytes, &v, 8);
        for (unsigned k = 0; k < size; ++k) {
            const uint64_t gpa = k < first ? a.gpa + k : b.gpa + (k - first);
            if (mem_.is_code_page(gpa)) on_code_write(gpa);
            phys_write(gpa, 1, bytes[k]);
        }
        return true;
    }
    for (unsigned k = 0; k < size; ++k) {
        const uint64_t gpa = k < first ? a.gpa + k : b.gpa + (k - first);
        uint64_t byte = 0;
        if (!phys_read(gpa, 1, byte)) return false;
        bytes[k] = static_cast<uint8_t>(byte);
    }
    v = 0;
    std::memcpy(&v, bytes, size);
    return true;
}

bool Engine::read_la(uint64_t la, unsigned size, uint64_t& v, bool user, Access acc) {
    if ((la & ~kPageMask) + size > kPageSize) return access_cross_page(la, size, v, user, acc, false);
    Translation t;
    if (!translate(la, acc, user, t)) return false;
    if (t.host != nullptr) {
        v = load(t.host, size);
    } else {
        return phys_read(t.gpa, size, v);
    }
    return true;
}

bool Engine::write_la(uint64_t la, unsigned size, uint64_t v, bool user) {
    if ((la & ~kPageMask) + size > kPageSize) return access_cross_page(la, size, v, user, Access::Write, true);
    Translation t;
    if (!translate(la, Access::Write, user, t)) return false;
    if (t.host != nullptr) {
        store(t.host, size, v);
        return true;
    }
    if (mem_.is_code_page(t.gpa)) on_code_write(t.gpa);
    phys_write(t.gpa, size, v);
    return true;
}

bool Engine::phys_read(uint64_t gpa, unsigned size, uint64_t& v) {
    if (!mmio_exits_ || !in_instruction_ || mem_.host_page(gpa) != nullptr) {
        v = mem_.read(gpa, size);
        return true;
    }
    if (mmio_replay_next_ < mmio_replay_.size()) {
        const MmioAccess& r = mmio_replay_[mmio_replay_next_];
        if (r.gpa == gpa && r.size == size) {
            ++mmio_replay_next_;
            v = r.value;
            return true;
        }
    }
    // Ask the caller; the instruction runs again once the data is there.
    mmio_read_waiting_ = true;
    mmio_wait_ = MmioAccess{gpa, size, 0};
    exit_ = RunExit{ExitKind::Mmio, gpa, static_cast<uint8_t>(size), false, io_data_.data(), 0};
    return false;
}

void Engine::phys_write(uint64_t gpa, unsigned size, uint64_t v) {
    if (!mmio_exits_ || mem_.host_page(gpa) != nullptr) {
        mem_.write(gpa, size, v);
        return;
    }
    mmio_writes_.push_back(MmioAccess{gpa, size, v});
}

bool Engine::next_queued_mmio_write(RunExit& out) {
    if (!mmio_writes_queued()) {
        mmio_writes_.clear();
        mmio_write_next_ = 0;
        return false;
    }
    const MmioAccess& w = mmio_writes_[mmio_write_next_++];
    std::memcpy(io_data_.data(), &w.value, 8);
    out = RunExit{ExitKind::Mmio, w.gpa, static_cast<uint8_t>(w.size), true, io_data_.data(), 0};
    return true;
}

bool Engine::atomic_target(uint64_t la, unsigned size, uint8_t*& host) {
    host = nullptr;
    Translation t;
    if (!translate(la, Access::Write, user_mode(), t)) return false;
    if (t.host == nullptr && mem_.is_code_page(t.gpa)) {
        on_code_write(t.gpa);  // drop the page's blocks; the fast path opens again
        if (!translate(la, Access::Write, user_mode(), t)) return false;
    }
    if ((la & (size - 1)) == 0) host = t.host;
    return true;
}

bool Engine::probe_write(uint64_t la, size_t n, bool user) {
    Translation t;
    for (uint64_t p = la & kPageMask; p < la + n; p += kPageSize) {
        if (!translate(p < la ? la : p, Access::Write, user, t)) return false;
    }
    return true;
}

bool Engine::read_bytes(uint8_t seg, uint64_t off, void* dst, size_t n) {
    uint64_t la, last;
    if (!linear(seg, off, la) || !linear(seg, off + n - 1, last)) return false;
    auto* out = static_cast<uint8_t*>(dst);
    const bool user = user_mode();
    for (size_t done = 0; done < n;) {
        const uint64_t cur = la + done;
        const size_t chunk = std::min<size_t>(n - done, kPageSize - (cur & ~kPageMask));
        Translation t;
        if (!translate(cur, Access::Read, user, t)) return false;
        for (size_t k = 0; k < chunk; ++k) {
            uint64_t b = 0;
            if (t.host != nullptr) {
                b = t.host[k];
            } else if (!phys_read(t.gpa + k, 1, b)) {
                return false;
            }
            out[done + k] = static_cast<uint8_t>(b);
        }
        done += chunk;
    }
    return true;
}

bool Engine::write_bytes(uint8_t seg, uint64_t off, const void* src, size_t n) {
    uint64_t la, last;
    if (!linear(seg, off, la) || !linear(seg, off + n - 1, last)) return false;
    const bool user = user_mode();
    if (!probe_write(la, n, user)) return false;
    const auto* in = static_cast<const uint8_t*>(src);
    for (size_t done = 0; done < n;) {
        const uint64_t cur = la + done;
        const size_t chunk = std::min<size_t>(n - done, kPageSize - (cur & ~kPageMask));
        Translation t;
        if (!translate(cur, Access::Write, user, t)) return false;
        if (t.host != nullptr) {
            std::memcpy(t.host, in + done, chunk);
        } else {
            if (mem_.is_code_page(t.gpa)) on_code_write(t.gpa);
            for (size_t k = 0; k < chunk; ++k) phys_write(t.gpa + k, 1, in[done + k]);
        }
        done += chunk;
    }
    return true;
}

bool Engine::read_op_slow(const Insn& i, const Operand& o, uint64_t& v, Access acc) {
    switch (o.kind) {
    case OpKind::Gpr: v = get_reg(o); return true;
    case OpKind::Imm:
    case OpKind::Rel: v = static_cast<uint64_t>(o.value); return true;
    case OpKind::Mem: return read_mem(o.seg, ea(i, o), o.size, v, acc);
    case OpKind::Sreg: v = s.seg[o.reg].selector; return true;
    default: raise(kVecUD); return false;
    }
}

bool Engine::write_op_slow(const Insn& i, const Operand& o, uint64_t v) {
    switch (o.kind) {
    case OpKind::Gpr: set_reg(o, v); return true;
    case OpKind::Mem: return write_mem(o.seg, ea(i, o), o.size, v & size_mask(o.size));
    default: raise(kVecUD); return false;
    }
}

bool Engine::push(uint64_t v, unsigned size) {
    const unsigned as = stack_addr_size();
    const uint64_t rsp = (s.gpr[kRsp] - size) & size_mask(as);
    if (!write_mem(kSs, rsp, size, v & size_mask(size))) return false;
    set_gpr(kRsp, as, rsp);
    return true;
}

bool Engine::pop(uint64_t& v, unsigned size) {
    const unsigned as = stack_addr_size();
    const uint64_t rsp = s.gpr[kRsp] & size_mask(as);
    if (!read_mem(kSs, rsp, size, v)) return false;
    set_gpr(kRsp, as, rsp + size);
    return true;
}

Flow Engine::jump(uint64_t target, unsigned opsize) {
    target &= size_mask(opsize);
    if (in_64bit_code(s)) {
        if (!canonical(target)) return raise(kVecGP, 0);
    } else if (target > s.seg[kCs].limit && s.seg[kCs].g == 0 && (s.cr0 & cr0::PE) != 0) {
        return raise(kVecGP, 0);
    }
    next_rip = target;
    return Flow::Next;
}

bool Engine::io_allowed(uint16_t port, unsigned size) {
    if ((s.cr0 & cr0::PE) == 0) return true;
    const unsigned iopl = static_cast<unsigned>((s.rflags & rflags::IOPL) >> 12);
    if (cpl(s) <= iopl && (s.rflags & rflags::VM) == 0) return true;
    // The TSS I/O bitmap: every bit for the accessed ports must be clear.
    uint64_t base = 0, bits = 0;
    if (s.tr.limit < 0x67 || !read_la(s.tr.base + 0x66, 2, base, false)) {
        raise(kVecGP, 0);
        return false;
    }
    const uint64_t at = base + port / 8;
    if (at + 1 > s.tr.limit || !read_la(s.tr.base + at, 2, bits, false)) {
        raise(kVecGP, 0);
        return false;
    }
    if (((bits >> (port % 8)) & ((1u << size) - 1)) != 0) {
        raise(kVecGP, 0);
        return false;
    }
    return true;
}

void Engine::complete_pending_io() {
    if (!pending_in.active) return;
    pending_in.active = false;
    uint64_t v = 0;
    std::memcpy(&v, io_data_.data(), pending_in.size);
    if (!pending_in.string) {
        set_gpr(kRax, pending_in.size, v);
        return;
    }
    const uint64_t amask = size_mask(pending_in.addrsize);
    const uint64_t rdi = s.gpr[kRdi] & amask;
    if (!write_mem(kEs, rdi, pending_in.size, v)) {
        s.rip = pending_in.insn_rip;
        deliver_pending_exception();
        return;
    }
    const uint64_t step = (s.rflags & rflags::DF) != 0 ? -static_cast<uint64_t>(pending_in.size) : pending_in.size;
    set_gpr(kRdi, pending_in.addrsize, rdi + step);
    bool more = false;
    if (pending_in.rep) {
        const uint64_t rcx = ((s.gpr[kRcx] & amask) - 1) & amask;
        set_gpr(kRcx, pending_in.addrsize, rcx);
        more = rcx != 0;
    }
    s.rip = more ? pending_in.insn_rip : pending_in.after_rip;
}

}  // namespace popek::hv::emu
