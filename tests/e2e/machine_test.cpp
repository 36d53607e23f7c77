// Drives vmm::Machine in-process: what the CLI cannot show.
#include <gtest/gtest.h>

#include "vmm/machine.hpp"

namespace popek::test {
namespace {

vmm::VmConfig probe_config(const std::string& cmdline, uint32_t cpus = 1) {
    vmm::VmConfig cfg;
    cfg.kernel_path = POPEK_PROBE;
    cfg.cmdline = cmdline;
    cfg.cpus = cpus;
    cfg.memory_bytes = 64ull << 20;
    cfg.serial = vmm::SerialMode::None;
    return cfg;
}

// Port 0x80 writes are batched by the backend (no exit to user space each);
// every one of them must still reach the device, in the count the guest made.
TEST(Machine, BatchedPostCodeWritesAllArrive) {
    for (uint64_t n : {1ull, 169ull, 170ull, 171ull, 5000ull}) {
        auto m = vmm::Machine::create(probe_config("exits " + std::to_string(n)));
        ASSERT_TRUE(m.ok()) << m.error().message;
        auto exit = (*m)->run();
        ASSERT_TRUE(exit.ok()) << exit.error().message;
        EXPECT_EQ(exit->kind, devices::GuestExitKind::DebugExit);
        EXPECT_EQ(exit->code, 0u);
        EXPECT_EQ((*m)->post_code_writes(), n);
    }
}

TEST(Machine, GuestRamIsMappedWhereTheLayoutSays) {
    auto m = vmm::Machine::create(probe_config("compute 1"));
    ASSERT_TRUE(m.ok()) << m.error().message;
    const auto& mem = (*m)->memory();
    ASSERT_EQ(mem.regions().size(), 1u);
    EXPECT_EQ(mem.regions()[0].gpa, 0u);
    EXPECT_EQ(mem.regions()[0].size, 64ull << 20);
    // The loader put the RSDP where the layout says.
    std::array<uint8_t, 8> sig{};
    ASSERT_TRUE(mem.read(0xe0000, sig).ok());
    EXPECT_EQ(std::string(sig.begin(), sig.end()), "RSD PTR ");
}

}  // namespace
}  // namespace popek::test
