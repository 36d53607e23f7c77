// Bad input on the command line: one clear error line, exit status 2, no crash.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "process.hpp"

namespace popek::test {
namespace {

using namespace std::chrono_literals;

struct BadInputCase {
    const char* name;
    std::vector<std::string> args;  // after "popek"
    const char* expect;             // substring of the one error line
};

std::string temp_file(const std::string& name, const std::string& contents) {
    std::string path = std::string(::testing::TempDir()) + "popek-cli-" + name;
    std::ofstream(path, std::ios::binary) << contents;
    return path;
}

void expect_one_error_line(const ProcessResult& r, const std::string& expect) {
    EXPECT_FALSE(r.timed_out);
    EXPECT_EQ(r.term_signal, 0) << r.err;
    EXPECT_EQ(r.exit_code, 2) << r.err;
    auto errs = lines(r.err);
    ASSERT_EQ(errs.size(), 1u) << "stderr was:\n" << r.err;
    EXPECT_EQ(errs[0].rfind("popek: error: ", 0), 0u) << errs[0];
    EXPECT_NE(errs[0].find(expect), std::string::npos) << "'" << errs[0] << "' lacks '" << expect << "'";
    EXPECT_TRUE(r.out.empty()) << r.out;
}

class BadInput : public ::testing::TestWithParam<BadInputCase> {};

TEST_P(BadInput, OneClearLineAndStatus2) {
    std::vector<std::string> argv{POPEK_BIN};
    for (const auto& a : GetParam().args) argv.push_back(a);
    expect_one_error_line(run_process(argv, 30s), GetParam().expect);
}

const std::string kProbe = POPEK_PROBE;

INSTANTIATE_TEST_SUITE_P(
    Cli, BadInput,
    ::testing::Values(
        BadInputCase{"MissingKernel", {"run", "--kernel", "/nonexistent/vmlinux"}, "cannot open kernel '/nonexistent/vmlinux'"},
        BadInputCase{"EmptyKernel", {"run", "--kernel", temp_file("empty", "")}, "is empty"},
        BadInputCase{"GarbageKernel", {"run", "--kernel", temp_file("garbage", std::string(8192, 'x'))},
                     "neither an ELF"},
        BadInputCase{"DirectoryKernel", {"run", "--kernel", "/tmp"}, "is a directory"},
        BadInputCase{"MemoryTooLarge", {"run", "--kernel", kProbe, "--memory", "900G"}, "too large"},
        BadInputCase{"MemoryTooSmall", {"run", "--kernel", kProbe, "--memory", "1M"}, "too small"},
        BadInputCase{"MemoryGarbage", {"run", "--kernel", kProbe, "--memory", "lots"}, "expected a size"},
        BadInputCase{"ZeroCpus", {"run", "--kernel", kProbe, "--cpus", "0"}, "--cpus 0: must be between 1 and 32"},
        BadInputCase{"TooManyCpus", {"run", "--kernel", kProbe, "--cpus", "300"}, "--cpus 300: must be between 1 and 32"},
        BadInputCase{"NegativeCpus", {"run", "--kernel", kProbe, "--cpus", "-1"}, "--cpus"},
        BadInputCase{"UnknownOption", {"run", "--kernel", kProbe, "--frobnicate"}, "--frobnicate"},
        BadInputCase{"UnknownCommand", {"fly"}, "fly"},
        BadInputCase{"NoKernel", {"run"}, "--kernel"},
        BadInputCase{"BadSerial", {"run", "--kernel", kProbe, "--serial", "carrier-pigeon"}, "--serial"},
        BadInputCase{"NoKvm", {"run", "--engine", "kvm", "--kernel", kProbe, "--kvm-device", "/nonexistent/kvm"},
                     "cannot open /nonexistent/kvm"},
        BadInputCase{"MissingInitrd", {"run", "--kernel", kProbe, "--initrd", "/nonexistent/initrd"},
                     "cannot open initrd"}),
    [](const auto& p) { return std::string(p.param.name); });

TEST(Cli, VersionPrintsVersion) {
    auto r = run_process({POPEK_BIN, "version"}, 10s);
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_EQ(r.out.rfind("popek ", 0), 0u) << r.out;
}

TEST(Cli, HelpListsRun) {
    auto r = run_process({POPEK_BIN, "--help"}, 10s);
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_NE(r.out.find("run"), std::string::npos) << r.out;
    auto r2 = run_process({POPEK_BIN, "run", "--help"}, 10s);
    EXPECT_EQ(r2.exit_code, 0);
    for (const char* opt : {"--kernel", "--initrd", "--cmdline", "--cpus", "--memory", "--serial"})
        EXPECT_NE(r2.out.find(opt), std::string::npos) << opt;
}

}  // namespace
}  // namespace popek::test
