#include <sys/mman.h>

#include <cstdio>

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

    auto has = [fd](int cap) { return xioctl(fd, KVM_CHECK_EXTENSION, static_cast<unsigned long>(cap)); };
    KvmStateSupport& st = *state_support_;
    if (has(KVM_CAP_XSAVE) > 0) {
        int size2 = has(KVM_CAP_XSAVE2);  // asked of the VM: its size depends on the VM's features
        st.xsave2 = size2 > 0;
        st.xsave_size = size2 > 0 ? static_cast<size_t>(size2) : sizeof(KvmXsaveRegion);
    }
    st.xcrs = has(KVM_CAP_XCRS) > 0;
    st.debugregs = has(KVM_CAP_DEBUGREGS) > 0;
    st.vcpu_events = has(KVM_CAP_VCPU_EVENTS) > 0;
    st.smm = has(KVM_CAP_X86_SMM) > 0;
    return {};
}

Result<void> KvmVm::map_memory(uint32_t slot, uint64_t gpa, uint64_t size, uint8_t* host) {
    std::lock_guard lock(slots_mu_);
    const Slot s{slot, gpa, size, host};
    POPEK_TRY(set_slot(s, dirty_logging_ ? KVM_MEM_LOG_DIRTY_PAGES : 0u));
    slots_.push_back(s);
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
    return std::unique_ptr<Vcpu>(new KvmVcpu(index, std::move(vcpu_fd), std::move(run).value(), ring_,
                                                state_support_));
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

Result<void> KvmVm::ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio, bool remove) {
    kvm_ioeventfd io{};
    io.addr = addr;
    io.len = len;  // 0: any access width (MMIO only)
    io.fd = eventfd;
    io.flags = (pio ? KVM_IOEVENTFD_FLAG_PIO : 0u) | (remove ? KVM_IOEVENTFD_FLAG_DEASSIGN : 0u);
    if (xioctl(vm_.get(), KVM_IOEVENTFD, &io) < 0) {
        char where[48];
        std::snprintf(where, sizeof where, "%s %#llx", pio ? "port" : "MMIO", static_cast<unsigned long long>(addr));
        return Error::from_errno(std::string("KVM_IOEVENTFD ") + (remove ? "remove " : "") + where);
    }
    return {};
}

Result<void> KvmVm::add_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio) {
    return ioeventfd(eventfd, addr, len, pio, false);
}

Result<void> KvmVm::remove_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio) {
    return ioeventfd(eventfd, addr, len, pio, true);
}

Result<uint32_t> KvmVm::allocate_msi_gsi() {
    std::lock_guard lock(routes_mu_);
    if (next_msi_gsi_ >= kMaxGsi) return Error{"out of interrupt routes (GSIs)"};
    return next_msi_gsi_++;
}

Result<void> KvmVm::set_msi_route(uint32_t gsi, uint64_t address, uint32_t data) {
    std::lock_guard lock(routes_mu_);
    if (gsi < kFirstMsiGsi || gsi >= next_msi_gsi_) return Error{"GSI " + std::to_string(gsi) + " is not an MSI route"};
    msi_routes_[gsi] = {address, data};
    return commit_routes();
}

// KVM replaces the whole routing table on every update, so the table is the
// in-kernel irqchip's default (GSI i -> PIC pin i for i < 16, IOAPIC pin i)
// plus popek's MSI routes.
Result<void> KvmVm::commit_routes() {
    std::vector<kvm_irq_routing_entry> entries;
    for (uint32_t gsi = 0; gsi < kIoapicPins; gsi++) {
        if (gsi < 16 && gsi != 2) {
            kvm_irq_routing_entry pic{};
            pic.gsi = gsi;
            pic.type = KVM_IRQ_ROUTING_IRQCHIP;
            pic.u.irqchip.irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
            pic.u.irqchip.pin = gsi % 8;
            entries.push_back(pic);
        }
        kvm_irq_routing_entry ioapic{};
        ioapic.gsi = gsi;
        ioapic.type = KVM_IRQ_ROUTING_IRQCHIP;
        ioapic.u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
        ioapic.u.irqchip.pin = gsi;
        entries.push_back(ioapic);
    }
    for (const auto& [gsi, msg] : msi_routes_) {
        kvm_irq_routing_entry msi{};
        msi.gsi = gsi;
        msi.type = KVM_IRQ_ROUTING_MSI;
        msi.u.msi.address_lo = static_cast<uint32_t>(msg.first);
        msi.u.msi.address_hi = static_cast<uint32_t>(msg.first >> 32);
        msi.u.msi.data = msg.second;
        entries.push_back(msi);
    }
    KvmVarBuffer<kvm_irq_routing_entry> buf(entries.size());
    for (size_t i = 0; i < entries.size(); i++) buf.entries()[i] = entries[i];
    if (xioctl(vm_.get(), kKvmSetGsiRouting, buf.data()) < 0) return Error::from_errno("KVM_SET_GSI_ROUTING");
    return {};
}

Result<void> KvmVm::add_irqfd(int eventfd, uint32_t gsi) {
    kvm_irqfd irqfd{};
    irqfd.fd = static_cast<uint32_t>(eventfd);
    irqfd.gsi = gsi;
    if (xioctl(vm_.get(), KVM_IRQFD, &irqfd) < 0) return Error::from_errno("KVM_IRQFD gsi " + std::to_string(gsi));
    return {};
}

Result<void> KvmVm::remove_irqfd(int eventfd, uint32_t gsi) {
    kvm_irqfd irqfd{};
    irqfd.fd = static_cast<uint32_t>(eventfd);
    irqfd.gsi = gsi;
    irqfd.flags = KVM_IRQFD_FLAG_DEASSIGN;
    if (xioctl(vm_.get(), KVM_IRQFD, &irqfd) < 0) return Error::from_errno("KVM_IRQFD deassign gsi " + std::to_string(gsi));
    return {};
}

}  // namespace popek::hv::kvm
