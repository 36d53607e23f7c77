#include <fcntl.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>
#include <csignal>

#include "hv/kvm/kvm.hpp"

namespace popek::hv::kvm {

using base::Error;
using base::Result;

int xioctl(int fd, unsigned long request, const void* arg) {
    int r;
    do {
        r = ::ioctl(fd, request, arg);
    } while (r < 0 && errno == EINTR);
    return r;
}

int xioctl(int fd, unsigned long request, unsigned long arg) {
    int r;
    do {
        r = ::ioctl(fd, request, arg);
    } while (r < 0 && errno == EINTR);
    return r;
}

int kick_signal() { return SIGRTMIN; }

static void on_kick(int) {}

// KVM_GET_MSR_INDEX_LIST: the MSRs KVM can save and restore. Asked with no
// room first, KVM answers E2BIG and the count.
static Result<std::vector<uint32_t>> msr_index_list(int kvm) {
    std::vector<uint32_t> buf(1, 0);  // [0] is nmsrs, then the indices
    for (int attempt = 0; attempt < 4; attempt++) {
        if (xioctl(kvm, kKvmGetMsrIndexList, buf.data()) == 0) {
            size_t n = buf[0] < buf.size() ? buf[0] : buf.size() - 1;
            std::vector<uint32_t> indices(buf.begin() + 1, buf.begin() + 1 + static_cast<std::ptrdiff_t>(n));
            constexpr uint32_t kMsrTsc = 0x10;  // always in KVM's list; the TSC must travel
            if (std::find(indices.begin(), indices.end(), kMsrTsc) == indices.end()) indices.push_back(kMsrTsc);
            return indices;
        }
        if (errno != E2BIG || buf[0] > 65536) return Error::from_errno("KVM_GET_MSR_INDEX_LIST");
        uint32_t n = buf[0];
        buf.assign(size_t{n} + 1, 0);
        buf[0] = n;
    }
    return Error{"KVM_GET_MSR_INDEX_LIST: the list kept growing"};
}

Result<std::unique_ptr<Hypervisor>> KvmHypervisor::open(const std::string& device) {
    auto hv = std::make_unique<KvmHypervisor>();
    hv->kvm_ = base::UniqueFd(::open(device.c_str(), O_RDWR | O_CLOEXEC));
    if (!hv->kvm_.valid()) {
        int err = errno;
        return Error{"cannot open " + device + ": " + std::strerror(err) +
                         " (KVM is needed: is the kvm module loaded and are you allowed to use it?)",
                     err};
    }
    int fd = hv->kvm_.get();
    int api = xioctl(fd, KVM_GET_API_VERSION, 0UL);
    if (api != KVM_API_VERSION)
        return Error{device + " speaks KVM API " + std::to_string(api) + ", popek needs " +
                     std::to_string(KVM_API_VERSION)};
    for (auto [cap, name] : {std::pair{KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
                             std::pair{KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
                             std::pair{KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
                             std::pair{KVM_CAP_PIT2, "KVM_CAP_PIT2"},
                             std::pair{KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"}}) {
        if (xioctl(fd, KVM_CHECK_EXTENSION, static_cast<unsigned long>(cap)) <= 0)
            return Error{std::string("KVM lacks ") + name + ", which popek needs"};
    }
    int max = xioctl(fd, KVM_CHECK_EXTENSION, static_cast<unsigned long>(KVM_CAP_MAX_VCPUS));
    if (max <= 0) max = xioctl(fd, KVM_CHECK_EXTENSION, static_cast<unsigned long>(KVM_CAP_NR_VCPUS));
    hv->max_vcpus_ = max > 0 ? static_cast<uint32_t>(max) : 1;
    int run_size = xioctl(fd, KVM_GET_VCPU_MMAP_SIZE, 0UL);
    if (run_size <= 0) return Error::from_errno("KVM_GET_VCPU_MMAP_SIZE");
    hv->run_size_ = static_cast<size_t>(run_size);
    POPEK_ASSIGN_OR_RETURN(hv->msr_indices_, msr_index_list(fd));
    struct sigaction sa {};
    sa.sa_handler = on_kick;
    sigemptyset(&sa.sa_mask);
    if (::sigaction(kick_signal(), &sa, nullptr) != 0) return Error::from_errno("sigaction(kick signal)");
    return std::unique_ptr<Hypervisor>(std::move(hv));
}

Result<std::vector<CpuidEntry>> KvmHypervisor::supported_cpuid() {
    uint32_t n = 256;
    for (;;) {
        KvmVarBuffer<kvm_cpuid_entry2> buf(n);
        if (xioctl(kvm_.get(), kKvmGetSupportedCpuid, buf.data()) < 0) {
            if (errno == E2BIG && n < 4096) {
                n *= 2;
                continue;
            }
            return Error::from_errno("KVM_GET_SUPPORTED_CPUID");
        }
        std::vector<CpuidEntry> out;
        uint32_t got = buf.header()->count;
        out.reserve(got);
        for (uint32_t i = 0; i < got; i++) {
            const auto& e = buf.entries()[i];
            out.push_back(CpuidEntry{e.function, e.index,
                                     (e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) != 0,
                                     e.eax, e.ebx, e.ecx, e.edx});
        }
        return out;
    }
}

Result<std::unique_ptr<Vm>> KvmHypervisor::create_vm(const VmOptions& opts) {
    if (opts.vcpu_count == 0 || opts.vcpu_count > max_vcpus_)
        return Error{"KVM supports 1 to " + std::to_string(max_vcpus_) + " vCPUs, asked for " +
                     std::to_string(opts.vcpu_count)};
    int vmfd = xioctl(kvm_.get(), KVM_CREATE_VM, 0UL);
    if (vmfd < 0) return Error::from_errno("KVM_CREATE_VM");
    auto vm = std::make_unique<KvmVm>(base::UniqueFd(vmfd), run_size_, msr_indices_);
    // Slots first: measured under KVM-PVM, the first slot costs ~0.1 ms when
    // it precedes KVM_CREATE_IRQCHIP/KVM_CREATE_PIT2 and 4-7 ms after them.
    for (uint32_t slot = 0; slot < opts.ram.size(); slot++) {
        const RamMapping& r = opts.ram[slot];
        POPEK_TRY(vm->map_memory(slot, r.gpa, r.size, r.host));
    }
    POPEK_TRY(vm->init());
    int khz = xioctl(vmfd, KVM_GET_TSC_KHZ, 0UL);
    if (khz > 0) tsc_khz_ = static_cast<uint32_t>(khz);
    return std::unique_ptr<Vm>(std::move(vm));
}

}  // namespace popek::hv::kvm

namespace popek::hv {
base::Result<std::unique_ptr<Hypervisor>> open_kvm(const std::string& device) {
    return kvm::KvmHypervisor::open(device);
}
}  // namespace popek::hv
