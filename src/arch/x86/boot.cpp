#include "arch/x86/boot.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "arch/x86/boot_cpu.hpp"
#include "arch/x86/boot_params.hpp"
#include "arch/x86/bzimage.hpp"
#include "arch/x86/e820.hpp"
#include "arch/x86/elf.hpp"
#include "arch/x86/layout.hpp"
#include "arch/x86/pvh.hpp"
#include "base/bytes.hpp"

namespace popek::arch::x86 {

using base::Error;
using base::Result;

namespace {

constexpr uint64_t kPageSize = 4096;
constexpr uint64_t k4GiB = 4 * GiB;

// End of the RAM region holding the kernel (RAM below the MMIO gap).
uint64_t low_ram_end(const memory::GuestMemory& mem) {
    for (const auto& r : mem.regions())
        if (r.gpa <= kKernelStart && kKernelStart < r.end()) return r.end();
    return 0;
}

Result<void> write_cmdline(const memory::GuestMemory& mem, std::string_view cmdline, uint64_t max_len) {
    if (cmdline.find('\0') != std::string_view::npos)
        return Error{"kernel command line contains a NUL byte"};
    if (cmdline.size() > max_len)
        return Error{fmt::format("kernel command line is {} bytes; at most {} are allowed", cmdline.size(),
                                 max_len)};
    std::vector<uint8_t> bytes(cmdline.begin(), cmdline.end());
    bytes.push_back(0);
    return mem.write(kCmdline, bytes);
}

// Places the initrd page aligned, as high as possible below `top` and above
// `kernel_end`; returns its address (0 with no initrd).
Result<uint64_t> load_initrd(const memory::GuestMemory& mem, std::span<const uint8_t> initrd,
                             uint64_t kernel_end, uint64_t top) {
    if (initrd.empty()) return uint64_t{0};
    top = std::min(top, low_ram_end(mem));
    const uint64_t floor = base::align_up(kernel_end, kPageSize);
    if (initrd.size() > top || base::align_down(top - initrd.size(), kPageSize) < floor)
        return Error{fmt::format(
            "initrd of {} bytes does not fit in RAM between the kernel's end ({:#x}) and {:#x}; give "
            "the VM more memory or use a smaller initrd",
            initrd.size(), floor, top)};
    const uint64_t addr = base::align_down(top - initrd.size(), kPageSize);
    POPEK_TRY(mem.write(addr, initrd));
    return addr;
}

Result<BootInfo> load_pvh(const memory::GuestMemory& mem, const BootConfig& cfg) {
    POPEK_ASSIGN_OR_RETURN(const ElfImage elf, parse_elf(cfg.kernel));
    if (!elf.pvh_entry)
        return Error{"ELF kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); popek boots ELF "
                     "kernels only through PVH"};
    const uint64_t entry = *elf.pvh_entry;
    const bool inside = std::any_of(elf.segments.begin(), elf.segments.end(), [entry](const ElfSegment& s) {
        return entry >= s.paddr && entry - s.paddr < s.file_size;
    });
    if (entry >= k4GiB || !inside)
        return Error{fmt::format("PVH entry point {:#x} is not inside a loaded ELF segment", entry)};
    POPEK_TRY(write_cmdline(mem, cfg.cmdline, kCmdlineMax - 1));
    POPEK_ASSIGN_OR_RETURN(const uint64_t kernel_end, load_elf_segments(mem, cfg.kernel, elf));
    POPEK_ASSIGN_OR_RETURN(const uint64_t initrd_addr,
                           load_initrd(mem, cfg.initrd, kernel_end, kMmioGapStart));

    const std::vector<E820Entry> map = e820_map(mem.ram_size());
    POPEK_TRY(write_pvh_start_info(mem, {kCmdline, initrd_addr, cfg.initrd.size(), cfg.rsdp_addr, map}));
    POPEK_TRY(write_boot_gdt(mem));

    BootInfo info{};
    info.protocol = BootProtocol::Pvh;
    info.entry = entry;
    info.kernel_start = kernel_end;
    for (const auto& s : elf.segments) info.kernel_start = std::min(info.kernel_start, s.paddr);
    info.kernel_end = kernel_end;
    info.initrd_addr = initrd_addr;
    info.initrd_size = cfg.initrd.size();
    info.boot_data = kPvhStartInfo;
    return info;
}

Result<BootInfo> load_linux64(const memory::GuestMemory& mem, const BootConfig& cfg) {
    POPEK_ASSIGN_OR_RETURN(const BzImage image, parse_bzimage(cfg.kernel));
    POPEK_TRY(write_cmdline(mem, cfg.cmdline, std::min<uint64_t>(kCmdlineMax - 1, image.hdr.cmdline_size)));
    POPEK_ASSIGN_OR_RETURN(const uint64_t kernel_end, load_bzimage(mem, image));
    // initrd_addr_max is the highest address the initrd's last byte may occupy.
    const uint64_t top = uint64_t{image.hdr.initrd_addr_max} + 1;
    POPEK_ASSIGN_OR_RETURN(const uint64_t initrd_addr, load_initrd(mem, cfg.initrd, kernel_end, top));

    const std::vector<E820Entry> map = e820_map(mem.ram_size());
    POPEK_ASSIGN_OR_RETURN(const BootParams params,
                           make_boot_params(image.hdr, {kCmdline, initrd_addr, cfg.initrd.size(),
                                                        cfg.rsdp_addr, map}));
    POPEK_TRY(mem.write_obj(kZeroPage, params));
    POPEK_TRY(write_boot_gdt(mem));
    POPEK_TRY(write_boot_page_tables(mem));

    BootInfo info{};
    info.protocol = BootProtocol::Linux64;
    info.entry = kKernelStart + kBzImageEntry64Offset;
    info.kernel_start = kKernelStart;
    info.kernel_end = kernel_end;
    info.initrd_addr = initrd_addr;
    info.initrd_size = cfg.initrd.size();
    info.boot_data = kZeroPage;
    return info;
}

}  // namespace

Result<BootInfo> load_kernel(const memory::GuestMemory& mem, const BootConfig& cfg) {
    if (cfg.kernel.empty()) return Error{"kernel image is empty"};
    if (low_ram_end(mem) == 0) return Error{"guest memory has no RAM at 1 MiB to load a kernel into"};
    if (is_elf(cfg.kernel)) return load_pvh(mem, cfg);
    if (is_bzimage(cfg.kernel)) return load_linux64(mem, cfg);
    return Error{"kernel image is neither an ELF with a PVH entry note nor a Linux bzImage"};
}

}  // namespace popek::arch::x86
