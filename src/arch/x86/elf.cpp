#include "arch/x86/elf.hpp"

#include <fmt/format.h>

#include <cstring>
#include <string_view>

#include "arch/x86/layout.hpp"
#include "base/bytes.hpp"

namespace popek::arch::x86 {

using base::Error;
using base::Result;

namespace {

constexpr uint8_t kElfClass32 = 1;
constexpr uint8_t kElfClass64 = 2;
constexpr uint8_t kElfDataLsb = 1;
constexpr uint16_t kEtExec = 2;
constexpr uint16_t kEm386 = 3;
constexpr uint16_t kEmX8664 = 62;
constexpr uint32_t kPtLoad = 1;
constexpr uint32_t kPtNote = 4;
constexpr uint32_t kShtNote = 7;
constexpr uint16_t kPnXnum = 0xffff;

// Offsets and sizes that differ between ELF32 and ELF64.
struct Layout {
    size_t ehdr_size, phdr_size, shdr_size;
    size_t e_phoff, e_shoff, e_phentsize, e_phnum, e_shentsize, e_shnum;
    size_t p_offset, p_paddr, p_filesz, p_memsz, p_align;
    size_t sh_type, sh_offset, sh_size, sh_addralign;
};
constexpr Layout kLayout32{52, 32, 40, 28, 32, 42, 44, 46, 48, 4, 12, 16, 20, 28, 4, 16, 20, 32};
constexpr Layout kLayout64{64, 56, 64, 32, 40, 54, 56, 58, 60, 8, 24, 32, 40, 48, 4, 24, 32, 48};

bool fits(uint64_t size, uint64_t offset, uint64_t len) {
    return offset <= size && len <= size - offset;
}

class Reader {
public:
    Reader(std::span<const uint8_t> file, bool is64) : file_(file), is64_(is64) {}
    [[nodiscard]] uint16_t u16(uint64_t off) const { return base::load<uint16_t>(file_, off); }
    [[nodiscard]] uint32_t u32(uint64_t off) const { return base::load<uint32_t>(file_, off); }
    // A target-word-sized field (Elf32_Off/Addr/Word vs Elf64_*).
    [[nodiscard]] uint64_t word(uint64_t off) const {
        return is64_ ? base::load<uint64_t>(file_, off) : base::load<uint32_t>(file_, off);
    }

private:
    std::span<const uint8_t> file_;
    bool is64_;
};

// Walks one note area; returns the PVH entry if a Xen PHYS32_ENTRY note is there.
Result<std::optional<uint64_t>> find_pvh_note(std::span<const uint8_t> notes, uint64_t align) {
    if (align != 8) align = 4;
    uint64_t off = 0;
    while (notes.size() - off >= 12) {
        const uint32_t namesz = base::load<uint32_t>(notes, off);
        const uint32_t descsz = base::load<uint32_t>(notes, off + 4);
        const uint32_t type = base::load<uint32_t>(notes, off + 8);
        const uint64_t name_off = off + 12;
        const uint64_t desc_off = name_off + base::align_up(namesz, align);
        const uint64_t next = desc_off + base::align_up(descsz, align);
        if (!fits(notes.size(), name_off, namesz) || !fits(notes.size(), desc_off, descsz))
            return Error{fmt::format("ELF note at offset {:#x} of its note area is truncated", off)};
        std::string_view name(reinterpret_cast<const char*>(notes.data() + name_off), namesz);
        while (!name.empty() && name.back() == '\0') name.remove_suffix(1);
        if (name == "Xen" && type == kXenElfNotePhys32Entry) {
            if (descsz == 4) return std::optional<uint64_t>(base::load<uint32_t>(notes, desc_off));
            if (descsz == 8) return std::optional<uint64_t>(base::load<uint64_t>(notes, desc_off));
            return Error{fmt::format(
                "PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) has a {}-byte descriptor; expected 4 or 8",
                descsz)};
        }
        if (next >= notes.size()) break;
        off = next;
    }
    return std::optional<uint64_t>{};
}

Result<std::optional<uint64_t>> notes_from_sections(std::span<const uint8_t> file, const Reader& rd,
                                                    const Layout& l) {
    const uint64_t shoff = rd.word(l.e_shoff);
    const uint16_t shentsize = rd.u16(l.e_shentsize);
    const uint16_t shnum = rd.u16(l.e_shnum);
    if (shoff == 0 || shnum == 0) return std::optional<uint64_t>{};
    if (shentsize < l.shdr_size)
        return Error{fmt::format("ELF section header size {} is too small", shentsize)};
    if (!fits(file.size(), shoff, uint64_t{shnum} * shentsize))
        return Error{"ELF section header table lies outside the file (truncated image?)"};
    for (uint64_t i = 0; i < shnum; ++i) {
        const uint64_t sh = shoff + i * shentsize;
        if (rd.u32(sh + l.sh_type) != kShtNote) continue;
        const uint64_t off = rd.word(sh + l.sh_offset);
        const uint64_t size = rd.word(sh + l.sh_size);
        if (!fits(file.size(), off, size))
            return Error{fmt::format("ELF note section {} lies outside the file", i)};
        auto found = find_pvh_note(file.subspan(off, size), rd.word(sh + l.sh_addralign));
        if (!found.ok() || found->has_value()) return found;
    }
    return std::optional<uint64_t>{};
}

}  // namespace

bool is_elf(std::span<const uint8_t> file) {
    return file.size() >= 4 && std::memcmp(file.data(), "\x7f" "ELF", 4) == 0;
}

Result<ElfImage> parse_elf(std::span<const uint8_t> file) {
    if (!is_elf(file)) return Error{"not an ELF file (bad magic)"};
    if (file.size() < 16) return Error{"ELF header is truncated"};
    const uint8_t cls = file[4];
    if (cls != kElfClass32 && cls != kElfClass64)
        return Error{fmt::format("ELF class {} is neither ELF32 nor ELF64", cls)};
    if (file[5] != kElfDataLsb) return Error{"ELF kernel is not little-endian"};
    ElfImage img;
    img.is_64bit = cls == kElfClass64;
    const Layout& l = img.is_64bit ? kLayout64 : kLayout32;
    if (file.size() < l.ehdr_size) return Error{"ELF header is truncated"};
    const Reader rd(file, img.is_64bit);

    const uint16_t type = rd.u16(16);
    if (type != kEtExec)
        return Error{fmt::format("ELF kernel is not an executable (e_type {}, expected ET_EXEC)", type)};
    const uint16_t machine = rd.u16(18);
    const uint16_t want = img.is_64bit ? kEmX8664 : kEm386;
    if (machine != want)
        return Error{fmt::format("ELF kernel is for machine {}, expected {} ({})", machine, want,
                                 img.is_64bit ? "x86-64" : "i386")};
    img.entry = rd.word(24);

    const uint64_t phoff = rd.word(l.e_phoff);
    const uint16_t phentsize = rd.u16(l.e_phentsize);
    const uint16_t phnum = rd.u16(l.e_phnum);
    if (phnum == 0) return Error{"ELF kernel has no program headers"};
    if (phnum == kPnXnum) return Error{"ELF kernel has too many program headers (PN_XNUM)"};
    if (phentsize < l.phdr_size)
        return Error{fmt::format("ELF program header size {} is too small", phentsize)};
    if (!fits(file.size(), phoff, uint64_t{phnum} * phentsize))
        return Error{"ELF program header table lies outside the file (truncated image?)"};

    for (uint64_t i = 0; i < phnum; ++i) {
        const uint64_t ph = phoff + i * phentsize;
        const uint32_t ptype = rd.u32(ph);
        if (ptype != kPtLoad && ptype != kPtNote) continue;
        ElfSegment seg{rd.word(ph + l.p_paddr), rd.word(ph + l.p_offset), rd.word(ph + l.p_filesz),
                       rd.word(ph + l.p_memsz)};
        if (!fits(file.size(), seg.offset, seg.file_size))
            return Error{fmt::format("ELF segment {} lies outside the file (truncated image?)", i)};
        if (ptype == kPtNote) {
            if (img.pvh_entry) continue;
            POPEK_ASSIGN_OR_RETURN(auto found, find_pvh_note(file.subspan(seg.offset, seg.file_size),
                                                             rd.word(ph + l.p_align)));
            img.pvh_entry = found;
            continue;
        }
        if (seg.file_size > seg.mem_size)
            return Error{fmt::format("ELF segment {} has more file bytes than memory bytes", i)};
        if (seg.paddr + seg.mem_size < seg.paddr)
            return Error{fmt::format("ELF segment {} wraps around the address space", i)};
        if (seg.mem_size > 0) img.segments.push_back(seg);
    }
    if (!img.pvh_entry) {
        POPEK_ASSIGN_OR_RETURN(img.pvh_entry, notes_from_sections(file, rd, l));
    }
    if (img.segments.empty()) return Error{"ELF kernel has no loadable (PT_LOAD) segments"};
    return img;
}

Result<uint64_t> load_elf_segments(const memory::GuestMemory& mem, std::span<const uint8_t> file,
                                   const ElfImage& image) {
    uint64_t end = 0;
    for (size_t i = 0; i < image.segments.size(); ++i) {
        const ElfSegment& s = image.segments[i];
        if (s.paddr < kKernelStart)
            return Error{fmt::format(
                "ELF segment {} at {:#x} lies in the boot area below {:#x}; the kernel must load at or "
                "above 1 MiB",
                i, s.paddr, kKernelStart)};
        std::span<uint8_t> dst = mem.span(s.paddr, s.mem_size);
        if (dst.empty())
            return Error{fmt::format(
                "ELF segment {} [{:#x}, {:#x}) lies outside guest RAM ({} MiB); give the VM more memory",
                i, s.paddr, s.paddr + s.mem_size, mem.ram_size() / base::MiB)};
        if (!fits(file.size(), s.offset, s.file_size) || s.file_size > s.mem_size)
            return Error{fmt::format("ELF segment {} does not match the file", i)};
        std::memcpy(dst.data(), file.data() + s.offset, s.file_size);
        POPEK_TRY(mem.zero(s.paddr + s.file_size, s.mem_size - s.file_size));
        if (s.paddr + s.mem_size > end) end = s.paddr + s.mem_size;
    }
    return end;
}

}  // namespace popek::arch::x86
