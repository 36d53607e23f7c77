// KVM dirty logging through hv::Vm: pages a tiny real-mode guest writes show
// up in fetch_dirty_log(), once (clear-on-read); host writes do not (they are
// GuestMemory's to track).
#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>

#include "hv/hypervisor.hpp"
#include "memory/guest_memory.hpp"

namespace popek::test {
namespace {

bool bit(const std::vector<hv::SlotDirtyLog>& logs, uint64_t page) {
    for (const auto& l : logs)
        if (page < l.pages) return ((l.bitmap[page / 64] >> (page % 64)) & 1) != 0;
    return false;
}

uint64_t count(const std::vector<hv::SlotDirtyLog>& logs) {
    uint64_t n = 0;
    for (const auto& l : logs)
        for (uint64_t w : l.bitmap) n += static_cast<uint64_t>(std::popcount(w));
    return n;
}

TEST(DirtyLog, GuestWritesAreLoggedOnceAndHostWritesAreNot) {
    if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "needs /dev/kvm";
    auto hv = hv::open_kvm("/dev/kvm");
    ASSERT_TRUE(hv.ok()) << hv.error().message;
    auto vm = (*hv)->create_vm(hv::VmOptions{1});
    ASSERT_TRUE(vm.ok()) << vm.error().message;
    std::vector<memory::RamRange> ranges{{0, 1u << 20}};
    auto mem = memory::GuestMemory::create(ranges);
    ASSERT_TRUE(mem.ok());
    ASSERT_TRUE((*vm)->map_memory(0, 0, 1u << 20, mem->regions()[0].host).ok());
    // Real mode at 0x1000: mov byte [0x5000], 1; mov byte [0x9000], 2; out 0xf4, al.
    const uint8_t code[] = {0xc6, 0x06, 0x00, 0x50, 0x01, 0xc6, 0x06, 0x00, 0x90, 0x02, 0xe6, 0xf4};
    ASSERT_TRUE(mem->write(0x1000, code).ok());
    auto vcpu = (*vm)->create_vcpu(0);
    ASSERT_TRUE(vcpu.ok()) << vcpu.error().message;
    auto sregs = (*vcpu)->get_sregs();
    ASSERT_TRUE(sregs.ok());
    sregs->cs.base = 0;
    sregs->cs.selector = 0;
    sregs->ds.base = 0;
    sregs->ds.selector = 0;
    ASSERT_TRUE((*vcpu)->set_sregs(*sregs).ok());
    auto regs = (*vcpu)->get_regs();
    ASSERT_TRUE(regs.ok());
    regs->rip = 0x1000;
    ASSERT_TRUE((*vcpu)->set_regs(*regs).ok());

    auto started = (*vm)->start_dirty_log();
    ASSERT_TRUE(started.ok()) << started.error().message;
    auto first = (*vm)->fetch_dirty_log();
    ASSERT_TRUE(first.ok()) << first.error().message;
    ASSERT_TRUE(mem->write(0x20000, code).ok());  // a host write: not the hypervisor's to see

    for (;;) {
        auto exit = (*vcpu)->run();
        ASSERT_TRUE(exit.ok()) << exit.error().message;
        if (exit->kind == hv::ExitKind::Io && exit->addr == 0xf4) break;
        ASSERT_EQ(exit->kind, hv::ExitKind::Interrupted);
    }
    auto logs = (*vm)->fetch_dirty_log();
    ASSERT_TRUE(logs.ok()) << logs.error().message;
    EXPECT_TRUE(bit(*logs, 5));
    EXPECT_TRUE(bit(*logs, 9));
    EXPECT_FALSE(bit(*logs, 0x20));
    EXPECT_EQ(count(*logs), 2u);
    auto again = (*vm)->fetch_dirty_log();
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(count(*again), 0u) << "fetch_dirty_log clears what it returned";
    EXPECT_TRUE((*vm)->stop_dirty_log().ok());
    EXPECT_FALSE((*vm)->fetch_dirty_log().ok());
}

TEST(DirtyLog, GuestMemoryTracksHostWritesWhileOn) {
    std::vector<memory::RamRange> ranges{{0, 1u << 20}, {2u << 20, 1u << 20}};
    auto mem = memory::GuestMemory::create(ranges);
    ASSERT_TRUE(mem.ok());
    const uint8_t b[] = {1, 2, 3};
    ASSERT_TRUE(mem->write(0x3000, b).ok());  // off: not recorded
    mem->start_dirty_tracking();
    ASSERT_TRUE(mem->write((2u << 20) + 0x1fff, b).ok());  // straddles two pages of the second region
    std::vector<uint64_t> bits;
    mem->take_dirty(bits);
    const uint64_t p = mem->page_index((2u << 20) + 0x1000);
    EXPECT_EQ(p, 256u + 1);
    uint64_t n = 0;
    for (uint64_t w : bits) n += static_cast<uint64_t>(std::popcount(w));
    EXPECT_EQ(n, 2u);
    EXPECT_TRUE((bits[p / 64] >> (p % 64)) & 1);
    EXPECT_TRUE((bits[(p + 1) / 64] >> ((p + 1) % 64)) & 1);
    std::vector<uint64_t> again;
    mem->take_dirty(again);
    for (uint64_t w : again) EXPECT_EQ(w, 0u);
}

}  // namespace
}  // namespace popek::test
