// popek vs QEMU-KVM on the same probe guest, measured in the same run:
//   start -> PROBE-READY latency, port-I/O exit round trip, and memory overhead.
// Usage: popek_vmm_bench --popek BIN --probe ELF [--qemu BIN] [--runs N] [--exits N]
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "bench_util.hpp"

namespace {

using popek::bench::Child;
using popek::bench::Clock;
using popek::bench::median;
using popek::bench::ms_since;
using popek::bench::qemu_probe_argv;

struct Run {
    double ready_ms = -1;  // spawn -> PROBE-READY seen
    double done_ms = -1;   // spawn -> PROBE-DONE seen
    long overhead_kib = -1;  // VmRSS at PROBE-DONE less what guest RAM holds
    std::string output;
    int status = -1;
};

long status_kib(pid_t pid, const char* key) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(f, line)) {
        if (line.rfind(key, 0) == 0) return std::stol(line.substr(std::strlen(key)));
    }
    return -1;
}

// Resident KiB of guest RAM: the mappings exactly `guest_kib` long (popek's
// anonymous RAM, QEMU's memfd backend), summed from smaps; -1 if there is none.
long guest_ram_rss_kib(pid_t pid, long guest_kib) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/smaps");
    std::string line;
    long total = 0;
    bool found = false, in_guest = false;
    while (std::getline(f, line)) {
        if (line.rfind("Size:", 0) == 0) {
            in_guest = std::stol(line.substr(5)) == guest_kib;
            found = found || in_guest;
        } else if (in_guest && line.rfind("Rss:", 0) == 0) {
            total += std::stol(line.substr(4));
        }
    }
    return found ? total : -1;
}

// Spawns argv, watches stdout for the probe's lines, samples memory when the
// workload is done, then waits for exit (or kills after `timeout`).
Run run_once(const std::vector<std::string>& argv, std::chrono::seconds timeout, long guest_kib = 0) {
    Run r;
    const auto t0 = Clock::now();
    Child child = Child::spawn(argv);
    if (!child.valid()) return r;
    const pid_t pid = child.pid();
    auto ms = [&] { return ms_since(t0); };
    for (;;) {
        pollfd p{child.out(), POLLIN, 0};
        int left = static_cast<int>(timeout.count() * 1000 - static_cast<long>(ms()));
        if (left <= 0 || ::poll(&p, 1, left) <= 0) {
            ::kill(pid, SIGKILL);
            break;
        }
        char buf[4096];
        ssize_t n = ::read(child.out(), buf, sizeof buf);
        if (n <= 0) break;
        double now = ms();
        r.output.append(buf, static_cast<size_t>(n));
        if (r.ready_ms < 0 && r.output.find("PROBE-READY") != std::string::npos) r.ready_ms = now;
        if (r.done_ms < 0 && r.output.find("PROBE-DONE") != std::string::npos) {
            r.done_ms = now;
            if (guest_kib > 0) {
                const long rss = status_kib(pid, "VmRSS:"), guest = guest_ram_rss_kib(pid, guest_kib);
                if (rss > 0 && guest >= 0) r.overhead_kib = rss - guest;
            }
        }
    }
    r.status = child.wait();
    return r;
}

struct Opts {
    std::string popek, probe, qemu = "/usr/bin/qemu-system-x86_64";
    int runs = 10;
    long exits = 1000000;
    std::string memory = "128M";
    std::string disk;      // raw image on tmpfs for the virtio-blk rows ("" = skip)
    std::string netns;     // network namespace holding `tap` ("" = skip the net row)
    std::string tap;
    std::string tap_echo;  // popek_tap_echo binary
    long frames = 20000;
};

// Which devices a run attaches: none, the benchmark disk, or the TAP.
enum class Devices { None, Disk, Net };

std::vector<std::string> in_netns(const Opts& o, std::vector<std::string> argv) {
    argv.insert(argv.begin(), {"/usr/sbin/ip", "netns", "exec", o.netns});
    return argv;
}

std::vector<std::string> popek_argv(const Opts& o, const std::string& cmdline, Devices dev = Devices::None) {
    std::vector<std::string> a{o.popek, "run", "--kernel", o.probe, "--cmdline", cmdline, "--memory", o.memory};
    if (dev == Devices::Disk) a.insert(a.end(), {"--disk", o.disk});
    if (dev == Devices::Net) return in_netns(o, [&] { a.insert(a.end(), {"--net", "tap=" + o.tap}); return a; }());
    return a;
}

std::vector<std::string> qemu_argv(const Opts& o, const std::string& cmdline, Devices dev = Devices::None) {
    // Devices need microvm's PCIe host.
    auto a = qemu_probe_argv(o.qemu, o.probe, o.memory, cmdline, dev != Devices::None);
    if (dev == Devices::Disk)
        a.insert(a.end(), {"-drive", "file=" + o.disk + ",if=none,format=raw,id=d0", "-device",
                           "virtio-blk-pci,drive=d0,disable-legacy=on"});
    if (dev == Devices::Net) {
        a.insert(a.end(), {"-netdev", "tap,id=n0,ifname=" + o.tap + ",script=no,downscript=no", "-device",
                           "virtio-net-pci,netdev=n0,disable-legacy=on"});
        return in_netns(o, a);
    }
    return a;
}

}  // namespace

int main(int argc, char** argv) {
    Opts o;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string k = argv[i], v = argv[i + 1];
        if (k == "--popek") o.popek = v;
        else if (k == "--probe") o.probe = v;
        else if (k == "--qemu") o.qemu = v;
        else if (k == "--runs") o.runs = std::stoi(v);
        else if (k == "--exits") o.exits = std::stol(v);
        else if (k == "--disk") o.disk = v;
        else if (k == "--netns") o.netns = v;
        else if (k == "--tap") o.tap = v;
        else if (k == "--tap-echo") o.tap_echo = v;
        else if (k == "--frames") o.frames = std::stol(v);
        else {
            std::fprintf(stderr, "popek_vmm_bench: unknown option %s\n", k.c_str());
            return 2;
        }
    }
    if (o.popek.empty() || o.probe.empty()) {
        std::fprintf(stderr, "usage: popek_vmm_bench --popek BIN --probe ELF [--qemu BIN] [--runs N] [--exits N]\n");
        return 2;
    }
    struct Row { std::string name; double popek, qemu; };
    std::vector<Row> rows;
    struct Side { const char* name; std::vector<std::string> (*make)(const Opts&, const std::string&, Devices); };
    Side sides[2] = {{"popek", popek_argv}, {"qemu", qemu_argv}};

    // 1. start -> PROBE-READY, and memory overhead, on a short workload; runs interleaved.
    const long guest_kib = std::stol(o.memory) * (o.memory.back() == 'G' ? 1024 * 1024 : 1024);  // "128M", "1G"
    std::vector<double> ready[2], overhead[2];
    for (int i = 0; i < o.runs; i++) {
        for (int s = 0; s < 2; s++) {
            Run r = run_once(sides[s].make(o, "compute 1", Devices::None), std::chrono::seconds(30), guest_kib);
            if (r.ready_ms < 0) {
                std::fprintf(stderr, "%s did not print PROBE-READY:\n%s\n", sides[s].name, r.output.c_str());
                return 1;
            }
            ready[s].push_back(r.ready_ms);
            // (No sample when the VMM exited before /proc could be read.)
            if (r.overhead_kib >= 0) overhead[s].push_back(static_cast<double>(r.overhead_kib) / 1024.0);
        }
    }
    for (int s = 0; s < 2; s++) {
        if (overhead[s].empty()) {
            std::fprintf(stderr, "%s: no run left a %ld KiB guest RAM mapping in smaps to take out of its RSS\n",
                         sides[s].name, guest_kib);
            return 1;
        }
    }
    rows.push_back({"start -> PROBE-READY (ms, median)", median(ready[0]), median(ready[1])});
    rows.push_back({"RSS beyond guest RAM (MiB, median)", median(overhead[0]), median(overhead[1])});

    // 2. port-I/O exits: time between PROBE-READY and PROBE-DONE over N exits.
    //    "exits" writes the POST port (0x80): no answer needed, so popek lets KVM
    //    batch them; "pio-read" reads the UART scratch register: every read is a
    //    full round trip through the VMM's device model in user space.
    auto per_op = [&](const std::string& workload, long n, double out[2]) -> bool {
        for (int s = 0; s < 2; s++) {
            Run r = run_once(sides[s].make(o, workload + " " + std::to_string(n), Devices::None), std::chrono::seconds(900));
            if (r.done_ms < 0) {
                std::fprintf(stderr, "%s did not finish %s:\n%s\n", sides[s].name, workload.c_str(), r.output.c_str());
                return false;
            }
            out[s] = (r.done_ms - r.ready_ms) * 1e6 / static_cast<double>(n);
        }
        return true;
    };
    double per_exit[2], per_read[2];
    if (!per_op("exits", o.exits, per_exit) || !per_op("pio-read", o.exits / 10, per_read)) return 1;
    rows.push_back({"port-I/O exit round trip, POST port 0x80 (ns/exit)", per_exit[0], per_exit[1]});
    rows.push_back({"port-I/O read via user-space device model (ns/read)", per_read[0], per_read[1]});

    // 3. virtio-blk: the probe's ring-3 driver, 32 requests in flight, on a tmpfs image.
    //    Higher is better here: IOPS and MiB/s, median of `runs_io` runs each.
    struct Rate { std::string name; double popek, qemu; };
    std::vector<Rate> rates;
    auto rate = [&](const std::string& name, const std::string& cmdline, Devices dev, double units,
                    const std::function<std::string(int)>& prepare, const std::string& must_say = "") -> bool {
        std::vector<double> v[2];
        for (int i = 0; i < 3; i++) {
            for (int s = 0; s < 2; s++) {
                std::string echo_err = prepare ? prepare(s) : "";
                if (!echo_err.empty()) {
                    std::fprintf(stderr, "%s\n", echo_err.c_str());
                    return false;
                }
                Run r = run_once(sides[s].make(o, cmdline, dev), std::chrono::seconds(300));
                if (r.done_ms < 0 || r.output.find("PROBE-ERROR") != std::string::npos ||
                    r.output.find(must_say) == std::string::npos) {
                    std::fprintf(stderr, "%s failed %s:\n%s\n", sides[s].name, cmdline.c_str(), r.output.c_str());
                    return false;
                }
                v[s].push_back(units / ((r.done_ms - r.ready_ms) / 1000.0));
            }
        }
        rates.push_back({name, median(v[0]), median(v[1])});
        return true;
    };
    if (!o.disk.empty()) {
        if (!rate("virtio-blk 4 KiB random read (IOPS)", "blk-bench randread4k 20000", Devices::Disk, 20000, {}) ||
            !rate("virtio-blk 1 MiB sequential read (MiB/s)", "blk-bench seqread1m 2048", Devices::Disk, 2048, {}) ||
            !rate("virtio-blk 1 MiB sequential write (MiB/s)", "blk-bench seqwrite1m 2048", Devices::Disk, 2048, {}))
            return 1;
    }
    if (!o.netns.empty()) {
        // The echo runs in the namespace for each VM run and answers every
        // frame; the VM starts only once it listens (a frame sent before is
        // lost, and the probe's window of frames with it).
        Child echo;
        auto start_echo = [&](int) -> std::string {
            if (echo.valid()) (void)echo.wait();
            echo = Child::spawn(in_netns(o, {o.tap_echo, o.tap, std::to_string(o.frames), "120"}));
            if (!echo.valid()) return "cannot start popek_tap_echo";
            std::string seen;
            char buf[256];
            while (seen.find("ECHO-READY\n") == std::string::npos) {
                pollfd p{echo.out(), POLLIN, 0};
                if (::poll(&p, 1, 10000) <= 0) return "popek_tap_echo did not say ECHO-READY within 10 s";
                const ssize_t n = ::read(echo.out(), buf, sizeof buf);
                if (n <= 0) return "popek_tap_echo ended before ECHO-READY";
                seen.append(buf, static_cast<size_t>(n));
            }
            return "";
        };
        // Every frame came back: a run that lost some is not a rate.
        const std::string all_back = "received=" + std::to_string(o.frames) + " ";
        bool ok = rate("virtio-net frames through TAP and back (frames/s)", "net-test " + std::to_string(o.frames),
                       Devices::Net, 2.0 * static_cast<double>(o.frames), start_echo, all_back);
        echo.kill_and_wait();
        if (!ok) return 1;
    }

    fmt::print("| benchmark (lower is better) | popek | QEMU microvm (KVM) | popek / QEMU |\n|---|---:|---:|---:|\n");
    for (const auto& row : rows)
        fmt::print("| {} | {:.2f} | {:.2f} | {:.2f}x |\n", row.name, row.popek, row.qemu, row.popek / row.qemu);
    if (!rates.empty()) {
        fmt::print("\n| benchmark (higher is better) | popek | QEMU microvm (KVM) | popek / QEMU |\n|---|---:|---:|---:|\n");
        for (const auto& row : rates)
            fmt::print("| {} | {:.0f} | {:.0f} | {:.2f}x |\n", row.name, row.popek, row.qemu, row.popek / row.qemu);
    }
    fmt::print("\n{} runs for start/RSS (interleaved; RSS sampled in {} / {}); {} POST-port exits; {} port reads.\n",
               o.runs, overhead[0].size(), overhead[1].size(), o.exits, o.exits / 10);
    return 0;
}
