// A VM built from a VmConfig: guest memory, the hypervisor's VM, the
// platform devices on their buses, the boot state and one thread per vCPU.
// run() starts the vCPUs and returns how the guest ended.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "base/event_loop.hpp"
#include "devices/bus.hpp"
#include "devices/guest_exit.hpp"
#include "devices/legacy/acpi_power.hpp"
#include "devices/legacy/debug_exit.hpp"
#include "devices/legacy/ged.hpp"
#include "devices/legacy/i8042.hpp"
#include "devices/legacy/post_code.hpp"
#include "devices/pci/config_access.hpp"
#include "devices/pci/describe.hpp"
#include "devices/pci/pci_bus.hpp"
#include "devices/serial/serial.hpp"
#include "hv/hypervisor.hpp"
#include "memory/guest_memory.hpp"
#include "vmm/config.hpp"
#include "vmm/console.hpp"
#include "vmm/control.hpp"
#include "vmm/migrate.hpp"
#include "vmm/snapshot.hpp"
#include "vmm/interrupts.hpp"
#include "virtio/pci/ioeventfd.hpp"
#include "virtio/pci/virtio_pci.hpp"
#include "vmm/vcpu_thread.hpp"

namespace popek::vmm {

// What the VM is doing, as the control API reports it.
enum class RunState { Created, Running, Paused, Stopping };

class Machine final : public devices::ExitHandler, public Controller {
public:
    // Builds the VM; nothing runs yet. Errors say what in the config was wrong.
    static base::Result<std::unique_ptr<Machine>> create(const VmConfig& cfg);
    // Builds the VM a snapshot directory describes (memory, devices, vCPUs
    // as they were); run() continues it. Nothing is started when it fails.
    static base::Result<std::unique_ptr<Machine>> restore(const RestoreOptions& options);
    // The destination of a live migration, in two steps. At reservation:
    // the hypervisor (`backend` as the source names it) and the VM over
    // guest RAM still to be filled — the slow part, kept out of the pause.
    static base::Result<std::unique_ptr<Machine>> prepare_migration(const VmConfig& cfg, const std::string& backend,
                                                                    memory::GuestMemory memory);
    // The RAM the migration fills (its mapping stays put).
    [[nodiscard]] memory::GuestMemory& incoming_memory() { return memory_; }
    // After validation: devices and vCPUs as the source's state tree says,
    // which must describe the configuration prepared.
    base::Result<void> finish_migration(const LoadedSnapshot& snapshot);
    // Activation of a migrated VM: takes the locks of its disk images, which
    // finish_migration() opened without them while the source still held them
    // (waits up to `wait_ms` for the source to let go). vmm/migrate.cpp.
    base::Result<void> lock_disks_for_activation(uint32_t wait_ms);
    ~Machine() override;

    // Controller: the control API's commands (control.cpp).
    Reply execute(const Command& command) override;

    // Runs the guest until it powers off, resets, exits or crashes (or the
    // process is asked to stop by SIGINT/SIGTERM).
    base::Result<devices::GuestExit> run();

    void request_exit(devices::GuestExit exit) override;

    [[nodiscard]] const ConsoleFds& console() const { return console_; }
    [[nodiscard]] const memory::GuestMemory& memory() const { return memory_; }
    // Writes the guest made to the POST-code port (drained from the backend's batch).
    [[nodiscard]] uint64_t post_code_writes() const { return post_code_->save().writes; }
    // lspci-style lines for the PCI bus (--print-devices).
    [[nodiscard]] std::string describe_devices() const;

private:
    Machine() = default;
    base::Result<void> build(const VmConfig& cfg, const LoadedSnapshot* snapshot);
    base::Result<void> check_vcpu_count(const VmConfig& cfg) const;
    base::Result<void> create_vm(const VmConfig& cfg);
    base::Result<void> restore_and_build(const LoadedSnapshot& snapshot);
    base::Result<void> restore_vcpu_states(const LoadedSnapshot& snapshot);
    base::Result<void> load_and_build(const VmConfig& cfg, std::span<const uint8_t> kernel,
                                      std::span<const uint8_t> initrd);
    base::Result<void> build_devices(const SavedDevices* saved);
    base::Result<void> build_pci(const SavedDevices* saved);
    base::Result<void> add_virtio(std::unique_ptr<virtio::VirtioDevice> device);
    base::Result<void> build_vcpus(const hv::Regs* regs, const hv::Sregs* sregs);
    void stop_vcpus();

    // control.cpp; control_mu_ held.
    Reply info();
    Reply pause_command();
    Reply resume_command();
    Reply shutdown_command(const ShutdownCommand& c);
    Reply snapshot_command(const SnapshotCommand& c);
    std::string metrics_text();
    bool press_power_button();  // false: the platform has no power button
    base::Result<void> arm_forced_shutdown(uint32_t timeout_ms);
    void pause_all();   // vCPUs, then devices
    void resume_all();  // devices, then vCPUs
    // snapshot.cpp: everything but guest memory, as the snapshot's state tree.
    base::Result<nlohmann::json> save_state_tree();
    // migrate.cpp: the source side of live migration.
    friend class MachineMigrationSource;
    Reply migrate_command(const MigrateCommand& c);
    Reply migration_status();
    bool migration_active();
    void end_migration();  // cancels a migration in flight and waits for its thread

    VmConfig cfg_;
    std::unique_ptr<hv::Hypervisor> hv_;
    std::unique_ptr<hv::Vm> vm_;
    memory::GuestMemory memory_;
    ConsoleFds console_;

    std::unique_ptr<VmInterruptManager> interrupts_;
    std::unique_ptr<devices::Serial> serial_;
    std::unique_ptr<devices::I8042> i8042_;
    std::unique_ptr<devices::DebugExit> debug_exit_;
    std::unique_ptr<devices::AcpiPower> acpi_power_;
    std::unique_ptr<devices::PostCode> post_code_;
    std::unique_ptr<devices::Ged> ged_;  // ACPI power button
    devices::Bus pio_{"port I/O"};
    devices::Bus mmio_{"MMIO"};

    // The PCI bus owns the virtio devices; each runs its own event-loop thread.
    std::unique_ptr<virtio::pci::VmIoeventfds> ioeventfds_;
    std::unique_ptr<devices::pci::PciBus> pci_bus_;
    std::unique_ptr<devices::pci::PciConfigIo> pci_config_io_;
    std::unique_ptr<devices::pci::PciEcam> pci_ecam_;
    std::vector<virtio::pci::VirtioPciDevice*> virtio_;

    bool disks_lock_later_ = false;  // prepare_migration(): disks lock at activation
    std::mutex migration_mu_;                             // guards the pointer, not the job
    std::shared_ptr<MigrationJob> migration_;             // the last migration (status stays readable)

    std::unique_ptr<base::EventLoop> events_;
    std::vector<std::unique_ptr<VcpuThread>> vcpus_;  // declared last: stopped first

    // Control commands run one at a time; run() takes the lock before it
    // stops the vCPUs, so no command sees a VM being torn down.
    std::mutex control_mu_;
    RunState run_state_ = RunState::Created;
    std::chrono::steady_clock::time_point started_;
    base::UniqueFd shutdown_timer_;  // forced power-off after a power-button press

    std::mutex exit_mu_;
    std::condition_variable exit_cv_;
    std::optional<devices::GuestExit> exit_;
};

}  // namespace popek::vmm
