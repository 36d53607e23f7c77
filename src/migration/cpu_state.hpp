// PLACEHOLDER (replaced by the kvmstate branch): JSON forms of hv::VcpuState and hv::VmState.
#pragma once
#include <nlohmann/json.hpp>
#include "base/result.hpp"
#include "hv/x86_state.hpp"
namespace popek::migration {
nlohmann::json vcpu_state_to_json(const hv::VcpuState&);
base::Result<hv::VcpuState> vcpu_state_from_json(const nlohmann::json&);
nlohmann::json vm_state_to_json(const hv::VmState&);
base::Result<hv::VmState> vm_state_from_json(const nlohmann::json&);
}
