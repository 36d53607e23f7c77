#include "migration/cpu_state.hpp"
namespace popek::migration {
nlohmann::json vcpu_state_to_json(const hv::VcpuState&) { return nlohmann::json::object(); }
base::Result<hv::VcpuState> vcpu_state_from_json(const nlohmann::json&) { return base::Error{"placeholder"}; }
nlohmann::json vm_state_to_json(const hv::VmState&) { return nlohmann::json::object(); }
base::Result<hv::VmState> vm_state_from_json(const nlohmann::json&) { return base::Error{"placeholder"}; }
}
