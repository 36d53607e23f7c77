#include "arch/x86/boot_params.hpp"

#include <fmt/format.h>


namespace popek::arch::x86 {

using base::Error;
using base::Result;

namespace {
// The real-mode heap ends just below 64 KiB from the setup segment; the field
// is relative to the start of setup code + 0x200 (boot.rst, heap_end_ptr).
constexpr uint16_t kHeapEndPtr = 0xfe00;
constexpr uint16_t kVidModeNormal = 0xffff;
constexpr uint64_t k4GiB = uint64_t{1} << 32;
}  // namespace

Result<BootParams> make_boot_params(const SetupHeader& hdr, const ZeroPageConfig& cfg) {
    if (cfg.e820.size() > kE820MaxEntriesZeroPage)
        return Error{fmt::format("memory map has {} entries; the zero page holds at most {}",
                                 cfg.e820.size(), kE820MaxEntriesZeroPage)};
    if (cfg.cmdline_addr >= k4GiB || cfg.initrd_addr >= k4GiB ||
        cfg.initrd_size > k4GiB - cfg.initrd_addr)
        return Error{"command line and initrd must lie below 4 GiB for the Linux boot protocol"};

    BootParams bp{};
    bp.hdr = hdr;
    bp.hdr.type_of_loader = kTypeOfLoaderUndefined;
    bp.hdr.loadflags = static_cast<uint8_t>(bp.hdr.loadflags | kLoadflagCanUseHeap);
    bp.hdr.heap_end_ptr = kHeapEndPtr;
    bp.hdr.vid_mode = kVidModeNormal;
    bp.hdr.cmd_line_ptr = static_cast<uint32_t>(cfg.cmdline_addr);
    bp.hdr.ramdisk_image = static_cast<uint32_t>(cfg.initrd_addr);
    bp.hdr.ramdisk_size = static_cast<uint32_t>(cfg.initrd_size);
    bp.acpi_rsdp_addr = cfg.rsdp_addr;
    bp.e820_entries = static_cast<uint8_t>(cfg.e820.size());
    for (size_t i = 0; i < cfg.e820.size(); ++i) {
        const E820Entry& e = cfg.e820[i];
        bp.e820_table[i] = BootE820Entry{e.addr, e.size, static_cast<uint32_t>(e.type)};
    }
    return bp;
}

}  // namespace popek::arch::x86
