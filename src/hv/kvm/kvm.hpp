// KVM backend internals. Only files in hv/kvm include this header.
#pragma once

#include <linux/kvm.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/mmap_region.hpp"
#include "base/unique_fd.hpp"
#include "hv/hypervisor.hpp"

namespace popek::hv::kvm {

// Variable-length KVM structures (kvm_cpuid2, kvm_msrs) are an 8-byte header
// followed by entries. Debian's uapi headers declare their flexible arrays
// with __DECLARE_FLEX_ARRAY, whose empty struct has size 1 in C++: the C++
// sizeof and entry offset are wrong, and so are the ioctl numbers that encode
// the size. popek lays these buffers out itself with the C layout.
struct KvmVarHeader {
    uint32_t count;
    uint32_t padding;
};
static_assert(sizeof(KvmVarHeader) == 8);
constexpr unsigned long kKvmGetSupportedCpuid = _IOWR(KVMIO, 0x05, KvmVarHeader);
constexpr unsigned long kKvmSetCpuid2 = _IOW(KVMIO, 0x90, KvmVarHeader);
constexpr unsigned long kKvmGetMsrs = _IOWR(KVMIO, 0x88, KvmVarHeader);
constexpr unsigned long kKvmSetMsrs = _IOW(KVMIO, 0x89, KvmVarHeader);
constexpr unsigned long kKvmSetGsiRouting = _IOW(KVMIO, 0x6a, KvmVarHeader);

// The same trap, other shapes: kvm_msr_list is a bare u32 count followed by
// u32 indices (no padding), and kvm_xsave is a 4 KiB region followed by a
// flexible array KVM sizes at run time (KVM_CAP_XSAVE2).
struct KvmXsaveRegion {
    uint32_t region[1024];
};
static_assert(sizeof(KvmXsaveRegion) == 4096);
constexpr unsigned long kKvmGetMsrIndexList = _IOWR(KVMIO, 0x02, uint32_t);
constexpr unsigned long kKvmGetXsave = _IOR(KVMIO, 0xa4, KvmXsaveRegion);
constexpr unsigned long kKvmSetXsave = _IOW(KVMIO, 0xa5, KvmXsaveRegion);
constexpr unsigned long kKvmGetXsave2 = _IOR(KVMIO, 0xcf, KvmXsaveRegion);

// What this KVM can save and restore of a vCPU, found once per VM and shared
// by its vCPUs (hv/kvm/kvm_state.cpp uses it).
struct KvmStateSupport {
    std::vector<uint32_t> msr_indices;  // KVM_GET_MSR_INDEX_LIST, IA32_TSC included
    size_t xsave_size = 0;              // bytes KVM_GET/SET_XSAVE(2) move; 0: no KVM_CAP_XSAVE
    bool xsave2 = false;                // KVM_GET_XSAVE2 (needed when xsave_size > 4 KiB)
    bool xcrs = false;                  // KVM_CAP_XCRS
    bool debugregs = false;             // KVM_CAP_DEBUGREGS
    bool vcpu_events = false;           // KVM_CAP_VCPU_EVENTS
    bool smm = false;                   // KVM_CAP_X86_SMM: events carry SMM state
};

// A buffer of a KvmVarHeader and `n` entries of type E.
template <class E>
class KvmVarBuffer {
public:
    explicit KvmVarBuffer(size_t n) : bytes_(sizeof(KvmVarHeader) + n * sizeof(E)) {
        header()->count = static_cast<uint32_t>(n);
    }
    KvmVarHeader* header() { return reinterpret_cast<KvmVarHeader*>(bytes_.data()); }
    E* entries() { return reinterpret_cast<E*>(bytes_.data() + sizeof(KvmVarHeader)); }
    void* data() { return bytes_.data(); }

private:
    std::vector<uint8_t> bytes_;  // operator new aligns to 16, enough for E
};

// ioctl with EINTR retry; returns the ioctl's result or -1 with errno set.
int xioctl(int fd, unsigned long request, const void* arg);
int xioctl(int fd, unsigned long request, unsigned long arg);

class KvmHypervisor final : public Hypervisor {
public:
    static base::Result<std::unique_ptr<Hypervisor>> open(const std::string& device);

    [[nodiscard]] std::string name() const override { return "kvm"; }
    [[nodiscard]] uint32_t max_vcpus() const override { return max_vcpus_; }
    base::Result<std::vector<CpuidEntry>> supported_cpuid() override;
    [[nodiscard]] uint32_t tsc_khz() const override { return tsc_khz_; }
    base::Result<std::unique_ptr<Vm>> create_vm(const VmOptions&) override;

private:
    base::UniqueFd kvm_;
    std::vector<uint32_t> msr_indices_;  // KVM_GET_MSR_INDEX_LIST (a system ioctl)
    uint32_t max_vcpus_ = 1;
    uint32_t tsc_khz_ = 0;
    size_t run_size_ = 0;
};

// KVM's ring of coalesced port/MMIO writes, one per VM, mapped in every
// vCPU's kvm_run area. Also laid out by hand (flexible-array header, as above).
struct CoalescedRing {
    std::mutex mu;         // vCPU threads drain it in turn
    bool enabled = false;  // nothing registered: skip the check on every exit
};
constexpr size_t kCoalescedRingOffset = 2 * 4096;  // KVM_COALESCED_MMIO_PAGE_OFFSET on x86
constexpr uint32_t kCoalescedRingEntries = (4096 - sizeof(KvmVarHeader)) / sizeof(kvm_coalesced_mmio);

class KvmVm final : public Vm {
public:
    KvmVm(base::UniqueFd vm, size_t run_size, std::vector<uint32_t> msr_indices)
        : vm_(std::move(vm)), run_size_(run_size), state_support_(std::make_shared<KvmStateSupport>()) {
        state_support_->msr_indices = std::move(msr_indices);
    }
    base::Result<void> init();

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
    base::Result<VmState> save_state() override;
    base::Result<void> restore_state(const VmState&) override;
    base::Result<void> start_dirty_log() override;
    base::Result<std::vector<SlotDirtyLog>> fetch_dirty_log() override;
    base::Result<void> stop_dirty_log() override;

private:
    struct Slot {
        uint32_t slot;
        uint64_t gpa, size;
        uint8_t* host;
    };
    base::Result<void> set_slot(const Slot& s, uint32_t flags);
    std::mutex slots_mu_;
    std::vector<Slot> slots_;
    bool dirty_logging_ = false;
    base::Result<void> ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio, bool remove);
    base::Result<void> commit_routes();  // KVM_SET_GSI_ROUTING with the whole table

    base::UniqueFd vm_;
    size_t run_size_;
    std::shared_ptr<KvmStateSupport> state_support_;  // completed by init()
    CoalescedRing ring_;
    std::mutex routes_mu_;
    std::map<uint32_t, std::pair<uint64_t, uint32_t>> msi_routes_;  // gsi -> (address, data)
    uint32_t next_msi_gsi_ = kFirstMsiGsi;
    static constexpr uint32_t kIoapicPins = 24;
    static constexpr uint32_t kFirstMsiGsi = 24;
    static constexpr uint32_t kMaxGsi = 1024;
};

class KvmVcpu final : public Vcpu {
public:
    KvmVcpu(uint32_t index, base::UniqueFd fd, base::MmapRegion run, CoalescedRing& ring,
            std::shared_ptr<const KvmStateSupport> state_support)
        : index_(index), fd_(std::move(fd)), run_map_(std::move(run)),
          run_(reinterpret_cast<kvm_run*>(run_map_.data())), ring_(ring),
          state_support_(std::move(state_support)) {}

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

private:
    base::Result<std::vector<MsrEntry>> save_msrs();
    base::Result<void> restore_msrs(std::span<const MsrEntry> msrs);
    base::Result<std::vector<uint8_t>> save_xsave();

    uint32_t index_;
    base::UniqueFd fd_;
    base::MmapRegion run_map_;
    kvm_run* run_;
    CoalescedRing& ring_;
    std::shared_ptr<const KvmStateSupport> state_support_;
    // The MSRs of state_support_->msr_indices that KVM_GET_MSRS reads on this
    // vCPU, learnt by the first save_state() (after the VMM set CPUID).
    std::vector<uint32_t> saved_msrs_;
    bool saved_msrs_known_ = false;
    std::atomic<pthread_t> thread_{};
    std::atomic<bool> thread_known_{false};
    // The last run() returned a port/MMIO exit: KVM finishes that
    // instruction (a read's result into its register) on the next KVM_RUN.
    bool io_pending_ = false;
    base::Result<void> complete_pending_io();
};

// The signal used to kick a vCPU thread out of KVM_RUN (handler does nothing).
int kick_signal();

}  // namespace popek::hv::kvm
