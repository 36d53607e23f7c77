// vCPU and VM state as JSON/CBOR: round trips, and strict, exception-free
// parsing of damaged input.
#include <gtest/gtest.h>

#include <random>

#include "migration/cbor.hpp"
#include "migration/cpu_state.hpp"

namespace popek::test {
namespace {

using nlohmann::json;

hv::VcpuState sample_vcpu() {
    hv::VcpuState s;
    s.regs = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0xffffffffffffffff, 0xffffffff81000000, 0x246};
    s.sregs.cs = {0, 0xffffffff, 0x10, 0xb, 1, 0, 0, 1, 1, 1, 0, 0};
    s.sregs.ds = {0x1000, 0xfffff, 0x18, 0x3, 1, 3, 1, 1, 0, 0, 1, 0};
    s.sregs.es = s.sregs.ss = s.sregs.ds;
    s.sregs.fs = {0x7f0012340000, 0xffffffff, 0, 3, 1, 0, 1, 1, 0, 1, 0, 0};
    s.sregs.gs = {0xffff888000001000, 0xffffffff, 0, 3, 1, 0, 1, 1, 0, 1, 0, 0};
    s.sregs.tr = {0x5000, 0x67, 0x40, 0xb, 1, 0, 0, 0, 0, 0, 0, 0};
    s.sregs.ldt = {0, 0xffff, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1};
    s.sregs.gdt = {0x2000, 0x7f};
    s.sregs.idt = {0x3000, 0xfff};
    s.sregs.cr0 = 0x80050033;
    s.sregs.cr2 = 0xdead000;
    s.sregs.cr3 = 0x4000;
    s.sregs.cr4 = 0x406a0;
    s.sregs.cr8 = 5;
    s.sregs.efer = 0xd01;
    s.sregs.apic_base = 0xfee00900;
    s.msrs = {{0x10, 1ull << 40}, {0x174, 0x10}, {0xc0000082, 0xffffffff81c00000}, {0x4b564d01, 0x12345601}};
    s.xsave.resize(4096);
    for (size_t i = 0; i < s.xsave.size(); i++) s.xsave[i] = static_cast<uint8_t>(i * 7);
    s.xcrs = {{0, 7}};
    s.lapic.resize(1024);
    for (size_t i = 0; i < s.lapic.size(); i++) s.lapic[i] = static_cast<uint8_t>(i ^ 0x5a);
    s.events = {1, 14, 1, 0x2, 0, 0x30, 0, 1, 0, 1, 1, 0x9a, 0, 0, 0, 1};
    s.debug = {{0x1000, 0x2000, 0x3000, 0x4000}, 0xffff0ff0, 0x455};
    s.mp_state = 3;
    return s;
}

hv::VmState sample_vm() {
    hv::VmState s;
    s.backend = "kvm";
    s.blobs = {{"ioapic", std::vector<uint8_t>(208, 0x11)},
               {"pic-master", std::vector<uint8_t>(16, 0x22)},
               {"pic-slave", std::vector<uint8_t>(16, 0x33)},
               {"pit", std::vector<uint8_t>(112, 0x44)}};
    s.clock_ns = 123456789012345;
    return s;
}

json through_cbor(const json& j) {
    auto back = migration::decode_cbor(migration::encode_cbor(j));
    EXPECT_TRUE(back.ok()) << back.error().message;
    return back.ok() ? *back : json();
}

std::string error_of(const base::Result<hv::VcpuState>& r) { return r.ok() ? "(no error)" : r.error().message; }

TEST(CpuStateJson, VcpuStateRoundTripsThroughCbor) {
    hv::VcpuState s = sample_vcpu();
    json j = migration::vcpu_state_to_json(s);
    EXPECT_TRUE(j["xsave"].is_binary());
    EXPECT_TRUE(j["lapic"].is_binary());
    EXPECT_EQ(j["regs"]["rip"], 0xffffffff81000000u);
    EXPECT_EQ(j["sregs"]["cs"]["selector"], 0x10u);
    auto direct = migration::vcpu_state_from_json(j);
    ASSERT_TRUE(direct.ok()) << direct.error().message;
    EXPECT_EQ(*direct, s);
    auto back = migration::vcpu_state_from_json(through_cbor(j));
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(*back, s);
}

TEST(CpuStateJson, VmStateRoundTripsThroughCbor) {
    hv::VmState s = sample_vm();
    auto back = migration::vm_state_from_json(through_cbor(migration::vm_state_to_json(s)));
    ASSERT_TRUE(back.ok()) << back.error().message;
    // Blobs come back by name (a JSON object): sample_vm() lists them in that order.
    EXPECT_EQ(*back, s);
}

TEST(CpuStateJson, MissingFieldIsNamed) {
    json j = migration::vcpu_state_to_json(sample_vcpu());
    j["sregs"]["cs"].erase("base");
    EXPECT_EQ(error_of(migration::vcpu_state_from_json(j)), "vcpu state: field 'sregs.cs.base' missing");

    j = migration::vcpu_state_to_json(sample_vcpu());
    j["msrs"][2].erase("value");
    EXPECT_EQ(error_of(migration::vcpu_state_from_json(j)), "vcpu state: field 'msrs[2].value' missing");

    j = migration::vcpu_state_to_json(sample_vcpu());
    j.erase("events");
    EXPECT_EQ(error_of(migration::vcpu_state_from_json(j)), "vcpu state: field 'events' missing");

    json vm = migration::vm_state_to_json(sample_vm());
    vm.erase("clock_ns");
    auto r = migration::vm_state_from_json(vm);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message, "vm state: field 'clock_ns' missing");
}

TEST(CpuStateJson, WrongTypeOrRangeIsNamed) {
    json j = migration::vcpu_state_to_json(sample_vcpu());
    j["regs"]["rip"] = "0xffffffff81000000";
    EXPECT_EQ(error_of(migration::vcpu_state_from_json(j)),
              "vcpu state: field 'regs.rip' has the wrong type (want an unsigned integer)");

    j = migration::vcpu_state_to_json(sample_vcpu());
    j["regs"]["rax"] = -1;
    EXPECT_EQ(error_of(migration::vcpu_state_from_json(j)), "vcpu state: field 'regs.rax' is negative");

    j = migration::vcpu_state_to_json(sample_vcpu());
    j["regs"]["rbx"] = 1.5;
    EXPECT_NE(error_of(migration::vcpu_state_from_json(j)).find("'regs.rbx' has the wrong type"), std::string::npos);

    j = migration::vcpu_state_to_json(sample_vcpu());
    j["sregs"]["ss"]["selector"] = 0x10000;
    EXPECT_EQ(error_of(migration::vcpu_state_from_json(j)),
              "vcpu state: field 'sregs.ss.selector' is out of range (at most 65535)");

    j = migration::vcpu_state_to_json(sample_vcpu());
    j["sregs"]["gdt"] = 5;
    EXPECT_EQ(error_of(migration::vcpu_state_from_json(j)),
              "vcpu state: field 'sregs.gdt' has the wrong type (want an object)");

    j = migration::vcpu_state_to_json(sample_vcpu());
    j["msrs"] = json::object();
    EXPECT_EQ(error_of(migration::vcpu_state_from_json(j)), "vcpu state: field 'msrs' has the wrong type (want an array)");

    j = migration::vcpu_state_to_json(sample_vcpu());
    j["xcrs"][0] = 7;
    EXPECT_EQ(error_of(migration::vcpu_state_from_json(j)),
              "vcpu state: field 'xcrs[0]' has the wrong type (want an object)");

    j = migration::vcpu_state_to_json(sample_vcpu());
    j["debug"]["db"][3] = true;
    EXPECT_EQ(error_of(migration::vcpu_state_from_json(j)),
              "vcpu state: field 'debug.db[3]' has the wrong type (want an unsigned integer)");

    j = migration::vcpu_state_to_json(sample_vcpu());
    j["xsave"] = std::vector<uint8_t>(4096);  // an array of numbers, not a byte string
    EXPECT_EQ(error_of(migration::vcpu_state_from_json(j)),
              "vcpu state: field 'xsave' has the wrong type (want a byte string)");

    EXPECT_EQ(error_of(migration::vcpu_state_from_json(json::array())), "vcpu state: not an object");

    json vm = migration::vm_state_to_json(sample_vm());
    vm["backend"] = 1;
    auto r = migration::vm_state_from_json(vm);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message, "vm state: field 'backend' has the wrong type (want a string)");
    vm = migration::vm_state_to_json(sample_vm());
    vm["blobs"]["pit"] = "not bytes";
    r = migration::vm_state_from_json(vm);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message, "vm state: field 'blobs.pit' has the wrong type (want a byte string)");
}

TEST(CpuStateJson, WrongBinarySizeIsNamed) {
    json j = migration::vcpu_state_to_json(sample_vcpu());
    j["lapic"] = json::binary(std::vector<uint8_t>(1000));
    EXPECT_EQ(error_of(migration::vcpu_state_from_json(j)), "vcpu state: field 'lapic' is 1000 bytes, want 1024");

    j = migration::vcpu_state_to_json(sample_vcpu());
    j["xsave"] = json::binary(std::vector<uint8_t>(100));
    EXPECT_EQ(error_of(migration::vcpu_state_from_json(j)),
              "vcpu state: field 'xsave' is 100 bytes, want 576 to 65536");

    j = migration::vcpu_state_to_json(sample_vcpu());
    j["debug"]["db"].erase(0);
    EXPECT_EQ(error_of(migration::vcpu_state_from_json(j)), "vcpu state: field 'debug.db' has 3 entries, want 4");
}

// Damaged CBOR either fails to decode or decodes to something the reader
// accepts or refuses with an error: never an exception, never a crash.
TEST(CpuStateJson, DamagedCborNeverThrows) {
    std::vector<uint8_t> vcpu = migration::encode_cbor(migration::vcpu_state_to_json(sample_vcpu()));
    std::vector<uint8_t> vm = migration::encode_cbor(migration::vm_state_to_json(sample_vm()));
    std::mt19937 rng(42);
    int decoded = 0, refused = 0;
    for (int i = 0; i < 4000; i++) {
        std::vector<uint8_t> bytes = i % 2 ? vcpu : vm;
        for (int k = 0; k < 1 + i % 4; k++) bytes[rng() % bytes.size()] = static_cast<uint8_t>(rng());
        if (i % 7 == 0) bytes.resize(rng() % bytes.size());
        base::Result<json> j = json();
        ASSERT_NO_THROW(j = migration::decode_cbor(bytes)) << "input " << i;
        if (!j.ok()) {
            refused++;
            continue;
        }
        decoded++;
        ASSERT_NO_THROW({
            if (i % 2) (void)migration::vcpu_state_from_json(*j);
            else (void)migration::vm_state_from_json(*j);
        }) << "input " << i;
    }
    EXPECT_GT(decoded, 100);  // the mutations did reach the readers
    EXPECT_GT(refused, 100);
}

// nlohmann's CBOR reader recurses per level and throws on huge declared
// sizes even when asked not to: decode_cbor refuses both before it runs.
TEST(CpuStateJson, DecodeCborRefusesHostileStructure) {
    std::vector<uint8_t> deep(200000, 0x81);  // [[[[...
    deep.push_back(0);
    auto r = migration::decode_cbor(deep);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("nested deeper than 64"), std::string::npos) << r.error().message;

    std::vector<uint8_t> nested64(64, 0x81), nested65(65, 0x81);
    nested64.push_back(0);
    nested65.push_back(0);
    EXPECT_TRUE(migration::decode_cbor(nested64).ok());
    EXPECT_FALSE(migration::decode_cbor(nested65).ok());

    // A map declaring 2^62 entries (nlohmann throws out_of_range 408 on it).
    std::vector<uint8_t> huge{0xbb, 0x40, 0, 0, 0, 0, 0, 0, 0, 0};
    r = migration::decode_cbor(huge);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("more entries declared"), std::string::npos) << r.error().message;

    std::vector<uint8_t> text = migration::encode_cbor(json{{"a", 1}});
    text.push_back(0);
    r = migration::decode_cbor(text);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("bytes after the item"), std::string::npos) << r.error().message;
    text.resize(text.size() - 2);
    EXPECT_FALSE(migration::decode_cbor(text).ok());
    EXPECT_FALSE(migration::decode_cbor({}).ok());
    EXPECT_TRUE(migration::decode_cbor(std::vector<uint8_t>{0x9f, 0x01, 0x02, 0xff}).ok());  // indefinite array
}

}  // namespace
}  // namespace popek::test
