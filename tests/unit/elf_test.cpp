#include "arch/x86/elf.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <vector>

#include "arch/x86/boot.hpp"
#include "arch/x86/e820.hpp"
#include "arch/x86/layout.hpp"
#include "arch/x86/pvh.hpp"

namespace popek::arch::x86 {
namespace {

// A synthetic kernel: one PT_LOAD of `code` (plus bss) and a Xen PVH note.
struct ElfSpec {
    bool is64 = true;
    uint16_t machine = 62;
    uint64_t paddr = 2 * MiB;
    uint64_t bss = 0x3000;
    uint64_t entry_offset = 0x10;       // PVH entry = paddr + entry_offset
    uint32_t note_desc_size = 8;
    bool pvh_note = true;
    bool note_in_section = false;       // SHT_NOTE section instead of a PT_NOTE segment
    std::vector<uint8_t> code = std::vector<uint8_t>(0x1800, 0xcc);
};

template <class T>
void put(std::vector<uint8_t>& v, size_t off, T val) {
    if (v.size() < off + sizeof(T)) v.resize(off + sizeof(T));
    std::memcpy(v.data() + off, &val, sizeof(T));
}

// Writes a target-word field: 8 bytes for ELF64, 4 for ELF32.
void put_word(std::vector<uint8_t>& v, bool is64, size_t off, uint64_t val) {
    if (is64) {
        put<uint64_t>(v, off, val);
    } else {
        put<uint32_t>(v, off, static_cast<uint32_t>(val));
    }
}

std::vector<uint8_t> make_note(const ElfSpec& s) {
    std::vector<uint8_t> n;
    auto add_note = [&n](const char* name, uint32_t type, std::vector<uint8_t> desc) {
        const size_t at = n.size();
        const uint32_t namesz = static_cast<uint32_t>(std::strlen(name) + 1);
        put<uint32_t>(n, at, namesz);
        put<uint32_t>(n, at + 4, static_cast<uint32_t>(desc.size()));
        put<uint32_t>(n, at + 8, type);
        n.resize(at + 12 + ((namesz + 3) & ~3u), 0);
        std::memcpy(n.data() + at + 12, name, namesz);
        const size_t d = n.size();
        n.resize(d + ((desc.size() + 3) & ~size_t{3}), 0);
        std::memcpy(n.data() + d, desc.data(), desc.size());
    };
    add_note("GNU", 3, std::vector<uint8_t>(20, 0xab));  // a build-id note first
    if (s.pvh_note) {
        std::vector<uint8_t> desc(s.note_desc_size, 0);
        const uint64_t entry = s.paddr + s.entry_offset;
        std::memcpy(desc.data(), &entry, std::min<size_t>(desc.size(), 8));
        add_note("Xen", kXenElfNotePhys32Entry, desc);
    }
    return n;
}

std::vector<uint8_t> make_elf(const ElfSpec& s) {
    const bool w = s.is64;
    const size_t ehdr = w ? 64 : 52, phsz = w ? 56 : 32, shsz = w ? 64 : 40;
    const uint16_t phnum = s.note_in_section ? 1 : 2;
    const std::vector<uint8_t> note = make_note(s);
    const size_t note_off = ehdr + phnum * phsz;
    const size_t code_off = 0x1000;
    const size_t sh_off = code_off + s.code.size();

    std::vector<uint8_t> f(code_off, 0);
    std::memcpy(f.data(), "\x7f" "ELF", 4);
    f[4] = w ? 2 : 1;
    f[5] = 1;
    f[6] = 1;
    put<uint16_t>(f, 16, 2);  // ET_EXEC
    put<uint16_t>(f, 18, s.machine);
    put<uint32_t>(f, 20, 1);
    put_word(f, w, 24, 0xffffffff81000000ull);
    put_word(f, w, w ? 32 : 28, ehdr);                       // e_phoff
    put_word(f, w, w ? 40 : 32, s.note_in_section ? sh_off : 0);  // e_shoff
    put<uint16_t>(f, w ? 52 : 40, static_cast<uint16_t>(ehdr));
    put<uint16_t>(f, w ? 54 : 42, static_cast<uint16_t>(phsz));
    put<uint16_t>(f, w ? 56 : 44, phnum);
    put<uint16_t>(f, w ? 58 : 46, static_cast<uint16_t>(shsz));
    put<uint16_t>(f, w ? 60 : 48, s.note_in_section ? 2 : 0);

    auto phdr = [&](size_t at, uint32_t type, uint64_t off, uint64_t paddr, uint64_t filesz,
                    uint64_t memsz, uint64_t align) {
        put<uint32_t>(f, at, type);
        if (w) {
            put<uint32_t>(f, at + 4, 5);
            put<uint64_t>(f, at + 8, off);
            put<uint64_t>(f, at + 16, paddr);
            put<uint64_t>(f, at + 24, paddr);
            put<uint64_t>(f, at + 32, filesz);
            put<uint64_t>(f, at + 40, memsz);
            put<uint64_t>(f, at + 48, align);
        } else {
            put<uint32_t>(f, at + 4, static_cast<uint32_t>(off));
            put<uint32_t>(f, at + 8, static_cast<uint32_t>(paddr));
            put<uint32_t>(f, at + 12, static_cast<uint32_t>(paddr));
            put<uint32_t>(f, at + 16, static_cast<uint32_t>(filesz));
            put<uint32_t>(f, at + 20, static_cast<uint32_t>(memsz));
            put<uint32_t>(f, at + 24, 5);
            put<uint32_t>(f, at + 28, static_cast<uint32_t>(align));
        }
    };
    phdr(ehdr, 1, code_off, s.paddr, s.code.size(), s.code.size() + s.bss, 0x1000);
    if (!s.note_in_section) phdr(ehdr + phsz, 4, note_off, 0, note.size(), 0, 4);
    std::memcpy(f.data() + note_off, note.data(), note.size());
    f.insert(f.end(), s.code.begin(), s.code.end());
    if (s.note_in_section) {
        f.resize(sh_off + 2 * shsz, 0);  // section 0 is the null section
        const size_t sh = sh_off + shsz;
        put<uint32_t>(f, sh + 4, 7);  // SHT_NOTE
        put_word(f, w, sh + (w ? 24 : 16), note_off);
        put_word(f, w, sh + (w ? 32 : 20), note.size());
        put_word(f, w, sh + (w ? 48 : 32), 4);
    }
    return f;
}

memory::GuestMemory make_memory(uint64_t size = 64 * MiB) {
    auto ranges = ram_ranges(size);
    auto mem = memory::GuestMemory::create(ranges);
    EXPECT_TRUE(mem.ok()) << mem.error().message;
    return std::move(mem).value();
}

std::string load_error(std::span<const uint8_t> kernel, uint64_t ram = 64 * MiB) {
    auto mem = make_memory(ram);
    auto r = load_kernel(mem, BootConfig{kernel, {}, "", 0});
    return r.ok() ? std::string("(loaded)") : r.error().message;
}

TEST(Elf, Parses64BitPvhKernel) {
    const ElfSpec spec;
    const auto file = make_elf(spec);
    auto img = parse_elf(file);
    ASSERT_TRUE(img.ok()) << img.error().message;
    EXPECT_TRUE(img->is_64bit);
    ASSERT_TRUE(img->pvh_entry.has_value());
    EXPECT_EQ(*img->pvh_entry, spec.paddr + spec.entry_offset);
    ASSERT_EQ(img->segments.size(), 1u);
    EXPECT_EQ(img->segments[0].paddr, spec.paddr);
    EXPECT_EQ(img->segments[0].file_size, spec.code.size());
    EXPECT_EQ(img->segments[0].mem_size, spec.code.size() + spec.bss);
}

TEST(Elf, Parses32BitPvhKernelWith4ByteNote) {
    ElfSpec spec;
    spec.is64 = false;
    spec.machine = 3;
    spec.note_desc_size = 4;
    auto img = parse_elf(make_elf(spec));
    ASSERT_TRUE(img.ok()) << img.error().message;
    EXPECT_FALSE(img->is_64bit);
    EXPECT_EQ(img->pvh_entry.value_or(0), spec.paddr + spec.entry_offset);
}

TEST(Elf, FindsPvhNoteInSectionHeaders) {
    for (bool is64 : {true, false}) {
        ElfSpec spec;
        spec.is64 = is64;
        spec.machine = is64 ? 62 : 3;
        spec.note_in_section = true;
        auto img = parse_elf(make_elf(spec));
        ASSERT_TRUE(img.ok()) << img.error().message;
        EXPECT_EQ(img->pvh_entry.value_or(0), spec.paddr + spec.entry_offset);
    }
}

TEST(Elf, KernelWithoutPvhNoteIsRejected) {
    ElfSpec spec;
    spec.pvh_note = false;
    const auto file = make_elf(spec);
    auto img = parse_elf(file);
    ASSERT_TRUE(img.ok());
    EXPECT_FALSE(img->pvh_entry.has_value());
    EXPECT_NE(load_error(file).find("ELF kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)"),
              std::string::npos);
}

TEST(Elf, RejectsWrongMachine) {
    ElfSpec spec;
    spec.machine = 3;  // i386 in an ELF64
    auto img = parse_elf(make_elf(spec));
    ASSERT_FALSE(img.ok());
    EXPECT_NE(img.error().message.find("x86-64"), std::string::npos) << img.error().message;
    spec = ElfSpec{};
    spec.is64 = false;  // x86-64 in an ELF32
    EXPECT_FALSE(parse_elf(make_elf(spec)).ok());
}

TEST(Elf, RejectsTruncatedHeader) {
    auto file = make_elf(ElfSpec{});
    file.resize(40);
    auto img = parse_elf(file);
    ASSERT_FALSE(img.ok());
    EXPECT_NE(img.error().message.find("truncated"), std::string::npos);
}

TEST(Elf, RejectsProgramHeadersOutsideTheFile) {
    auto file = make_elf(ElfSpec{});
    put<uint64_t>(file, 32, 0xfffffffffffffff0ull);  // e_phoff
    auto img = parse_elf(file);
    ASSERT_FALSE(img.ok());
    EXPECT_NE(img.error().message.find("program header table"), std::string::npos);
}

TEST(Elf, RejectsSegmentDataOutsideTheFile) {
    auto file = make_elf(ElfSpec{});
    put<uint64_t>(file, 64 + 32, 0x100000);  // PT_LOAD p_filesz
    put<uint64_t>(file, 64 + 40, 0x100000);  // p_memsz
    EXPECT_FALSE(parse_elf(file).ok());
}

TEST(Elf, RejectsBadNoteDescriptorSize) {
    ElfSpec spec;
    spec.note_desc_size = 6;
    auto img = parse_elf(make_elf(spec));
    ASSERT_FALSE(img.ok());
    EXPECT_NE(img.error().message.find("6-byte"), std::string::npos);
}

TEST(Elf, RejectsSegmentBeyondRam) {
    ElfSpec spec;
    spec.paddr = 200 * MiB;
    const std::string err = load_error(make_elf(spec), 64 * MiB);
    EXPECT_NE(err.find("outside guest RAM"), std::string::npos) << err;
}

TEST(Elf, RejectsSegmentInTheLowBootArea) {
    ElfSpec spec;
    spec.paddr = 0x8000;
    const std::string err = load_error(make_elf(spec));
    EXPECT_NE(err.find("below"), std::string::npos) << err;
}

TEST(Elf, RejectsEntryOutsideLoadedSegments) {
    ElfSpec spec;
    spec.entry_offset = 0x100000;
    const std::string err = load_error(make_elf(spec));
    EXPECT_NE(err.find("entry point"), std::string::npos) << err;
}

TEST(Elf, RejectsGarbageAndEmptyImages) {
    EXPECT_EQ(load_error({}), "kernel image is empty");
    std::vector<uint8_t> garbage(8192);
    std::mt19937 rng(1);
    for (auto& b : garbage) b = static_cast<uint8_t>(rng());
    EXPECT_EQ(load_error(garbage), "kernel image is neither an ELF with a PVH entry note nor a Linux bzImage");
    const uint8_t magic_only[] = {0x7f, 'E', 'L', 'F'};
    EXPECT_FALSE(parse_elf(magic_only).ok());
}

TEST(Elf, LoadsPvhKernelAndItsBootStructures) {
    const ElfSpec spec;
    const auto file = make_elf(spec);
    auto mem = make_memory(64 * MiB);
    // Dirty the bss so the loader must zero it.
    std::memset(mem.host_ptr(spec.paddr, 16 * MiB), 0x5a, 16 * MiB);
    const std::vector<uint8_t> initrd(3 * 4096 + 100, 0x77);
    const std::string cmdline = "console=ttyS0 panic=-1";
    auto info = load_kernel(mem, BootConfig{file, initrd, cmdline, 0xe0000});
    ASSERT_TRUE(info.ok()) << info.error().message;
    EXPECT_EQ(info->protocol, BootProtocol::Pvh);
    EXPECT_EQ(info->entry, spec.paddr + spec.entry_offset);
    EXPECT_EQ(info->boot_data, kPvhStartInfo);
    EXPECT_EQ(info->kernel_start, spec.paddr);
    EXPECT_EQ(info->kernel_end, spec.paddr + spec.code.size() + spec.bss);

    const uint8_t* loaded = mem.host_ptr(spec.paddr, spec.code.size() + spec.bss);
    EXPECT_EQ(std::memcmp(loaded, spec.code.data(), spec.code.size()), 0);
    for (uint64_t i = 0; i < spec.bss; ++i) ASSERT_EQ(loaded[spec.code.size() + i], 0) << i;

    HvmStartInfo si{};
    ASSERT_TRUE(mem.read(kPvhStartInfo, {reinterpret_cast<uint8_t*>(&si), sizeof si}).ok());
    EXPECT_EQ(si.magic, kHvmStartMagic);
    EXPECT_EQ(si.version, 1u);
    EXPECT_EQ(si.cmdline_paddr, kCmdline);
    EXPECT_EQ(si.rsdp_paddr, 0xe0000u);
    EXPECT_EQ(si.memmap_paddr, kPvhMemmap);
    EXPECT_EQ(si.memmap_entries, e820_map(64 * MiB).size());
    ASSERT_EQ(si.nr_modules, 1u);
    HvmModlistEntry mod{};
    ASSERT_TRUE(mem.read(si.modlist_paddr, {reinterpret_cast<uint8_t*>(&mod), sizeof mod}).ok());
    EXPECT_EQ(mod.paddr, info->initrd_addr);
    EXPECT_EQ(mod.size, initrd.size());
    EXPECT_EQ(mod.paddr % 4096, 0u);
    EXPECT_GE(mod.paddr, info->kernel_end);
    EXPECT_LE(mod.paddr + mod.size, 64 * MiB);
    EXPECT_GT(mod.paddr + 4096 + mod.size, 64 * MiB) << "initrd should sit as high as possible";
    EXPECT_EQ(std::memcmp(mem.host_ptr(mod.paddr, mod.size), initrd.data(), initrd.size()), 0);
    EXPECT_STREQ(reinterpret_cast<const char*>(mem.host_ptr(kCmdline, cmdline.size() + 1)),
                 cmdline.c_str());
}

TEST(Elf, RejectsCommandLineLongerThanTheBuffer) {
    auto mem = make_memory();
    const auto file = make_elf(ElfSpec{});
    const std::string fits(kCmdlineMax - 1, 'x');
    EXPECT_TRUE(load_kernel(mem, BootConfig{file, {}, fits, 0}).ok());
    const std::string too_long(kCmdlineMax, 'x');
    auto r = load_kernel(mem, BootConfig{file, {}, too_long, 0});
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("command line"), std::string::npos);
}

TEST(Elf, RejectsInitrdThatDoesNotFit) {
    auto mem = make_memory(32 * MiB);
    const std::vector<uint8_t> initrd(31 * MiB, 1);
    auto r = load_kernel(mem, BootConfig{make_elf(ElfSpec{}), initrd, "", 0});
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("initrd"), std::string::npos) << r.error().message;
}

// Every prefix and many corrupted copies of a valid image must parse or fail
// cleanly (no out-of-bounds read; run under ASan to see it).
TEST(Elf, SurvivesTruncationAndCorruption) {
    for (bool is64 : {true, false}) {
        ElfSpec spec;
        spec.is64 = is64;
        spec.machine = is64 ? 62 : 3;
        spec.note_in_section = !is64;
        const auto file = make_elf(spec);
        for (size_t n = 0; n < file.size(); n += 7) {
            auto r = parse_elf(std::span(file).first(n));
            if (n < 0x1000) {
                EXPECT_FALSE(r.ok()) << n;
            }
        }
        std::mt19937 rng(42);
        auto mem = make_memory(32 * MiB);
        for (int i = 0; i < 2000; ++i) {
            auto copy = file;
            for (int k = 0; k < 4; ++k) copy[rng() % 0x200] = static_cast<uint8_t>(rng());
            auto r = load_kernel(mem, BootConfig{copy, {}, "", 0});
            (void)r;
        }
    }
}

// A real PVH-capable vmlinux, if POPEK_TEST_VMLINUX names one.
TEST(Elf, LoadsRealVmlinuxIfGiven) {
    const char* path = std::getenv("POPEK_TEST_VMLINUX");
    if (path == nullptr) GTEST_SKIP() << "set POPEK_TEST_VMLINUX to a vmlinux built with CONFIG_PVH";
    std::ifstream in(path, std::ios::binary);
    const std::vector<uint8_t> file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto img = parse_elf(file);
    ASSERT_TRUE(img.ok()) << img.error().message;
    ASSERT_TRUE(img->pvh_entry.has_value());
    auto mem = make_memory(256 * MiB);
    auto info = load_kernel(mem, BootConfig{file, {}, "console=ttyS0", 0});
    ASSERT_TRUE(info.ok()) << info.error().message;
    EXPECT_EQ(info->entry, *img->pvh_entry);
    EXPECT_GE(info->kernel_start, kKernelStart);
}

}  // namespace
}  // namespace popek::arch::x86
