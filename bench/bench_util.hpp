// What the benchmarks share: spawning a VMM with its stdout on a pipe, medians,
// and QEMU's machine arguments for the probe guest.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace popek::bench {

using Clock = std::chrono::steady_clock;

inline double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// The middle value (the upper one of the two for an even count); -1 if empty.
double median(std::vector<double> v);

// A spawned process whose stdout is the read end `out` of a pipe (stdin is
// /dev/null; stderr too unless `stderr_path` is given). Killed and reaped on
// destruction unless wait() reaped it first.
class Child {
public:
    static Child spawn(const std::vector<std::string>& argv, const std::string& stderr_path = "/dev/null");
    Child() = default;
    Child(Child&& o) noexcept { *this = std::move(o); }
    Child& operator=(Child&& o) noexcept;
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;
    ~Child() { kill_and_wait(); }

    [[nodiscard]] bool valid() const { return pid_ > 0; }
    [[nodiscard]] pid_t pid() const { return pid_; }
    [[nodiscard]] int out() const { return out_; }
    // Exit status (or -1 if killed by a signal); closes the pipe first.
    int wait();
    void kill_and_wait();

private:
    pid_t pid_ = -1;
    int out_ = -1;
};

// QEMU microvm running the probe: QEMU's fastest-starting machine, guest RAM
// from a memfd (its default, anonymous RAM with THP, migrates slower on this
// host: see README). `pcie` adds its PCIe host (needed for virtio-pci).
std::vector<std::string> qemu_probe_argv(const std::string& qemu, const std::string& probe, const std::string& memory,
                                         const std::string& cmdline, bool pcie = false);

}  // namespace popek::bench
