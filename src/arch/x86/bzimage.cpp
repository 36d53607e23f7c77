#include "arch/x86/bzimage.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "arch/x86/layout.hpp"
#include "base/bytes.hpp"

namespace popek::arch::x86 {

using base::Error;
using base::Result;

namespace {
constexpr size_t kSectorSize = 512;
constexpr size_t kBootFlagOffset = 0x1fe;
constexpr size_t kJumpOffset = 0x200;       // a 2-byte short jump over the header
constexpr size_t kHeaderMagicOffset = 0x202;
constexpr uint8_t kDefaultSetupSects = 4;    // setup_sects == 0 means 4
constexpr uint64_t kMaxRunAddress = uint64_t{1} << 46;  // sanity bound on pref_address

std::string version_text(uint16_t v) { return fmt::format("{}.{:02}", v >> 8, v & 0xff); }
}  // namespace

bool is_bzimage(std::span<const uint8_t> file) {
    return file.size() >= kHeaderMagicOffset + 4 &&
           base::load<uint32_t>(file, kHeaderMagicOffset) == kSetupHeaderMagic;
}

Result<BzImage> parse_bzimage(std::span<const uint8_t> file) {
    if (!is_bzimage(file)) return Error{"not a Linux bzImage (no \"HdrS\" magic at 0x202)"};
    if (base::load<uint16_t>(file, kBootFlagOffset) != kBootFlagMagic)
        return Error{"bzImage has no 0xAA55 boot flag at 0x1FE (corrupt image?)"};

    // The header runs from 0x1F1 to the target of the jump at 0x200.
    const size_t header_end = kHeaderMagicOffset + file[kJumpOffset + 1];
    if (header_end > file.size()) return Error{"bzImage setup header is truncated"};
    BzImage img;
    const size_t copy = std::min(header_end - kSetupHeaderOffset, sizeof(SetupHeader));
    std::memcpy(&img.hdr, file.data() + kSetupHeaderOffset, copy);

    const uint16_t version = img.hdr.version;
    if (version < kMinBootProtocol)
        return Error{fmt::format("Linux boot protocol {} is too old; popek needs {} or newer",
                                 version_text(version), version_text(kMinBootProtocol))};
    if ((img.hdr.loadflags & kLoadflagLoadedHigh) == 0)
        return Error{"kernel is a zImage (not loaded high); popek boots only bzImages"};
    if ((img.hdr.xloadflags & kXlfKernel64) == 0)
        return Error{fmt::format(
            "kernel (boot protocol {}) has no 64-bit entry point (XLF_KERNEL_64); popek boots "
            "bzImages only through the 64-bit boot protocol",
            version_text(version))};

    const uint8_t sects = img.hdr.setup_sects == 0 ? kDefaultSetupSects : img.hdr.setup_sects;
    const size_t setup_size = (size_t{sects} + 1) * kSectorSize;
    if (header_end > setup_size) return Error{"bzImage setup header runs past the setup code"};
    if (setup_size >= file.size())
        return Error{fmt::format("bzImage is truncated: {} bytes, but its setup code alone is {}",
                                 file.size(), setup_size)};
    img.kernel = file.subspan(setup_size);
    if (img.kernel.size() <= kBzImageEntry64Offset)
        return Error{fmt::format("bzImage protected-mode kernel is only {} bytes; no 64-bit entry at {:#x}",
                                 img.kernel.size(), kBzImageEntry64Offset)};
    if (img.hdr.relocatable_kernel != 0) {
        const uint32_t a = img.hdr.kernel_alignment;
        if (a == 0 || (a & (a - 1)) != 0)
            return Error{fmt::format("bzImage kernel_alignment {:#x} is not a power of two", a)};
    }
    return img;
}

Result<uint64_t> bzimage_kernel_end(const BzImage& image, uint64_t load_addr) {
    uint64_t run = image.hdr.pref_address;
    if (image.hdr.relocatable_kernel != 0)
        run = std::max(run, base::align_up(load_addr, image.hdr.kernel_alignment));
    if (run > kMaxRunAddress)
        return Error{fmt::format("bzImage wants to run at {:#x}, beyond any RAM", run)};
    return std::max(load_addr + image.kernel.size(), run + image.hdr.init_size);
}

Result<uint64_t> load_bzimage(const memory::GuestMemory& mem, const BzImage& image) {
    POPEK_ASSIGN_OR_RETURN(const uint64_t end, bzimage_kernel_end(image, kKernelStart));
    if (mem.span(kKernelStart, end - kKernelStart).empty()) {
        uint64_t low_end = 0;
        for (const auto& r : mem.regions())
            if (r.gpa <= kKernelStart && kKernelStart < r.end()) low_end = r.end();
        return Error{fmt::format(
            "kernel needs {} MiB of RAM from {:#x} to {:#x} ({} byte image, {} byte boot buffer at "
            "{:#x}), but RAM below the MMIO gap ends at {:#x}; give the VM more memory",
            base::align_up(end, base::MiB) / base::MiB, kKernelStart, end, image.kernel.size(),
            image.hdr.init_size, std::max<uint64_t>(image.hdr.pref_address, kKernelStart), low_end)};
    }
    POPEK_TRY(mem.write(kKernelStart, image.kernel));
    return end;
}

}  // namespace popek::arch::x86
