// popek's command line: parses, validates, hands a VmConfig to the VMM and
// turns how the guest ended into an exit status.
#include <CLI/CLI.hpp>
#include <malloc.h>

#include <cstdio>
#include <string>

#include "api/server.hpp"
#include "base/bytes.hpp"
#include "cli/ctl.hpp"
#include "cli/migrate.hpp"
#include "vmm/config.hpp"
#include "vmm/incoming.hpp"
#include "vmm/machine.hpp"

namespace {

using namespace popek;

constexpr int kExitBadInput = 2;

int fail(const std::string& message) {
    std::fprintf(stderr, "popek: error: %s\n", message.c_str());
    return kExitBadInput;
}

// The exit-status contract (README "Exit status").
int exit_status(const devices::GuestExit& e) {
    switch (e.kind) {
        case devices::GuestExitKind::PowerOff: return 0;
        case devices::GuestExitKind::DebugExit: return static_cast<int>(e.code & 0xff);
        case devices::GuestExitKind::Reset: return 3;
        case devices::GuestExitKind::Crash: return 4;
        case devices::GuestExitKind::Terminated: return 128 + static_cast<int>(e.code);
    }
    return 1;
}

// Runs a built machine to its end and maps how the guest ended to an exit status.
int run_machine(vmm::Machine& machine, const std::string& api_sock) {
    if (!machine.console().pty_path.empty())
        std::fprintf(stderr, "popek: serial console on %s\n", machine.console().pty_path.c_str());
    std::unique_ptr<api::ApiServer> api;  // destroyed before the machine it controls
    if (!api_sock.empty()) {
        auto server = api::ApiServer::start(api_sock, machine);
        if (!server) return fail("--api-sock " + api_sock + ": " + server.error().message);
        api = std::move(server).value();
    }
    // Building the machine (kernel image, ACPI tables, parsed options) leaves
    // freed heap pages behind; hand them back before the guest runs for hours.
    ::malloc_trim(0);
    auto result = machine.run();
    api.reset();
    if (!result) {
        std::fprintf(stderr, "popek: %s\n", result.error().message.c_str());
        return 1;
    }
    const devices::GuestExit& e = *result;
    switch (e.kind) {
        case devices::GuestExitKind::PowerOff: break;
        case devices::GuestExitKind::DebugExit:
            if (e.code != 0) std::fprintf(stderr, "popek: guest wrote %u to the debug-exit port\n", e.code);
            break;
        case devices::GuestExitKind::Reset: std::fprintf(stderr, "popek: guest reset (%s)\n", e.detail.c_str()); break;
        case devices::GuestExitKind::Crash: std::fprintf(stderr, "popek: guest crashed: %s\n", e.detail.c_str()); break;
        case devices::GuestExitKind::Terminated: std::fprintf(stderr, "popek: %s\n", e.detail.c_str()); break;
    }
    return exit_status(e);
}

int run_vm(const vmm::VmConfig& cfg, const std::string& api_sock) {
    auto machine = vmm::Machine::create(cfg);
    if (!machine) return fail(machine.error().message);
    if (cfg.print_devices) std::fprintf(stderr, "%s", (*machine)->describe_devices().c_str());
    return run_machine(**machine, api_sock);
}

int receive_vm(const vmm::IncomingOptions& options, const std::string& api_sock) {
    auto in = vmm::receive_migration(options);
    if (!in) {
        std::fprintf(stderr, "popek: error: %s\n", in.error().message.c_str());
        return 1;
    }
    const int status = run_machine(*in->machine, api_sock);
    return in->finish_postcopy() ? status : 1;
}

int restore_vm(const vmm::RestoreOptions& options, const std::string& api_sock) {
    auto machine = vmm::Machine::restore(options);
    if (!machine) return fail(machine.error().message);
    return run_machine(**machine, api_sock);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"popek: a virtual machine monitor for Linux KVM", "popek"};
    app.require_subcommand(1);
    app.set_help_all_flag("--help-all", "Show help for all subcommands");

    auto* version = app.add_subcommand("version", "Print popek's version");

    vmm::VmConfig cfg;
    std::string memory = "256M";
    std::string serial = "stdio";
    auto* run = app.add_subcommand("run", "Boot a VM");
    run->add_option("--kernel", cfg.kernel_path, "Kernel: a PVH ELF or a Linux bzImage (required unless --incoming)");
    vmm::IncomingOptions incoming;
    std::string max_memory;
    run->add_option("--incoming", incoming.listen,
                    "Receive a live migration on tcp:ADDR:PORT instead of booting (the config comes from the source)");
    run->add_option("--max-memory", max_memory, "With --incoming: refuse VMs with more RAM than this (e.g. 1G)");
    run->add_option("--initrd", cfg.initrd_path, "Initial ramdisk");
    run->add_option("--cmdline", cfg.cmdline, "Kernel command line");
    run->add_option("--cpus", cfg.cpus, "Number of vCPUs (1-32)")->default_val(1);
    run->add_option("--memory", memory, "Guest RAM, e.g. 256M or 2G")->default_val("256M");
    run->add_option("--serial", serial, "Serial console: stdio, file:PATH, pty or none")->default_val("stdio");
    run->add_option("--kvm-device", cfg.kvm_device, "KVM device node")->default_val("/dev/kvm");
    std::string engine = "auto", restore_engine = "auto";
    run->add_option("--engine", engine,
                    "Hypervisor backend: kvm, emu (the emulation engine) or auto (kvm when the KVM device opens)")
        ->default_val("auto");
    std::vector<std::string> disks, nets;
    std::string console = "serial";
    run->add_option("--disk", disks, "virtio-blk disk: PATH[,readonly=on][,id=NAME][,engine=io_uring|sync][,queues=N]");
    run->add_option("--net", nets, "virtio-net on a TAP device: tap=NAME[,mac=MAC][,id=NAME]");
    run->add_flag("--rng", cfg.rng, "virtio-rng fed from getrandom");
    run->add_option("--console", console, "Console device: serial (the UART) or virtio (virtio-console on stdio)")
        ->default_val("serial");
    run->add_flag("--print-devices", cfg.print_devices, "Print the PCI devices (lspci style) to stderr before booting");
    std::string api_sock, restore_api_sock;
    run->add_option("--api-sock", api_sock, "Serve the control API (REST, JSON) on this Unix socket");

    vmm::RestoreOptions restore_opts;
    auto* restore = app.add_subcommand("restore", "Continue a VM from a snapshot directory");
    restore->add_option("--snapshot", restore_opts.dir, "Snapshot directory (from `popek ctl snapshot DIR`)")->required();
    restore->add_flag("--eager", restore_opts.eager,
                      "Read all guest memory before running (default: map it copy-on-write, load on first touch)");
    restore->add_option("--serial", restore_opts.serial, "Serial console: stdio, file:PATH, pty or none (default: as saved)");
    restore->add_option("--api-sock", restore_api_sock, "Serve the control API on this Unix socket");
    restore->add_option("--engine", restore_engine,
                        "Hypervisor backend: kvm, emu or auto (the one that saved the snapshot)")
        ->default_val("auto");

    cli::CtlOptions ctl_options;
    auto* ctl = cli::add_ctl_command(app, ctl_options);
    cli::MigrateOptions migrate_options;
    auto* migrate = cli::add_migrate_command(app, migrate_options);

    const std::string first = argc > 1 ? argv[1] : "";
    if (!first.empty() && first[0] != '-' && first != "run" && first != "version" && first != "restore" &&
        first != "ctl" && first != "migrate")
        return fail(std::string("unknown command '") + argv[1] +
                    "' (expected run, restore, ctl, migrate or version; see popek --help)");
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        if (argc == 1) return fail("no command given (expected run, restore, ctl or version; see popek --help)");
        // One line, not CLI11's multi-line banner.
        return fail(e.what());
    }

    if (version->parsed()) {
        std::printf("popek %s\n", POPEK_VERSION);
        return 0;
    }
    if (restore->parsed()) {
        auto e = vmm::parse_engine(restore_engine);
        if (!e) return fail(e.error().message);
        restore_opts.engine = *e;
        return restore_vm(restore_opts, restore_api_sock);
    }
    if (ctl->parsed()) return cli::run_ctl(ctl_options);
    if (migrate->parsed()) return cli::run_migrate(migrate_options);
    if (!incoming.listen.empty()) {
        if (!max_memory.empty()) {
            auto limit = base::parse_size(max_memory);
            if (!limit) return fail("--max-memory " + max_memory + ": expected a size like 256M or 2G");
            incoming.max_memory = *limit;
        }
        if (run->count("--serial") > 0) incoming.serial = serial;
        return receive_vm(incoming, api_sock);
    }
    if (cfg.kernel_path.empty()) return fail("run: --kernel is required (or --incoming tcp:ADDR:PORT)");
    auto bytes = base::parse_size(memory);
    if (!bytes) return fail("--memory " + memory + ": expected a size like 256M or 2G");
    cfg.memory_bytes = *bytes;
    if (auto r = vmm::parse_serial(serial, cfg); !r) return fail(r.error().message);
    for (size_t i = 0; i < disks.size(); i++) {
        auto d = vmm::parse_disk(disks[i], i);
        if (!d) return fail(d.error().message);
        cfg.disks.push_back(*d);
    }
    for (size_t i = 0; i < nets.size(); i++) {
        auto n = vmm::parse_net(nets[i], i);
        if (!n) return fail(n.error().message);
        cfg.nets.push_back(*n);
    }
    auto console_device = vmm::parse_console(console);
    if (!console_device) return fail(console_device.error().message);
    cfg.console = *console_device;
    auto hv_engine = vmm::parse_engine(engine);
    if (!hv_engine) return fail(hv_engine.error().message);
    cfg.engine = *hv_engine;
    return run_vm(cfg, api_sock);
}
