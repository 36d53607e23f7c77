// One emulated x86-64 CPU: fetches decoded blocks from the block cache (by
// guest-physical address), runs their instructions' handlers, delivers
// exceptions and interrupts, and returns to the caller for port I/O, HLT,
// shutdown or when its budget is spent. The handlers (exec_*.cpp) use the
// public helpers below for operands, memory and the stack; a translator
// would call the same helpers from generated code.
#pragma once

#include <atomic>
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "hv/emu/block_cache.hpp"
#include "hv/emu/cpu.hpp"
#include "hv/emu/decoder.hpp"
#include "hv/emu/insn.hpp"
#include "hv/emu/mmu.hpp"
#include "hv/emu/phys_memory.hpp"
#include "hv/hypervisor.hpp"

namespace popek::hv::emu {

inline constexpr uint8_t kVecDE = 0, kVecDB = 1, kVecNMI = 2, kVecBP = 3, kVecOF = 4, kVecBR = 5;
inline constexpr uint8_t kVecUD = 6, kVecNM = 7, kVecDF = 8, kVecTS = 10, kVecNP = 11, kVecSS = 12;
inline constexpr uint8_t kVecGP = 13, kVecPF = 14, kVecMF = 16, kVecAC = 17, kVecMC = 18, kVecXM = 19;

// Why an InternalError exit happened (RunExit::detail).
enum class InternalReason : uint64_t {
    None = 0,
    UnsupportedPaging = 1,   // CR0.PG without long mode (32-bit/PAE paging)
    UnsupportedMode = 2,     // event delivery outside real mode and long mode
    UnsupportedFetch = 3,    // an instruction outside RAM that spans two pages
};

struct RunExit {
    ExitKind kind = ExitKind::Interrupted;
    uint64_t addr = 0;        // Io: the port; Mmio: the guest-physical address
    uint8_t size = 0;         // Io, Mmio: bytes
    bool is_write = false;    // Io, Mmio
    uint8_t* data = nullptr;  // Io, Mmio: `size` bytes; for a read the caller fills them before run()
    uint64_t detail = 0;      // InternalError: InternalReason; Shutdown: the last exception vector
};

struct EngineStats {
    uint64_t instructions = 0;
    uint64_t blocks_decoded = 0;
    uint64_t exceptions = 0;
    uint16_t last_unimplemented = 0;  // ZydisMnemonic of the last unimplemented instruction seen
    uint64_t last_unimplemented_rip = 0;  // and its RIP
};

// The interrupt controller an engine asks between blocks (the backend's
// local APIC). Called on the engine's thread only after Engine::interrupt_hint().
class InterruptSource {
public:
    virtual ~InterruptSource() = default;
    // An NMI became pending (taken once: the source forgets it).
    virtual bool take_nmi() = 0;
    // RFLAGS.IF allows an external interrupt: the vector to deliver now
    // (acknowledged: IRR -> ISR, or INTA from the PIC), or -1 if none.
    virtual int acknowledge_interrupt() = 0;
};

class Engine {
public:
    explicit Engine(PhysMemory& mem);

    CpuState& state() { return s; }
    // Runs until an exit or until about `max_instructions` have executed
    // (then ExitKind::Interrupted). Completes a pending port read first.
    RunExit run(uint64_t max_instructions);
    // The CPUID table the guest sees (after popek's policy); empty: the
    // engine's own (supported_cpuid()). Leaves not in the table read as zero.
    void set_cpuid(std::vector<CpuidEntry> table) { cpuid_table_ = std::move(table); }
    // CPUID for leaf/subleaf as the guest sees it.
    void cpuid(uint32_t leaf, uint32_t subleaf, uint32_t out[4]) const;
    // Thread-safe: the current or next run() returns Interrupted soon.
    void request_exit() { exit_requested_.store(true, std::memory_order_relaxed); }
    void clear_exit_request() { exit_requested_.store(false, std::memory_order_relaxed); }
    // A pending external interrupt (INTR) with this vector; taken when RFLAGS.IF allows.
    // Without an InterruptSource only; with one, the source is asked instead.
    void raise_irq(uint8_t vector) { irq_pending_ = true; irq_vector_ = vector; }
    // Interrupts come from `source` (null: raise_irq). Set before run().
    void set_interrupt_source(InterruptSource* source) { source_ = source; }
    // Thread-safe: the source may have an event for this CPU; the engine
    // asks it before the next block (one relaxed load per block otherwise).
    void interrupt_hint() { irq_hint_.store(true, std::memory_order_release); }
    [[nodiscard]] bool interrupt_hinted() const { return irq_hint_.load(std::memory_order_acquire); }
    [[nodiscard]] bool irq_pending() const { return irq_pending_; }
    // The acknowledged vector waiting for delivery (valid while irq_pending()).
    [[nodiscard]] uint8_t pending_irq_vector() const { return irq_vector_; }
    // Snapshots: the NMI and interrupt state save_state() saw.
    void restore_events(bool nmi_pending, bool nmi_blocked, bool irq_pending, uint8_t irq_vector) {
        nmi_pending_ = nmi_pending;
        nmi_blocked_ = nmi_blocked;
        irq_pending_ = irq_pending;
        irq_vector_ = irq_vector;
    }
    // A pending NMI: taken regardless of RFLAGS.IF (not in an STI/MOV SS
    // shadow), then further NMIs wait until the handler's IRET.
    void raise_nmi() { nmi_pending_ = true; }
    // IRET ends NMI blocking.
    void nmi_returned() { nmi_blocked_ = false; }
    [[nodiscard]] bool nmi_pending() const { return nmi_pending_; }
    [[nodiscard]] bool nmi_blocked() const { return nmi_blocked_; }
    // The caller changed CR0/CR3/CR4/EFER or segments behind the engine's back.
    void state_changed() { mmu_.flush_all(); }
    // Someone other than this CPU wrote guest memory (DMA, the loader):
    // drop the blocks decoded from [gpa, gpa+len).
    void invalidate_code(uint64_t gpa, uint64_t len);
    // Another engine over the same memory wrote code on this page: drop this
    // engine's blocks from it (the shared code-page bit may be clear already).
    void drop_code_page(uint64_t gpa);
    // Called (on this engine's thread) when this engine's own write dropped
    // the blocks of a code page, so the backend can tell the other engines.
    void set_code_write_hook(std::function<void(uint64_t page_gpa)> hook) { code_write_hook_ = std::move(hook); }
    // Memory that is not RAM. Off: accesses go to PhysMemory's MmioHandler.
    // On: they return to the caller as ExitKind::Mmio, as KVM's do: a read
    // stops before the instruction, which runs again with the data the caller
    // put in RunExit::data; writes are reported after their instruction.
    void set_mmio_exits(bool on) { mmio_exits_ = on; }
    // PhysMemory::take_dirty_log() was called: writes must be logged again.
    void dirty_log_cleared() { mmu_.flush_all(); }
    [[nodiscard]] const EngineStats& stats() const { return stats_; }
    BlockCache& blocks() { return blocks_; }
    Mmu& mmu() { return mmu_; }

    // ---- for handlers ------------------------------------------------------
    CpuState s;
    uint64_t next_rip = 0;  // where the current instruction continues (handlers of branches set it)

    Flow raise(uint8_t vector);
    Flow raise(uint8_t vector, uint32_t error_code);
    Flow page_fault(uint64_t la, uint32_t error_code);
    // Delivers an event through the IDT (or IVT in real mode), RIP of the
    // interrupted context = return_rip. False if delivery faulted (pending).
    bool deliver_event(uint8_t vector, bool has_error, uint32_t error, bool software, uint64_t return_rip);
    void note_unimplemented(uint16_t mnemonic) {
        stats_.last_unimplemented = mnemonic;
        stats_.last_unimplemented_rip = s.rip;
    }
    void set_exit(const RunExit& e) { exit_ = e; }
    uint8_t* io_data() { return io_data_.data(); }
    // Port I/O permission (IOPL, then the TSS I/O bitmap); raises #GP if denied.
    bool io_allowed(uint16_t port, unsigned size);

    // Effective address (segment offset) of a memory operand.
    [[nodiscard]] uint64_t ea(const Insn& i, const Operand& o) const {
        uint64_t a = static_cast<uint64_t>(o.value);
        if (o.reg == kRipBase) {
            a += next_rip;
        } else if (o.reg != kNoReg) {
            a += s.gpr[o.reg];
        }
        if (o.index != kNoReg) a += s.gpr[o.index] << o.scale;
        return i.addrsize == 8 ? a : i.addrsize == 4 ? (a & 0xffffffffULL) : (a & 0xffff);
    }
    // Segment offset → linear address with the canonical check (#GP/#SS).
    bool linear(uint8_t seg, uint64_t offset, uint64_t& la);
    [[nodiscard]] bool user_mode() const { return cpl(s) == 3; }

    // Linear-address accesses of 1, 2, 4 or 8 bytes (any alignment).
    bool read_la(uint64_t la, unsigned size, uint64_t& v, bool user, Access acc = Access::Read);
    bool write_la(uint64_t la, unsigned size, uint64_t v, bool user);
    // Segment:offset accesses at the current privilege.
    bool read_mem(uint8_t seg, uint64_t off, unsigned size, uint64_t& v, Access acc = Access::Read) {
        uint64_t la;
        return linear(seg, off, la) && read_la(la, size, v, user_mode(), acc);
    }
    bool write_mem(uint8_t seg, uint64_t off, unsigned size, uint64_t v) {
        uint64_t la;
        return linear(seg, off, la) && write_la(la, size, v, user_mode());
    }
    // Byte ranges (FXSAVE areas, 16-byte operands): all pages are checked before anything is written.
    bool read_bytes(uint8_t seg, uint64_t off, void* dst, size_t n);
    bool write_bytes(uint8_t seg, uint64_t off, const void* src, size_t n);
    // Guest-physical accesses of the slow path: RAM, the MmioHandler, or MMIO
    // exits. phys_read returns false when the instruction must wait for the caller.
    bool phys_read(uint64_t gpa, unsigned size, uint64_t& v);
    void phys_write(uint64_t gpa, unsigned size, uint64_t v);
    [[nodiscard]] bool mmio_writes_queued() const { return mmio_write_next_ < mmio_writes_.size(); }
    // Checks that [la, la+n) may be written without writing it.
    bool probe_write(uint64_t la, size_t n, bool user);

    // Register operands with x86 write rules (32-bit writes zero-extend).
    [[nodiscard]] uint64_t get_reg(const Operand& o) const {
        const uint64_t r = s.gpr[o.reg];
        if (o.high8) return (r >> 8) & 0xff;
        return o.size == 8 ? r : r & ((1ULL << (o.size * 8)) - 1);
    }
    void set_reg(const Operand& o, uint64_t v) {
        uint64_t& r = s.gpr[o.reg];
        if (o.high8) {
            r = (r & ~0xff00ULL) | ((v & 0xff) << 8);
        } else {
            set_gpr(o.reg, o.size, v);
        }
    }
    void set_gpr(unsigned reg, unsigned size, uint64_t v) {
        uint64_t& r = s.gpr[reg];
        switch (size) {
        case 1: r = (r & ~0xffULL) | (v & 0xff); break;
        case 2: r = (r & ~0xffffULL) | (v & 0xffff); break;
        case 4: r = v & 0xffffffffULL; break;
        default: r = v; break;
        }
    }
    // Any operand: register, memory (at the current privilege) or immediate.
    // Registers and immediates inline; the rest out of line.
    bool read_op(const Insn& i, const Operand& o, uint64_t& v, Access acc = Access::Read) {
        if (o.kind == OpKind::Gpr) {
            v = get_reg(o);
            return true;
        }
        if (o.kind == OpKind::Imm) {
            v = static_cast<uint64_t>(o.value);
            return true;
        }
        return read_op_slow(i, o, v, acc);
    }
    bool write_op(const Insn& i, const Operand& o, uint64_t v) {
        if (o.kind == OpKind::Gpr) {
            set_reg(o, v);
            return true;
        }
        return write_op_slow(i, o, v);
    }
    bool read_op_slow(const Insn& i, const Operand& o, uint64_t& v, Access acc);
    bool write_op_slow(const Insn& i, const Operand& o, uint64_t v);

    // LOCK-prefixed read-modify-write of `size` bytes at seg:off: memory ←
    // f(old) as one atomic step on the host (a compare-and-swap loop, so f may
    // run more than once and must only compute). Memory outside RAM and
    // misaligned operands fall back to a plain read and write.
    template <class F>
    bool atomic_rmw(uint8_t seg, uint64_t off, unsigned size, F&& f) {
        uint64_t la = 0;
        uint8_t* host = nullptr;
        if (!linear(seg, off, la) || !atomic_target(la, size, host)) return false;
        if (host == nullptr) {
            uint64_t old = 0;
            if (!read_la(la, size, old, user_mode(), Access::Write)) return false;
            return write_la(la, size, f(old), user_mode());
        }
        switch (size) {
        case 1: cas_loop<uint8_t>(host, f); break;
        case 2: cas_loop<uint16_t>(host, f); break;
        case 4: cas_loop<uint32_t>(host, f); break;
        default: cas_loop<uint64_t>(host, f); break;
        }
        return true;
    }
    // Host address for an atomic access to [la, la+size), or null for the fallback.
    bool atomic_target(uint64_t la, unsigned size, uint8_t*& host);

    // The stack (SS:RSP with the current stack-address size).
    bool push(uint64_t v, unsigned size);
    bool pop(uint64_t& v, unsigned size);
    [[nodiscard]] unsigned stack_addr_size() const {
        if (in_64bit_code(s)) return 8;
        return s.seg[kSs].db ? 4 : 2;
    }
    // Loads RIP for a branch with the canonical / limit check.
    Flow jump(uint64_t target, unsigned opsize);

private:
    template <class T, class F>
    static void cas_loop(uint8_t* p, F& f) {
        T* t = reinterpret_cast<T*>(p);
        T old = __atomic_load_n(t, __ATOMIC_SEQ_CST);
        while (!__atomic_compare_exchange_n(t, &old, static_cast<T>(f(old)), false, __ATOMIC_SEQ_CST,
                                            __ATOMIC_SEQ_CST)) {
        }
    }
    Block* fetch_block();
    Block* decode_block(uint64_t la, const Translation& t, CodeMode mode);
    [[nodiscard]] CodeMode code_mode() const;
    bool translate(uint64_t la, Access acc, bool user, Translation& t);
    void on_code_write(uint64_t gpa);
    void deliver_pending_exception();
    void complete_pending_io();
    bool access_cross_page(uint64_t la, unsigned size, uint64_t& v, bool user, Access acc, bool write);
    bool next_queued_mmio_write(RunExit& out);
    void finish_instruction() {
        mmio_replay_.clear();
        mmio_replay_next_ = 0;
    }

    // RIP → block, skipping the TLB and hash lookups while neither the TLB
    // was flushed nor blocks were dropped since the entry was made.
    struct RecentBlock {
        uint64_t rip = ~0ULL;
        uint64_t mmu_gen = 0, block_gen = 0;
        Block* block = nullptr;
        CodeMode mode = CodeMode::Long64;
        bool user = false;
    };
    static constexpr size_t kRecentBlocks = 1024;

    PhysMemory& mem_;
    Mmu mmu_;
    std::array<RecentBlock, kRecentBlocks> recent_{};
    Decoder decoder_;
    BlockCache blocks_;
    Block scratch_;  // uncached blocks (an instruction across two pages, code outside RAM)
    std::atomic<bool> exit_requested_{false};
    std::atomic<bool> irq_hint_{false};
    InterruptSource* source_ = nullptr;
    bool irq_deferred_ = false;  // the source was hinted while interrupts were blocked
    std::function<void(uint64_t)> code_write_hook_;
    void poll_interrupt_source();
    bool irq_pending_ = false;
    bool nmi_pending_ = false;
    bool nmi_blocked_ = false;
    uint8_t irq_vector_ = 0;
    // The exception raised by the current instruction.
    uint8_t exc_vector_ = 0;
    bool exc_has_error_ = false;
    uint32_t exc_error_ = 0;
    uint8_t delivering_ = 0xff;  // vector being delivered (double-fault detection), 0xff none
    bool shutdown_ = false;
    InternalReason internal_ = InternalReason::None;
    RunExit exit_{};
    std::array<uint8_t, 8> io_data_{};
    // MMIO exits: reads the current instruction already got from the caller
    // (replayed in order when it runs again), the read it waits for, and
    // writes not reported yet.
    struct MmioAccess {
        uint64_t gpa;
        unsigned size;
        uint64_t value;
    };
    bool mmio_exits_ = false;
    bool in_instruction_ = false;  // MMIO reads outside instructions (event delivery) do not exit
    std::vector<MmioAccess> mmio_replay_;
    size_t mmio_replay_next_ = 0;
    bool mmio_read_waiting_ = false;
    MmioAccess mmio_wait_{};
    std::vector<MmioAccess> mmio_writes_;
    size_t mmio_write_next_ = 0;

public:
    // A port read or INS waiting for its data (completed by the next run()).
    struct PendingIn {
        bool active = false;
        bool string = false;   // INS: store at ES:RDI, step RDI and RCX
        bool rep = false;
        uint8_t size = 0;
        uint8_t addrsize = 8;
        uint64_t insn_rip = 0, after_rip = 0;
    } pending_in;

private:
    EngineStats stats_{};
    std::vector<CpuidEntry> cpuid_table_;
};

// Every CPUID leaf the engine implements, for Hypervisor::supported_cpuid.
std::vector<CpuidEntry> supported_cpuid();
// Every MSR the engine implements (what a snapshot saves), TSC included.
std::vector<uint32_t> msr_indices();
// MSR access for the backend (get_msrs/set_msrs): the guest's RDMSR/WRMSR
// semantics, false where the guest would get #GP.
bool get_msr(Engine& e, uint32_t index, uint64_t& value);
bool set_msr(Engine& e, uint32_t index, uint64_t value);

}  // namespace popek::hv::emu
