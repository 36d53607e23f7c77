// A small AML (ACPI Machine Language) encoder for the DSDT popek generates.
//
// Every builder returns a Term: the encoded bytes, or the first error met
// while encoding it (a bad name, an IRQ out of range...). Errors travel up
// through enclosing terms, so a whole table is built as one expression and
// checked once, with finish(), instead of at every call.
//
// Names are ACPI paths: "\\_SB_.COM1", "_HID", "^PCI0"; segments shorter than
// four characters are padded with '_' ("_SB" == "_SB_").
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.hpp"

namespace popek::arch::x86::aml {

struct Term {
    std::vector<uint8_t> bytes;
    std::string error;  // empty: the bytes are valid

    [[nodiscard]] bool ok() const { return error.empty(); }
    // Appends `other`'s bytes; keeps the first error.
    Term& operator+=(const Term& other);
};

// The largest PkgLength AML can express (28 bits).
constexpr uint32_t kMaxPkgLength = (1u << 28) - 1;

// Encodes a PkgLength whose value is `total` (which counts the PkgLength
// bytes themselves): 1 byte up to 63, 2 up to 4095, 3 up to 2^20-1, 4 beyond.
base::Result<std::vector<uint8_t>> encode_pkg_length(uint32_t total);
// The PkgLength bytes for a package whose contents after the PkgLength are
// `payload` bytes long.
base::Result<std::vector<uint8_t>> pkg_length_for(size_t payload);

// "PNP0501" -> 0x0105D041: three letters and four hex digits, compressed
// as the EISA ID the _HID of a PNP device holds.
base::Result<uint32_t> eisa_id_value(std::string_view id);

// Data objects.
Term zero();
Term one();
Term integer(uint64_t value);  // the shortest of Zero/One/Byte/Word/DWord/QWord
Term string(std::string_view text);  // ASCII 0x01..0x7F
Term eisa_id(std::string_view id);
Term buffer(std::span<const uint8_t> data);
Term package(const std::vector<Term>& elements);  // at most 255 elements
Term name_string(std::string_view path);

// Named objects and scopes.
Term name(std::string_view path, const Term& value);
Term scope(std::string_view path, const std::vector<Term>& body);
Term device(std::string_view path, const std::vector<Term>& body);
Term method(std::string_view path, uint8_t arg_count, bool serialized,
            const std::vector<Term>& body);
Term return_value(const Term& value);

// Operation regions and fields (ACPI 6.3, sections 19.6.100 and 19.6.48).
enum class RegionSpace : uint8_t { SystemMemory = 0, SystemIo = 1, PciConfig = 2 };
Term operation_region(std::string_view path, RegionSpace space, uint64_t offset, uint64_t length);
enum class FieldAccess : uint8_t { Any = 0, Byte = 1, Word = 2, DWord = 3, QWord = 4, Buffer = 5 };
enum class FieldUpdate : uint8_t { Preserve = 0, WriteAsOnes = 1, WriteAsZeros = 2 };
struct FieldUnit {
    std::string name;  // one NameSeg ("GDAT"); empty: `bits` reserved bits (ASL's ", 4")
    uint32_t bits = 0;
};
Term field(std::string_view region, FieldAccess access, bool lock, FieldUpdate update,
           const std::vector<FieldUnit>& units);

// Method bodies. Operands are Terms: integers, name_string() references to
// named objects (a field unit, a device), local(), arg() or other
// expressions. Results that are only used as values go to no target.
Term local(unsigned index);  // Local0..Local7
Term arg(unsigned index);    // Arg0..Arg6
Term store(const Term& source, const Term& target);   // Store (source, target): target = source
Term bit_and(const Term& left, const Term& right);    // And (left, right, ): left & right
Term logical_and(const Term& left, const Term& right);    // LAnd: left && right
Term logical_equal(const Term& left, const Term& right);  // LEqual: left == right
Term to_integer(const Term& operand);                 // ToInteger (operand, )
Term if_then(const Term& predicate, const std::vector<Term>& body);  // If (predicate) { body }
Term notify(std::string_view object, const Term& value);             // Notify (object, value)

// Resource descriptors, for resource_template().
Term io(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length);  // Decode16
Term irq_no_flags(uint8_t irq);  // ISA IRQ 0..15: edge, active high, exclusive
Term memory32_fixed(bool writable, uint32_t base, uint32_t length);
struct InterruptFlags {
    bool consumer = true;
    bool level = false;
    bool active_low = false;
    bool shared = false;
};
Term interrupt(InterruptFlags flags, uint32_t gsi);  // Extended Interrupt, one GSI
// Address space descriptors for a bridge's _CRS (ACPI 6.3, section
// 6.4.3.5): ResourceProducer, PosDecode, MinFixed, MaxFixed, granularity 0,
// translation 0, length max - min + 1 (refused if it does not fit).
Term word_bus_number(uint16_t min, uint16_t max);
Term word_io(uint16_t min, uint16_t max);  // EntireRange
Term dword_memory(bool cacheable, bool writable, uint32_t min, uint32_t max);
// A Buffer holding the descriptors followed by an End Tag (for _CRS).
Term resource_template(const std::vector<Term>& descriptors);

// The encoded bytes, or the first error as an Error.
base::Result<std::vector<uint8_t>> finish(const Term& term);

}  // namespace popek::arch::x86::aml
