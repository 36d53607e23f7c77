// Saving a Machine's state tree and building a Machine from a snapshot.
#include "vmm/snapshot.hpp"

#include <sys/stat.h>

#include "migration/cpu_state.hpp"
#include "migration/snapshot_file.hpp"
#include "migration/state_json.hpp"
#include "virtio/blk/device.hpp"
#include "virtio/console/device.hpp"
#include "virtio/net/device.hpp"
#include "vmm/machine.hpp"

namespace popek::vmm {

using base::Error;
using base::Result;
using nlohmann::json;

namespace {

// Which virtio devices the configuration makes, in bus order.
std::vector<std::pair<std::string, virtio::DeviceType>> virtio_devices_of(const VmConfig& cfg) {
    std::vector<std::pair<std::string, virtio::DeviceType>> out;
    for (const auto& d : cfg.disks) out.emplace_back(d.id, virtio::DeviceType::Block);
    for (const auto& n : cfg.nets) out.emplace_back(n.id, virtio::DeviceType::Net);
    if (cfg.rng) out.emplace_back("rng0", virtio::DeviceType::Rng);
    if (cfg.console == ConsoleDevice::Virtio) out.emplace_back("console0", virtio::DeviceType::Console);
    return out;
}

// The parts that nlohmann decodes (and may throw for).
Result<void> decode_devices(const json& devs, const VmConfig& cfg, SavedDevices& out) {
    out.com1 = devs.at("com1").get<devices::Serial::State>();
    out.i8042 = devs.at("i8042").get<devices::I8042::State>();
    out.post_code = devs.at("post-code").get<devices::PostCode::State>();
    out.ged = devs.at("ged").get<devices::Ged::State>();
    for (const auto& [id, type] : virtio_devices_of(cfg)) {
        if (!devs.contains(id)) return Error{"device '" + id + "' is missing"};
        const json& d = devs.at(id);
        SavedVirtio v;
        v.transport = d.at("transport").get<virtio::pci::VirtioPciDevice::State>();
        switch (type) {
            case virtio::DeviceType::Block: v.device = d.at("device").get<virtio::blk::State>(); break;
            case virtio::DeviceType::Net: v.device = d.at("device").get<virtio::net::State>(); break;
            case virtio::DeviceType::Console: v.device = d.at("device").get<virtio::console::State>(); break;
            case virtio::DeviceType::Rng: v.device = virtio::rng::State{}; break;
        }
        out.virtio.emplace(id, std::move(v));
    }
    return {};
}

}  // namespace

Result<LoadedSnapshot> decode_snapshot_tree(const json& tree) {
    LoadedSnapshot snap;
    try {
        if (!tree.is_object()) return Error{"the state is not an object"};
        snap.config = tree.at("config").get<VmConfig>();
        if (auto valid = validate_config(snap.config); !valid.ok()) return valid.error().context("config");
        snap.memory = tree.at("memory").get<migration::MemoryFileInfo>();
        const json& vcpus = tree.at("vcpus");
        if (!vcpus.is_array() || vcpus.size() != snap.config.cpus)
            return Error{"vcpus: expected " + std::to_string(snap.config.cpus) + " vCPU states"};
        for (size_t i = 0; i < vcpus.size(); ++i) {
            auto state = migration::vcpu_state_from_json(vcpus[i]);
            if (!state) return state.error().context("vCPU " + std::to_string(i));
            snap.vcpus.push_back(std::move(state).value());
        }
        auto vm = migration::vm_state_from_json(tree.at("vm"));
        if (!vm) return vm.error().context("vm");
        snap.vm = std::move(vm).value();
        POPEK_TRY(decode_devices(tree.at("devices"), snap.config, snap.devices));
    } catch (const json::exception& e) {
        return Error{std::string("malformed state: ") + e.what()};
    }
    return snap;
}

Result<LoadedSnapshot> load_snapshot(const RestoreOptions& options) {
    struct stat st{};
    if (::stat(options.dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        return Error{"snapshot '" + options.dir + "' is not a directory"};
    POPEK_ASSIGN_OR_RETURN(json tree, migration::read_state_file(options.dir + "/" + kStateFileName));
    auto snap = decode_snapshot_tree(tree);
    if (!snap) return snap.error().context("snapshot '" + options.dir + "'");
    snap->dir = options.dir;
    snap->eager = options.eager;
    if (!options.serial.empty()) POPEK_TRY(parse_serial(options.serial, snap->config));
    return snap;
}

Result<json> Machine::save_state_tree() {
    json tree;
    tree["popek_version"] = POPEK_VERSION;
    tree["config"] = cfg_;

    POPEK_ASSIGN_OR_RETURN(hv::VmState vm_state, vm_->save_state());
    tree["vm"] = migration::vm_state_to_json(vm_state);
    json vcpus = json::array();
    for (auto& v : vcpus_) {
        hv::VcpuState state;
        POPEK_TRY(v->run_on_vcpu([&](hv::Vcpu& vcpu) -> Result<void> {
            POPEK_ASSIGN_OR_RETURN(state, vcpu.save_state());
            return {};
        }));
        vcpus.push_back(migration::vcpu_state_to_json(state));
    }
    tree["vcpus"] = std::move(vcpus);

    json devs = json::object();
    devs["com1"] = serial_->save();
    devs["i8042"] = i8042_->save();
    devs["post-code"] = post_code_->save();
    devs["ged"] = ged_->save();
    for (auto* t : virtio_) {
        json d;
        d["transport"] = t->save();
        virtio::VirtioDevice& dev = t->device();
        switch (dev.type()) {
            case virtio::DeviceType::Block: d["device"] = static_cast<virtio::blk::BlockDevice&>(dev).save(); break;
            case virtio::DeviceType::Net: d["device"] = static_cast<virtio::net::NetDevice&>(dev).save(); break;
            case virtio::DeviceType::Console:
                d["device"] = static_cast<virtio::console::ConsoleDevice&>(dev).save();
                break;
            case virtio::DeviceType::Rng: d["device"] = json::object(); break;
        }
        devs[dev.id()] = std::move(d);
    }
    tree["devices"] = std::move(devs);
    return tree;
}

Result<std::unique_ptr<Machine>> Machine::restore(const RestoreOptions& options) {
    POPEK_ASSIGN_OR_RETURN(LoadedSnapshot snap, load_snapshot(options));
    snap.config.engine = options.engine;
    std::unique_ptr<Machine> m(new Machine());
    POPEK_TRY(m->build(snap.config, &snap));
    return m;
}

Result<void> Machine::restore_and_build(const LoadedSnapshot& snap) {
    POPEK_ASSIGN_OR_RETURN(console_, open_console(cfg_));
    POPEK_TRY(build_devices(&snap.devices));
    return build_vcpus(nullptr, nullptr);
}

Result<void> Machine::restore_vcpu_states(const LoadedSnapshot& snap) {
    for (size_t i = 0; i < vcpus_.size(); ++i) {
        const hv::VcpuState& state = snap.vcpus[i];
        auto r = vcpus_[i]->run_on_vcpu([&](hv::Vcpu& vcpu) { return vcpu.restore_state(state); });
        if (!r.ok()) return r.error().context("restoring vCPU " + std::to_string(i));
    }
    return {};
}

}  // namespace popek::vmm
