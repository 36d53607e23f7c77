// popek_emu_boot: a developer tool that boots a Linux bzImage on a bare
// emulation engine (no platform: no APIC, IOAPIC, PIC or timers) to find what
// the CPU model still lacks. It loads the kernel with popek's own loader (the
// code `popek run` uses), writes the same ACPI tables, and runs the boot CPU
// from the 64-bit entry. COM1 output goes to stdout (a 16550 stub: THR
// writes, LSR reads "transmitter empty"); it stops on HLT (there is nothing
// to wake the CPU), a triple fault, an internal error, an unimplemented
// instruction, ACPI power-off or an i8042 reset, or the instruction budget,
// and reports where and how fast.
//
//   popek_emu_boot KERNEL [--initrd FILE] [--cmdline STR] [--mem MiB] [--max-insns N]
#include <Zydis/Zydis.h>

#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "arch/x86/acpi.hpp"
#include "arch/x86/boot.hpp"
#include "arch/x86/layout.hpp"
#include "base/file.hpp"
#include "hv/emu/engine.hpp"
#include "memory/guest_memory.hpp"

using namespace popek;

namespace {

// Memory outside RAM: the LAPIC/IOAPIC windows and PCI holes read as ones.
class NoMmio final : public hv::emu::MmioHandler {
public:
    uint64_t mmio_read(uint64_t, unsigned size) override { return size == 8 ? ~0ULL : (1ULL << (size * 8)) - 1; }
    void mmio_write(uint64_t, unsigned, uint64_t) override {}
};

[[noreturn]] void usage() {
    std::fprintf(stderr,
                 "usage: popek_emu_boot KERNEL [--initrd FILE] [--cmdline STR] [--mem MiB] [--max-insns N]\n");
    std::exit(2);
}

const char* mnemonic_name(uint16_t m) {
    const char* s = ZydisMnemonicGetString(static_cast<ZydisMnemonic>(m));
    return s != nullptr ? s : "?";
}

}  // namespace

int main(int argc, char** argv) {
    std::string kernel_path, initrd_path;
    std::string cmdline = "console=ttyS0 earlyprintk=serial,ttyS0,115200 nokaslr lpj=4000000 tsc=reliable";
    uint64_t mem_mib = 256;
    uint64_t max_insns = 20'000'000'000ULL;
    for (int k = 1; k < argc; ++k) {
        const std::string a = argv[k];
        const auto value = [&]() -> std::string {
            if (k + 1 >= argc) usage();
            return argv[++k];
        };
        if (a == "--initrd") {
            initrd_path = value();
        } else if (a == "--cmdline") {
            cmdline = value();
        } else if (a == "--mem") {
            mem_mib = std::strtoull(value().c_str(), nullptr, 0);
        } else if (a == "--max-insns") {
            max_insns = std::strtoull(value().c_str(), nullptr, 0);
        } else if (!a.empty() && a[0] != '-' && kernel_path.empty()) {
            kernel_path = a;
        } else {
            usage();
        }
    }
    if (kernel_path.empty() || mem_mib < 16 || mem_mib > 2048) usage();

    auto kernel = base::read_file(kernel_path, "kernel", 256ULL << 20);
    if (!kernel) {
        std::fprintf(stderr, "popek_emu_boot: %s\n", kernel.error().message.c_str());
        return 1;
    }
    std::vector<uint8_t> initrd;
    if (!initrd_path.empty()) {
        auto r = base::read_file(initrd_path, "initrd", 1ULL << 30);
        if (!r) {
            std::fprintf(stderr, "popek_emu_boot: %s\n", r.error().message.c_str());
            return 1;
        }
        initrd = std::move(r).value();
    }
    const auto ranges = arch::x86::ram_ranges(mem_mib << 20);
    auto mem = memory::GuestMemory::create(ranges);
    if (!mem) {
        std::fprintf(stderr, "popek_emu_boot: %s\n", mem.error().message.c_str());
        return 1;
    }
    auto rsdp = arch::x86::write_acpi_tables(*mem, arch::x86::AcpiConfig{});
    if (!rsdp) {
        std::fprintf(stderr, "popek_emu_boot: %s\n", rsdp.error().message.c_str());
        return 1;
    }
    arch::x86::BootConfig cfg{*kernel, initrd, cmdline, *rsdp};
    auto boot = arch::x86::load_kernel(*mem, cfg);
    if (!boot) {
        std::fprintf(stderr, "popek_emu_boot: %s\n", boot.error().message.c_str());
        return 1;
    }

    NoMmio mmio;
    hv::emu::PhysMemory phys(&mmio);
    for (const auto& r : mem->regions()) {
        if (auto ok = phys.add_ram(r.gpa, r.size, r.host); !ok) {
            std::fprintf(stderr, "popek_emu_boot: %s\n", ok.error().message.c_str());
            return 1;
        }
    }
    hv::emu::Engine cpu(phys);
    hv::Regs regs{};
    hv::Sregs sregs{};
    arch::x86::boot_cpu_state(*boot, regs, sregs);
    hv::emu::from_regs(cpu.state(), regs);
    hv::emu::from_sregs(cpu.state(), sregs);
    // As `popek run` sets them: fast strings; MTRRs on, write-back by default.
    (void)hv::emu::set_msr(cpu, 0x1a0, 1);
    (void)hv::emu::set_msr(cpu, 0x2ff, (1u << 11) | 6);
    cpu.state_changed();

    // CPU time as well as wall time: on a shared host, CPU time is what an idle one would show.
    const auto cpu_seconds = [] {
        timespec ts{};
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
    };
    const double cpu_start = cpu_seconds();
    const auto start = std::chrono::steady_clock::now();
    std::string line;  // the console line being written
    std::string last_line;
    const char* why = "instruction budget spent";
    int status = 0;
    constexpr uint64_t kChunk = 1'000'000;
    while (cpu.stats().instructions < max_insns) {
        const hv::emu::RunExit x = cpu.run(kChunk);
        if (cpu.stats().last_unimplemented != 0) {
            why = "unimplemented instruction";
            std::fprintf(stderr, "\n[emu_boot] unimplemented %s at rip %#llx\n",
                         mnemonic_name(cpu.stats().last_unimplemented),
                         static_cast<unsigned long long>(cpu.stats().last_unimplemented_rip));
            status = 3;
            break;
        }
        if (x.kind == hv::ExitKind::Interrupted) continue;
        if (x.kind == hv::ExitKind::Io) {
            if (x.is_write) {
                if (x.addr == arch::x86::kPortAcpiSleepControl && (x.data[0] & arch::x86::kAcpiSleepEnable) != 0) {
                    why = "ACPI power-off";
                    break;
                }
                if (x.addr == arch::x86::kPortI8042Cmd && x.data[0] == 0xfe) {
                    why = "reset through the i8042";
                    break;
                }
                if (x.addr == arch::x86::kPortCom1) {
                    const char c = static_cast<char>(x.data[0]);
                    std::fputc(c, stdout);
                    if (c == '\n') {
                        std::fflush(stdout);
                        if (!line.empty()) last_line = line;
                        line.clear();
                    } else if (c != '\r') {
                        line += c;
                    }
                }
            } else {
                uint64_t v = ~0ULL;
                if (x.addr == arch::x86::kPortCom1 + 5) v = 0x60;  // LSR: THR and transmitter empty
                std::memcpy(x.data, &v, x.size);
            }
            continue;
        }
        if (x.kind == hv::ExitKind::Mmio) {
            if (!x.is_write) std::memset(x.data, 0xff, x.size);
            continue;
        }
        if (x.kind == hv::ExitKind::Halt) {
            if ((cpu.state().rflags & hv::emu::rflags::IF) == 0) {
                why = "HLT with interrupts off";
                break;
            }
            why = "HLT waiting for an interrupt (no platform to send one)";
            break;
        }
        if (x.kind == hv::ExitKind::Shutdown) {
            why = "triple fault";
            std::fprintf(stderr, "\n[emu_boot] triple fault, last exception vector %llu\n",
                         static_cast<unsigned long long>(x.detail));
            status = 4;
            break;
        }
        why = "internal error";
        std::fprintf(stderr, "\n[emu_boot] internal error, reason %llu\n", static_cast<unsigned long long>(x.detail));
        status = 5;
        break;
    }
    std::fflush(stdout);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double cpu_secs = cpu_seconds() - cpu_start;
    const auto& st = cpu.stats();
    if (!line.empty()) last_line = line;
    std::fprintf(stderr,
                 "[emu_boot] stopped: %s\n[emu_boot] rip %#llx, %llu instructions in %.2f s wall (%.1f M/s), "
                 "%.2f s CPU (%.1f M/s), %llu exceptions, %llu blocks decoded\n[emu_boot] last console line: %s\n",
                 why, static_cast<unsigned long long>(cpu.state().rip),
                 static_cast<unsigned long long>(st.instructions), secs,
                 secs > 0 ? static_cast<double>(st.instructions) / secs / 1e6 : 0.0, cpu_secs,
                 cpu_secs > 0 ? static_cast<double>(st.instructions) / cpu_secs / 1e6 : 0.0,
                 static_cast<unsigned long long>(st.exceptions), static_cast<unsigned long long>(st.blocks_decoded),
                 last_line.c_str());
    return status;
}
