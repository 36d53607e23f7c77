#include "vmm/config.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "arch/x86/layout.hpp"

namespace popek::vmm {

using base::Error;

static std::string mib(uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

base::Result<void> validate_config(const VmConfig& cfg) {
    if (cfg.cpus < 1 || cfg.cpus > kMaxVcpus)
        return Error{"--cpus " + std::to_string(cfg.cpus) + ": must be between 1 and " +
                     std::to_string(kMaxVcpus)};
    if (cfg.memory_bytes < arch::x86::kMinRam)
        return Error{"--memory " + mib(cfg.memory_bytes) + " is too small: at least " +
                     mib(arch::x86::kMinRam) + " is needed"};
    if (cfg.memory_bytes % 4096 != 0) return Error{"--memory must be a multiple of 4 KiB"};
    auto pages = ::sysconf(_SC_PHYS_PAGES);
    auto page = ::sysconf(_SC_PAGESIZE);
    uint64_t host = pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
    uint64_t limit = host != 0 && host < arch::x86::kMaxRam ? host : arch::x86::kMaxRam;
    if (cfg.memory_bytes > limit)
        return Error{"--memory " + mib(cfg.memory_bytes) + " is too large: this host allows at most " +
                     mib(limit)};
    if (cfg.kernel_path.empty()) return Error{"--kernel is required"};
    std::vector<std::string> ids;
    for (const auto& d : cfg.disks) ids.push_back(d.id);
    for (const auto& n : cfg.nets) ids.push_back(n.id);
    std::sort(ids.begin(), ids.end());
    if (auto dup = std::adjacent_find(ids.begin(), ids.end()); dup != ids.end())
        return Error{"device id '" + *dup + "' is used twice; give each --disk/--net its own id="};
    if (cfg.disks.size() + cfg.nets.size() + (cfg.rng ? 1 : 0) + 1 > kMaxPciDevices)
        return Error{"too many devices: at most " + std::to_string(kMaxPciDevices - 2) + " virtio devices fit on the PCI bus"};
    return {};
}

base::Result<void> parse_serial(const std::string& spec, VmConfig& cfg) {
    if (spec == "stdio") cfg.serial = SerialMode::Stdio;
    else if (spec == "pty") cfg.serial = SerialMode::Pty;
    else if (spec == "none") cfg.serial = SerialMode::None;
    else if (spec.rfind("file:", 0) == 0 && spec.size() > 5) {
        cfg.serial = SerialMode::File;
        cfg.serial_path = spec.substr(5);
    } else {
        return Error{"--serial " + spec + ": expected stdio, file:PATH, pty or none"};
    }
    return {};
}

namespace {

// Splits "first,key=value,key=value" into the first part and key/value pairs.
struct OptionList {
    std::string first;
    std::vector<std::pair<std::string, std::string>> pairs;
};

OptionList split_options(const std::string& spec) {
    OptionList out;
    size_t start = 0;
    bool first = true;
    while (start <= spec.size()) {
        size_t comma = spec.find(',', start);
        std::string part = spec.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (first) {
            out.first = part;
            first = false;
        } else {
            size_t eq = part.find('=');
            out.pairs.emplace_back(part.substr(0, eq), eq == std::string::npos ? "" : part.substr(eq + 1));
        }
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    return out;
}

bool valid_id(const std::string& id) {
    if (id.empty() || id.size() > 20) return false;  // virtio-blk's serial is 20 bytes
    for (char c : id)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return false;
    return true;
}

}  // namespace

base::Result<DiskConfig> parse_disk(const std::string& spec, size_t index) {
    auto opts = split_options(spec);
    DiskConfig d;
    d.path = opts.first;
    d.id = "disk" + std::to_string(index);
    if (d.path.empty()) return Error{"--disk " + spec + ": expected PATH[,readonly=on][,id=NAME]"};
    for (const auto& [key, value] : opts.pairs) {
        if (key == "readonly" && (value == "on" || value == "off")) d.readonly = value == "on";
        else if (key == "id" && valid_id(value)) d.id = value;
        else if (key == "engine" && (value == "auto" || value == "io_uring" || value == "sync")) d.engine = value;
        else if (key == "queues" && !value.empty() && value.size() <= 2 &&
                 std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
                 std::stoi(value) >= 1 && std::stoi(value) <= 16)
            d.queues = static_cast<uint16_t>(std::stoi(value));
        else
            return Error{"--disk " + spec + ": bad option '" + key + (value.empty() ? "" : "=" + value) +
                         "' (known: readonly=on|off, id=NAME of up to 20 letters/digits/-/_, "
                         "engine=auto|io_uring|sync, queues=1-16)"};
    }
    return d;
}

base::Result<NetConfig> parse_net(const std::string& spec, size_t index) {
    auto opts = split_options(spec);
    NetConfig n;
    n.id = "net" + std::to_string(index);
    // The first part is itself key=value (tap=NAME).
    std::vector<std::pair<std::string, std::string>> all;
    size_t eq = opts.first.find('=');
    all.emplace_back(opts.first.substr(0, eq), eq == std::string::npos ? "" : opts.first.substr(eq + 1));
    all.insert(all.end(), opts.pairs.begin(), opts.pairs.end());
    for (const auto& [key, value] : all) {
        if (key == "tap" && !value.empty() && value.size() < 16) {
            n.tap = value;
        } else if (key == "mac") {
            unsigned b[6];
            char tail;
            if (std::sscanf(value.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5],
                            &tail) != 6 || value.size() != 17)
                return Error{"--net " + spec + ": mac must look like 52:54:00:12:34:56"};
            for (int i = 0; i < 6; i++) n.mac[static_cast<size_t>(i)] = static_cast<uint8_t>(b[i]);
            if (n.mac[0] & 1) return Error{"--net " + spec + ": mac must not be a multicast address"};
            n.mac_given = true;
        } else if (key == "id" && valid_id(value)) {
            n.id = value;
        } else {
            return Error{"--net " + spec + ": bad option '" + key + (value.empty() ? "" : "=" + value) +
                         "' (expected tap=NAME[,mac=MAC][,id=NAME]; tap names have at most 15 characters)"};
        }
    }
    if (n.tap.empty()) return Error{"--net " + spec + ": tap=NAME is required"};
    return n;
}

base::Result<ConsoleDevice> parse_console(const std::string& spec) {
    if (spec == "serial") return ConsoleDevice::Serial;
    if (spec == "virtio") return ConsoleDevice::Virtio;
    return Error{"--console " + spec + ": expected serial or virtio"};
}

base::Result<HvEngine> parse_engine(const std::string& spec) {
    if (spec == "auto") return HvEngine::Auto;
    if (spec == "kvm") return HvEngine::Kvm;
    if (spec == "emu") return HvEngine::Emu;
    return Error{"--engine " + spec + ": expected kvm, emu or auto"};
}

}  // namespace popek::vmm
