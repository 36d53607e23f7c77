// Saving and restoring vCPU and VM state (snapshots, migration).
#include "hv/kvm/kvm.hpp"

namespace popek::hv::kvm {

using base::Error;
using base::Result;

// Placeholders until the state ioctls are wired (in progress).
Result<VcpuState> KvmVcpu::save_state() { return Error{"KVM vCPU state save: not implemented yet"}; }
Result<void> KvmVcpu::restore_state(const VcpuState&) { return Error{"KVM vCPU state restore: not implemented yet"}; }
Result<VmState> KvmVm::save_state() { return Error{"KVM VM state save: not implemented yet"}; }
Result<void> KvmVm::restore_state(const VmState&) { return Error{"KVM VM state restore: not implemented yet"}; }

}  // namespace popek::hv::kvm
