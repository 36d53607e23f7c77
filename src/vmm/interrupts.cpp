#include "vmm/interrupts.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include "base/unique_fd.hpp"

namespace popek::vmm {

namespace {

class IrqfdMsiVector final : public devices::MsiVector {
public:
    IrqfdMsiVector(hv::Vm& vm, uint32_t gsi, base::UniqueFd fd) : vm_(vm), gsi_(gsi), fd_(std::move(fd)) {}
    ~IrqfdMsiVector() override {
        if (bound_) (void)vm_.remove_irqfd(fd_.get(), gsi_);
    }

    base::Result<void> update(uint64_t address, uint32_t data) override {
        POPEK_TRY(vm_.set_msi_route(gsi_, address, data));
        if (!bound_) {
            POPEK_TRY(vm_.add_irqfd(fd_.get(), gsi_));
            bound_ = true;
        }
        return {};
    }

    void trigger() override {
        if (!bound_) return;  // the guest has not programmed this vector yet
        uint64_t one = 1;
        (void)!::write(fd_.get(), &one, sizeof one);
    }

private:
    hv::Vm& vm_;
    uint32_t gsi_;
    base::UniqueFd fd_;
    bool bound_ = false;
};

}  // namespace

class VmInterruptManager::Line final : public devices::IrqLine {
public:
    Line(hv::Vm& vm, uint32_t gsi) : vm_(vm), gsi_(gsi) {}
    void set_level(bool level) override { (void)vm_.set_irq_line(gsi_, level); }

private:
    hv::Vm& vm_;
    uint32_t gsi_;
};

VmInterruptManager::VmInterruptManager(hv::Vm& vm) : vm_(vm) {}
VmInterruptManager::~VmInterruptManager() = default;

base::Result<std::unique_ptr<devices::MsiVector>> VmInterruptManager::create_msi_vector() {
    POPEK_ASSIGN_OR_RETURN(uint32_t gsi, vm_.allocate_msi_gsi());
    base::UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd.valid()) return base::Error::from_errno("eventfd for MSI vector");
    return std::unique_ptr<devices::MsiVector>(new IrqfdMsiVector(vm_, gsi, std::move(fd)));
}

devices::IrqLine& VmInterruptManager::legacy_line(uint32_t gsi) {
    std::lock_guard lock(mu_);
    auto& line = lines_[gsi];
    if (!line) line = std::make_unique<Line>(vm_, gsi);
    return *line;
}

}  // namespace popek::vmm
