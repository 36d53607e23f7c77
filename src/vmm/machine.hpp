// A VM built from a VmConfig: guest memory, the hypervisor's VM, the
// platform devices on their buses, the boot state and one thread per vCPU.
// run() starts the vCPUs and returns how the guest ended.
#pragma once

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
#include "vmm/interrupts.hpp"
#include "virtio/pci/ioeventfd.hpp"
#include "virtio/pci/virtio_pci.hpp"
#include "vmm/vcpu_thread.hpp"

namespace popek::vmm {

class Machine final : public devices::ExitHandler {
public:
    // Builds the VM; nothing runs yet. Errors say what in the config was wrong.
    static base::Result<std::unique_ptr<Machine>> create(const VmConfig& cfg);
    ~Machine() override;

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
    base::Result<void> build(const VmConfig& cfg);
    base::Result<void> load_and_build(const VmConfig& cfg, std::span<const uint8_t> kernel,
                                      std::span<const uint8_t> initrd);
    base::Result<void> build_devices();
    base::Result<void> build_pci();
    base::Result<void> add_virtio(std::unique_ptr<virtio::VirtioDevice> device);
    base::Result<void> build_vcpus(const hv::Regs& regs, const hv::Sregs& sregs);
    void stop_vcpus();

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
    devices::Bus pio_{"port I/O"};
    devices::Bus mmio_{"MMIO"};

    // The PCI bus owns the virtio devices; each runs its own event-loop thread.
    std::unique_ptr<virtio::pci::VmIoeventfds> ioeventfds_;
    std::unique_ptr<devices::pci::PciBus> pci_bus_;
    std::unique_ptr<devices::pci::PciConfigIo> pci_config_io_;
    std::unique_ptr<devices::pci::PciEcam> pci_ecam_;
    std::vector<virtio::pci::VirtioPciDevice*> virtio_;

    std::unique_ptr<base::EventLoop> events_;
    std::vector<std::unique_ptr<VcpuThread>> vcpus_;  // declared last: stopped first

    std::mutex exit_mu_;
    std::condition_variable exit_cv_;
    std::optional<devices::GuestExit> exit_;
};

}  // namespace popek::vmm
