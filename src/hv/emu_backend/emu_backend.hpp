// The emulation engine as an hv backend: hv::Hypervisor/Vm/Vcpu over
// hv::emu::Engine, with the platform's interrupt controllers and timers
// (platform.hpp) inside the backend, as KVM keeps them in the kernel. Only
// files in hv/emu_backend include this header.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <vector>

#include "base/unique_fd.hpp"
#include "hv/emu/engine.hpp"
#include "hv/emu/phys_memory.hpp"
#include "hv/emu_backend/platform.hpp"
#include "hv/hypervisor.hpp"

namespace popek::hv::emu {

inline constexpr const char* kBackendName = "emu";

// Host TSC ticks per second, measured once against CLOCK_MONOTONIC.
uint64_t host_tsc_hz();
// Host monotonic time in nanoseconds.
uint64_t now_ns();
inline constexpr uint32_t kMaxEmuVcpus = 32;

class EmuHypervisor final : public Hypervisor {
public:
    explicit EmuHypervisor(uint32_t tsc_khz) : tsc_khz_(tsc_khz) {}
    [[nodiscard]] std::string name() const override { return kBackendName; }
    [[nodiscard]] uint32_t max_vcpus() const override { return kMaxEmuVcpus; }
    base::Result<std::vector<CpuidEntry>> supported_cpuid() override;
    [[nodiscard]] uint32_t tsc_khz() const override { return tsc_khz_; }
    base::Result<std::unique_ptr<Vm>> create_vm(const VmOptions&) override;

private:
    uint32_t tsc_khz_;
};

class EmuVcpu;

// Stops every vCPU's engine at its next block boundary while the VM changes
// something the engines cache (the dirty log's write permissions): vCPUs
// hold it shared while their engine runs; the VM takes it exclusively.
class EngineBarrier {
public:
    // vCPU side: false if a stop is requested (wait_stop_over first).
    void enter_shared() {
        for (;;) {
            mu_.lock_shared();
            if (!stopping_.load(std::memory_order_acquire)) return;
            mu_.unlock_shared();
            std::unique_lock lock(wait_mu_);
            cv_.wait(lock, [&] { return !stopping_.load(std::memory_order_acquire); });
        }
    }
    void leave_shared() { mu_.unlock_shared(); }
    // VM side: call stop(), kick every engine, then the work, then resume().
    void stop() {
        stopping_.store(true, std::memory_order_release);
    }
    void lock() { mu_.lock(); }
    void resume() {
        mu_.unlock();
        {
            std::lock_guard lock(wait_mu_);
            stopping_.store(false, std::memory_order_release);
        }
        cv_.notify_all();
    }

private:
    std::shared_mutex mu_;
    std::atomic<bool> stopping_{false};
    std::mutex wait_mu_;
    std::condition_variable cv_;
};

class EmuVm final : public Vm {
public:
    EmuVm(uint32_t vcpu_count, uint64_t tsc_hz);
    ~EmuVm() override;
    base::Result<void> map_memory(uint32_t slot, uint64_t gpa, uint64_t size, uint8_t* host) override;
    base::Result<std::unique_ptr<Vcpu>> create_vcpu(uint32_t index) override;
    base::Result<void> set_irq_line(uint32_t gsi, bool level) override;
    base::Result<void> batch_port_writes(uint16_t port, uint16_t len) override;
    base::Result<void> add_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio) override;
    base::Result<void> remove_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio) override;
    base::Result<uint32_t> allocate_msi_gsi() override;
    base::Result<void> set_msi_route(uint32_t gsi, uint64_t address, uint32_t data) override;
    base::Result<void> add_irqfd(int eventfd, uint32_t gsi) override;
    base::Result<void> remove_irqfd(int eventfd, uint32_t gsi) override;
    base::Result<void> start_dirty_log() override;
    base::Result<std::vector<SlotDirtyLog>> fetch_dirty_log() override;
    base::Result<void> stop_dirty_log() override;
    void host_wrote(uint64_t gpa, uint64_t len) override;
    base::Result<VmState> save_state() override;
    base::Result<void> restore_state(const VmState&) override;

    // ---- for EmuVcpu -------------------------------------------------------
    PhysMemory& memory() { return mem_; }
    Platform& platform() { return *platform_; }
    EngineBarrier& barrier() { return barrier_; }
    [[nodiscard]] uint64_t tsc_hz() const { return tsc_hz_; }
    // The platform's clock (timers): host monotonic time, shifted on restore
    // so that it goes on from the saved VM's clock.
    [[nodiscard]] uint64_t guest_ns() const { return now_ns() + clock_offset_.load(std::memory_order_relaxed); }
    // The generation of the engines' cached write permissions: a vCPU whose
    // engine saw an older one flushes its TLB before running.
    [[nodiscard]] uint64_t tlb_generation() const { return tlb_gen_.load(std::memory_order_acquire); }
    // A guest write matching an ioeventfd signals it (true: handled).
    bool signal_ioeventfd(uint64_t addr, uint32_t size, bool pio);
    [[nodiscard]] bool batched_port(uint16_t port) const;
    // vCPU `from`'s engine wrote code on `page`: the others drop their blocks.
    void broadcast_code_write(uint32_t from, uint64_t page);
    void vcpu_gone(EmuVcpu* v);

private:
    struct IoEventFd {
        int fd;
        uint64_t addr;
        uint32_t len;
        bool pio;
    };
    struct Slot {
        uint32_t slot;
        uint64_t gpa, size;
    };
    void irqfd_thread_main();
    void kick_all();
    base::Result<void> inject_gsi(uint32_t gsi);

    uint32_t vcpu_count_;
    uint64_t tsc_hz_;
    PhysMemory mem_{nullptr};
    std::unique_ptr<Platform> platform_;
    EngineBarrier barrier_;
    std::atomic<uint64_t> tlb_gen_{0};
    std::atomic<uint64_t> clock_offset_{0};

    std::mutex mu_;  // slots, vCPUs, ioeventfds, batched ports, routes, irqfds
    std::vector<Slot> slots_;
    std::vector<EmuVcpu*> vcpus_;
    std::vector<IoEventFd> ioeventfds_;
    std::atomic<bool> have_ioeventfds_{false};
    std::vector<std::pair<uint16_t, uint16_t>> batched_ports_;  // (first, len), fixed once vCPUs exist
    std::map<uint32_t, std::pair<uint64_t, uint32_t>> msi_routes_;  // gsi -> (address, data)
    uint32_t next_msi_gsi_ = kFirstMsiGsi;
    std::map<int, uint32_t> irqfds_;  // eventfd -> gsi
    base::UniqueFd epoll_;
    base::UniqueFd stop_fd_;
    std::thread irqfd_thread_;
    bool dirty_logging_ = false;

    static constexpr uint32_t kFirstMsiGsi = 24;
    static constexpr uint32_t kMaxGsi = 1024;
};

class EmuVcpu final : public Vcpu {
public:
    EmuVcpu(EmuVm& vm, uint32_t index);
    ~EmuVcpu() override;
    [[nodiscard]] uint32_t index() const override { return index_; }
    base::Result<VcpuExit> run() override;
    void request_exit() override;
    void clear_exit_request() override;
    base::Result<Regs> get_regs() override;
    base::Result<void> set_regs(const Regs&) override;
    base::Result<Sregs> get_sregs() override;
    base::Result<void> set_sregs(const Sregs&) override;
    base::Result<void> set_cpuid(std::span<const CpuidEntry>) override;
    base::Result<void> set_msrs(std::span<const MsrEntry>) override;
    base::Result<void> get_msrs(std::span<MsrEntry>) override;
    base::Result<void> reset_fpu() override;
    base::Result<void> setup_lapic_lints() override;
    void drain_batched_writes(const std::function<void(const VcpuExit&)>& sink) override;
    base::Result<VcpuState> save_state() override;
    base::Result<void> restore_state(const VcpuState&) override;

    // ---- for EmuVm (any thread) ---------------------------------------------
    // Wakes the vCPU from HLT and makes its engine look at the platform.
    void wake();
    // Stops the engine at its next block boundary without an exit to the VMM.
    void kick() { engine_.request_exit(); }
    void queue_code_drop(uint64_t page);

private:
    // What run() does with an engine exit it handles itself.
    enum class Handled { No, Yes };
    Handled handle_internally(RunExit& e);
    void sync_with_vm();
    void sync_dirty_generation();  // flush the TLB if the dirty log changed
    void sync_apic_base();
    void sync_tsc_deadline();
    uint64_t tick_timers(uint64_t now);
    void wait_for_event(bool halted);
    bool handle_startup();
    [[nodiscard]] bool vmm_wants_exit() const { return exit_requested_.load(std::memory_order_acquire); }

    EmuVm& vm_;
    uint32_t index_;
    Engine engine_;
    std::unique_ptr<CpuInterrupts> interrupts_;
    std::atomic<bool> exit_requested_{false};
    uint64_t tlb_gen_seen_ = 0;
    uint64_t apic_base_seen_ = 0;
    uint64_t tsc_deadline_seen_ = 0;

    std::mutex wake_mu_;
    std::condition_variable wake_cv_;
    bool wake_pending_ = false;

    std::mutex drop_mu_;
    std::vector<uint64_t> code_drops_;
    std::atomic<bool> have_code_drops_{false};

    struct Batched {
        uint16_t port;
        uint8_t size;
        std::array<uint8_t, 8> data;
    };
    std::vector<Batched> batched_;  // port writes not reported yet
    // The CPU waits for a start-up IPI (an AP before start-up, or after INIT).
    bool wait_for_sipi_ = false;
    uint64_t next_timer_ns_ = 0;  // earliest deadline of this CPU's and the VM's timers
};

}  // namespace popek::hv::emu
