// A flat 64-bit test machine for the emulation engine: 16 MiB of RAM with
// identity page tables (4K pages for the first 2 MiB, 2M pages above), a
// Linux-style GDT, an IDT, a TSS with an IST stack, and a small assembler
// on top of Zydis's encoder.
#pragma once

#include <Zydis/Zydis.h>
#include <gtest/gtest.h>

#include <cstring>
#include <initializer_list>
#include <memory>
#include <vector>

#include "hv/emu/engine.hpp"

namespace popek::hv::emu::test {

// Operands for Asm.
struct AsmOp {
    ZydisEncoderOperand z{};
};
inline AsmOp R(ZydisRegister r) {
    AsmOp o;
    o.z.type = ZYDIS_OPERAND_TYPE_REGISTER;
    o.z.reg.value = r;
    return o;
}
inline AsmOp I(int64_t v) {
    AsmOp o;
    o.z.type = ZYDIS_OPERAND_TYPE_IMMEDIATE;
    o.z.imm.s = v;
    return o;
}
inline AsmOp M(uint16_t size, ZydisRegister base, int64_t disp = 0, ZydisRegister index = ZYDIS_REGISTER_NONE,
               uint8_t scale = 0) {
    AsmOp o;
    o.z.type = ZYDIS_OPERAND_TYPE_MEMORY;
    o.z.mem.base = base;
    o.z.mem.index = index;
    o.z.mem.scale = scale;
    o.z.mem.displacement = disp;
    o.z.mem.size = size;
    return o;
}

// Assembles at a known guest address, so branch targets are absolute addresses.
class Asm {
public:
    explicit Asm(uint64_t base, ZydisMachineMode mode = ZYDIS_MACHINE_MODE_LONG_64) : base_(base), mode_(mode) {}
    Asm& operator()(ZydisMnemonic m, std::initializer_list<AsmOp> ops = {}, ZydisInstructionAttributes prefixes = 0) {
        ZydisEncoderRequest req;
        std::memset(&req, 0, sizeof req);
        req.machine_mode = mode_;
        req.mnemonic = m;
        req.prefixes = prefixes;
        req.operand_count = static_cast<ZyanU8>(ops.size());
        size_t k = 0;
        for (const AsmOp& o : ops) req.operands[k++] = o.z;
        uint8_t buf[ZYDIS_MAX_INSTRUCTION_LENGTH];
        ZyanUSize len = sizeof buf;
        if (!ZYAN_SUCCESS(ZydisEncoderEncodeInstructionAbsolute(&req, buf, &len, here()))) {
            ADD_FAILURE() << "cannot encode mnemonic " << ZydisMnemonicGetString(m) << " at offset " << code.size();
            return *this;
        }
        code.insert(code.end(), buf, buf + len);
        return *this;
    }
    Asm& bytes(std::initializer_list<uint8_t> b) {
        code.insert(code.end(), b.begin(), b.end());
        return *this;
    }
    [[nodiscard]] uint64_t here() const { return base_ + code.size(); }
    std::vector<uint8_t> code;

private:
    uint64_t base_;
    ZydisMachineMode mode_;
};

class Machine {
public:
    static constexpr uint64_t kRamSize = 16ULL << 20;
    static constexpr uint64_t kPml4 = 0x1000, kPdpt = 0x2000, kPd = 0x3000, kPt = 0x4000;
    static constexpr uint64_t kGdt = 0x5000, kIdt = 0x6000, kTss = 0x7000;
    static constexpr uint64_t kStackTop = 0x90000, kIstTop = 0x98000, kRsp0 = 0xa0000;
    static constexpr uint64_t kCode = 0x100000, kData = 0x180000, kHandlers = 0x140000;
    static constexpr uint16_t kKernel32Cs = 0x08, kKernelCs = 0x10, kKernelDs = 0x18, kUserDs = 0x2b, kUserCs = 0x33, kTssSel = 0x40;
    static constexpr uint64_t kPte = 0x7;  // present, writable, user

    explicit Machine(MmioHandler* mmio = nullptr) : ram_(kRamSize, 0), mem_(mmio) {
        EXPECT_TRUE(mem_.add_ram(0, kRamSize, ram_.data()).ok());
        engine_ = std::make_unique<Engine>(mem_);
        build_page_tables();
        build_gdt_idt_tss();
        CpuState& s = engine_->s;
        s.cr0 = cr0::PE | cr0::MP | cr0::ET | cr0::NE | cr0::WP | cr0::PG;
        s.cr4 = cr4::PAE | cr4::PGE | cr4::OSFXSR | cr4::OSXMMEXCPT;
        s.cr3 = kPml4;
        s.efer = efer::LME | efer::LMA | efer::NXE | efer::SCE;
        s.seg[kCs] = flat(kKernelCs, 11, 0, true);
        for (uint8_t r : {kSs, kDs, kEs, kFs, kGs}) s.seg[r] = flat(kKernelDs, 3, 0, false);
        s.gdtr = {kGdt, 0x4f};
        s.idtr = {kIdt, 0xfff};
        s.tr = Segment{kTss, 0x67, kTssSel, 11, 1, 0, 0, 0, 0, 0, 0, 0};
        s.gpr[kRsp] = kStackTop;
        s.rflags = rflags::Fixed1;
        engine_->state_changed();
    }

    Engine& cpu() { return *engine_; }
    CpuState& st() { return engine_->s; }
    PhysMemory& mem() { return mem_; }
    uint8_t* ram(uint64_t gpa) { return ram_.data() + gpa; }
    template <class T>
    T peek(uint64_t gpa) {
        T v;
        std::memcpy(&v, ram(gpa), sizeof v);
        return v;
    }
    template <class T>
    void poke(uint64_t gpa, T v) {
        std::memcpy(ram(gpa), &v, sizeof v);
    }
    // Writes guest memory behind the engine's back, as a loader or DMA would,
    // and tells the engine so (it drops blocks decoded from there).
    void load(uint64_t gpa, const std::vector<uint8_t>& bytes) {
        std::memcpy(ram(gpa), bytes.data(), bytes.size());
        engine_->invalidate_code(gpa, bytes.size());
    }

    // Loads `code` at kCode and runs from there until something other than the budget stops it.
    RunExit run(const std::vector<uint8_t>& code, uint64_t budget = 10'000'000) {
        load(kCode, code);
        st().rip = kCode;
        st().halted = false;
        return resume(budget);
    }
    RunExit resume(uint64_t budget = 10'000'000) {
        RunExit e = engine_->run(budget);
        return e;
    }

    // An IDT gate (interrupt gate unless `trap`) to `handler` in the kernel code segment.
    void set_gate(uint8_t vector, uint64_t handler, unsigned ist = 0, unsigned dpl = 0, bool trap = false) {
        const uint64_t type = trap ? 0xf : 0xe;
        const uint64_t lo = (handler & 0xffff) | (static_cast<uint64_t>(kKernelCs) << 16) |
                            (static_cast<uint64_t>(ist) << 32) | (type << 40) | (static_cast<uint64_t>(dpl) << 45) |
                            (1ULL << 47) | (((handler >> 16) & 0xffff) << 48);
        poke<uint64_t>(kIdt + vector * 16u, lo);
        poke<uint64_t>(kIdt + vector * 16u + 8, handler >> 32);
    }

    // Sets the 4K PTE for `va` (< 2 MiB).
    void set_pte(uint64_t va, uint64_t value) { poke<uint64_t>(kPt + (va >> 12) * 8, value); }
    [[nodiscard]] uint64_t pte(uint64_t va) { return peek<uint64_t>(kPt + (va >> 12) * 8); }

    static Segment flat(uint16_t sel, uint8_t type, uint8_t dpl, bool code64) {
        return Segment{0, 0xffffffff, sel, type, 1, dpl, static_cast<uint8_t>(code64 ? 0 : 1), 1,
                       static_cast<uint8_t>(code64 ? 1 : 0), 1, 0, 0};
    }

private:
    void build_page_tables() {
        poke<uint64_t>(kPml4, kPdpt | kPte);
        poke<uint64_t>(kPdpt, kPd | kPte);
        poke<uint64_t>(kPd, kPt | kPte);
        for (uint64_t k = 1; k < 8; ++k) poke<uint64_t>(kPd + k * 8, (k << 21) | kPte | 0x80);
        for (uint64_t k = 0; k < 512; ++k) poke<uint64_t>(kPt + k * 8, (k << 12) | kPte);
    }

    static uint64_t descriptor(uint64_t type, uint64_t dpl, bool code64, bool db) {
        return 0xffffULL | (type << 40) | (1ULL << 44) | (dpl << 45) | (1ULL << 47) | (0xfULL << 48) |
               (static_cast<uint64_t>(code64) << 53) | (static_cast<uint64_t>(db) << 54) | (1ULL << 55);
    }

    void build_gdt_idt_tss() {
        poke<uint64_t>(kGdt + 0x08, descriptor(0xb, 0, false, true));  // 32-bit kernel code (__KERNEL32_CS)
        poke<uint64_t>(kGdt + 0x10, descriptor(0xb, 0, true, false));
        poke<uint64_t>(kGdt + 0x18, descriptor(0x3, 0, false, true));
        poke<uint64_t>(kGdt + 0x20, descriptor(0xb, 3, false, true));
        poke<uint64_t>(kGdt + 0x28, descriptor(0x3, 3, false, true));
        poke<uint64_t>(kGdt + 0x30, descriptor(0xb, 3, true, false));
        // 64-bit TSS descriptor (busy) at 0x40.
        const uint64_t tss_lo = 0x67 | ((kTss & 0xffffff) << 16) | (0xbULL << 40) | (1ULL << 47);
        poke<uint64_t>(kGdt + 0x40, tss_lo);
        poke<uint64_t>(kGdt + 0x48, 0);
        poke<uint64_t>(kTss + 4, kRsp0);      // RSP0
        poke<uint64_t>(kTss + 0x24, kIstTop); // IST1
        poke<uint16_t>(kTss + 0x66, 0x68);    // I/O bitmap base: right after the TSS (beyond the limit)
    }

    std::vector<uint8_t> ram_;
    PhysMemory mem_;
    std::unique_ptr<Engine> engine_;
};

}  // namespace popek::hv::emu::test
