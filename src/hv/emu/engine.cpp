#include "hv/emu/engine.hpp"

#include <cstring>

namespace popek::hv::emu {

namespace {
constexpr size_t kMaxBlockInsns = 64;
}

Engine::Engine(PhysMemory& mem) : s(reset_state()), mem_(mem), mmu_(mem, s) {}

CodeMode Engine::code_mode() const {
    if ((s.cr0 & cr0::PE) == 0) return CodeMode::Real16;
    if (in_64bit_code(s)) return CodeMode::Long64;
    return s.seg[kCs].db ? CodeMode::Prot32 : CodeMode::Prot16;
}

Flow Engine::raise(uint8_t vector) {
    exc_vector_ = vector;
    exc_has_error_ = false;
    exc_error_ = 0;
    return Flow::Fault;
}

Flow Engine::raise(uint8_t vector, uint32_t error_code) {
    exc_vector_ = vector;
    exc_has_error_ = true;
    exc_error_ = error_code;
    return Flow::Fault;
}

Flow Engine::page_fault(uint64_t la, uint32_t error_code) {
    s.cr2 = la;
    return raise(kVecPF, error_code);
}

bool Engine::translate(uint64_t la, Access acc, bool user, Translation& t) {
    uint32_t err = 0;
    switch (mmu_.translate(la, acc, user, t, err)) {
    case WalkResult::Ok: return true;
    case WalkResult::PageFault: page_fault(la, err); return false;
    case WalkResult::Unsupported:
        internal_ = InternalReason::UnsupportedPaging;
        raise(kVecMC);  // never delivered: run() stops with InternalError first
        return false;
    }
    return false;
}

void Engine::invalidate_code(uint64_t gpa, uint64_t len) {
    if (len == 0) return;
    for (uint64_t p = gpa & kPageMask; p < gpa + len; p += kPageSize) {
        if (mem_.is_code_page(p)) on_code_write(p);
    }
}

void Engine::on_code_write(uint64_t gpa) {
    blocks_.invalidate_page(gpa);
    mem_.set_code_page(gpa, false);
    mmu_.set_write_fast_path(gpa & kPageMask, true);
    if (code_write_hook_) code_write_hook_(gpa & kPageMask);
}

void Engine::drop_code_page(uint64_t gpa) { blocks_.invalidate_page(gpa); }

Block* Engine::fetch_block() {
    const CodeMode mode = code_mode();
    const bool user = user_mode();
    RecentBlock& r = recent_[(s.rip >> 2) % kRecentBlocks];
    if (r.rip == s.rip && r.mode == mode && r.user == user && r.mmu_gen == mmu_.generation() &&
        r.block_gen == blocks_.generation()) {
        return r.block;
    }
    uint64_t la = s.rip;
    if (mode != CodeMode::Long64) la = (s.seg[kCs].base + s.rip) & 0xffffffffULL;
    Translation t;
    if (!translate(la, Access::Exec, user, t)) return nullptr;
    Block* b = t.host != nullptr ? blocks_.find(t.gpa, mode) : nullptr;
    if (b == nullptr) b = decode_block(la, t, mode);
    if (b != nullptr && b->cached && mode == CodeMode::Long64) {
        r = RecentBlock{s.rip, mmu_.generation(), blocks_.generation(), b, mode, user};
    }
    return b;
}

Block* Engine::decode_block(uint64_t la, const Translation& t, CodeMode mode) {
    auto block = std::make_unique<Block>();
    block->gpa = t.gpa;
    block->mode = mode;
    const uint8_t* bytes = t.host;
    size_t off = t.gpa & ~kPageMask;
    const size_t start = off;
    if (bytes == nullptr) {
        // Code outside RAM (a ROM on the MMIO bus): one instruction at a time,
        // uncached, reading no more than an instruction's worth of bytes.
        std::array<uint8_t, ZYDIS_MAX_INSTRUCTION_LENGTH> buf{};
        const size_t n = std::min<size_t>(buf.size(), kPageSize - off);
        for (size_t k = 0; k < n; ++k) buf[k] = static_cast<uint8_t>(mem_.read(t.gpa + k, 1));
        Insn insn;
        if (decoder_.decode(buf.data(), n, mode, insn) == DecodeStatus::NeedMore) {
            internal_ = InternalReason::UnsupportedFetch;
            raise(kVecMC);
            return nullptr;
        }
        block->insns.push_back(insn);
        block->bytes = insn.length;
        block->cached = false;
        ++stats_.blocks_decoded;
        scratch_ = std::move(*block);
        return &scratch_;
    }
    const uint8_t* page = bytes - off;
    while (true) {
        Insn insn;
        const DecodeStatus st = decoder_.decode(page + off, kPageSize - off, mode, insn);
        if (st == DecodeStatus::NeedMore) {
            if (!block->insns.empty()) break;
            // The first instruction spans two pages: fetch the next one (it may fault).
            std::array<uint8_t, 2 * ZYDIS_MAX_INSTRUCTION_LENGTH> buf{};
            const size_t first = kPageSize - off;
            std::memcpy(buf.data(), page + off, first);
            const uint64_t next_la = la + first;
            Translation t2;
            if (!translate(next_la, Access::Exec, user_mode(), t2)) return nullptr;
            for (size_t k = 0; k < ZYDIS_MAX_INSTRUCTION_LENGTH; ++k) {
                buf[first + k] = static_cast<uint8_t>(mem_.read(t2.gpa + k, 1));
            }
            decoder_.decode(buf.data(), first + ZYDIS_MAX_INSTRUCTION_LENGTH, mode, insn);
            block->insns.push_back(insn);
            block->bytes = insn.length;
            block->cached = false;
            break;
        }
        block->insns.push_back(insn);
        off += insn.length;
        if ((insn.flags & insn_flags::EndsBlock) != 0 || off >= kPageSize ||
            block->insns.size() >= kMaxBlockInsns) {
            break;
        }
    }
    if (block->bytes == 0) block->bytes = static_cast<uint32_t>(off - start);
    ++stats_.blocks_decoded;
    if (!block->cached) {
        scratch_ = std::move(*block);
        return &scratch_;
    }
    Block* raw = block.get();
    if (blocks_.insert(std::move(block))) {
        mem_.set_code_page(t.gpa, true);
        mmu_.set_write_fast_path(t.gpa & kPageMask, false);
    }
    return raw;
}

void Engine::deliver_pending_exception() {
    ++stats_.exceptions;
    const uint8_t vec = exc_vector_;
    const auto contributory = [](uint8_t v) { return v == kVecDE || (v >= kVecTS && v <= kVecGP); };
    if (delivering_ != 0xff) {
        const uint8_t first = delivering_;
        if (first == kVecDF) {
            shutdown_ = true;
            return;
        }
        const bool df = (contributory(first) && contributory(vec)) ||
                        (first == kVecPF && (contributory(vec) || vec == kVecPF));
        if (df) {
            exc_vector_ = kVecDF;
            exc_has_error_ = true;
            exc_error_ = 0;
        }
    }
    delivering_ = exc_vector_;
    const bool ok = deliver_event(exc_vector_, exc_has_error_, exc_error_, false, s.rip);
    if (!ok) {
        if (internal_ != InternalReason::None || shutdown_) return;
        deliver_pending_exception();  // nested fault: #DF or triple fault
        return;
    }
    delivering_ = 0xff;
}

void Engine::poll_interrupt_source() {
    // Cleared before asking: an event the source gets after the answer hints again.
    irq_hint_.store(false, std::memory_order_seq_cst);
    if (source_ == nullptr) return;
    if (!nmi_pending_ && source_->take_nmi()) nmi_pending_ = true;
    if (irq_pending_ || (s.rflags & rflags::IF) == 0 || s.interrupt_shadow) {
        irq_deferred_ = true;  // asked again once an interrupt can be taken
        return;
    }
    irq_deferred_ = false;
    const int v = source_->acknowledge_interrupt();
    if (v >= 0) {
        irq_pending_ = true;
        irq_vector_ = static_cast<uint8_t>(v);
        irq_hint_.store(true, std::memory_order_relaxed);  // more may be pending behind it
    }
}

RunExit Engine::run(uint64_t max_instructions) {
    blocks_.collect();
    if (mmio_read_waiting_) {  // the caller answered the MMIO read: replay it
        mmio_read_waiting_ = false;
        std::memcpy(&mmio_wait_.value, io_data_.data(), mmio_wait_.size);
        mmio_replay_.push_back(mmio_wait_);
    }
    complete_pending_io();
    exit_ = RunExit{};
    uint64_t executed = 0;
    while (true) {
        RunExit w;
        if (next_queued_mmio_write(w)) return w;
        if (shutdown_) return RunExit{ExitKind::Shutdown, 0, 0, false, nullptr, exc_vector_};
        if (internal_ != InternalReason::None) {
            return RunExit{ExitKind::InternalError, 0, 0, false, nullptr, static_cast<uint64_t>(internal_)};
        }
        if (exit_requested_.load(std::memory_order_relaxed) || executed >= max_instructions) {
            return RunExit{};
        }
        if (irq_hint_.load(std::memory_order_relaxed) ||
            (irq_deferred_ && !irq_pending_ && (s.rflags & rflags::IF) != 0 && !s.interrupt_shadow)) {
            poll_interrupt_source();
        }
        if (nmi_pending_ && !nmi_blocked_ && !s.interrupt_shadow) {
            nmi_pending_ = false;
            nmi_blocked_ = true;
            s.halted = false;
            if (!deliver_event(kVecNMI, false, 0, false, s.rip)) deliver_pending_exception();
            continue;
        }
        if (irq_pending_ && (s.rflags & rflags::IF) != 0 && !s.interrupt_shadow) {
            irq_pending_ = false;
            s.halted = false;
            if (!deliver_event(irq_vector_, false, 0, false, s.rip)) deliver_pending_exception();
            continue;
        }
        if (s.halted) return RunExit{ExitKind::Halt};

        Block* b = fetch_block();
        if (b == nullptr) {
            if (internal_ == InternalReason::None) deliver_pending_exception();
            continue;
        }
        ++b->executions;
        const uint64_t gen = blocks_.generation();
        // After STI or MOV SS only the shadowed instruction runs before interrupts are looked at again.
        const bool shadowed = s.interrupt_shadow;
        const uint64_t ip_mask = b->mode == CodeMode::Long64 ? ~0ULL
                                 : b->mode == CodeMode::Prot32 ? 0xffffffffULL : 0xffffULL;
        for (const Insn& i : b->insns) {
            const uint64_t fallthrough = (s.rip + i.length) & ip_mask;
            next_rip = fallthrough;
            const bool shadow = s.interrupt_shadow;
            s.interrupt_shadow = false;
            const bool single_step = (s.rflags & rflags::TF) != 0;
            mmio_replay_next_ = 0;
            in_instruction_ = true;
            const Flow f = i.exec(*this, i);
            in_instruction_ = false;
            if (mmio_read_waiting_) {  // the caller must supply MMIO data; the instruction runs again
                s.interrupt_shadow = shadow;
                return exit_;
            }
            finish_instruction();
            ++executed;
            ++stats_.instructions;
            if (f == Flow::Next) {
                s.rip = next_rip;
                if (single_step) {  // TF was set before the instruction: #DB trap after it
                    s.dr6 |= 1ULL << 14;  // BS
                    if (!deliver_event(kVecDB, false, 0, false, s.rip)) deliver_pending_exception();
                    break;
                }
                if (mmio_writes_queued()) break;  // reported at the top of the loop
                // A branch (or a REP instruction yielding) leaves the block; so
                // does a write that dropped blocks (this one may be stale now).
                if (next_rip != fallthrough || blocks_.generation() != gen || shadowed) break;
                continue;
            }
            if (f == Flow::Fault) {
                if (internal_ == InternalReason::None) deliver_pending_exception();
                break;
            }
            s.rip = next_rip;  // Flow::Exit
            return exit_;
        }
    }
}

}  // namespace popek::hv::emu
