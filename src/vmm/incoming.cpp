#include "vmm/incoming.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "arch/x86/layout.hpp"
#include "migration/precopy.hpp"
#include "migration/state_json.hpp"

namespace popek::vmm {

using base::Error;
using base::Result;
using nlohmann::json;

namespace {

class IncomingTarget final : public migration::MigrationTarget {
public:
    explicit IncomingTarget(const IncomingOptions& o) : options_(o) {}

    Result<memory::GuestMemory*> reserve(const migration::Hello& hello) override {
        VmConfig cfg;
        try {
            cfg = hello.config.get<VmConfig>();
        } catch (const json::exception& e) {
            return Error{std::string("the source's configuration is malformed: ") + e.what()};
        }
        POPEK_TRY(validate_config(cfg));
        if (options_.max_memory != 0 && cfg.memory_bytes > options_.max_memory)
            return Error{"the VM has " + std::to_string(cfg.memory_bytes >> 20) + " MiB of RAM, this host allows " +
                         std::to_string(options_.max_memory >> 20) + " MiB (--max-memory)"};
        for (const auto& d : cfg.disks)
            if (::access(d.path.c_str(), d.readonly ? R_OK : R_OK | W_OK) != 0)
                return Error::from_errno("disk '" + d.id + "' (" + d.path + ") is not usable here");
        // An emulated VM needs no KVM here (it comes back to the engine that
        // saved it); any other does.
        if (hello.backend != "emu" && ::access(cfg.kvm_device.c_str(), R_OK | W_OK) != 0)
            return Error::from_errno("KVM device " + cfg.kvm_device);
        auto ranges = arch::x86::ram_ranges(cfg.memory_bytes);
        auto mem = memory::GuestMemory::create(ranges);
        if (!mem) return mem.error().context("reserving guest RAM");
        // The VM itself too (hypervisor, VM over that RAM): the slowest part
        // of building it, done here rather than inside the pause.
        auto m = Machine::prepare_migration(cfg, hello.backend, std::move(mem).value());
        if (!m) return m.error().context("reserving the VM");
        machine_ = std::move(m).value();
        return &machine_->incoming_memory();
    }

    Result<void> build(const json& state) override {
        auto snap = decode_snapshot_tree(state);
        if (!snap) return snap.error();
        if (!options_.serial.empty()) POPEK_TRY(parse_serial(options_.serial, snap->config));
        if (!machine_) return Error{"the state came before a reservation"};
        return machine_->finish_migration(*snap);
    }

    std::unique_ptr<Machine> take() { return std::move(machine_); }

private:
    const IncomingOptions& options_;
    std::unique_ptr<Machine> machine_;
};

}  // namespace

bool IncomingVm::finish_postcopy() {
    if (!postcopy) return true;
    // A guest that ended before its last page arrived: let the source finish.
    (void)postcopy->wait_complete(std::chrono::seconds(30));
    return postcopy->failure().empty();
}

Result<IncomingVm> receive_migration(const IncomingOptions& options) {
    POPEK_ASSIGN_OR_RETURN(auto addr, migration::parse_tcp_address(options.listen));
    POPEK_ASSIGN_OR_RETURN(int lfd, migration::tcp_listen(addr));
    base::UniqueFd listener(lfd);
    migration::log_phase("listening", "on " + options.listen);
    POPEK_ASSIGN_OR_RETURN(auto conn, migration::tcp_accept(listener.get()));
    IncomingTarget target(options);
    IncomingVm vm;
    // Post-copy takes the listener along: a source whose link is lost
    // reconnects to it. Otherwise it closes when this returns.
    auto r = migration::receive_vm(target, conn, &vm.postcopy, &listener);
    if (!r) return r.error().context("incoming migration");
    vm.machine = target.take();
    // The source let go of its writable disks when it heard the commit (or,
    // in post-copy, when this side said it would run the VM).
    if (auto l = vm.machine->lock_disks_for_activation(10000); !l.ok()) return l.error().context("activation");
    migration::log_phase("activation", r->dump());
    if (vm.postcopy) {
        Machine* m = vm.machine.get();
        vm.postcopy->on_failure([m](const std::string& why) {
            m->request_exit({devices::GuestExitKind::Terminated, 0,
                             "migration: post-copy failed: " + why + "; the VM stopped (its memory is incomplete)"});
        });
    }
    return vm;
}

}  // namespace popek::vmm
