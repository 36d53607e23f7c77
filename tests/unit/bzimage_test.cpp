#include "arch/x86/bzimage.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <vector>

#include "arch/x86/boot.hpp"
#include "arch/x86/boot_params.hpp"
#include "arch/x86/e820.hpp"
#include "arch/x86/layout.hpp"

namespace popek::arch::x86 {
namespace {

template <class T>
void put(std::vector<uint8_t>& v, size_t off, T val) {
    std::memcpy(v.data() + off, &val, sizeof(T));
}

template <class T>
T get(const memory::GuestMemory& mem, uint64_t gpa) {
    T v{};
    EXPECT_TRUE(mem.read(gpa, {reinterpret_cast<uint8_t*>(&v), sizeof v}).ok());
    return v;
}

struct BzSpec {
    uint8_t setup_sects = 4;
    uint16_t version = 0x020f;
    uint16_t xloadflags = kXlfKernel64 | kXlfCanBeLoadedAbove4G;
    uint32_t cmdline_size = 2047;
    uint32_t initrd_addr_max = 0x7fffffff;
    uint32_t init_size = 8 * MiB;
    uint64_t pref_address = 16 * MiB;
    size_t kernel_size = 0x4000;
};

// A minimal bzImage: boot sector with the setup header, setup sectors, and a
// protected-mode "kernel" of recognisable bytes.
std::vector<uint8_t> make_bzimage(const BzSpec& s) {
    const size_t setup = (size_t{s.setup_sects == 0 ? uint8_t{4} : s.setup_sects} + 1) * 512;
    std::vector<uint8_t> f(setup + s.kernel_size, 0);
    for (size_t i = 0; i < s.kernel_size; ++i) f[setup + i] = static_cast<uint8_t>(i * 7 + 1);
    f[0x1f1] = s.setup_sects;
    put<uint16_t>(f, 0x1fe, 0xaa55);
    f[0x200] = 0xeb;                       // jmp short
    f[0x201] = 0x6a;                       // header ends at 0x26c
    std::memcpy(f.data() + 0x202, "HdrS", 4);
    put<uint16_t>(f, 0x206, s.version);
    f[0x211] = kLoadflagLoadedHigh;
    put<uint32_t>(f, 0x214, 0x100000);     // code32_start
    put<uint32_t>(f, 0x22c, s.initrd_addr_max);
    put<uint32_t>(f, 0x230, 2 * MiB);      // kernel_alignment
    f[0x234] = 1;                          // relocatable
    put<uint16_t>(f, 0x236, s.xloadflags);
    put<uint32_t>(f, 0x238, s.cmdline_size);
    put<uint64_t>(f, 0x258, s.pref_address);
    put<uint32_t>(f, 0x260, s.init_size);
    return f;
}

memory::GuestMemory make_memory(uint64_t size = 64 * MiB) {
    auto ranges = ram_ranges(size);
    auto mem = memory::GuestMemory::create(ranges);
    EXPECT_TRUE(mem.ok()) << mem.error().message;
    return std::move(mem).value();
}

std::string error_of(const base::Result<BootInfo>& r) { return r.ok() ? "(loaded)" : r.error().message; }

TEST(BzImage, ParsesTheSetupHeader) {
    const auto file = make_bzimage(BzSpec{});
    auto img = parse_bzimage(file);
    ASSERT_TRUE(img.ok()) << img.error().message;
    EXPECT_EQ(img->hdr.header, kSetupHeaderMagic);
    EXPECT_EQ(img->hdr.version, 0x020f);
    EXPECT_EQ(img->hdr.setup_sects, 4);
    EXPECT_EQ(img->hdr.cmdline_size, 2047u);
    EXPECT_EQ(img->hdr.pref_address, 16 * MiB);
    EXPECT_EQ(img->kernel.size(), 0x4000u);
    EXPECT_EQ(img->kernel.data(), file.data() + 5 * 512);
    EXPECT_EQ(bzimage_kernel_end(*img, kKernelStart).value(), 24 * MiB);
}

TEST(BzImage, SetupSectsZeroMeansFour) {
    BzSpec spec;
    spec.setup_sects = 0;
    const auto file = make_bzimage(spec);
    auto img = parse_bzimage(file);
    ASSERT_TRUE(img.ok()) << img.error().message;
    EXPECT_EQ(img->kernel.data(), file.data() + 5 * 512);
}

TEST(BzImage, RejectsTooOldBootProtocol) {
    BzSpec spec;
    spec.version = 0x0205;
    auto img = parse_bzimage(make_bzimage(spec));
    ASSERT_FALSE(img.ok());
    EXPECT_NE(img.error().message.find("2.05 is too old"), std::string::npos) << img.error().message;
}

TEST(BzImage, RejectsKernelWithout64BitEntry) {
    BzSpec spec;
    spec.xloadflags = 0;
    auto img = parse_bzimage(make_bzimage(spec));
    ASSERT_FALSE(img.ok());
    EXPECT_NE(img.error().message.find("XLF_KERNEL_64"), std::string::npos) << img.error().message;
}

TEST(BzImage, RejectsMissingBootFlagAndTruncation) {
    auto file = make_bzimage(BzSpec{});
    auto no_flag = file;
    put<uint16_t>(no_flag, 0x1fe, 0);
    EXPECT_FALSE(parse_bzimage(no_flag).ok());
    file.resize(5 * 512);  // setup code only
    auto img = parse_bzimage(file);
    ASSERT_FALSE(img.ok());
    EXPECT_NE(img.error().message.find("truncated"), std::string::npos);
}

TEST(BzImage, LoadWritesKernelAndZeroPage) {
    const auto file = make_bzimage(BzSpec{});
    auto mem = make_memory(64 * MiB);
    const std::vector<uint8_t> initrd(5 * MiB + 3, 0x42);
    const std::string cmdline = "console=ttyS0 reboot=k";
    auto info = load_kernel(mem, BootConfig{file, initrd, cmdline, 0xe0000});
    ASSERT_TRUE(info.ok()) << info.error().message;
    EXPECT_EQ(info->protocol, BootProtocol::Linux64);
    EXPECT_EQ(info->entry, kKernelStart + 0x200);
    EXPECT_EQ(info->boot_data, kZeroPage);
    EXPECT_EQ(info->kernel_end, 24 * MiB);
    EXPECT_EQ(std::memcmp(mem.host_ptr(kKernelStart, 0x4000), file.data() + 5 * 512, 0x4000), 0);

    const auto bp = get<BootParams>(mem, kZeroPage);
    EXPECT_EQ(bp.hdr.header, kSetupHeaderMagic);
    EXPECT_EQ(bp.hdr.boot_flag, 0xaa55);
    EXPECT_EQ(bp.hdr.version, 0x020f);
    EXPECT_EQ(bp.hdr.type_of_loader, 0xff);
    EXPECT_EQ(bp.hdr.loadflags, kLoadflagLoadedHigh | kLoadflagCanUseHeap);
    EXPECT_NE(bp.hdr.heap_end_ptr, 0);
    EXPECT_EQ(bp.sentinel, 0);
    // Raw offsets, as the kernel reads them.
    EXPECT_EQ(get<uint32_t>(mem, kZeroPage + 0x228), kCmdline);          // cmd_line_ptr
    EXPECT_EQ(get<uint64_t>(mem, kZeroPage + 0x070), 0xe0000u);          // acpi_rsdp_addr
    EXPECT_EQ(get<uint8_t>(mem, kZeroPage + 0x210), 0xff);               // type_of_loader
    EXPECT_STREQ(reinterpret_cast<const char*>(mem.host_ptr(kCmdline, cmdline.size() + 1)),
                 cmdline.c_str());

    const uint32_t rd = get<uint32_t>(mem, kZeroPage + 0x218);
    EXPECT_EQ(get<uint32_t>(mem, kZeroPage + 0x21c), initrd.size());
    EXPECT_EQ(rd, info->initrd_addr);
    EXPECT_EQ(rd % 4096, 0u);
    EXPECT_GE(rd, info->kernel_end);
    EXPECT_LE(rd + initrd.size(), 64 * MiB);
    EXPECT_GT(rd + initrd.size() + 4096, 64 * MiB);
    EXPECT_EQ(std::memcmp(mem.host_ptr(rd, initrd.size()), initrd.data(), initrd.size()), 0);

    const auto map = e820_map(64 * MiB);
    ASSERT_EQ(get<uint8_t>(mem, kZeroPage + 0x1e8), map.size());
    for (size_t i = 0; i < map.size(); ++i) {
        const uint64_t at = kZeroPage + 0x2d0 + i * 20;
        EXPECT_EQ(get<uint64_t>(mem, at), map[i].addr) << i;
        EXPECT_EQ(get<uint64_t>(mem, at + 8), map[i].size) << i;
        EXPECT_EQ(get<uint32_t>(mem, at + 16), static_cast<uint32_t>(map[i].type)) << i;
    }
}

TEST(BzImage, InitrdStaysBelowInitrdAddrMax) {
    BzSpec spec;
    spec.initrd_addr_max = 32 * MiB - 1;
    auto mem = make_memory(64 * MiB);
    const std::vector<uint8_t> initrd(MiB, 1);
    auto info = load_kernel(mem, BootConfig{make_bzimage(spec), initrd, "", 0});
    ASSERT_TRUE(info.ok()) << info.error().message;
    EXPECT_EQ(info->initrd_addr, 31 * MiB);
}

TEST(BzImage, RejectsInitrdThatDoesNotFit) {
    auto mem = make_memory(64 * MiB);
    const std::vector<uint8_t> initrd(48 * MiB, 1);
    const std::string err = error_of(load_kernel(mem, BootConfig{make_bzimage(BzSpec{}), initrd, "", 0}));
    EXPECT_NE(err.find("initrd"), std::string::npos) << err;
}

TEST(BzImage, RejectsCommandLineLongerThanCmdlineSize) {
    BzSpec spec;
    spec.cmdline_size = 16;
    auto mem = make_memory();
    const auto file = make_bzimage(spec);
    EXPECT_TRUE(load_kernel(mem, BootConfig{file, {}, std::string(16, 'a'), 0}).ok());
    const std::string err = error_of(load_kernel(mem, BootConfig{file, {}, std::string(17, 'a'), 0}));
    EXPECT_NE(err.find("command line is 17 bytes; at most 16"), std::string::npos) << err;
}

TEST(BzImage, RejectsKernelTooBigForRam) {
    BzSpec spec;
    spec.init_size = 100 * MiB;
    auto mem = make_memory(64 * MiB);
    const std::string err = error_of(load_kernel(mem, BootConfig{make_bzimage(spec), {}, "", 0}));
    EXPECT_NE(err.find("kernel needs 116 MiB"), std::string::npos) << err;
}

TEST(BzImage, SurvivesTruncationAndCorruption) {
    const auto file = make_bzimage(BzSpec{});
    for (size_t n = 0; n <= file.size(); n += 13) (void)parse_bzimage(std::span(file).first(n));
    std::mt19937 rng(7);
    auto mem = make_memory(32 * MiB);
    for (int i = 0; i < 3000; ++i) {
        auto copy = file;
        for (int k = 0; k < 3; ++k) copy[0x1f1 + rng() % 0x80] = static_cast<uint8_t>(rng());
        if (rng() % 4 == 0) copy.resize(rng() % copy.size());
        (void)load_kernel(mem, BootConfig{copy, {}, "x", 0});
    }
}

// A real distribution kernel, if this machine has one (or POPEK_TEST_BZIMAGE names one).
TEST(BzImage, ParsesHostKernelIfPresent) {
    std::vector<std::filesystem::path> kernels;
    if (const char* env = std::getenv("POPEK_TEST_BZIMAGE")) kernels.emplace_back(env);
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/boot", ec))
        if (e.path().filename().string().starts_with("vmlinuz-")) kernels.push_back(e.path());
    if (kernels.empty()) GTEST_SKIP() << "no /boot/vmlinuz-* on this machine";
    for (const auto& path : kernels) {
        std::ifstream in(path, std::ios::binary);
        const std::vector<uint8_t> file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        if (file.empty()) continue;  // unreadable
        auto img = parse_bzimage(file);
        ASSERT_TRUE(img.ok()) << path << ": " << img.error().message;
        EXPECT_GE(img->hdr.version, 0x020c) << path;
        auto mem = make_memory(512 * MiB);
        auto info = load_kernel(mem, BootConfig{file, {}, "console=ttyS0", 0});
        EXPECT_TRUE(info.ok()) << path << ": " << error_of(info);
    }
}

}  // namespace
}  // namespace popek::arch::x86
