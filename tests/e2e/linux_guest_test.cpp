// The stock Debian cloud kernel on popek's emulation engine (guest/linux):
// the initramfs's /init loads the kernel's own virtio modules, mounts an ext4
// image over virtio-blk, writes files, pings the host end of a TAP, reads
// /dev/hwrng and writes to hvc0, printing a POPEK-CHECK line per check. This
// test asserts every line, then reads the files the guest wrote from the
// image on the host (debugfs, no mount).
//
// The same checks run on QEMU TCG as the reference. The popek test runs the
// optimized popek (POPEK_OPT_BIN: the e2e suite itself is an
// ASan build, far too slow to boot Linux in an emulator) and the guest built
// next to it (POPEK_LINUX_GUEST_DIR, target linux_guest). Skipped, and only
// then, while `popek run --help` has no --engine option.
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "process.hpp"

namespace popek::test {
namespace {

using namespace std::chrono_literals;

const std::string kPopek = POPEK_OPT_BIN;
const std::string kGuestDir = POPEK_LINUX_GUEST_DIR;
constexpr const char* kTap = "lgtap0";
constexpr const char* kHostIp = "10.0.77.1";
constexpr const char* kGuestIp = "10.0.77.2";

// A tool's full path (posix_spawn does not search PATH), or "".
std::string find_tool(const std::string& name) {
    for (const char* dir : {"/usr/sbin", "/sbin", "/usr/bin", "/bin"}) {
        const std::string p = std::string(dir) + "/" + name;
        if (::access(p.c_str(), X_OK) == 0) return p;
    }
    return "";
}

// A network namespace with the TAP lgtap0 at kHostIp/24, up; deleted at scope end.
class GuestNetns {
public:
    GuestNetns() : ip_(find_tool("ip")), name_("popek-linux-" + std::to_string(::getpid())) {}
    ~GuestNetns() {
        if (created_) run_process({ip_, "netns", "del", name_}, 30s);
    }
    GuestNetns(const GuestNetns&) = delete;
    GuestNetns& operator=(const GuestNetns&) = delete;

    // "" on success, else what failed.
    std::string create() {
        if (ip_.empty()) return "`ip` not found (iproute2)";
        auto add = run_process({ip_, "netns", "add", name_}, 30s);
        if (add.exit_code != 0) return "ip netns add " + name_ + ": " + add.err;
        created_ = true;
        const std::vector<std::vector<std::string>> steps = {
            {"link", "set", "lo", "up"},
            {"tuntap", "add", "dev", kTap, "mode", "tap"},
            {"addr", "add", std::string(kHostIp) + "/24", "dev", kTap},
            {"link", "set", kTap, "up"}};
        for (auto cmd : steps) {
            cmd.insert(cmd.begin(), {ip_, "-n", name_});
            auto r = run_process(cmd, 30s);
            if (r.exit_code != 0) return "ip -n " + name_ + " " + cmd[3] + " " + cmd[4] + ": " + r.err;
        }
        return "";
    }
    [[nodiscard]] std::vector<std::string> exec(std::vector<std::string> argv) const {
        argv.insert(argv.begin(), {ip_, "netns", "exec", name_});
        return argv;
    }

private:
    std::string ip_, name_;
    bool created_ = false;
};

// The value after `key=` in `line` (up to a space), or "".
std::string field(const std::string& line, const std::string& key) {
    std::smatch m;
    return std::regex_search(line, m, std::regex(key + "=([^ ]*)")) ? m[1].str() : "";
}

bool popek_has_emulation_engine() {
    auto help = run_process({kPopek, "run", "--help"}, 30s);
    return help.out.find("--engine") != std::string::npos;
}

enum class Vmm { PopekEmu, QemuTcg };

// Boots the guest on `vmm` with an ext4 disk, a TAP, virtio-rng and a virtio
// console, and checks every marker and the files the guest wrote.
void boot_and_check(Vmm vmm) {
    for (const char* f : {"vmlinuz", "initramfs.cpio"})
        ASSERT_TRUE(std::filesystem::exists(kGuestDir + "/" + f))
            << kGuestDir << "/" << f << " is missing: build the linux_guest target of the optimized build";
    const std::string mkfs = find_tool("mkfs.ext4"), debugfs = find_tool("debugfs"), md5sum = find_tool("md5sum");
    ASSERT_FALSE(mkfs.empty() || debugfs.empty() || md5sum.empty()) << "needs e2fsprogs and coreutils (scripts/deps.sh)";

    // The disk: ext4 made from a directory holding host.txt.
    TempDir tmp;
    std::random_device rd;
    std::ostringstream tok;
    tok << std::hex << rd() << rd();
    const std::string token = tok.str();
    const std::string host_text = "written by the host for token " + token;
    std::filesystem::create_directory(tmp.path("content"));
    std::ofstream(tmp.path("content/host.txt")) << host_text << "\n";
    const std::string disk = tmp.path("disk.img");
    std::ofstream(disk).close();
    std::filesystem::resize_file(disk, 64ull << 20);
    auto made = run_process({mkfs, "-q", "-F", "-L", "popek", "-d", tmp.path("content"), disk}, 60s);
    ASSERT_EQ(made.exit_code, 0) << made.out << made.err;

    GuestNetns ns;
    ASSERT_EQ(ns.create(), "");

    // As guest/linux/lib.sh's lg_cmdline and lg_*_argv.
    const std::string cmdline = "console=ttyS0 quiet panic=-1 cryptomgr.notests popek.mode=test popek.token=" + token +
                                " popek.ip=" + kGuestIp + "/24 popek.peer=" + kHostIp;
    const std::string kernel = kGuestDir + "/vmlinuz", initrd = kGuestDir + "/initramfs.cpio";
    std::vector<std::string> argv;
    if (vmm == Vmm::PopekEmu) {
        // hvc0 shares popek's stdout with the UART (--console virtio).
        argv = {kPopek, "run", "--engine", "emu", "--memory", "256M", "--cpus", "1", "--kernel", kernel, "--initrd",
                initrd, "--cmdline", cmdline, "--disk", disk, "--net", std::string("tap=") + kTap, "--rng",
                "--console", "virtio"};
    } else {
        const std::string qemu = find_tool("qemu-system-x86_64");
        ASSERT_FALSE(qemu.empty()) << "needs qemu-system-x86 (scripts/deps.sh)";
        argv = {qemu, "-accel", "tcg", "-M", "q35", "-m", "256M", "-smp", "1", "-nodefaults", "-no-user-config",
                "-nographic", "-no-reboot", "-serial", "stdio", "-device", "virtio-serial-pci,disable-legacy=on",
                "-chardev", "file,id=hvc,path=" + tmp.path("hvc0"), "-device", "virtconsole,chardev=hvc", "-drive",
                "file=" + disk + ",if=none,format=raw,id=d0", "-device", "virtio-blk-pci,drive=d0,disable-legacy=on",
                "-netdev", std::string("tap,id=n0,ifname=") + kTap + ",script=no,downscript=no", "-device",
                "virtio-net-pci,netdev=n0,disable-legacy=on,romfile=", "-device", "virtio-rng-pci,disable-legacy=on",
                "-kernel", kernel, "-initrd", initrd, "-append", cmdline};
    }
    auto r = run_process(ns.exec(argv), 240s);
    ASSERT_FALSE(r.timed_out) << r.out << r.err;
    EXPECT_EQ(r.exit_code, 0) << "the guest powers off when done\n" << r.out << r.err;
    std::string out = r.out, hvc = r.out;
    if (vmm == Vmm::QemuTcg) {
        // SeaBIOS clears the screen right before the kernel starts.
        if (auto cls = out.rfind("\x1b[2J"); cls != std::string::npos) out.erase(0, cls + 4);
        hvc = read_text(tmp.path("hvc0"));
    }

    EXPECT_NE(line_starting(out, "POPEK-LINUX-INIT"), "") << out << r.err;
    for (const char* check : {"modules", "devices", "disk-mount", "disk-read", "disk-write", "net", "rng", "hvc0"})
        EXPECT_NE(line_starting(out, std::string("POPEK-CHECK ") + check + " ok"), "")
            << "check " << check << ": " << line_starting(out, std::string("POPEK-CHECK ") + check) << "\n"
            << out << r.err;
    EXPECT_EQ(line_starting(out, "POPEK-LINUX-DONE"), "POPEK-LINUX-DONE passed=8 failed=0") << out << r.err;

    // The kernel's own drivers bound to the four virtio-pci devices.
    for (const char* driver : {"virtio_blk", "virtio_net", "virtio_console", "virtio_rng"}) {
        bool bound = false;
        for (const auto& l : lines(out)) bound |= l.rfind("POPEK-DEVICE ", 0) == 0 && field(l, "driver") == driver;
        EXPECT_TRUE(bound) << driver << "\n" << out;
    }
    EXPECT_EQ(line_starting(out, "POPEK-CHECK disk-read ok"), "POPEK-CHECK disk-read ok host.txt=" + host_text) << out;
    EXPECT_EQ(field(line_starting(out, "POPEK-CHECK net ok"), "received"), "3/3") << out;
    EXPECT_NE(line_starting(hvc, "POPEK-HVC0 hello from "), "") << hvc;
    EXPECT_EQ(field(line_starting(hvc, "POPEK-HVC0"), "token"), token) << hvc;

    // What the guest wrote, read from the image by the host.
    auto tok_file = run_process({debugfs, "-R", "cat /token.txt", disk}, 60s);
    EXPECT_EQ(tok_file.out, token + "\n") << tok_file.err;
    auto dumped = run_process({debugfs, "-R", "dump /random.bin " + tmp.path("random.bin"), disk}, 60s);
    EXPECT_EQ(dumped.exit_code, 0) << dumped.err;
    EXPECT_EQ(read_text(tmp.path("random.bin")).size(), 262144u) << dumped.err;
    auto md5 = run_process({md5sum, tmp.path("random.bin")}, 60s);
    const std::string guest_md5 = field(line_starting(out, "POPEK-CHECK disk-write ok"), "md5");
    ASSERT_FALSE(guest_md5.empty()) << out;
    EXPECT_EQ(md5.out.substr(0, md5.out.find(' ')), guest_md5);
    auto host_file = run_process({debugfs, "-R", "cat /host.txt", disk}, 60s);
    EXPECT_EQ(host_file.out, host_text + "\n");
}

TEST(LinuxGuest, DebianKernelRunsEveryVirtioCheckOnTheEmulationEngine) {
    if (!popek_has_emulation_engine())
        GTEST_SKIP() << kPopek << " run --help has no --engine option yet: the emulation engine is not an hv "
                     << "backend; this test boots Linux on `popek run --engine emu` once it is";
    boot_and_check(Vmm::PopekEmu);
}

// The reference: the same guest, devices and checks on QEMU TCG. When this
// fails, the guest or the host is broken, not popek.
TEST(LinuxGuest, QemuTcgReferencePassesEveryCheck) { boot_and_check(Vmm::QemuTcg); }

}  // namespace
}  // namespace popek::test
