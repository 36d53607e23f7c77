// vCPU and VM state save/restore on the KVM backend: a distinctive state
// saved from one VM, restored into a fresh one, saved again, must match.
// The irqchip/PIT blobs are KVM's own structs, so this test reads them with
// <linux/kvm.h> to make them distinctive and to compare them.
#include <gtest/gtest.h>
#include <linux/kvm.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "arch/x86/cpuid.hpp"
#include "hv/hypervisor.hpp"
#include "memory/guest_memory.hpp"
#include "migration/cpu_state.hpp"

namespace popek::test {
namespace {

constexpr uint32_t kMsrTsc = 0x10;

struct TestVm {
    memory::GuestMemory mem;
    std::unique_ptr<hv::Vm> vm;
    std::unique_ptr<hv::Vcpu> vcpu;  // destroyed first
};

class KvmState : public ::testing::Test {
protected:
    void SetUp() override {
        if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/kvm is not available: KVM state tests need it";
        auto hv = hv::open_kvm("/dev/kvm");
        ASSERT_TRUE(hv.ok()) << hv.error().message;
        hv_ = std::move(hv).value();
    }

    // A VM with 2 MiB of RAM and one vCPU with popek's CPUID, as Machine builds it.
    TestVm make_vm() {
        auto vm = hv_->create_vm(hv::VmOptions{1});
        EXPECT_TRUE(vm.ok()) << vm.error().message;
        std::vector<memory::RamRange> ranges{{0, 2u << 20}};
        auto mem = memory::GuestMemory::create(ranges);
        EXPECT_TRUE(mem.ok()) << mem.error().message;
        auto map = (*vm)->map_memory(0, 0, mem->regions()[0].size, mem->regions()[0].host);
        EXPECT_TRUE(map.ok()) << map.error().message;
        auto vcpu = (*vm)->create_vcpu(0);
        EXPECT_TRUE(vcpu.ok()) << vcpu.error().message;
        auto supported = hv_->supported_cpuid();
        EXPECT_TRUE(supported.ok());
        cpuid_ = arch::x86::cpuid_policy(*supported, arch::x86::CpuidConfig{0, 1, hv_->tsc_khz()});
        EXPECT_TRUE((*vcpu)->set_cpuid(cpuid_).ok());
        EXPECT_TRUE((*vcpu)->setup_lapic_lints().ok());
        return TestVm{std::move(mem).value(), std::move(vm).value(), std::move(vcpu).value()};
    }

    bool cpuid_has(uint32_t leaf, int reg /* 2 = ecx, 3 = edx */, int bit) const {
        for (const auto& e : cpuid_)
            if (e.function == leaf && e.index == 0) return (((reg == 2 ? e.ecx : e.edx) >> bit) & 1) != 0;
        return false;
    }

    // Cycles in `seconds`, from the TSC frequency KVM reports (3 GHz if unknown).
    uint64_t tsc_cycles(uint64_t seconds) const {
        uint64_t khz = hv_->tsc_khz() ? hv_->tsc_khz() : 3'000'000;
        return khz * 1000 * seconds;
    }

    std::unique_ptr<hv::Hypervisor> hv_;
    std::vector<hv::CpuidEntry> cpuid_;
};

hv::Segment seg(uint64_t base, uint32_t limit, uint16_t sel, uint8_t type, uint8_t s, uint8_t l, uint8_t db) {
    return hv::Segment{base, limit, sel, type, 1, 0, db, s, l, static_cast<uint8_t>(limit > 0xfffff ? 1 : 0), 0, 0};
}

uint64_t take_msr(hv::VcpuState& s, uint32_t index) {
    for (auto& m : s.msrs) {
        if (m.index != index) continue;
        uint64_t v = m.value;
        m.value = 0;
        return v;
    }
    ADD_FAILURE() << "MSR " << index << " not saved";
    return 0;
}

uint64_t msr(const hv::VcpuState& s, uint32_t index) {
    for (const auto& m : s.msrs)
        if (m.index == index) return m.value;
    ADD_FAILURE() << "MSR " << std::hex << index << " not saved";
    return 0;
}

void put32(std::vector<uint8_t>& b, size_t off, uint32_t v) { std::memcpy(b.data() + off, &v, 4); }
uint32_t get32(const std::vector<uint8_t>& b, size_t off) {
    uint32_t v;
    std::memcpy(&v, b.data() + off, 4);
    return v;
}

// Field-by-field differences, readable (a JSON patch over the serialized states).
std::string diff(const hv::VcpuState& a, const hv::VcpuState& b) {
    return nlohmann::json::diff(migration::vcpu_state_to_json(a), migration::vcpu_state_to_json(b)).dump();
}

constexpr uint8_t kXmm0[16] = {0xde, 0xad, 0xbe, 0xef, 0x01, 0x23, 0x45, 0x67,
                               0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98};

TEST_F(KvmState, VcpuStateSurvivesAFreshVm) {
    TestVm a = make_vm();
    ASSERT_TRUE(a.vcpu);
    // Registers through the typed interface: a 64-bit kernel in the middle of something.
    hv::Regs regs{};
    regs.rax = 0x1111111111111111;
    regs.rbx = 0x2222222222222222;
    regs.r15 = 0xf15f15f15f15f15f;
    regs.rsp = 0x7000;
    regs.rip = 0xffffffff81000123;
    regs.rflags = 0x246;
    ASSERT_TRUE(a.vcpu->set_regs(regs).ok());
    auto sregs = a.vcpu->get_sregs();
    ASSERT_TRUE(sregs.ok());
    sregs->cs = seg(0, 0xffffffff, 0x10, 0xb, 1, 1, 0);
    sregs->ds = sregs->es = sregs->ss = seg(0, 0xffffffff, 0x18, 0x3, 1, 0, 1);
    sregs->fs = seg(0x7f0012340000, 0xffffffff, 0, 0x3, 1, 0, 1);
    sregs->gs = seg(0xffff888000001000, 0xffffffff, 0, 0x3, 1, 0, 1);
    sregs->tr = seg(0x5000, 0x67, 0x40, 0xb, 0, 0, 0);
    sregs->gdt = {0x2000, 0x7f};
    sregs->idt = {0x3000, 0xfff};
    sregs->cr0 = 0x80050033;
    sregs->cr2 = 0xdead000;
    sregs->cr3 = 0x4000;
    sregs->cr4 = 0x6a0 | (cpuid_has(1, 2, 26) ? 0x40000u : 0u);  // PAE PGE OSFXSR OSXMMEXCPT (+OSXSAVE)
    sregs->efer = 0x501 | (cpuid_has(0x80000001, 3, 20) ? 0x800u : 0u);  // SCE LME LMA (+NXE)
    auto set = a.vcpu->set_sregs(*sregs);
    ASSERT_TRUE(set.ok()) << set.error().message;
    std::vector<hv::MsrEntry> msrs{{0x174, 0x10}, {0x175, 0xffffc90000004000}, {0x176, 0xffffffff81a00000},
                                   {0xc0000081, 0x0023001000000000}, {0xc0000082, 0xffffffff81c00000},
                                   {0xc0000083, 0xffffffff81c00100}, {0xc0000084, 0x47700},
                                   {0xc0000102, 0xffff888007c00000}, {0x277, 0x0007010600070106},
                                   {kMsrTsc, 1ull << 40}};
    auto s0 = a.vcpu->save_state();
    ASSERT_TRUE(s0.ok()) << s0.error().message;
    bool tsc_aux = std::any_of(s0->msrs.begin(), s0->msrs.end(), [](auto& m) { return m.index == 0xc0000103; });
    if (tsc_aux) msrs.push_back({0xc0000103, 0x2a});
    auto wrote = a.vcpu->set_msrs(msrs);
    ASSERT_TRUE(wrote.ok()) << wrote.error().message;

    // What has no typed setter goes in through restore_state() on the same vCPU.
    s0 = a.vcpu->save_state();
    ASSERT_TRUE(s0.ok()) << s0.error().message;
    ASSERT_EQ(s0->lapic.size(), 1024u);
    put32(s0->lapic, 0x80, 0x50);     // TPR
    put32(s0->lapic, 0xf0, 0x1ff);    // SVR: enabled, spurious vector 0xff
    put32(s0->lapic, 0x320, 0x100ef);  // LVT timer: masked, vector 0xef
    put32(s0->lapic, 0x370, 0xfe);     // LVT error
    ASSERT_GE(s0->xsave.size(), 576u);
    std::memcpy(s0->xsave.data() + 160, kXmm0, sizeof kXmm0);  // XMM0 in the legacy region
    s0->xsave[512] |= 2;                                        // XSTATE_BV: SSE state present
    s0->debug.db = {0x1000, 0x2000, 0x3000, 0x4000};
    s0->debug.dr7 = 0x455;  // L0 G0 L1 L2 + reserved bit 10
    s0->events.nmi_masked = 1;
    auto restored = a.vcpu->restore_state(*s0);
    ASSERT_TRUE(restored.ok()) << restored.error().message;

    auto s1 = a.vcpu->save_state();
    ASSERT_TRUE(s1.ok()) << s1.error().message;
    // The state is distinctive: what was set reads back.
    EXPECT_EQ(s1->regs, regs);
    EXPECT_EQ(s1->sregs.fs.base, 0x7f0012340000u);
    EXPECT_EQ(s1->sregs.efer & 0x500, 0x500u);
    EXPECT_EQ(msr(*s1, 0x174), 0x10u);
    EXPECT_EQ(msr(*s1, 0xc0000082), 0xffffffff81c00000u);
    EXPECT_EQ(msr(*s1, 0x277), 0x0007010600070106u);
    if (tsc_aux) {
        EXPECT_EQ(msr(*s1, 0xc0000103), 0x2au);
    }
    EXPECT_EQ(get32(s1->lapic, 0x80), 0x50u);
    EXPECT_EQ(s1->sregs.cr8, 5u);  // CR8 is TPR[7:4]
    EXPECT_EQ(std::memcmp(s1->xsave.data() + 160, kXmm0, sizeof kXmm0), 0);
    EXPECT_EQ(s1->debug.db[2], 0x3000u);
    EXPECT_EQ(s1->events.nmi_masked, 1u);
    EXPECT_GE(msr(*s1, kMsrTsc), 1ull << 40);

    TestVm b = make_vm();
    ASSERT_TRUE(b.vcpu);
    restored = b.vcpu->restore_state(*s1);
    ASSERT_TRUE(restored.ok()) << restored.error().message;
    auto s2 = b.vcpu->save_state();
    ASSERT_TRUE(s2.ok()) << s2.error().message;

    // The TSC went on from the saved value: never backwards, not far forwards.
    uint64_t tsc1 = take_msr(*s1, kMsrTsc);
    uint64_t tsc2 = take_msr(*s2, kMsrTsc);
    EXPECT_GE(tsc2, tsc1);
    EXPECT_LT(tsc2 - tsc1, tsc_cycles(5));
    EXPECT_EQ(s2->regs, s1->regs);
    EXPECT_EQ(s2->sregs, s1->sregs);
    EXPECT_EQ(s2->msrs, s1->msrs);
    EXPECT_EQ(s2->xsave, s1->xsave);
    EXPECT_EQ(s2->xcrs, s1->xcrs);
    EXPECT_EQ(s2->lapic, s1->lapic);
    EXPECT_EQ(s2->events, s1->events);
    EXPECT_EQ(s2->debug, s1->debug);
    EXPECT_EQ(s2->mp_state, s1->mp_state);
    EXPECT_EQ(*s2, *s1) << "differences: " << diff(*s1, *s2);
}

TEST_F(KvmState, VcpuRestoreRefusesBadStateAndChangesNothing) {
    TestVm a = make_vm();
    ASSERT_TRUE(a.vcpu);
    auto good = a.vcpu->save_state();
    ASSERT_TRUE(good.ok()) << good.error().message;
    hv::Regs before = good->regs;

    hv::VcpuState bad = *good;
    bad.regs.rax = 0xbad;
    bad.xsave.resize(100);
    auto r = a.vcpu->restore_state(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("XSAVE"), std::string::npos) << r.error().message;
    EXPECT_EQ(*a.vcpu->get_regs(), before);  // refused before touching the vCPU

    bad = *good;
    bad.lapic.resize(1000);
    r = a.vcpu->restore_state(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("APIC"), std::string::npos) << r.error().message;

    bad = *good;
    bad.msrs.push_back({0xdeadbeef, 1});  // no such MSR
    r = a.vcpu->restore_state(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("0xdeadbeef"), std::string::npos) << r.error().message;
}

// The blobs read as KVM's structs.
template <class T>
T blob_as(const hv::VmState& s, const std::string& name) {
    T v{};
    for (const auto& [n, bytes] : s.blobs) {
        if (n != name) continue;
        EXPECT_EQ(bytes.size(), sizeof(T)) << name;
        std::memcpy(&v, bytes.data(), std::min(bytes.size(), sizeof(T)));
        return v;
    }
    ADD_FAILURE() << "blob " << name << " missing";
    return v;
}

template <class T>
void set_blob(hv::VmState& s, const std::string& name, const T& v) {
    for (auto& [n, bytes] : s.blobs)
        if (n == name) std::memcpy(bytes.data(), &v, std::min(bytes.size(), sizeof(T)));
}

TEST_F(KvmState, VmStateSurvivesAFreshVm) {
    TestVm a = make_vm();
    ASSERT_TRUE(a.vm);
    ASSERT_TRUE(a.vm->set_irq_line(4, true).ok());  // COM1's line: PIC master IRR bit 4
    auto s0 = a.vm->save_state();
    ASSERT_TRUE(s0.ok()) << s0.error().message;
    EXPECT_EQ(s0->backend, "kvm");
    EXPECT_NE(blob_as<kvm_pic_state>(*s0, "pic-master").irr & 0x10, 0);

    auto master = blob_as<kvm_pic_state>(*s0, "pic-master");
    master.imr = 0xb8;
    master.irq_base = 0x20;
    set_blob(*s0, "pic-master", master);
    auto slave = blob_as<kvm_pic_state>(*s0, "pic-slave");
    slave.imr = 0xfe;
    slave.irq_base = 0x28;
    set_blob(*s0, "pic-slave", slave);
    auto ioapic = blob_as<kvm_ioapic_state>(*s0, "ioapic");
    ioapic.redirtbl[5].bits = 0x0000000000018035;  // vector 0x35, level, masked
    set_blob(*s0, "ioapic", ioapic);
    auto pit = blob_as<kvm_pit_state2>(*s0, "pit");
    pit.channels[2].count = 0xbeef;  // channel 2: no interrupt, so nothing moves while we compare
    pit.channels[2].mode = 3;
    pit.channels[2].rw_mode = 3;
    set_blob(*s0, "pit", pit);
    auto r = a.vm->restore_state(*s0);
    ASSERT_TRUE(r.ok()) << r.error().message;
    auto s1 = a.vm->save_state();
    ASSERT_TRUE(s1.ok()) << s1.error().message;
    EXPECT_EQ(blob_as<kvm_pic_state>(*s1, "pic-master").imr, 0xb8);
    EXPECT_EQ(blob_as<kvm_ioapic_state>(*s1, "ioapic").redirtbl[5].bits, 0x18035u);
    EXPECT_EQ(blob_as<kvm_pit_state2>(*s1, "pit").channels[2].count, 0xbeefu);

    // The guest clock goes on from what the state says, even far ahead of this VM's.
    hv::VmState moved = *s1;
    moved.clock_ns += 1000ull * 1000 * 1000 * 1000;
    TestVm b = make_vm();
    ASSERT_TRUE(b.vm);
    r = b.vm->restore_state(moved);
    ASSERT_TRUE(r.ok()) << r.error().message;
    auto s2 = b.vm->save_state();
    ASSERT_TRUE(s2.ok()) << s2.error().message;
    EXPECT_GE(s2->clock_ns, moved.clock_ns);
    EXPECT_LT(s2->clock_ns - moved.clock_ns, 5ull * 1000 * 1000 * 1000);

    for (const char* name : {"pic-master", "pic-slave", "ioapic"}) {
        std::vector<uint8_t> want, got;
        for (const auto& [n, bytes] : s1->blobs) if (n == name) want = bytes;
        for (const auto& [n, bytes] : s2->blobs) if (n == name) got = bytes;
        EXPECT_FALSE(want.empty()) << name;
        EXPECT_EQ(got, want) << name;
    }
    // KVM_SET_PIT2 reloads each counter "now": count_load_time is the restore
    // time, not the saved one. Everything else must match.
    auto p1 = blob_as<kvm_pit_state2>(*s1, "pit");
    auto p2 = blob_as<kvm_pit_state2>(*s2, "pit");
    for (int i = 0; i < 3; i++) {
        EXPECT_GE(p2.channels[i].count_load_time, p1.channels[i].count_load_time) << "channel " << i;
        p1.channels[i].count_load_time = p2.channels[i].count_load_time = 0;
    }
    EXPECT_EQ(std::memcmp(&p1, &p2, sizeof p1), 0);
}

TEST_F(KvmState, VmRestoreRefusesForeignOrDamagedState) {
    TestVm a = make_vm();
    ASSERT_TRUE(a.vm);
    auto good = a.vm->save_state();
    ASSERT_TRUE(good.ok()) << good.error().message;
    ASSERT_EQ(good->blobs.size(), 4u);

    hv::VmState bad = *good;
    bad.backend = "emu";
    auto r = a.vm->restore_state(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("'emu'"), std::string::npos) << r.error().message;

    bad = *good;
    std::erase_if(bad.blobs, [](const auto& b) { return b.first == "ioapic"; });
    r = a.vm->restore_state(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("'ioapic' missing"), std::string::npos) << r.error().message;

    bad = *good;
    for (auto& [n, bytes] : bad.blobs)
        if (n == "pit") bytes.pop_back();
    r = a.vm->restore_state(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("'pit' is 111 bytes"), std::string::npos) << r.error().message;

    bad = *good;
    bad.blobs.emplace_back("hpet", std::vector<uint8_t>(8));
    r = a.vm->restore_state(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("'hpet'"), std::string::npos) << r.error().message;

    bad = *good;
    bad.blobs.push_back(bad.blobs.front());
    r = a.vm->restore_state(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("twice"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace popek::test
