// The control API's commands, run one at a time under control_mu_.
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <sstream>

#include "migration/snapshot_file.hpp"
#include "migration/state_json.hpp"
#include "vmm/machine.hpp"

namespace popek::vmm {

using base::Error;
using base::Result;
using nlohmann::json;

namespace {

template <class... F>
struct Overloaded : F... {
    using F::operator()...;
};
template <class... F>
Overloaded(F...) -> Overloaded<F...>;

const char* state_name(RunState s) {
    switch (s) {
        case RunState::Created: return "created";
        case RunState::Running: return "running";
        case RunState::Paused: return "paused";
        case RunState::Stopping: return "stopping";
    }
    return "unknown";
}

const char* exit_kind_name(hv::ExitKind k) {
    switch (k) {
        case hv::ExitKind::Io: return "io";
        case hv::ExitKind::Mmio: return "mmio";
        case hv::ExitKind::Interrupted: return "interrupted";
        case hv::ExitKind::Halt: return "halt";
        case hv::ExitKind::Shutdown: return "shutdown";
        case hv::ExitKind::Reset: return "reset";
        case hv::ExitKind::PowerOff: return "poweroff";
        case hv::ExitKind::InternalError: return "internal_error";
    }
    return "unknown";
}

const char* type_name(virtio::DeviceType t) {
    switch (t) {
        case virtio::DeviceType::Block: return "virtio-blk";
        case virtio::DeviceType::Net: return "virtio-net";
        case virtio::DeviceType::Console: return "virtio-console";
        case virtio::DeviceType::Rng: return "virtio-rng";
    }
    return "virtio";
}

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Resident memory of this process (bytes), from /proc/self/statm.
uint64_t resident_bytes() {
    FILE* f = std::fopen("/proc/self/statm", "r");
    if (f == nullptr) return 0;
    unsigned long long size = 0, resident = 0;
    int n = std::fscanf(f, "%llu %llu", &size, &resident);
    std::fclose(f);
    return n == 2 ? resident * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)) : 0;
}

}  // namespace

Reply Machine::execute(const Command& command) {
    // Readable while the migration thread holds the VM paused.
    if (std::holds_alternative<MigrationStatusCommand>(command)) return migration_status();
    std::lock_guard lock(control_mu_);
    if (migration_active() && !std::holds_alternative<InfoCommand>(command) &&
        !std::holds_alternative<MetricsCommand>(command))
        return Reply::error(ReplyStatus::Conflict, "a migration is in progress (GET /vm/migration)");
    {
        std::lock_guard exit_lock(exit_mu_);
        if (exit_.has_value() && !std::holds_alternative<InfoCommand>(command) &&
            !std::holds_alternative<MetricsCommand>(command))
            return Reply::error(ReplyStatus::Conflict, "the VM is stopping (" + exit_->detail + ")");
    }
    return std::visit(Overloaded{
                          [&](const InfoCommand&) { return info(); },
                          [&](const PauseCommand&) { return pause_command(); },
                          [&](const ResumeCommand&) { return resume_command(); },
                          [&](const ShutdownCommand& c) { return shutdown_command(c); },
                          [&](const SnapshotCommand& c) { return snapshot_command(c); },
                          [&](const MigrateCommand& c) { return migrate_command(c); },
                          [&](const MigrationStatusCommand&) { return migration_status(); },
                          [&](const MetricsCommand&) {
                              Reply r = Reply::ok();
                              r.text = metrics_text();
                              return r;
                          },
                      },
                      command);
}

void Machine::pause_all() {
    for (auto& v : vcpus_) v->pause();
    for (auto& v : vcpus_) v->wait_for(VcpuState::Paused);
    for (auto* t : virtio_) t->pause();
}

void Machine::resume_all() {
    for (auto* t : virtio_) t->resume();
    for (auto& v : vcpus_) v->resume();
}

Reply Machine::pause_command() {
    if (run_state_ == RunState::Paused) return Reply::error(ReplyStatus::Conflict, "the VM is already paused");
    if (run_state_ != RunState::Running)
        return Reply::error(ReplyStatus::Conflict, std::string("cannot pause a VM that is ") + state_name(run_state_));
    pause_all();
    run_state_ = RunState::Paused;
    return Reply::ok({{"state", state_name(run_state_)}});
}

Reply Machine::resume_command() {
    if (run_state_ != RunState::Paused)
        return Reply::error(ReplyStatus::Conflict,
                            std::string("cannot resume: the VM is ") + state_name(run_state_) + ", not paused");
    resume_all();
    run_state_ = RunState::Running;
    return Reply::ok({{"state", state_name(run_state_)}});
}

Reply Machine::snapshot_command(const SnapshotCommand& c) {
    if (run_state_ != RunState::Running && run_state_ != RunState::Paused)
        return Reply::error(ReplyStatus::Conflict, std::string("cannot snapshot a VM that is ") + state_name(run_state_));
    if (c.path.empty() || c.path[0] != '/')
        return Reply::error(ReplyStatus::BadRequest, "snapshot path must be absolute: '" + c.path + "'");
    if (::mkdir(c.path.c_str(), 0700) != 0 && errno != EEXIST)
        return Reply::error(ReplyStatus::BadRequest, Error::from_errno("creating snapshot directory " + c.path).message);
    struct stat st{};
    if (::stat(c.path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        return Reply::error(ReplyStatus::BadRequest, "snapshot path " + c.path + " exists and is not a directory");
    // An older snapshot's state file must not pair with new memory if this save fails half-way.
    const std::string state_path = c.path + "/" + kStateFileName;
    if (::unlink(state_path.c_str()) != 0 && errno != ENOENT)
        return Reply::error(ReplyStatus::BadRequest, Error::from_errno("removing old " + state_path).message);

    const auto t0 = std::chrono::steady_clock::now();
    const bool was_running = run_state_ == RunState::Running;
    if (was_running) pause_all();
    const double pause_ms = ms_since(t0);
    auto finish = [&](Reply r) {
        if (was_running) resume_all();
        return r;
    };

    auto tree = save_state_tree();
    if (!tree) return finish(Reply::error(ReplyStatus::Internal, "snapshot: " + tree.error().message));
    auto mem = migration::save_memory(memory_, c.path + "/" + kMemoryFileName);
    if (!mem) return finish(Reply::error(ReplyStatus::Internal, "snapshot: " + mem.error().message));
    (*tree)["memory"] = *mem;
    if (auto w = migration::write_state_file(state_path, *tree); !w.ok())
        return finish(Reply::error(ReplyStatus::Internal, "snapshot: " + w.error().message));
    const double saved_ms = ms_since(t0);
    return finish(Reply::ok({{"path", c.path},
                             {"memory_bytes", mem->size},
                             {"memory_pages_written", mem->pages_written},
                             {"pause_ms", pause_ms},
                             {"total_ms", saved_ms}}));
}

Reply Machine::shutdown_command(const ShutdownCommand& c) {
    if (run_state_ != RunState::Running && run_state_ != RunState::Paused)
        return Reply::error(ReplyStatus::Conflict, std::string("cannot shut down a VM that is ") + state_name(run_state_));
    if (run_state_ == RunState::Paused) {
        // A paused guest cannot answer the power button: stop it now.
        request_exit({devices::GuestExitKind::PowerOff, 0, "shut down while paused (through the API)"});
        return Reply::ok({{"state", "stopping"}, {"graceful", false}});
    }
    const bool pressed = press_power_button();
    auto forced = arm_forced_shutdown(c.timeout_ms);
    if (!forced.ok()) return Reply::error(ReplyStatus::Internal, forced.error().message);
    return Reply::ok({{"state", "stopping"}, {"power_button", pressed}, {"timeout_ms", c.timeout_ms}});
}

bool Machine::press_power_button() {
    ged_->press_power_button();
    return true;
}

Result<void> Machine::arm_forced_shutdown(uint32_t timeout_ms) {
    if (!shutdown_timer_.valid()) {
        shutdown_timer_ = base::UniqueFd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
        if (!shutdown_timer_.valid()) return Error::from_errno("timerfd_create for the shutdown timeout");
        const int fd = shutdown_timer_.get();
        POPEK_TRY(events_->add(fd, EPOLLIN, [this, fd, timeout_ms](uint32_t) {
            uint64_t n;
            (void)!::read(fd, &n, sizeof n);
            const std::string why = "forced power-off: the guest did not shut down within " +
                                    std::to_string(timeout_ms) + " ms of the power button";
            std::fprintf(stderr, "popek: %s\n", why.c_str());
            request_exit({devices::GuestExitKind::PowerOff, 0, why});
            return false;
        }));
    }
    itimerspec its{};
    its.it_value.tv_sec = static_cast<time_t>(timeout_ms / 1000);
    its.it_value.tv_nsec = static_cast<long>(timeout_ms % 1000) * 1000000L;
    if (timeout_ms == 0) its.it_value.tv_nsec = 1;  // at once
    if (::timerfd_settime(shutdown_timer_.get(), 0, &its, nullptr) != 0)
        return Error::from_errno("timerfd_settime for the shutdown timeout");
    return {};
}

Reply Machine::info() {
    json devices = json::array();
    for (auto* t : virtio_) {
        virtio::VirtioDevice& dev = t->device();
        devices.push_back({{"id", dev.id()}, {"type", type_name(dev.type())}, {"pci", t->description()}});
    }
    json vcpus = json::array();
    for (auto& v : vcpus_) vcpus.push_back({{"index", v->index()}, {"exits", v->exit_count()}});
    return Reply::ok({{"state", state_name(run_state_)},
                      {"config", cfg_},
                      {"memory_bytes", memory_.ram_size()},
                      {"vcpus", vcpus},
                      {"devices", devices}});
}

std::string Machine::metrics_text() {
    std::ostringstream o;
    o << "# HELP popek_vm_running Whether the VM's vCPUs are running (1) or not (0).\n"
         "# TYPE popek_vm_running gauge\n"
      << "popek_vm_running " << (run_state_ == RunState::Running ? 1 : 0) << "\n";
    o << "# HELP popek_vcpu_exits_total Exits from guest to VMM, by vCPU and reason.\n"
         "# TYPE popek_vcpu_exits_total counter\n";
    for (auto& v : vcpus_) {
        for (size_t k = 0; k < VcpuThread::kExitKinds; ++k) {
            auto kind = static_cast<hv::ExitKind>(k);
            o << "popek_vcpu_exits_total{vcpu=\"" << v->index() << "\",reason=\"" << exit_kind_name(kind) << "\"} "
              << v->exits_of(kind) << "\n";
        }
    }
    o << "# HELP popek_vcpu_run_seconds_total Time spent running guest code, by vCPU.\n"
         "# TYPE popek_vcpu_run_seconds_total counter\n";
    for (auto& v : vcpus_)
        o << "popek_vcpu_run_seconds_total{vcpu=\"" << v->index() << "\"} " << static_cast<double>(v->run_ns()) / 1e9
          << "\n";
    struct Counter {
        const char* name;
        const char* help;
        uint64_t virtio::DeviceMetrics::*field;
    };
    const Counter counters[] = {
        {"popek_device_requests_total", "Requests a device completed.", &virtio::DeviceMetrics::requests},
        {"popek_device_read_bytes_total", "Bytes from the device's backend into the guest.",
         &virtio::DeviceMetrics::bytes_read},
        {"popek_device_written_bytes_total", "Bytes from the guest into the device's backend.",
         &virtio::DeviceMetrics::bytes_written},
        {"popek_device_errors_total", "Requests that failed.", &virtio::DeviceMetrics::errors},
    };
    std::vector<std::pair<std::string, virtio::DeviceMetrics>> per_device;
    for (auto* t : virtio_) per_device.emplace_back(t->device().id(), t->device().metrics());
    for (const auto& c : counters) {
        o << "# HELP " << c.name << " " << c.help << "\n# TYPE " << c.name << " counter\n";
        for (const auto& [id, m] : per_device) o << c.name << "{device=\"" << id << "\"} " << m.*(c.field) << "\n";
    }
    o << "# HELP popek_post_code_writes_total Writes to the POST-code port.\n"
         "# TYPE popek_post_code_writes_total counter\n"
      << "popek_post_code_writes_total " << post_code_->save().writes << "\n";
    o << "# HELP popek_memory_guest_bytes Guest RAM size.\n# TYPE popek_memory_guest_bytes gauge\n"
      << "popek_memory_guest_bytes " << memory_.ram_size() << "\n";
    o << "# HELP popek_memory_resident_bytes Resident memory of the popek process (guest RAM included).\n"
         "# TYPE popek_memory_resident_bytes gauge\n"
      << "popek_memory_resident_bytes " << resident_bytes() << "\n";
    o << "# HELP popek_uptime_seconds Time since the VM started running.\n# TYPE popek_uptime_seconds gauge\n"
      << "popek_uptime_seconds "
      << (run_state_ == RunState::Created ? 0.0 : ms_since(started_) / 1000.0) << "\n";
    return o.str();
}

}  // namespace popek::vmm
