// Linux bzImage kernels (Documentation/arch/x86/boot.rst): the setup header
// at 0x1F1, the protected-mode kernel after the real-mode setup sectors, and
// the 64-bit entry point at load address + 0x200 (boot protocol >= 2.12 with
// XLF_KERNEL_64). Parses untrusted bytes; every offset is checked.
#pragma once

#include <cstdint>
#include <span>

#include "arch/x86/boot_params.hpp"
#include "base/result.hpp"
#include "memory/guest_memory.hpp"

namespace popek::arch::x86 {

constexpr uint16_t kMinBootProtocol = 0x206;    // cmdline_size appeared in 2.06
constexpr uint64_t kBzImageEntry64Offset = 0x200;  // startup_64 from the load address

struct BzImage {
    SetupHeader hdr{};                 // the image's header; bytes past its length are zero
    std::span<const uint8_t> kernel;   // the protected-mode kernel, loaded at kKernelStart
};

// True if the bytes carry the "HdrS" setup header magic at 0x202.
bool is_bzimage(std::span<const uint8_t> file);

// Validates a bzImage and extracts its setup header and protected-mode code.
base::Result<BzImage> parse_bzimage(std::span<const uint8_t> file);

// The end of the memory the kernel uses while it boots when loaded at
// load_addr: its image, and the buffer [run address, + init_size) it
// decompresses into (the run address is pref_address, or the load address
// rounded up to kernel_alignment if that is higher and the kernel is relocatable).
base::Result<uint64_t> bzimage_kernel_end(const BzImage& image, uint64_t load_addr);

// Copies the protected-mode kernel to kKernelStart. Returns the kernel's end
// (bzimage_kernel_end), checked to lie in low RAM.
base::Result<uint64_t> load_bzimage(const memory::GuestMemory& mem, const BzImage& image);

}  // namespace popek::arch::x86
