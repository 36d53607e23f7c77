// The emulation engine on guest-chosen code: the input is 64-bit kernel code
// (and the initial GPRs) run on a flat machine with identity page tables and
// every exception vector pointing at a HLT. Whatever the bytes do — invalid
// encodings, faults, writes over the page tables or the IDT, mode changes —
// the engine must only produce guest exceptions and exits (MMIO as exits or
// to no handler, chosen by the input): no crash, no UB,
// no hang (every run() has an instruction budget), no RIP outside what the
// guest can reach.
#include <cstring>
#include <vector>

#include "fuzz_common.hpp"
#include "hv/emu/engine.hpp"

namespace {

using namespace popek::hv;
using namespace popek::hv::emu;

constexpr uint64_t kRam = 4ULL << 20;
constexpr uint64_t kPml4 = 0x1000, kPdpt = 0x2000, kPd = 0x3000, kGdt = 0x5000, kIdt = 0x6000;
constexpr uint64_t kHandler = 0x8000, kCode = 0x100000, kStack = 0x90000;

void put64(std::vector<uint8_t>& ram, uint64_t at, uint64_t v) { std::memcpy(ram.data() + at, &v, 8); }

Segment flat(uint16_t sel, uint8_t type, bool code64) {
    return Segment{0, 0xffffffff, sel, type, 1, 0, static_cast<uint8_t>(code64 ? 0 : 1), 1,
                   static_cast<uint8_t>(code64 ? 1 : 0), 1, 0, 0};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    popek::fuzz::Input in(data, size);
    static std::vector<uint8_t> ram(kRam);
    std::fill(ram.begin(), ram.end(), 0);
    put64(ram, kPml4, kPdpt | 7);
    put64(ram, kPdpt, kPd | 7);
    put64(ram, kPd, 0x87);                                             // 2M page at 0
    put64(ram, kPd + 8, (2ULL << 20) | 0x87);                          // and at 2M
    put64(ram, kPd + 16, (4ULL << 20) | 0x87);                         // not RAM: MMIO
    put64(ram, kGdt + 0x10, 0x00af9b000000ffffULL);                    // 64-bit code
    put64(ram, kGdt + 0x18, 0x00cf93000000ffffULL);                    // data
    for (uint64_t v = 0; v < 32; ++v) {
        put64(ram, kIdt + v * 16, (kHandler & 0xffff) | (0x10ULL << 16) | (0x8eULL << 40));
        put64(ram, kIdt + v * 16 + 8, 0);
    }
    ram[kHandler] = 0xf4;  // HLT

    PhysMemory mem(nullptr);
    popek::fuzz::check(mem.add_ram(0, kRam, ram.data()).ok());
    Engine e(mem);
    CpuState& s = e.state();
    s.cr0 = cr0::PE | cr0::ET | cr0::NE | cr0::WP | cr0::PG | cr0::MP;
    s.cr4 = cr4::PAE | cr4::PGE | cr4::OSFXSR | cr4::OSXMMEXCPT;
    s.cr3 = kPml4;
    s.efer = efer::LME | efer::LMA | efer::NXE | efer::SCE;
    s.seg[kCs] = flat(0x10, 11, true);
    for (uint8_t r : {kSs, kDs, kEs, kFs, kGs}) s.seg[r] = flat(0x18, 3, false);
    s.gdtr = {kGdt, 0x1f};
    s.idtr = {kIdt, 0x1ff};
    for (auto& r : s.gpr) r = in.u8() < 128 ? in.u16() * 128ULL : kCode + in.u16();
    s.gpr[kRsp] = kStack;
    const uint8_t mode = in.u8();
    s.rflags = rflags::Fixed1 | ((mode & 1) ? rflags::IF : 0);
    e.set_mmio_exits((mode & 2) != 0);
    s.rip = kCode;
    const auto code = in.rest();
    if (!code.empty()) std::memcpy(ram.data() + kCode, code.data(), std::min<size_t>(code.size(), 0x10000));
    e.state_changed();

    for (int exits = 0; exits < 64; ++exits) {
        const RunExit x = e.run(20000);
        if (x.kind == ExitKind::Io) {
            popek::fuzz::check(x.data != nullptr && (x.size == 1 || x.size == 2 || x.size == 4));
            continue;
        }
        if (x.kind == ExitKind::Mmio) {
            popek::fuzz::check(x.data != nullptr && x.size >= 1 && x.size <= 8 && x.addr >= kRam);
            continue;
        }
        if (x.kind != ExitKind::Interrupted) break;
    }
    return 0;
}
