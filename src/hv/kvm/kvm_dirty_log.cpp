// KVM dirty page logging: KVM_MEM_LOG_DIRTY_PAGES on every slot and
// KVM_GET_DIRTY_LOG, which returns the slot's bitmap and clears it (KVM
// write-protects the pages again), i.e. clear-on-read. Manual protection
// (KVM_CLEAR_DIRTY_LOG) would let popek re-protect only after sending a
// page; plain clear-on-read is simpler and correct, and is the seam for it.
#include <cstring>
#include <string>

#include "hv/kvm/kvm.hpp"

namespace popek::hv::kvm {

using base::Error;
using base::Result;

Result<void> KvmVm::set_slot(const Slot& s, uint32_t flags) {
    kvm_userspace_memory_region r{};
    r.slot = s.slot;
    r.flags = flags;
    r.guest_phys_addr = s.gpa;
    r.memory_size = s.size;
    r.userspace_addr = reinterpret_cast<uint64_t>(s.host);
    if (xioctl(vm_.get(), KVM_SET_USER_MEMORY_REGION, &r) < 0)
        return Error::from_errno("KVM_SET_USER_MEMORY_REGION slot " + std::to_string(s.slot) +
                                 (flags != 0 ? " (dirty logging on)" : ""));
    return {};
}

Result<void> KvmVm::start_dirty_log() {
    std::lock_guard lock(slots_mu_);
    if (dirty_logging_) return Error{"dirty logging is already on"};
    for (const Slot& s : slots_) POPEK_TRY(set_slot(s, KVM_MEM_LOG_DIRTY_PAGES));
    dirty_logging_ = true;
    return {};
}

Result<std::vector<SlotDirtyLog>> KvmVm::fetch_dirty_log() {
    std::lock_guard lock(slots_mu_);
    if (!dirty_logging_) return Error{"dirty logging is off"};
    std::vector<SlotDirtyLog> logs;
    for (const Slot& s : slots_) {
        SlotDirtyLog log;
        log.slot = s.slot;
        log.gpa = s.gpa;
        log.pages = s.size / 4096;
        // KVM writes the bitmap in longs, rounded up to 64 bits.
        log.bitmap.assign(static_cast<size_t>((log.pages + 63) / 64), 0);
        kvm_dirty_log d{};
        d.slot = s.slot;
        d.dirty_bitmap = log.bitmap.data();
        if (xioctl(vm_.get(), KVM_GET_DIRTY_LOG, &d) < 0)
            return Error::from_errno("KVM_GET_DIRTY_LOG slot " + std::to_string(s.slot));
        logs.push_back(std::move(log));
    }
    return logs;
}

Result<void> KvmVm::stop_dirty_log() {
    std::lock_guard lock(slots_mu_);
    if (!dirty_logging_) return {};
    for (const Slot& s : slots_) POPEK_TRY(set_slot(s, 0));
    dirty_logging_ = false;
    return {};
}

}  // namespace popek::hv::kvm
