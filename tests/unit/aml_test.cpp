// The AML encoder: byte-exact encodings checked against the ACPI spec and
// against what iasl emits for the same ASL.
#include "arch/x86/aml.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace aml = popek::arch::x86::aml;
using Bytes = std::vector<uint8_t>;

namespace {

Bytes bytes_of(const aml::Term& t) {
    EXPECT_TRUE(t.ok()) << t.error;
    return t.bytes;
}

Bytes pkg(uint32_t total) {
    auto r = aml::encode_pkg_length(total);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r.ok() ? *r : Bytes{};
}

Bytes pkg_for(size_t payload) {
    auto r = aml::pkg_length_for(payload);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r.ok() ? *r : Bytes{};
}

}  // namespace

TEST(Aml, PkgLengthBoundaries) {
    EXPECT_EQ(pkg(0), (Bytes{0x00}));
    EXPECT_EQ(pkg(63), (Bytes{0x3f}));
    EXPECT_EQ(pkg(64), (Bytes{0x40, 0x04}));
    EXPECT_EQ(pkg(4095), (Bytes{0x4f, 0xff}));
    EXPECT_EQ(pkg(4096), (Bytes{0x80, 0x00, 0x01}));
    EXPECT_EQ(pkg(0xfffff), (Bytes{0x8f, 0xff, 0xff}));
    EXPECT_EQ(pkg(0x100000), (Bytes{0xc0, 0x00, 0x00, 0x01}));
    EXPECT_EQ(pkg(aml::kMaxPkgLength), (Bytes{0xcf, 0xff, 0xff, 0xff}));
    EXPECT_FALSE(aml::encode_pkg_length(aml::kMaxPkgLength + 1).ok());
}

TEST(Aml, PkgLengthCountsItsOwnBytes) {
    EXPECT_EQ(pkg_for(62), (Bytes{0x3f}));              // 62 + 1 = 63
    EXPECT_EQ(pkg_for(63), (Bytes{0x41, 0x04}));        // 63 + 2 = 65
    EXPECT_EQ(pkg_for(4093), (Bytes{0x4f, 0xff}));      // 4093 + 2 = 4095
    EXPECT_EQ(pkg_for(4094), (Bytes{0x81, 0x00, 0x01}));  // 4094 + 3 = 4097
    EXPECT_FALSE(aml::pkg_length_for(aml::kMaxPkgLength).ok());
}

TEST(Aml, IntegerEncodings) {
    EXPECT_EQ(bytes_of(aml::integer(0)), (Bytes{0x00}));  // ZeroOp
    EXPECT_EQ(bytes_of(aml::integer(1)), (Bytes{0x01}));  // OneOp
    EXPECT_EQ(bytes_of(aml::integer(2)), (Bytes{0x0a, 0x02}));
    EXPECT_EQ(bytes_of(aml::integer(0xff)), (Bytes{0x0a, 0xff}));
    EXPECT_EQ(bytes_of(aml::integer(0x100)), (Bytes{0x0b, 0x00, 0x01}));
    EXPECT_EQ(bytes_of(aml::integer(0xffff)), (Bytes{0x0b, 0xff, 0xff}));
    EXPECT_EQ(bytes_of(aml::integer(0x10000)), (Bytes{0x0c, 0x00, 0x00, 0x01, 0x00}));
    EXPECT_EQ(bytes_of(aml::integer(0xffffffff)), (Bytes{0x0c, 0xff, 0xff, 0xff, 0xff}));
    EXPECT_EQ(bytes_of(aml::integer(0x100000000)),
              (Bytes{0x0e, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00}));
    EXPECT_EQ(bytes_of(aml::integer(0x0123456789abcdef)),
              (Bytes{0x0e, 0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01}));
}

TEST(Aml, EisaId) {
    auto v = aml::eisa_id_value("PNP0501");
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(*v, 0x0105D041u);
    EXPECT_EQ(*aml::eisa_id_value("PNP0303"), 0x0303D041u);
    EXPECT_EQ(*aml::eisa_id_value("PNP0A08"), 0x080AD041u);
    EXPECT_EQ(bytes_of(aml::eisa_id("PNP0501")), (Bytes{0x0c, 0x41, 0xd0, 0x05, 0x01}));
    for (const char* bad : {"PNP050", "PNP05011", "pnp0501", "PNP05G1", "P1P0501"})
        EXPECT_FALSE(aml::eisa_id_value(bad).ok()) << bad;
    EXPECT_FALSE(aml::eisa_id("XYZ").ok());
}

TEST(Aml, NameStrings) {
    EXPECT_EQ(bytes_of(aml::name_string("_HID")), (Bytes{'_', 'H', 'I', 'D'}));
    EXPECT_EQ(bytes_of(aml::name_string("_SB")), (Bytes{'_', 'S', 'B', '_'}));
    EXPECT_EQ(bytes_of(aml::name_string("\\_SB_")), (Bytes{'\\', '_', 'S', 'B', '_'}));
    EXPECT_EQ(bytes_of(aml::name_string("\\_SB.COM1")),
              (Bytes{'\\', 0x2e, '_', 'S', 'B', '_', 'C', 'O', 'M', '1'}));
    EXPECT_EQ(bytes_of(aml::name_string("_SB.PCI0.ISA")),
              (Bytes{0x2f, 3, '_', 'S', 'B', '_', 'P', 'C', 'I', '0', 'I', 'S', 'A', '_'}));
    EXPECT_EQ(bytes_of(aml::name_string("^^DEV")), (Bytes{'^', '^', 'D', 'E', 'V', '_'}));
    EXPECT_EQ(bytes_of(aml::name_string("\\")), (Bytes{'\\', 0x00}));
    for (const char* bad : {"", "TOOLONG", "1ABC", "ab", "_SB.", "_SB..X", "A-B"})
        EXPECT_FALSE(aml::name_string(bad).ok()) << bad;
}

TEST(Aml, StringsAndPackages) {
    EXPECT_EQ(bytes_of(aml::string("ACPI0007")),
              (Bytes{0x0d, 'A', 'C', 'P', 'I', '0', '0', '0', '7', 0x00}));
    EXPECT_EQ(bytes_of(aml::string("")), (Bytes{0x0d, 0x00}));
    EXPECT_FALSE(aml::string("caf\xc3\xa9").ok());
    // Name (_S5, Package () {5, 0, 0, 0}) as iasl encodes it.
    auto s5 = aml::name("_S5_", aml::package({aml::integer(5), aml::zero(), aml::zero(), aml::zero()}));
    EXPECT_EQ(bytes_of(s5), (Bytes{0x08, '_', 'S', '5', '_', 0x12, 0x07, 0x04, 0x0a, 0x05, 0x00, 0x00, 0x00}));
    EXPECT_EQ(bytes_of(aml::package({})), (Bytes{0x12, 0x02, 0x00}));
    std::vector<aml::Term> many(256, aml::zero());
    EXPECT_FALSE(aml::package(many).ok());
}

TEST(Aml, BuffersAndResourceTemplates) {
    EXPECT_EQ(bytes_of(aml::buffer(Bytes{0xaa, 0xbb})), (Bytes{0x11, 0x05, 0x0a, 0x02, 0xaa, 0xbb}));
    // ResourceTemplate () { IO (Decode16, 0x3F8, 0x3F8, 0x01, 0x08) IRQNoFlags () {4} }
    auto crs = aml::resource_template({aml::io(0x3f8, 0x3f8, 1, 8), aml::irq_no_flags(4)});
    EXPECT_EQ(bytes_of(crs), (Bytes{0x11, 0x10, 0x0a, 0x0d, 0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08,
                                    0x22, 0x10, 0x00, 0x79, 0x00}));
    EXPECT_EQ(bytes_of(aml::memory32_fixed(true, 0xfec00000, 0x1000)),
              (Bytes{0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0xc0, 0xfe, 0x00, 0x10, 0x00, 0x00}));
    // Interrupt (ResourceConsumer, Level, ActiveHigh, Shared) {5}
    EXPECT_EQ(bytes_of(aml::interrupt({.consumer = true, .level = true, .active_low = false, .shared = true}, 5)),
              (Bytes{0x89, 0x06, 0x00, 0x09, 0x01, 0x05, 0x00, 0x00, 0x00}));
    // Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) {4}
    EXPECT_EQ(bytes_of(aml::interrupt({}, 4)), (Bytes{0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0x00, 0x00, 0x00}));
    EXPECT_FALSE(aml::irq_no_flags(16).ok());
    EXPECT_FALSE(aml::resource_template({aml::irq_no_flags(16)}).ok());
}

TEST(Aml, DevicesScopesAndMethods) {
    // Device (COM1) { Name (_UID, Zero) }
    auto dev = aml::device("COM1", {aml::name("_UID", aml::zero())});
    EXPECT_EQ(bytes_of(dev), (Bytes{0x5b, 0x82, 0x0b, 'C', 'O', 'M', '1', 0x08, '_', 'U', 'I', 'D', 0x00}));
    auto sc = aml::scope("_SB_", {});
    EXPECT_EQ(bytes_of(sc), (Bytes{0x10, 0x05, '_', 'S', 'B', '_'}));
    // Method (_STA, 0, NotSerialized) { Return (0x0F) }
    auto sta = aml::method("_STA", 0, false, {aml::return_value(aml::integer(0x0f))});
    EXPECT_EQ(bytes_of(sta), (Bytes{0x14, 0x09, '_', 'S', 'T', 'A', 0x00, 0xa4, 0x0a, 0x0f}));
    auto serialized = aml::method("FOO", 3, true, {});
    EXPECT_EQ(bytes_of(serialized), (Bytes{0x14, 0x06, 'F', 'O', 'O', '_', 0x0b}));
    EXPECT_FALSE(aml::method("FOO", 8, false, {}).ok());
}

TEST(Aml, LargeObjectsUseLongerPkgLengths) {
    Bytes data(5000, 0x5a);
    Bytes b = bytes_of(aml::buffer(data));
    // BufferOp, 3-byte PkgLength, WordPrefix 5000, data.
    ASSERT_EQ(b.size(), 1 + 3 + 3 + data.size());
    uint32_t total = (b[1] & 0x0fu) | (uint32_t{b[2]} << 4) | (uint32_t{b[3]} << 12);
    EXPECT_EQ(b[1] >> 6, 2);
    EXPECT_EQ(total, b.size() - 1);
    EXPECT_EQ(b[4], 0x0b);
}

TEST(Aml, ErrorsTravelUpToFinish) {
    auto bad = aml::scope("_SB_", {aml::device("COM1", {aml::name("_HID", aml::eisa_id("nope"))})});
    EXPECT_FALSE(bad.ok());
    auto r = aml::finish(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("nope"), std::string::npos) << r.error().message;

    aml::Term t = aml::zero();
    t += aml::name_string("bad!");
    t += aml::one();
    EXPECT_FALSE(t.ok());
    EXPECT_NE(t.error.find("bad!"), std::string::npos);

    auto good = aml::finish(aml::name("_UID", aml::one()));
    ASSERT_TRUE(good.ok());
    EXPECT_EQ(*good, (Bytes{0x08, '_', 'U', 'I', 'D', 0x01}));
}

// Address space descriptors, byte for byte as iasl encodes the same ASL.
TEST(Aml, AddressSpaceDescriptors) {
    // WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, 0, 0, 0, 1)
    EXPECT_EQ(bytes_of(aml::word_bus_number(0, 0)),
              (Bytes{0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00}));
    // WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, 0x0D00, 0xFFFF, 0, 0xF300)
    EXPECT_EQ(bytes_of(aml::word_io(0x0d00, 0xffff)),
              (Bytes{0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03, 0, 0, 0x00, 0x0d, 0xff, 0xff, 0, 0, 0x00, 0xf3}));
    // DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
    //              0, 0xC0000000, 0xDFFFFFFF, 0, 0x20000000)
    EXPECT_EQ(bytes_of(aml::dword_memory(false, true, 0xc0000000, 0xdfffffff)),
              (Bytes{0x87, 0x17, 0x00, 0x00, 0x0c, 0x01, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0xc0, 0xff, 0xff,
                     0xff, 0xdf, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0x20}));
    // ... Cacheable, ReadOnly: _MEM = 1, _RW = 0.
    EXPECT_EQ(bytes_of(aml::dword_memory(true, false, 0x1000, 0x1fff))[5], 0x02);
    // Ranges whose length does not fit the descriptor, or run backwards.
    EXPECT_FALSE(aml::word_io(0, 0xffff).ok());
    EXPECT_FALSE(aml::word_bus_number(5, 4).ok());
    EXPECT_FALSE(aml::dword_memory(false, true, 0, 0xffffffff).ok());
    EXPECT_FALSE(aml::resource_template({aml::word_io(0, 0xffff)}).ok());
}

// _PRT is a Package of Packages: {address, pin, source, source index}.
TEST(Aml, PackageOfPackages) {
    auto prt = aml::name("_PRT", aml::package({aml::package({aml::integer(0x1ffff), aml::zero(), aml::zero(),
                                                            aml::integer(17)})}));
    EXPECT_EQ(bytes_of(prt), (Bytes{0x08, '_', 'P', 'R', 'T', 0x12, 0x0e, 0x01, 0x12, 0x0b, 0x04, 0x0c, 0xff, 0xff,
                                    0x01, 0x00, 0x00, 0x00, 0x0a, 0x11}));
}

// OperationRegion and Field, byte for byte as iasl encodes the same ASL.
TEST(Aml, OperationRegionsAndFields) {
    // OperationRegion (GDST, SystemMemory, 0xFEA00000, 0x04)
    EXPECT_EQ(bytes_of(aml::operation_region("GDST", aml::RegionSpace::SystemMemory, 0xfea00000, 4)),
              (Bytes{0x5b, 0x80, 'G', 'D', 'S', 'T', 0x00, 0x0c, 0x00, 0x00, 0xa0, 0xfe, 0x0a, 0x04}));
    // OperationRegion (PIOR, SystemIO, 0x0600, 0x02)
    EXPECT_EQ(bytes_of(aml::operation_region("PIOR", aml::RegionSpace::SystemIo, 0x600, 2)),
              (Bytes{0x5b, 0x80, 'P', 'I', 'O', 'R', 0x01, 0x0b, 0x00, 0x06, 0x0a, 0x02}));
    // Field (GDST, DWordAcc, NoLock, WriteAsZeros) { GDAT, 32 }
    EXPECT_EQ(bytes_of(aml::field("GDST", aml::FieldAccess::DWord, false, aml::FieldUpdate::WriteAsZeros,
                                  {{"GDAT", 32}})),
              (Bytes{0x5b, 0x81, 0x0b, 'G', 'D', 'S', 'T', 0x43, 'G', 'D', 'A', 'T', 0x20}));
    // Field (PIOR, ByteAcc, Lock, Preserve) { CTRL, 8, , 4, STAT, 4 }
    EXPECT_EQ(bytes_of(aml::field("PIOR", aml::FieldAccess::Byte, true, aml::FieldUpdate::Preserve,
                                  {{"CTRL", 8}, {"", 4}, {"STAT", 4}})),
              (Bytes{0x5b, 0x81, 0x12, 'P', 'I', 'O', 'R', 0x11, 'C', 'T', 'R', 'L', 0x08, 0x00, 0x04, 'S', 'T',
                     'A', 'T', 0x04}));
    // A field unit's length is a PkgLength holding the bit count itself.
    Bytes wide = bytes_of(aml::field("R", aml::FieldAccess::Any, false, aml::FieldUpdate::Preserve, {{"BIG", 4096}}));
    EXPECT_EQ(Bytes(wide.end() - 3, wide.end()), (Bytes{0x80, 0x00, 0x01}));
    EXPECT_FALSE(aml::field("R", aml::FieldAccess::Any, false, aml::FieldUpdate::Preserve, {{"A", 0}}).ok());
    EXPECT_FALSE(aml::field("R", aml::FieldAccess::Any, false, aml::FieldUpdate::Preserve, {{"A.B", 1}}).ok());
    EXPECT_FALSE(aml::field("R", aml::FieldAccess::Any, false, aml::FieldUpdate::Preserve, {{"\\A", 1}}).ok());
    EXPECT_FALSE(aml::field("R", aml::FieldAccess::Any, false, aml::FieldUpdate::Preserve, {{"TOOLONG", 1}}).ok());
    EXPECT_FALSE(aml::operation_region("bad", aml::RegionSpace::SystemMemory, 0, 4).ok());
}

TEST(Aml, LocalsAndArgs) {
    EXPECT_EQ(bytes_of(aml::local(0)), (Bytes{0x60}));
    EXPECT_EQ(bytes_of(aml::local(7)), (Bytes{0x67}));
    EXPECT_EQ(bytes_of(aml::arg(0)), (Bytes{0x68}));
    EXPECT_EQ(bytes_of(aml::arg(6)), (Bytes{0x6e}));
    EXPECT_FALSE(aml::local(8).ok());
    EXPECT_FALSE(aml::arg(7).ok());
}

// Method bodies as iasl encodes them.
TEST(Aml, MethodBodies) {
    // Method (_EVT, 1, NotSerialized) { Local0 = GDAT  If ((Local0 & One)) { Notify (PWRB, 0x80) } }
    auto evt = aml::method("_EVT", 1, false, {
        aml::store(aml::name_string("GDAT"), aml::local(0)),
        aml::if_then(aml::bit_and(aml::local(0), aml::one()), {aml::notify("PWRB", aml::integer(0x80))}),
    });
    EXPECT_EQ(bytes_of(evt), (Bytes{0x14, 0x19, '_', 'E', 'V', 'T', 0x01, 0x70, 'G', 'D', 'A', 'T', 0x60, 0xa0, 0x0c,
                                    0x7b, 0x60, 0x01, 0x00, 0x86, 'P', 'W', 'R', 'B', 0x0a, 0x80}));
    // If (((Arg0 == 0x09) && (ToInteger (Arg1) == One))) { Return (One) }
    auto cond = aml::if_then(aml::logical_and(aml::logical_equal(aml::arg(0), aml::integer(9)),
                                              aml::logical_equal(aml::to_integer(aml::arg(1)), aml::one())),
                             {aml::return_value(aml::one())});
    EXPECT_EQ(bytes_of(cond),
              (Bytes{0xa0, 0x0d, 0x90, 0x93, 0x68, 0x0a, 0x09, 0x93, 0x99, 0x69, 0x00, 0x01, 0xa4, 0x01}));
    // Store (And (Arg1, 0x0F, ), Local7)
    EXPECT_EQ(bytes_of(aml::store(aml::bit_and(aml::arg(1), aml::integer(0x0f)), aml::local(7))),
              (Bytes{0x70, 0x7b, 0x69, 0x0a, 0x0f, 0x00, 0x67}));
    // Errors in operands and bodies travel up.
    EXPECT_FALSE(aml::store(aml::one(), aml::local(9)).ok());
    EXPECT_FALSE(aml::if_then(aml::one(), {aml::notify("bad!", aml::one())}).ok());
    EXPECT_FALSE(aml::logical_equal(aml::arg(7), aml::one()).ok());
}
