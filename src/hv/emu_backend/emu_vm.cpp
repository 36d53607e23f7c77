// The emu backend's VM: guest RAM as the engines' PhysMemory, interrupt
// lines and MSI routes into the platform models, ioeventfds matched in the
// vCPUs' run loops, irqfds served by one epoll thread, and the dirty log.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>

#include "hv/emu_backend/emu_backend.hpp"

namespace popek::hv::emu {

using base::Error;
using base::Result;

EmuVm::EmuVm(uint32_t vcpu_count, uint64_t tsc_hz)
    : vcpu_count_(vcpu_count), tsc_hz_(tsc_hz), platform_(std::make_unique<Platform>(vcpu_count, tsc_hz)) {}

EmuVm::~EmuVm() {
    if (irqfd_thread_.joinable()) {
        uint64_t one = 1;
        (void)!::write(stop_fd_.get(), &one, sizeof one);
        irqfd_thread_.join();
    }
}

Result<void> EmuVm::map_memory(uint32_t slot, uint64_t gpa, uint64_t size, uint8_t* host) {
    std::lock_guard lock(mu_);
    for (const Slot& s : slots_)
        if (s.slot == slot) return Error{"emu: memory slot " + std::to_string(slot) + " is already mapped"};
    POPEK_TRY(mem_.add_ram(gpa, size, host));
    slots_.push_back(Slot{slot, gpa, size});
    return {};
}

Result<std::unique_ptr<Vcpu>> EmuVm::create_vcpu(uint32_t index) {
    std::lock_guard lock(mu_);
    if (index >= vcpu_count_)
        return Error{"emu: vCPU " + std::to_string(index) + " of a VM with " + std::to_string(vcpu_count_)};
    for (EmuVcpu* v : vcpus_)
        if (v->index() == index) return Error{"emu: vCPU " + std::to_string(index) + " exists already"};
    auto v = std::make_unique<EmuVcpu>(*this, index);
    vcpus_.push_back(v.get());
    return std::unique_ptr<Vcpu>(std::move(v));
}

void EmuVm::vcpu_gone(EmuVcpu* v) {
    std::lock_guard lock(mu_);
    std::erase(vcpus_, v);
}

Result<void> EmuVm::set_irq_line(uint32_t gsi, bool level) {
    if (gsi >= kFirstMsiGsi) return Error{"emu: GSI " + std::to_string(gsi) + " is not an interrupt line"};
    platform_->set_gsi(gsi, level);
    return {};
}

Result<void> EmuVm::batch_port_writes(uint16_t port, uint16_t len) {
    std::lock_guard lock(mu_);
    if (!vcpus_.empty()) return Error{"emu: batch_port_writes after vCPUs were created"};
    batched_ports_.emplace_back(port, len);
    return {};
}

bool EmuVm::batched_port(uint16_t port) const {
    // Fixed before any vCPU exists: read without the lock.
    for (const auto& [first, len] : batched_ports_)
        if (port >= first && port - first < len) return true;
    return false;
}

Result<void> EmuVm::add_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio) {
    if (len != 0 && len != 1 && len != 2 && len != 4 && len != 8)
        return Error{"emu: ioeventfd length " + std::to_string(len)};
    std::lock_guard lock(mu_);
    for (const IoEventFd& e : ioeventfds_)
        if (e.addr == addr && e.pio == pio && (e.len == 0 || len == 0 || e.len == len))
            return Error{"emu: an ioeventfd already covers this address"};
    ioeventfds_.push_back(IoEventFd{eventfd, addr, len, pio});
    have_ioeventfds_.store(true, std::memory_order_release);
    return {};
}

Result<void> EmuVm::remove_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio) {
    std::lock_guard lock(mu_);
    auto it = std::find_if(ioeventfds_.begin(), ioeventfds_.end(), [&](const IoEventFd& e) {
        return e.fd == eventfd && e.addr == addr && e.len == len && e.pio == pio;
    });
    if (it == ioeventfds_.end()) return Error{"emu: no such ioeventfd"};
    ioeventfds_.erase(it);
    have_ioeventfds_.store(!ioeventfds_.empty(), std::memory_order_release);
    return {};
}

bool EmuVm::signal_ioeventfd(uint64_t addr, uint32_t size, bool pio) {
    if (!have_ioeventfds_.load(std::memory_order_acquire)) return false;
    std::lock_guard lock(mu_);
    for (const IoEventFd& e : ioeventfds_) {
        if (e.addr != addr || e.pio != pio || (e.len != 0 && e.len != size)) continue;
        uint64_t one = 1;
        (void)!::write(e.fd, &one, sizeof one);
        return true;
    }
    return false;
}

Result<uint32_t> EmuVm::allocate_msi_gsi() {
    std::lock_guard lock(mu_);
    if (next_msi_gsi_ >= kMaxGsi) return Error{"emu: out of MSI GSIs"};
    return next_msi_gsi_++;
}

Result<void> EmuVm::set_msi_route(uint32_t gsi, uint64_t address, uint32_t data) {
    std::lock_guard lock(mu_);
    if (gsi < kFirstMsiGsi || gsi >= next_msi_gsi_) return Error{"emu: GSI " + std::to_string(gsi) + " is not an MSI GSI"};
    msi_routes_[gsi] = {address, data};
    return {};
}

Result<void> EmuVm::inject_gsi(uint32_t gsi) {
    std::pair<uint64_t, uint32_t> route;
    {
        std::lock_guard lock(mu_);
        if (gsi < kFirstMsiGsi) {
            // An irqfd on an interrupt line is an edge: the line goes up and down.
            platform_->set_gsi(gsi, true);
            platform_->set_gsi(gsi, false);
            return {};
        }
        auto it = msi_routes_.find(gsi);
        if (it == msi_routes_.end()) return Error{"emu: MSI GSI " + std::to_string(gsi) + " has no route"};
        route = it->second;
    }
    platform_->deliver_msi(route.first, route.second);
    return {};
}

Result<void> EmuVm::add_irqfd(int eventfd, uint32_t gsi) {
    std::lock_guard lock(mu_);
    if (gsi >= kMaxGsi) return Error{"emu: irqfd GSI " + std::to_string(gsi) + " out of range"};
    if (!epoll_.valid()) {
        epoll_ = base::UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
        if (!epoll_.valid()) return Error::from_errno("emu: epoll_create1 for irqfds");
        stop_fd_ = base::UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!stop_fd_.valid()) return Error::from_errno("emu: eventfd for the irqfd thread");
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = stop_fd_.get();
        if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, stop_fd_.get(), &ev) < 0)
            return Error::from_errno("emu: epoll_ctl for the irqfd thread");
        irqfd_thread_ = std::thread([this] { irqfd_thread_main(); });
    }
    if (irqfds_.count(eventfd) != 0) return Error{"emu: eventfd is already an irqfd"};
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = eventfd;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, eventfd, &ev) < 0) return Error::from_errno("emu: epoll_ctl irqfd");
    irqfds_[eventfd] = gsi;
    return {};
}

Result<void> EmuVm::remove_irqfd(int eventfd, uint32_t gsi) {
    std::lock_guard lock(mu_);
    auto it = irqfds_.find(eventfd);
    if (it == irqfds_.end() || it->second != gsi) return Error{"emu: no such irqfd"};
    (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, eventfd, nullptr);
    irqfds_.erase(it);
    return {};
}

void EmuVm::irqfd_thread_main() {
    pthread_setname_np(pthread_self(), "popek-irqfd");
    epoll_event events[16];
    for (;;) {
        const int n = ::epoll_wait(epoll_.get(), events, 16, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        for (int k = 0; k < n; k++) {
            const int fd = events[k].data.fd;
            if (fd == stop_fd_.get()) return;
            uint64_t count = 0;
            if (::read(fd, &count, sizeof count) != sizeof count) continue;
            uint32_t gsi = 0;
            {
                std::lock_guard lock(mu_);
                auto it = irqfds_.find(fd);
                if (it == irqfds_.end()) continue;  // removed meanwhile
                gsi = it->second;
            }
            (void)inject_gsi(gsi);
        }
    }
}

void EmuVm::broadcast_code_write(uint32_t from, uint64_t page) {
    std::lock_guard lock(mu_);
    for (EmuVcpu* v : vcpus_)
        if (v->index() != from) v->queue_code_drop(page);
}

// Device DMA into a page that holds decoded code: every engine drops its
// blocks there before its next block (queued, plus a kick).
void EmuVm::host_wrote(uint64_t gpa, uint64_t len) {
    if (len == 0) return;
    const uint64_t end = gpa + len < gpa ? UINT64_MAX : gpa + len;
    for (uint64_t page = gpa & kPageMask; page < end; page += kPageSize) {
        if (!mem_.is_code_page(page)) continue;
        mem_.set_code_page(page, false);
        broadcast_code_write(UINT32_MAX, page);
        if (page > UINT64_MAX - kPageSize) break;
    }
}

void EmuVm::kick_all() {
    std::lock_guard lock(mu_);
    for (EmuVcpu* v : vcpus_) v->kick();
}

// The engines cache write permission in their TLBs; with the log on, they
// grant it only after logging the page. Every change to the log happens with
// all engines stopped at a block boundary, and bumps the generation that
// makes each engine flush its TLB before it runs again.
Result<void> EmuVm::start_dirty_log() {
    if (dirty_logging_) return Error{"dirty logging is already on"};
    barrier_.stop();
    kick_all();
    barrier_.lock();
    for (const Slot& s : slots_) (void)mem_.take_dirty_log(s.gpa);
    mem_.set_dirty_logging(true);
    tlb_gen_.fetch_add(1, std::memory_order_acq_rel);
    barrier_.resume();
    dirty_logging_ = true;
    return {};
}

Result<std::vector<SlotDirtyLog>> EmuVm::fetch_dirty_log() {
    if (!dirty_logging_) return Error{"dirty logging is off"};
    std::vector<SlotDirtyLog> logs;
    barrier_.stop();
    kick_all();
    barrier_.lock();
    for (const Slot& s : slots_) {
        SlotDirtyLog log;
        log.slot = s.slot;
        log.gpa = s.gpa;
        log.pages = s.size / kPageSize;
        log.bitmap = mem_.take_dirty_log(s.gpa);
        log.bitmap.resize(static_cast<size_t>((log.pages + 63) / 64), 0);
        logs.push_back(std::move(log));
    }
    tlb_gen_.fetch_add(1, std::memory_order_acq_rel);
    barrier_.resume();
    return logs;
}

Result<void> EmuVm::stop_dirty_log() {
    if (!dirty_logging_) return {};
    barrier_.stop();
    kick_all();
    barrier_.lock();
    mem_.set_dirty_logging(false);
    tlb_gen_.fetch_add(1, std::memory_order_acq_rel);
    barrier_.resume();
    dirty_logging_ = false;
    return {};
}

Result<VmState> EmuVm::save_state() {
    VmState st;
    st.backend = kBackendName;
    st.blobs = platform_->save();
    st.clock_ns = guest_ns();
    return st;
}

Result<void> EmuVm::restore_state(const VmState& st) {
    if (st.backend != kBackendName)
        return Error{"the snapshot's VM state is from the '" + st.backend +
                     "' backend; the emu backend cannot restore it (use --engine " + st.backend + ")"};
    std::string error;
    if (!platform_->restore(st.blobs, error)) return Error{error};
    clock_offset_.store(st.clock_ns - now_ns(), std::memory_order_relaxed);
    return {};
}

}  // namespace popek::hv::emu
