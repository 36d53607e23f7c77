// The hypervisor interface: what the VMM needs from a CPU-virtualization
// backend. KVM implements it in hv/kvm; an emulation engine will implement it
// in hv/emu. Nothing outside a backend sees its ioctls or structures.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/result.hpp"
#include "hv/x86_state.hpp"

namespace popek::hv {

// Why Vcpu::run() returned.
enum class ExitKind {
    Io,            // port I/O: port, size, count, is_write, data
    Mmio,          // MMIO to an address that is not RAM: addr, size, is_write, data
    Interrupted,   // request_exit() or a signal; nothing to emulate
    Halt,          // HLT with no in-kernel irqchip to wait for interrupts
    Shutdown,      // triple fault: the guest is dead
    Reset,         // the guest asked for a reset through the hypervisor
    PowerOff,      // the guest asked for power-off through the hypervisor
    InternalError, // the backend could not emulate something (detail in `detail`)
};

struct VcpuExit {
    ExitKind kind = ExitKind::Interrupted;
    uint64_t addr = 0;      // port number or guest-physical MMIO address
    uint32_t size = 0;      // bytes per access (1, 2, 4 or 8)
    uint32_t count = 1;     // repetitions (string port I/O)
    bool is_write = false;
    uint8_t* data = nullptr;  // size*count bytes owned by the backend; reads fill it
    uint64_t detail = 0;    // backend-specific code for errors, for reports
};

class Vcpu {
public:
    virtual ~Vcpu() = default;
    [[nodiscard]] virtual uint32_t index() const = 0;

    // Runs guest code until something needs the VMM. Call on the vCPU's own thread.
    virtual base::Result<VcpuExit> run() = 0;
    // Thread-safe: makes the current or the next run() return ExitKind::Interrupted soon.
    virtual void request_exit() = 0;
    // Clears a pending request_exit() (the vCPU thread calls it once it has seen it).
    virtual void clear_exit_request() = 0;

    virtual base::Result<Regs> get_regs() = 0;
    virtual base::Result<void> set_regs(const Regs&) = 0;
    virtual base::Result<Sregs> get_sregs() = 0;
    virtual base::Result<void> set_sregs(const Sregs&) = 0;
    virtual base::Result<void> set_cpuid(std::span<const CpuidEntry>) = 0;
    virtual base::Result<void> set_msrs(std::span<const MsrEntry>) = 0;
    // Reads the MSRs whose indices are given in `msrs`, filling in the values.
    virtual base::Result<void> get_msrs(std::span<MsrEntry> msrs) = 0;
    // Architectural reset state for the FPU/SSE unit (FCW 0x37f, MXCSR 0x1f80).
    virtual base::Result<void> reset_fpu() = 0;
    // Local APIC LINT0 as ExtINT and LINT1 as NMI, as firmware leaves it.
    virtual base::Result<void> setup_lapic_lints() = 0;
    // Hands `sink` the port writes the backend batched (see Vm::batch_port_writes),
    // oldest first, as Io exits. Call after every run() before handling its exit,
    // so the guest's writes reach devices in order.
    virtual void drain_batched_writes(const std::function<void(const VcpuExit&)>& sink) = 0;

    // The vCPU's whole state (snapshots, migration). Call on the vCPU's own
    // thread while it is not running. restore_state() on a fresh vCPU of a VM
    // with the same configuration (the same CPUID set first; the VM's state
    // restored before) makes it continue where save_state() was. CPUID is the
    // VMM's policy, not vCPU state: it is not in VcpuState.
    virtual base::Result<VcpuState> save_state() = 0;
    virtual base::Result<void> restore_state(const VcpuState&) = 0;
};

// The pages of one memory slot the guest wrote since the last fetch: bit i
// of `bitmap` (64 pages per word) is the page at gpa + i * 4096.
struct SlotDirtyLog {
    uint32_t slot = 0;
    uint64_t gpa = 0;
    uint64_t pages = 0;
    std::vector<uint64_t> bitmap;
};

// Guest RAM the VM gets at creation, slot i for ram[i].
struct RamMapping {
    uint64_t gpa = 0;
    uint64_t size = 0;
    uint8_t* host = nullptr;
};

struct VmOptions {
    explicit VmOptions(uint32_t vcpus = 1, std::vector<RamMapping> mappings = {})
        : vcpu_count(vcpus), ram(std::move(mappings)) {}

    uint32_t vcpu_count = 1;
    // Mapped as the VM is created, before its interrupt controllers: on some
    // hosts (KVM under KVM-PVM) a memory slot added after them waits
    // milliseconds for a grace period, one added first does not.
    std::vector<RamMapping> ram;
};

class Vm {
public:
    virtual ~Vm() = default;
    // Makes [gpa, gpa+size) guest RAM backed by host memory at `host`.
    virtual base::Result<void> map_memory(uint32_t slot, uint64_t gpa, uint64_t size, uint8_t* host) = 0;
    virtual base::Result<std::unique_ptr<Vcpu>> create_vcpu(uint32_t index) = 0;
    // Drives an interrupt line of the platform's interrupt controller.
    virtual base::Result<void> set_irq_line(uint32_t gsi, bool level) = 0;
    // Port writes in [port, port+len) need no answer (a POST-code port, say):
    // the backend may queue them without leaving the guest and deliver them
    // later through Vcpu::drain_batched_writes. Call before creating vCPUs.
    virtual base::Result<void> batch_port_writes(uint16_t port, uint16_t len) = 0;

    // Guest writes to [addr, addr+len) (port I/O if `pio`, else MMIO) signal
    // `eventfd` inside the hypervisor instead of exiting to the VMM: the
    // virtio queue-notification path.
    virtual base::Result<void> add_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio) = 0;
    virtual base::Result<void> remove_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio) = 0;

    // Message-signalled interrupts: a GSI routed to an MSI address/data pair,
    // raised by writing to an eventfd bound to it (irqfd).
    virtual base::Result<uint32_t> allocate_msi_gsi() = 0;
    virtual base::Result<void> set_msi_route(uint32_t gsi, uint64_t address, uint32_t data) = 0;
    virtual base::Result<void> add_irqfd(int eventfd, uint32_t gsi) = 0;
    virtual base::Result<void> remove_irqfd(int eventfd, uint32_t gsi) = 0;

    // Dirty page logging (live migration). start_dirty_log() makes every
    // mapped slot log the guest's writes; fetch_dirty_log() returns, per
    // slot, the pages written since the previous fetch (or since the start)
    // and clears them — clear-on-read, with the pages write-protected again,
    // so a write after the fetch shows up in the next one. Only writes
    // through the guest's own accesses are logged: host code writing guest
    // RAM must be tracked by the VMM (memory::GuestMemory::mark_dirty).
    virtual base::Result<void> start_dirty_log() = 0;
    virtual base::Result<std::vector<SlotDirtyLog>> fetch_dirty_log() = 0;
    virtual base::Result<void> stop_dirty_log() = 0;

    // Host code (a device's DMA, the loader) wrote guest RAM. A backend that
    // caches decoded guest code drops what was there; KVM needs nothing.
    virtual void host_wrote(uint64_t gpa, uint64_t len) {
        (void)gpa;
        (void)len;
    }

    // Interrupt controllers, PIT and clock (snapshots, migration); call with
    // every vCPU paused. Restore before restoring the vCPUs' states.
    virtual base::Result<VmState> save_state() = 0;
    virtual base::Result<void> restore_state(const VmState&) = 0;
};

class Hypervisor {
public:
    virtual ~Hypervisor() = default;
    [[nodiscard]] virtual std::string name() const = 0;
    [[nodiscard]] virtual uint32_t max_vcpus() const = 0;
    // The CPUID leaves this backend can offer a guest (before popek's policy).
    virtual base::Result<std::vector<CpuidEntry>> supported_cpuid() = 0;
    // Guest TSC frequency in kHz, 0 if unknown.
    [[nodiscard]] virtual uint32_t tsc_khz() const = 0;
    virtual base::Result<std::unique_ptr<Vm>> create_vm(const VmOptions&) = 0;
};

// The KVM backend, opened on `device` (normally /dev/kvm).
base::Result<std::unique_ptr<Hypervisor>> open_kvm(const std::string& device);
// The emulation backend (hv/emu_backend): the x86-64 engine, no /dev/kvm needed.
base::Result<std::unique_ptr<Hypervisor>> open_emu();

}  // namespace popek::hv
