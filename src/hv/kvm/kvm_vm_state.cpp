// Saving and restoring the VM-wide state KVM keeps: the in-kernel PICs and
// IOAPIC, the PIT and the kvmclock. KvmVm::init creates the irqchip and the
// PIT in every VM, so every VM has all of them to save.
#include <cstring>

#include "hv/kvm/kvm.hpp"

namespace popek::hv::kvm {

using base::Error;
using base::Result;

namespace {

struct IrqchipBlob {
    const char* name;
    uint32_t chip_id;
    size_t size;  // the chip's own struct inside kvm_irqchip's 512-byte union
};
constexpr IrqchipBlob kIrqchips[] = {
    {"pic-master", KVM_IRQCHIP_PIC_MASTER, sizeof(kvm_pic_state)},
    {"pic-slave", KVM_IRQCHIP_PIC_SLAVE, sizeof(kvm_pic_state)},
    {"ioapic", KVM_IRQCHIP_IOAPIC, sizeof(kvm_ioapic_state)},
};
constexpr const char* kPitBlob = "pit";

template <class T>
std::vector<uint8_t> to_bytes(const T& v, size_t size) {
    std::vector<uint8_t> out(size);
    std::memcpy(out.data(), &v, size);
    return out;
}

}  // namespace

Result<VmState> KvmVm::save_state() {
    int fd = vm_.get();
    VmState s;
    s.backend = "kvm";
    for (const auto& chip : kIrqchips) {
        kvm_irqchip k{};
        k.chip_id = chip.chip_id;
        if (xioctl(fd, KVM_GET_IRQCHIP, &k) < 0) return Error::from_errno(std::string("KVM_GET_IRQCHIP ") + chip.name);
        s.blobs.emplace_back(chip.name, to_bytes(k.chip, chip.size));
    }
    kvm_pit_state2 pit{};
    if (xioctl(fd, KVM_GET_PIT2, &pit) < 0) return Error::from_errno("KVM_GET_PIT2");
    s.blobs.emplace_back(kPitBlob, to_bytes(pit, sizeof pit));
    kvm_clock_data clock{};
    if (xioctl(fd, KVM_GET_CLOCK, &clock) < 0) return Error::from_errno("KVM_GET_CLOCK");
    s.clock_ns = clock.clock;
    return s;
}

Result<void> KvmVm::restore_state(const VmState& s) {
    if (s.backend != "kvm")
        return Error{"VM state was saved by the '" + s.backend + "' backend; the kvm backend cannot restore it"};
    // Check everything before changing anything.
    auto find = [&](const std::string& name, size_t size) -> Result<const std::vector<uint8_t>*> {
        const std::vector<uint8_t>* found = nullptr;
        for (const auto& [n, bytes] : s.blobs) {
            if (n != name) continue;
            if (found) return Error{"VM state: blob '" + name + "' appears twice"};
            found = &bytes;
        }
        if (!found) return Error{"VM state: blob '" + name + "' missing"};
        if (found->size() != size)
            return Error{"VM state: blob '" + name + "' is " + std::to_string(found->size()) + " bytes, want " +
                         std::to_string(size)};
        return found;
    };
    for (const auto& [name, bytes] : s.blobs) {
        bool known = name == kPitBlob;
        for (const auto& chip : kIrqchips) known = known || name == chip.name;
        if (!known) return Error{"VM state: unknown blob '" + name + "' for the kvm backend"};
    }
    const std::vector<uint8_t>* chips[std::size(kIrqchips)];
    for (size_t i = 0; i < std::size(kIrqchips); i++) {
        POPEK_ASSIGN_OR_RETURN(chips[i], find(kIrqchips[i].name, kIrqchips[i].size));
    }
    POPEK_ASSIGN_OR_RETURN(const std::vector<uint8_t>* pit_bytes, find(kPitBlob, sizeof(kvm_pit_state2)));

    int fd = vm_.get();
    for (size_t i = 0; i < std::size(kIrqchips); i++) {
        kvm_irqchip k{};
        k.chip_id = kIrqchips[i].chip_id;
        std::memcpy(&k.chip, chips[i]->data(), kIrqchips[i].size);
        if (xioctl(fd, KVM_SET_IRQCHIP, &k) < 0)
            return Error::from_errno(std::string("KVM_SET_IRQCHIP ") + kIrqchips[i].name);
    }
    kvm_pit_state2 pit{};
    std::memcpy(&pit, pit_bytes->data(), sizeof pit);
    if (xioctl(fd, KVM_SET_PIT2, &pit) < 0) return Error::from_errno("KVM_SET_PIT2");
    // flags 0: the guest clock reads clock_ns now (KVM_CLOCK_REALTIME would
    // also count the time the VM spent saved, which the TSC does not).
    kvm_clock_data clock{};
    clock.clock = s.clock_ns;
    if (xioctl(fd, KVM_SET_CLOCK, &clock) < 0) return Error::from_errno("KVM_SET_CLOCK");
    return {};
}

}  // namespace popek::hv::kvm
