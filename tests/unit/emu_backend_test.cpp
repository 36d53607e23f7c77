// The emu hv backend through the hv interface only (as Machine uses it):
// small real-mode guests get interrupts from the PIC (a GSI and an irqfd),
// the PIT and the local APIC timer while they wait in HLT; ioeventfds and
// batched port writes do not exit; the dirty log sees guest writes; vCPU and
// VM state round-trip and state from another backend is refused.
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "hv/hypervisor.hpp"

namespace popek::hv {
namespace {

constexpr uint64_t kRam = 1 << 20;
constexpr uint64_t kCode = 0x1000;

class EmuGuest {
public:
    explicit EmuGuest(const std::vector<uint8_t>& code, uint64_t ds_base = 0,
                      std::function<void(Vm&)> before_vcpus = nullptr)
        : ram_(kRam, 0) {
        auto h = open_emu();
        EXPECT_TRUE(h.ok());
        hv_ = std::move(*h);
        EXPECT_EQ(hv_->name(), "emu");
        EXPECT_GT(hv_->tsc_khz(), 0u);
        auto v = hv_->create_vm(VmOptions{1});
        EXPECT_TRUE(v.ok());
        vm_ = std::move(*v);
        EXPECT_TRUE(vm_->map_memory(0, 0, kRam, ram_.data()).ok());
        if (before_vcpus) before_vcpus(*vm_);
        auto c = vm_->create_vcpu(0);
        EXPECT_TRUE(c.ok());
        vcpu_ = std::move(*c);
        std::memcpy(ram_.data() + kCode, code.data(), code.size());
        auto s = vcpu_->get_sregs();
        EXPECT_TRUE(s.ok());
        Sregs sregs = *s;
        for (Segment* seg : {&sregs.cs, &sregs.ss, &sregs.es, &sregs.fs, &sregs.gs}) {
            seg->base = 0;
            seg->selector = 0;
            seg->limit = 0xffff;
        }
        sregs.ds.base = ds_base;  // "unreal" mode: a base the guest could not load itself
        sregs.ds.selector = 0;
        sregs.ds.limit = 0xffff;
        sregs.idt = DescriptorTable{0, 0x3ff};
        EXPECT_TRUE(vcpu_->set_sregs(sregs).ok());
        Regs regs{};
        regs.rip = kCode;
        regs.rsp = 0x8000;
        regs.rflags = 2;
        EXPECT_TRUE(vcpu_->set_regs(regs).ok());
    }

    // Real-mode interrupt vector `vector` -> offset in segment 0.
    void set_ivt(uint8_t vector, uint16_t offset) {
        const uint32_t entry = offset;
        std::memcpy(ram_.data() + vector * 4u, &entry, 4);
    }

    // Runs until a port exit and returns it (fails the test on other exits).
    VcpuExit run_to_port() {
        auto e = vcpu_->run();
        EXPECT_TRUE(e.ok()) << (e.ok() ? "" : e.error().message);
        if (!e.ok()) return VcpuExit{};
        EXPECT_EQ(e->kind, ExitKind::Io) << "exit kind " << static_cast<int>(e->kind);
        return *e;
    }

    Vm& vm() { return *vm_; }
    Vcpu& vcpu() { return *vcpu_; }
    uint8_t* ram() { return ram_.data(); }

private:
    std::vector<uint8_t> ram_;
    std::unique_ptr<Hypervisor> hv_;
    std::unique_ptr<Vm> vm_;
    std::unique_ptr<Vcpu> vcpu_;
};

uint64_t eventfd_count(int fd) {
    uint64_t n = 0;
    return ::read(fd, &n, sizeof n) == sizeof n ? n : 0;
}

// PIC master at vector 0x20 with IRQ4 unmasked; an ioeventfd write (0xF2),
// two batched writes (0xF3), "ready" (0xF0), a RAM write at 0x3000, 0xF4,
// then STI; HLT forever. The IRQ4 handler EOIs and reports on 0xF1.
std::vector<uint8_t> pic_guest() {
    return {
        0xB0, 0x11, 0xE6, 0x20, 0xB0, 0x20, 0xE6, 0x21, 0xB0, 0x04, 0xE6, 0x21,  // ICW1-3
        0xB0, 0x01, 0xE6, 0x21, 0xB0, 0xEF, 0xE6, 0x21,                          // ICW4, mask all but IRQ4
        0xE6, 0xF2,                                                              // out 0xF2 (ioeventfd)
        0xB0, 0x07, 0xE6, 0xF3, 0xB0, 0x08, 0xE6, 0xF3,                          // batched 7, 8
        0xE6, 0xF0,                                                              // ready
        0xA2, 0x00, 0x30,                                                        // mov [0x3000], al
        0xE6, 0xF4,                                                              // out 0xF4
        0xFB, 0xF4, 0xEB, 0xFC,                                                  // 0x1025: sti; hlt; jmp
        0xB0, 0x20, 0xE6, 0x20, 0xE6, 0xF1, 0xCF,                                // 0x1029: EOI, report, iret
    };
}
constexpr uint16_t kPicHandler = 0x1029;

TEST(EmuBackend, PicInterruptsFromALineAndAnIrqfdWakeHlt) {
    EmuGuest g(pic_guest(), 0, [](Vm& vm) { ASSERT_TRUE(vm.batch_port_writes(0xF3, 1).ok()); });
    g.set_ivt(0x24, kPicHandler);
    const int io_efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ASSERT_TRUE(g.vm().add_ioeventfd(io_efd, 0xF2, 1, true).ok());
    ASSERT_TRUE(g.vm().start_dirty_log().ok());

    VcpuExit e = g.run_to_port();
    EXPECT_EQ(e.addr, 0xF0u) << "the ioeventfd and batched ports must not exit";
    EXPECT_EQ(eventfd_count(io_efd), 1u);
    std::vector<std::pair<uint64_t, uint8_t>> batched;
    g.vcpu().drain_batched_writes([&](const VcpuExit& w) { batched.emplace_back(w.addr, w.data[0]); });
    EXPECT_EQ(batched, (std::vector<std::pair<uint64_t, uint8_t>>{{0xF3, 7}, {0xF3, 8}}));

    // Dirty log: the guest's store to 0x3000 shows up, once.
    e = g.run_to_port();
    EXPECT_EQ(e.addr, 0xF4u);
    auto log = g.vm().fetch_dirty_log();
    ASSERT_TRUE(log.ok());
    ASSERT_EQ(log->size(), 1u);
    EXPECT_TRUE(((*log)[0].bitmap[0] >> 3) & 1) << "page 0x3000 written by the guest";
    auto again = g.vm().fetch_dirty_log();
    ASSERT_TRUE(again.ok());
    EXPECT_FALSE(((*again)[0].bitmap[0] >> 3) & 1) << "clear-on-read";
    ASSERT_TRUE(g.vm().stop_dirty_log().ok());

    // GSI 4 pulsed while the vCPU waits in HLT (or before it gets there).
    std::thread raiser([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        (void)g.vm().set_irq_line(4, true);
        (void)g.vm().set_irq_line(4, false);
    });
    e = g.run_to_port();
    raiser.join();
    EXPECT_EQ(e.addr, 0xF1u);

    // The same line through an irqfd, served by the backend's own thread.
    const int irq_efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ASSERT_TRUE(g.vm().add_irqfd(irq_efd, 4).ok());
    const uint64_t one = 1;
    ASSERT_EQ(::write(irq_efd, &one, sizeof one), 8);
    e = g.run_to_port();
    EXPECT_EQ(e.addr, 0xF1u);
    ASSERT_TRUE(g.vm().remove_irqfd(irq_efd, 4).ok());

    // Nothing pending: HLT waits until the VMM asks the vCPU to exit.
    std::thread kicker([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        g.vcpu().request_exit();
    });
    auto r = g.vcpu().run();
    kicker.join();
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->kind, ExitKind::Interrupted);
    g.vcpu().clear_exit_request();
    ::close(io_efd);
    ::close(irq_efd);
}

TEST(EmuBackend, PitTicksReachThePic) {
    // PIT channel 0, mode 2, 1193 counts (~1 ms); PIC vector 0x20, IRQ0 only.
    std::vector<uint8_t> code = {
        0xB0, 0x11, 0xE6, 0x20, 0xB0, 0x20, 0xE6, 0x21, 0xB0, 0x04, 0xE6, 0x21,
        0xB0, 0x01, 0xE6, 0x21, 0xB0, 0xFE, 0xE6, 0x21,                          // mask all but IRQ0
        0xB0, 0x34, 0xE6, 0x43, 0xB0, 0xA9, 0xE6, 0x40, 0xB0, 0x04, 0xE6, 0x40,  // mode 2, count 0x4A9
        0xFB, 0xF4, 0xEB, 0xFC,                                                  // 0x1020: sti; hlt; jmp
        0xB0, 0x20, 0xE6, 0x20, 0xE6, 0xF1, 0xCF,                                // 0x1024: handler
    };
    EmuGuest g(code);
    g.set_ivt(0x20, 0x1024);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 5; i++) EXPECT_EQ(g.run_to_port().addr, 0xF1u) << "tick " << i;
    // Five ticks of ~1 ms: at least ~4 ms of guest time passed.
    EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(3));
}

TEST(EmuBackend, LocalApicTimerInterrupts) {
    // DS based at the LAPIC page: SVR enable, LVT timer periodic vector 0x40,
    // divide by 1, initial count 1,000,000 (1 ms at the 1 GHz APIC bus).
    std::vector<uint8_t> code = {
        0x66, 0xC7, 0x06, 0xF0, 0x00, 0xFF, 0x01, 0x00, 0x00,  // SVR = 0x1ff
        0x66, 0xC7, 0x06, 0x20, 0x03, 0x40, 0x00, 0x02, 0x00,  // LVT timer = periodic | 0x40
        0x66, 0xC7, 0x06, 0xE0, 0x03, 0x0B, 0x00, 0x00, 0x00,  // divide by 1
        0x66, 0xC7, 0x06, 0x80, 0x03, 0x40, 0x42, 0x0F, 0x00,  // initial count
        0xFB, 0xF4, 0xEB, 0xFC,                                // 0x1024: sti; hlt; jmp
        0xE6, 0xF1,                                            // 0x1028: report
        0x66, 0xC7, 0x06, 0xB0, 0x00, 0x00, 0x00, 0x00, 0x00,  // EOI
        0xCF,
    };
    EmuGuest g(code, 0xfee00000);
    g.set_ivt(0x40, 0x1028);
    for (int i = 0; i < 3; i++) EXPECT_EQ(g.run_to_port().addr, 0xF1u) << "tick " << i;
}

TEST(EmuBackend, TscDeadlineMsrArmsTheLocalApicTimer) {
    // SVR enable, LVT timer in TSC-deadline mode (bits 17-18 = 2) vector
    // 0x40, then IA32_TSC_DEADLINE = RDTSC + 2,000,000: one interrupt.
    std::vector<uint8_t> code = {
        0x66, 0xC7, 0x06, 0xF0, 0x00, 0xFF, 0x01, 0x00, 0x00,  // SVR = 0x1ff
        0x66, 0xC7, 0x06, 0x20, 0x03, 0x40, 0x00, 0x04, 0x00,  // LVT timer = TSC-deadline | 0x40
        0x0F, 0x31,                                            // rdtsc
        0x66, 0x05, 0x80, 0x84, 0x1E, 0x00,                    // add eax, 2000000
        0x66, 0x83, 0xD2, 0x00,                                // adc edx, 0
        0x66, 0xB9, 0xE0, 0x06, 0x00, 0x00,                    // mov ecx, 0x6e0
        0x0F, 0x30,                                            // wrmsr
        0xFB, 0xF4, 0xEB, 0xFC,                                // 0x1026: sti; hlt; jmp
        0xE6, 0xF1,                                            // 0x102A: report
        0x66, 0xC7, 0x06, 0xB0, 0x00, 0x00, 0x00, 0x00, 0x00,  // EOI
        0xCF,
    };
    EmuGuest g(code, 0xfee00000);
    g.set_ivt(0x40, 0x102A);
    EXPECT_EQ(g.run_to_port().addr, 0xF1u);
}

TEST(EmuBackend, LevelTriggeredGsiThroughTheIoapic) {
    // PICs masked; ES at the LAPIC (SVR enable), DS at the IOAPIC: pin 9
    // level-triggered, vector 0x50, physical destination APIC 0. The handler
    // reports on 0xF1, then EOIs (which ends the pin's Remote-IRR).
    std::vector<uint8_t> code = {
        0xB0, 0x11, 0xE6, 0x20, 0xB0, 0x08, 0xE6, 0x21, 0xB0, 0x04, 0xE6, 0x21,
        0xB0, 0x01, 0xE6, 0x21, 0xB0, 0xFF, 0xE6, 0x21, 0xB0, 0xFF, 0xE6, 0xA1,  // PICs masked
        0x26, 0x66, 0xC7, 0x06, 0xF0, 0x00, 0xFF, 0x01, 0x00, 0x00,              // es: SVR = 0x1ff
        0x66, 0xC7, 0x06, 0x00, 0x00, 0x22, 0x00, 0x00, 0x00,                    // IOREGSEL = redir 9 low
        0x66, 0xC7, 0x06, 0x10, 0x00, 0x50, 0x80, 0x00, 0x00,                    // level | vector 0x50
        0x66, 0xC7, 0x06, 0x00, 0x00, 0x23, 0x00, 0x00, 0x00,                    // redir 9 high
        0x66, 0xC7, 0x06, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00,                    // destination 0
        0xE6, 0xF0,                                                              // ready
        0xFB, 0xF4, 0xEB, 0xFC,                                                  // 0x1048: sti; hlt; jmp
        0xE6, 0xF1,                                                              // 0x104C: report
        0x26, 0x66, 0xC7, 0x06, 0xB0, 0x00, 0x00, 0x00, 0x00, 0x00,              // es: EOI
        0xCF,
    };
    EmuGuest g(code, 0xfec00000);
    auto sregs = g.vcpu().get_sregs();
    ASSERT_TRUE(sregs.ok());
    sregs->es.base = 0xfee00000;
    ASSERT_TRUE(g.vcpu().set_sregs(*sregs).ok());
    g.set_ivt(0x50, 0x104C);
    EXPECT_EQ(g.run_to_port().addr, 0xF0u);

    ASSERT_TRUE(g.vm().set_irq_line(9, true).ok());
    EXPECT_EQ(g.run_to_port().addr, 0xF1u);
    // Still high at the EOI: the IOAPIC delivers it again.
    EXPECT_EQ(g.run_to_port().addr, 0xF1u);
    // Low before the EOI: nothing more; HLT waits until the VMM asks to exit.
    ASSERT_TRUE(g.vm().set_irq_line(9, false).ok());
    std::thread kicker([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        g.vcpu().request_exit();
    });
    auto r = g.vcpu().run();
    kicker.join();
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->kind, ExitKind::Interrupted);
}

TEST(EmuBackend, HostWritesOverDecodedCodeAreSeen) {
    // out 0xF0; jmp back: the out's block is decoded and cached.
    EmuGuest g({0xE6, 0xF0, 0xEB, 0xFC});
    EXPECT_EQ(g.run_to_port().addr, 0xF0u);
    EXPECT_EQ(g.run_to_port().addr, 0xF0u);
    // A device rewrites the port number behind the engine's back (DMA) and
    // tells the VM, as GuestMemory's write observer does.
    g.ram()[kCode + 1] = 0xF5;
    g.vm().host_wrote(kCode, 2);
    EXPECT_EQ(g.run_to_port().addr, 0xF5u) << "a stale decoded block ran";
}

TEST(EmuBackend, StateRoundTripsAndOtherBackendsStateIsRefused) {
    EmuGuest g(pic_guest());
    EXPECT_EQ(g.run_to_port().addr, 0xF2u);  // no ioeventfd here: a plain port exit
    auto vs = g.vcpu().save_state();
    ASSERT_TRUE(vs.ok()) << vs.error().message;
    auto ms = g.vm().save_state();
    ASSERT_TRUE(ms.ok());
    EXPECT_EQ(ms->backend, "emu");
    EXPECT_EQ(vs->lapic.size(), 1024u);

    EmuGuest h(std::vector<uint8_t>(1, 0xF4));
    ASSERT_TRUE(h.vm().restore_state(*ms).ok());
    auto restored = h.vcpu().restore_state(*vs);
    ASSERT_TRUE(restored.ok()) << restored.error().message;
    auto again = h.vcpu().save_state();
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->regs, vs->regs);
    EXPECT_EQ(again->sregs, vs->sregs);
    EXPECT_EQ(again->xsave, vs->xsave);
    EXPECT_EQ(again->lapic, vs->lapic);
    EXPECT_EQ(again->mp_state, vs->mp_state);

    VmState kvm_vm = *ms;
    kvm_vm.backend = "kvm";
    auto refused = h.vm().restore_state(kvm_vm);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.error().message.find("'kvm' backend"), std::string::npos) << refused.error().message;

    VmState broken = *ms;
    broken.blobs.front().second.resize(3);
    EXPECT_FALSE(h.vm().restore_state(broken).ok());

    VcpuState kvm_cpu = *vs;
    kvm_cpu.msrs.push_back(MsrEntry{0x4b564d01, 1});  // a KVM paravirtual MSR
    auto bad = h.vcpu().restore_state(kvm_cpu);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message.find("another backend"), std::string::npos) << bad.error().message;
    EXPECT_EQ(h.vcpu().save_state()->regs, vs->regs) << "a refused state changes nothing";
}

}  // namespace
}  // namespace popek::hv
