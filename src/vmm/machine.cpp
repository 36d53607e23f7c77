#include "vmm/machine.hpp"

#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "arch/x86/acpi.hpp"
#include "arch/x86/boot.hpp"
#include "arch/x86/cpuid.hpp"
#include "arch/x86/layout.hpp"
#include "base/file.hpp"

namespace popek::vmm {

using base::Error;
using base::Result;
namespace x86 = arch::x86;

// --engine: KVM, the emulation engine, or (auto) KVM when its device opens
// and the engine otherwise; a snapshot restored with auto goes back to the
// backend that saved it.
// `saved_backend`: the backend a saved VM ran on (null: a fresh VM).
static Result<std::unique_ptr<hv::Hypervisor>> open_hypervisor(const VmConfig& cfg, const std::string* saved_backend) {
    HvEngine engine = cfg.engine;
    if (engine == HvEngine::Auto && saved_backend != nullptr)
        engine = *saved_backend == "emu" ? HvEngine::Emu : HvEngine::Kvm;
    switch (engine) {
        case HvEngine::Kvm: return hv::open_kvm(cfg.kvm_device);
        case HvEngine::Emu: return hv::open_emu();
        case HvEngine::Auto: break;
    }
    auto kvm = hv::open_kvm(cfg.kvm_device);
    if (kvm) return kvm;
    return hv::open_emu();
}

Result<std::unique_ptr<Machine>> Machine::create(const VmConfig& cfg) {
    POPEK_TRY(validate_config(cfg));
    std::unique_ptr<Machine> m(new Machine());
    POPEK_TRY(m->build(cfg, nullptr));
    return m;
}

Result<std::unique_ptr<Machine>> Machine::prepare_migration(const VmConfig& cfg, const std::string& backend,
                                                            memory::GuestMemory memory) {
    std::unique_ptr<Machine> m(new Machine());
    m->cfg_ = cfg;
    m->disks_lock_later_ = true;
    POPEK_ASSIGN_OR_RETURN(m->hv_, open_hypervisor(cfg, &backend));
    POPEK_TRY(m->check_vcpu_count(cfg));
    m->memory_ = std::move(memory);
    POPEK_TRY(m->create_vm(cfg));
    return m;
}

Result<void> Machine::finish_migration(const LoadedSnapshot& snapshot) {
    if (!vm_) return Error{"finish_migration without prepare_migration"};
    if (snapshot.config.cpus != cfg_.cpus || snapshot.config.memory_bytes != cfg_.memory_bytes)
        return Error{"the state's configuration (" + std::to_string(snapshot.config.cpus) + " vCPUs, " +
                     std::to_string(snapshot.config.memory_bytes >> 20) + " MiB) differs from the one announced (" +
                     std::to_string(cfg_.cpus) + " vCPUs, " + std::to_string(cfg_.memory_bytes >> 20) + " MiB)"};
    return build(snapshot.config, &snapshot);
}

Result<void> Machine::check_vcpu_count(const VmConfig& cfg) const {
    if (cfg.cpus > hv_->max_vcpus())
        return Error{"--cpus " + std::to_string(cfg.cpus) + ": this host's " + hv_->name() + " backend allows at most " +
                     std::to_string(hv_->max_vcpus())};
    return {};
}

// Over memory_ (already there): guest RAM exists before the VM so that the
// VM is created with it mapped (see hv::VmOptions::ram: later, a slot costs
// a grace period).
Result<void> Machine::create_vm(const VmConfig& cfg) {
    hv::VmOptions vm_options(cfg.cpus);
    for (const auto& r : memory_.regions()) vm_options.ram.push_back({r.gpa, r.size, r.host});
    POPEK_ASSIGN_OR_RETURN(vm_, hv_->create_vm(vm_options));
    // A backend that caches decoded guest code must see the devices' writes.
    if (hv_->name() == "emu") {
        hv::Vm* vm = vm_.get();
        memory_.set_write_observer([vm](uint64_t gpa, uint64_t len) { vm->host_wrote(gpa, len); });
    }
    // Where the backend can batch them, POST-code writes stop costing a trip to user space.
    (void)vm_->batch_port_writes(x86::kPortPostCode, 1);
    return {};
}

Machine::~Machine() {
    end_migration();
    stop_vcpus();
    if (events_) events_->stop();
}

Result<void> Machine::build(const VmConfig& cfg, const LoadedSnapshot* snapshot) {
    cfg_ = cfg;
    // Read user files first: their errors are the likeliest and cheapest.
    std::vector<uint8_t> kernel, initrd;
    if (snapshot == nullptr) {
        POPEK_ASSIGN_OR_RETURN(kernel, base::read_file(cfg.kernel_path, "kernel", cfg.memory_bytes));
        if (kernel.empty()) return Error{"kernel '" + cfg.kernel_path + "' is empty"};
        if (!cfg.initrd_path.empty()) {
            POPEK_ASSIGN_OR_RETURN(initrd, base::read_file(cfg.initrd_path, "initrd", cfg.memory_bytes));
        }
    }

    // A migration's VM exists already (prepare_migration), over its RAM.
    if (!vm_) {
        POPEK_ASSIGN_OR_RETURN(hv_, open_hypervisor(cfg, snapshot != nullptr ? &snapshot->vm.backend : nullptr));
        POPEK_TRY(check_vcpu_count(cfg));
        auto ranges = x86::ram_ranges(cfg.memory_bytes);
        if (snapshot == nullptr) {
            POPEK_ASSIGN_OR_RETURN(memory_, memory::GuestMemory::create(ranges));
        } else {
            const std::string path = snapshot->dir + "/" + kMemoryFileName;
            auto mem = snapshot->eager ? migration::load_memory_eager(ranges, path, snapshot->memory)
                                       : migration::load_memory_lazy(ranges, path, snapshot->memory);
            if (!mem) return mem.error();
            memory_ = std::move(mem).value();
        }
        POPEK_TRY(create_vm(cfg));
    }
    if (snapshot != nullptr) POPEK_TRY(vm_->restore_state(snapshot->vm));

    POPEK_TRY(snapshot == nullptr ? load_and_build(cfg, kernel, initrd) : restore_and_build(*snapshot));
    // vCPU state (kvmclock MSRs among it) may point into guest RAM: after mapping.
    if (snapshot != nullptr) POPEK_TRY(restore_vcpu_states(*snapshot));
    return {};
}

Result<void> Machine::load_and_build(const VmConfig& cfg, std::span<const uint8_t> kernel,
                                     std::span<const uint8_t> initrd) {
    POPEK_ASSIGN_OR_RETURN(uint64_t rsdp, x86::write_acpi_tables(memory_, x86::AcpiConfig{cfg.cpus}));
    x86::BootConfig boot_cfg{kernel, initrd, cfg.cmdline, rsdp};
    auto boot = x86::load_kernel(memory_, boot_cfg);
    if (!boot) return boot.error().context("kernel '" + cfg.kernel_path + "'");

    POPEK_ASSIGN_OR_RETURN(console_, open_console(cfg));
    POPEK_TRY(build_devices(nullptr));

    hv::Regs regs{};
    hv::Sregs sregs{};
    x86::boot_cpu_state(*boot, regs, sregs);
    return build_vcpus(&regs, &sregs);
}

// `saved`: the snapshot's device states (restore), or null (fresh boot).
Result<void> Machine::build_devices(const SavedDevices* saved) {
    interrupts_ = std::make_unique<VmInterruptManager>(*vm_);
    devices::IrqLine* com1_irq = &interrupts_->legacy_line(x86::kIrqCom1);
    if (saved != nullptr) {
        serial_ = std::make_unique<devices::Serial>(console_.out_fd, com1_irq, saved->com1);
        i8042_ = std::make_unique<devices::I8042>(*this, saved->i8042);
        post_code_ = std::make_unique<devices::PostCode>(saved->post_code);
        ged_ = std::make_unique<devices::Ged>(&interrupts_->legacy_line(x86::kGsiGed), saved->ged);
    } else {
        serial_ = std::make_unique<devices::Serial>(console_.out_fd, com1_irq);
        i8042_ = std::make_unique<devices::I8042>(*this);
        post_code_ = std::make_unique<devices::PostCode>();
        ged_ = std::make_unique<devices::Ged>(&interrupts_->legacy_line(x86::kGsiGed));
    }
    POPEK_TRY(mmio_.insert(x86::kGedStart, x86::kGedSize, ged_.get(), "ged"));
    debug_exit_ = std::make_unique<devices::DebugExit>(*this);
    acpi_power_ = std::make_unique<devices::AcpiPower>(*this, x86::kAcpiS5SleepType, x86::kAcpiSleepEnable);

    POPEK_TRY(pio_.insert(x86::kPortCom1, 8, serial_.get(), "com1"));
    POPEK_TRY(pio_.insert(x86::kPortI8042Data, 5, i8042_.get(), "i8042"));
    POPEK_TRY(pio_.insert(x86::kPortDebugExit, 4, debug_exit_.get(), "debug-exit"));
    POPEK_TRY(pio_.insert(x86::kPortAcpiSleepControl, 2, acpi_power_.get(), "acpi-power"));
    POPEK_TRY(pio_.insert(x86::kPortPostCode, 1, post_code_.get(), "post-code"));
    POPEK_TRY(build_pci(saved));

    POPEK_ASSIGN_OR_RETURN(events_, base::EventLoop::create("popek-events"));
    if (console_.in_fd >= 0) {
        devices::Serial* serial = serial_.get();
        int in = console_.in_fd;
        // A console input that epoll cannot watch (a regular file, /dev/null) is simply not read.
        (void)events_->add(in, EPOLLIN, [serial, in](uint32_t) {
            uint8_t buf[64];
            ssize_t n = ::read(in, buf, sizeof buf);
            if (n <= 0) return n < 0 && (errno == EAGAIN || errno == EINTR);
            serial->receive(std::span<const uint8_t>(buf, static_cast<size_t>(n)));
            return true;
        });
    }
    return {};
}

// `regs`/`sregs`: the BSP's boot state; null when a snapshot's states follow.
Result<void> Machine::build_vcpus(const hv::Regs* regs, const hv::Sregs* sregs) {
    POPEK_ASSIGN_OR_RETURN(auto supported, hv_->supported_cpuid());
    // MISC_ENABLE: fast strings; MTRRdefType: MTRRs on, write-back by default.
    const hv::MsrEntry msrs[] = {{0x1a0, 1}, {0x2ff, (1u << 11) | 6}};
    for (uint32_t i = 0; i < cfg_.cpus; i++) {
        POPEK_ASSIGN_OR_RETURN(auto vcpu, vm_->create_vcpu(i));
        auto cpuid = x86::cpuid_policy(supported, x86::CpuidConfig{i, cfg_.cpus, hv_->tsc_khz()});
        POPEK_TRY(vcpu->set_cpuid(cpuid));
        POPEK_TRY(vcpu->set_msrs(msrs));
        POPEK_TRY(vcpu->reset_fpu());
        POPEK_TRY(vcpu->setup_lapic_lints());
        if (i == 0 && regs != nullptr && sregs != nullptr) {
            POPEK_TRY(vcpu->set_sregs(*sregs));
            POPEK_TRY(vcpu->set_regs(*regs));
        }
        vcpus_.push_back(std::make_unique<VcpuThread>(std::move(vcpu), pio_, mmio_, *this));
    }
    return {};
}

void Machine::request_exit(devices::GuestExit exit) {
    {
        std::lock_guard lock(exit_mu_);
        if (exit_) return;
        exit_ = std::move(exit);
    }
    exit_cv_.notify_all();
    // Take every vCPU off the CPU now, so the guest does nothing after it asked to stop.
    for (auto& v : vcpus_) v->pause();
}

void Machine::stop_vcpus() {
    for (auto& v : vcpus_) v->stop();
    for (auto& v : vcpus_) v->wait_for(VcpuState::Stopped);
}

Result<devices::GuestExit> Machine::run() {
    // SIGINT/SIGTERM/SIGHUP end the VM cleanly; threads started from here on
    // inherit the blocked mask, and the signals arrive through a signalfd.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGRTMIN);  // only vCPU threads take the kick signal
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    sigdelset(&set, SIGRTMIN);
    base::UniqueFd sfd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!sfd.valid()) return Error::from_errno("signalfd");
    int sig_fd = sfd.get();
    POPEK_TRY(events_->add(sig_fd, EPOLLIN, [this, sig_fd](uint32_t) {
        signalfd_siginfo si{};
        if (::read(sig_fd, &si, sizeof si) == sizeof si)
            request_exit({devices::GuestExitKind::Terminated, si.ssi_signo,
                          "stopped by signal " + std::to_string(si.ssi_signo)});
        return true;
    }));
    events_->start();
    for (auto* v : virtio_) v->start();
    {
        std::lock_guard lock(control_mu_);
        for (auto& v : vcpus_) v->start();
        for (auto& v : vcpus_) v->resume();
        run_state_ = RunState::Running;
        started_ = std::chrono::steady_clock::now();
    }

    {
        std::unique_lock lock(exit_mu_);
        exit_cv_.wait(lock, [&] { return exit_.has_value(); });
    }
    if (exit_->kind == devices::GuestExitKind::Terminated && std::getenv("POPEK_DEBUG_DUMP") != nullptr) {
        for (auto& v : vcpus_) {
            (void)v->run_on_vcpu([](hv::Vcpu& vcpu) -> Result<void> {
                std::fprintf(stderr, "vCPU %u:\n%s\n", vcpu.index(), dump_registers(vcpu).c_str());
                return {};
            });
        }
    }
    end_migration();  // before the lock: its thread takes it to resume the VM
    std::lock_guard lock(control_mu_);  // a command in progress finishes first
    run_state_ = RunState::Stopping;
    stop_vcpus();
    events_->stop();
    return *exit_;
}

}  // namespace popek::vmm
