#include <sys/mman.h>

#include "hv/kvm/kvm.hpp"

namespace popek::hv::kvm {

using base::Error;
using base::Result;

// Intel VMX needs a 3-page TSS and an identity-map page somewhere in guest
// physical space that is neither RAM nor MMIO: the top of the 32-bit gap,
// below the BIOS area (unused by popek).
constexpr uint64_t kIdentityMapAddr = 0xfeffc000;
constexpr uint64_t kTssAddr = 0xfeffd000;

Result<void> KvmVm::init() {
    int fd = vm_.get();
    // Both are Intel-only needs; other KVM flavours reject or ignore them.
    uint64_t ident = kIdentityMapAddr;
    (void)xioctl(fd, KVM_SET_IDENTITY_MAP_ADDR, &ident);
    (void)xioctl(fd, KVM_SET_TSS_ADDR, static_cast<unsigned long>(kTssAddr));

    if (xioctl(fd, KVM_CREATE_IRQCHIP, 0UL) < 0) return Error::from_errno("KVM_CREATE_IRQCHIP");
    kvm_pit_config pit{};
    pit.flags = KVM_PIT_SPEAKER_DUMMY;
    if (xioctl(fd, KVM_CREATE_PIT2, &pit) < 0) return Error::from_errno("KVM_CREATE_PIT2");
    return {};
}

Result<void> KvmVm::map_memory(uint32_t slot, uint64_t gpa, uint64_t size, uint8_t* host) {
    kvm_userspace_memory_region r{};
    r.slot = slot;
    r.guest_phys_addr = gpa;
    r.memory_size = size;
    r.userspace_addr = reinterpret_cast<uint64_t>(host);
    if (xioctl(vm_.get(), KVM_SET_USER_MEMORY_REGION, &r) < 0)
        return Error::from_errno("KVM_SET_USER_MEMORY_REGION slot " + std::to_string(slot));
    return {};
}

Result<std::unique_ptr<Vcpu>> KvmVm::create_vcpu(uint32_t index) {
    int fd = xioctl(vm_.get(), KVM_CREATE_VCPU, static_cast<unsigned long>(index));
    if (fd < 0) return Error::from_errno("KVM_CREATE_VCPU " + std::to_string(index));
    base::UniqueFd vcpu_fd(fd);
    auto run = base::MmapRegion::map(run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0, "kvm_run");
    if (!run) return run.error();
    if (ring_.enabled && run->size() < kCoalescedRingOffset + 4096)
        return Error{"KVM's vCPU mapping has no coalesced-write ring page"};
    return std::unique_ptr<Vcpu>(new KvmVcpu(index, std::move(vcpu_fd), std::move(run).value(), ring_));
}

Result<void> KvmVm::set_irq_line(uint32_t gsi, bool level) {
    kvm_irq_level irq{};
    irq.irq = gsi;
    irq.level = level ? 1 : 0;
    if (xioctl(vm_.get(), KVM_IRQ_LINE, &irq) < 0)
        return Error::from_errno("KVM_IRQ_LINE gsi " + std::to_string(gsi));
    return {};
}

Result<void> KvmVm::batch_port_writes(uint16_t port, uint16_t len) {
    if (xioctl(vm_.get(), KVM_CHECK_EXTENSION, static_cast<unsigned long>(KVM_CAP_COALESCED_PIO)) <= 0)
        return Error{"KVM lacks KVM_CAP_COALESCED_PIO"};
    kvm_coalesced_mmio_zone zone{};
    zone.addr = port;
    zone.size = len;
    zone.pio = 1;
    if (xioctl(vm_.get(), KVM_REGISTER_COALESCED_MMIO, &zone) < 0)
        return Error::from_errno("KVM_REGISTER_COALESCED_MMIO (port " + std::to_string(port) + ")");
    ring_.enabled = true;
    return {};
}

}  // namespace popek::hv::kvm
