// What a user asks for: the VM's configuration, as parsed from the CLI (and
// later the API). Plain data; validated by validate_config().
#pragma once

#include <cstdint>
#include <array>
#include <string>
#include <vector>

#include "base/result.hpp"

namespace popek::vmm {

enum class SerialMode { Stdio, File, Pty, None };
enum class ConsoleDevice { Serial, Virtio };
// Which hypervisor backend runs the guest: KVM, the emulation engine, or KVM
// when /dev/kvm opens and the engine otherwise.
enum class HvEngine { Auto, Kvm, Emu };

// --disk PATH[,readonly=on][,id=NAME][,engine=io_uring|sync][,queues=N]
struct DiskConfig {
    std::string path;
    bool readonly = false;
    std::string id;              // default: disk0, disk1, ...
    std::string engine = "auto"; // io_uring where it works, else sync
    uint16_t queues = 1;
};

// --net tap=NAME[,mac=MAC][,id=NAME]
struct NetConfig {
    std::string tap;
    std::array<uint8_t, 6> mac{};
    bool mac_given = false;
    std::string id;              // default: net0, ...
};

struct VmConfig {
    std::string kernel_path;
    std::string initrd_path;        // empty: none
    std::string cmdline;
    uint32_t cpus = 1;
    uint64_t memory_bytes = 256ull << 20;
    SerialMode serial = SerialMode::Stdio;
    std::string serial_path;        // for SerialMode::File
    std::string kvm_device = "/dev/kvm";
    // Not part of a snapshot's config: a restore picks the backend that saved it unless told.
    HvEngine engine = HvEngine::Auto;
    std::vector<DiskConfig> disks;
    std::vector<NetConfig> nets;
    bool rng = false;
    ConsoleDevice console = ConsoleDevice::Serial;
    bool print_devices = false;
};

constexpr uint32_t kMaxVcpus = 32;
constexpr size_t kMaxPciDevices = 31;  // bus 0, slots 1-31 (00.0 is the host bridge)

// Checks ranges that do not need the host: CPU count, memory size bounds.
base::Result<void> validate_config(const VmConfig&);

// "stdio", "file:PATH", "pty", "none" -> mode and path.
base::Result<void> parse_serial(const std::string& spec, VmConfig& cfg);
// The values of --disk, --net and --console; errors name the option and the bad part.
base::Result<DiskConfig> parse_disk(const std::string& spec, size_t index);
base::Result<NetConfig> parse_net(const std::string& spec, size_t index);
base::Result<ConsoleDevice> parse_console(const std::string& spec);
// The value of --engine: kvm, emu or auto.
base::Result<HvEngine> parse_engine(const std::string& spec);

}  // namespace popek::vmm
