#include "arch/x86/aml.hpp"

#include <array>

namespace popek::arch::x86::aml {

namespace {

// Opcodes (ACPI 6.3, section 20.3).
constexpr uint8_t kZeroOp = 0x00;
constexpr uint8_t kOneOp = 0x01;
constexpr uint8_t kNameOp = 0x08;
constexpr uint8_t kBytePrefix = 0x0a;
constexpr uint8_t kWordPrefix = 0x0b;
constexpr uint8_t kDWordPrefix = 0x0c;
constexpr uint8_t kStringPrefix = 0x0d;
constexpr uint8_t kQWordPrefix = 0x0e;
constexpr uint8_t kScopeOp = 0x10;
constexpr uint8_t kBufferOp = 0x11;
constexpr uint8_t kPackageOp = 0x12;
constexpr uint8_t kMethodOp = 0x14;
constexpr uint8_t kDualNamePrefix = 0x2e;
constexpr uint8_t kMultiNamePrefix = 0x2f;
constexpr uint8_t kExtOpPrefix = 0x5b;
constexpr uint8_t kDeviceOp = 0x82;  // after kExtOpPrefix
constexpr uint8_t kRootChar = '\\';
constexpr uint8_t kParentPrefixChar = '^';
constexpr uint8_t kReturnOp = 0xa4;
constexpr uint8_t kOpRegionOp = 0x80;  // after kExtOpPrefix
constexpr uint8_t kFieldOp = 0x81;     // after kExtOpPrefix
constexpr uint8_t kLocal0Op = 0x60;
constexpr uint8_t kArg0Op = 0x68;
constexpr uint8_t kStoreOp = 0x70;
constexpr uint8_t kAndOp = 0x7b;
constexpr uint8_t kNotifyOp = 0x86;
constexpr uint8_t kLAndOp = 0x90;
constexpr uint8_t kLEqualOp = 0x93;
constexpr uint8_t kToIntegerOp = 0x99;
constexpr uint8_t kIfOp = 0xa0;
constexpr uint8_t kNullName = 0x00;  // "no target"
constexpr unsigned kLocalCount = 8;
constexpr unsigned kArgCount = 7;
constexpr uint8_t kFieldLockRule = 0x10;  // FieldFlags bit 4; update rule in bits 6-5

// Resource descriptor tags (ACPI 6.3, section 6.4).
constexpr uint8_t kIrqNoFlagsTag = 0x22;      // small, IRQ, 2 data bytes
constexpr uint8_t kIoTag = 0x47;              // small, I/O port, 7 data bytes
constexpr uint8_t kEndTag = 0x79;             // small, End Tag, 1 data byte
constexpr uint8_t kMemory32FixedTag = 0x86;   // large
constexpr uint8_t kExtendedIrqTag = 0x89;     // large
constexpr uint8_t kDWordAddressTag = 0x87;    // large, 23 data bytes
constexpr uint8_t kWordAddressTag = 0x88;     // large, 13 data bytes

// Address space descriptor fields.
constexpr uint8_t kSpaceMemory = 0;
constexpr uint8_t kSpaceIo = 1;
constexpr uint8_t kSpaceBusNumber = 2;
constexpr uint8_t kProducerMinMaxFixed = 0x0c;  // _MIF | _MAF; producer, positive decode
constexpr uint8_t kIoEntireRange = 0x03;
constexpr uint8_t kMemReadWrite = 0x01;
constexpr uint8_t kMemCacheable = 0x02;         // _MEM = 1

Term fail(std::string message) { return Term{{}, std::move(message)}; }

uint8_t byte_of(uint64_t v, unsigned index) { return static_cast<uint8_t>(v >> (8 * index)); }

void put_le(std::vector<uint8_t>& out, uint64_t v, unsigned size) {
    for (unsigned i = 0; i < size; ++i) out.push_back(byte_of(v, i));
}

Term concat(const std::vector<Term>& terms) {
    Term all;
    for (const Term& t : terms) all += t;
    return all;
}

// `prefix` PkgLength `body`: the shape of every variable-length AML object.
Term with_pkg_length(std::vector<uint8_t> prefix, const Term& body) {
    if (!body.ok()) return fail(body.error);
    auto length = pkg_length_for(body.bytes.size());
    if (!length.ok()) return fail(length.error().message);
    Term t{std::move(prefix), {}};
    t.bytes.insert(t.bytes.end(), length->begin(), length->end());
    t.bytes.insert(t.bytes.end(), body.bytes.begin(), body.bytes.end());
    return t;
}

bool is_lead_name_char(char c) { return (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_lead_name_char(c) || (c >= '0' && c <= '9'); }

int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace

Term& Term::operator+=(const Term& other) {
    if (ok() && !other.ok()) error = other.error;
    bytes.insert(bytes.end(), other.bytes.begin(), other.bytes.end());
    return *this;
}

base::Result<std::vector<uint8_t>> encode_pkg_length(uint32_t total) {
    if (total <= 0x3f) return std::vector<uint8_t>{static_cast<uint8_t>(total)};
    if (total > kMaxPkgLength)
        return base::Error{"AML package length " + std::to_string(total) + " exceeds 2^28-1"};
    // Multi-byte form: bits 7-6 of the lead byte count the bytes that follow,
    // its bits 3-0 hold the low nibble, each following byte 8 more bits.
    unsigned follow = total <= 0xfff ? 1 : total <= 0xfffff ? 2 : 3;
    std::vector<uint8_t> out;
    out.push_back(static_cast<uint8_t>((follow << 6) | (total & 0xf)));
    for (unsigned i = 0; i < follow; ++i) out.push_back(static_cast<uint8_t>(total >> (4 + 8 * i)));
    return out;
}

base::Result<std::vector<uint8_t>> pkg_length_for(size_t payload) {
    constexpr std::array<uint64_t, 4> kLimits{0x3f, 0xfff, 0xfffff, kMaxPkgLength};
    for (size_t bytes = 1; bytes <= kLimits.size(); ++bytes) {
        uint64_t total = uint64_t{payload} + bytes;
        if (total <= kLimits[bytes - 1]) return encode_pkg_length(static_cast<uint32_t>(total));
    }
    return base::Error{"AML object of " + std::to_string(payload) + " bytes is too large"};
}

base::Result<uint32_t> eisa_id_value(std::string_view id) {
    auto bad = [&] {
        return base::Error{"invalid EISA ID \"" + std::string(id) +
                           "\": expected three letters A-Z and four hex digits, like PNP0501"};
    };
    if (id.size() != 7) return bad();
    uint32_t letters = 0;  // 3 x 5 bits, 'A' = 1
    for (size_t i = 0; i < 3; ++i) {
        if (id[i] < 'A' || id[i] > 'Z') return bad();
        letters = (letters << 5) | static_cast<uint32_t>(id[i] - '@');
    }
    uint32_t digits = 0;  // 4 x 4 bits
    for (size_t i = 3; i < 7; ++i) {
        int d = hex_digit(id[i]);
        if (d < 0) return bad();
        digits = (digits << 4) | static_cast<uint32_t>(d);
    }
    // The 32-bit value is big-endian in AML's little-endian integer: the
    // 15 letter bits in the first two bytes, the digits in the last two.
    uint32_t be = (letters << 16) | digits;
    return ((be >> 24) & 0xff) | ((be >> 8) & 0xff00) | ((be << 8) & 0xff0000) | (be << 24);
}

Term zero() { return Term{{kZeroOp}, {}}; }
Term one() { return Term{{kOneOp}, {}}; }

Term integer(uint64_t value) {
    if (value == 0) return zero();
    if (value == 1) return one();
    Term t;
    if (value <= 0xff) {
        t.bytes.push_back(kBytePrefix);
        put_le(t.bytes, value, 1);
    } else if (value <= 0xffff) {
        t.bytes.push_back(kWordPrefix);
        put_le(t.bytes, value, 2);
    } else if (value <= 0xffffffff) {
        t.bytes.push_back(kDWordPrefix);
        put_le(t.bytes, value, 4);
    } else {
        t.bytes.push_back(kQWordPrefix);
        put_le(t.bytes, value, 8);
    }
    return t;
}

Term string(std::string_view text) {
    Term t{{kStringPrefix}, {}};
    for (char ch : text) {
        auto c = static_cast<unsigned char>(ch);
        if (c < 0x01 || c > 0x7f) return fail("AML string \"" + std::string(text) + "\" is not 7-bit ASCII without NUL");
        t.bytes.push_back(c);
    }
    t.bytes.push_back(0);
    return t;
}

Term eisa_id(std::string_view id) {
    auto value = eisa_id_value(id);
    if (!value.ok()) return fail(value.error().message);
    return integer(*value);
}

Term buffer(std::span<const uint8_t> data) {
    Term body = integer(data.size());
    body.bytes.insert(body.bytes.end(), data.begin(), data.end());
    return with_pkg_length({kBufferOp}, body);
}

Term package(const std::vector<Term>& elements) {
    if (elements.size() > 0xff) return fail("AML package has more than 255 elements");
    Term body{{static_cast<uint8_t>(elements.size())}, {}};
    body += concat(elements);
    return with_pkg_length({kPackageOp}, body);
}

Term name_string(std::string_view path) {
    Term t;
    auto bad = [&](const char* why) { return fail("invalid ACPI name \"" + std::string(path) + "\": " + why); };
    size_t pos = 0;
    if (!path.empty() && path[0] == '\\') {
        t.bytes.push_back(kRootChar);
        pos = 1;
    } else {
        while (pos < path.size() && path[pos] == '^') {
            t.bytes.push_back(kParentPrefixChar);
            ++pos;
        }
    }
    std::vector<uint8_t> segments;
    size_t count = 0;
    std::string_view rest = path.substr(pos);
    while (!rest.empty()) {
        size_t dot = rest.find('.');
        std::string_view seg = rest.substr(0, dot);
        if (seg.empty() || seg.size() > 4) return bad("each segment must have 1 to 4 characters");
        if (!is_lead_name_char(seg[0])) return bad("a segment must start with A-Z or _");
        for (size_t i = 0; i < 4; ++i) {
            char c = i < seg.size() ? seg[i] : '_';
            if (!is_name_char(c)) return bad("segments hold only A-Z, 0-9 and _");
            segments.push_back(static_cast<uint8_t>(c));
        }
        ++count;
        if (dot == std::string_view::npos) break;
        rest = rest.substr(dot + 1);
        if (rest.empty()) return bad("trailing '.'");
    }
    if (count == 0 && pos == 0) return bad("empty name");
    if (count > 0xff) return bad("too many segments");
    if (count == 0) t.bytes.push_back(0x00);  // NullName, after a prefix
    if (count == 2) t.bytes.push_back(kDualNamePrefix);
    if (count > 2) {
        t.bytes.push_back(kMultiNamePrefix);
        t.bytes.push_back(static_cast<uint8_t>(count));
    }
    t.bytes.insert(t.bytes.end(), segments.begin(), segments.end());
    return t;
}

Term name(std::string_view path, const Term& value) {
    Term t{{kNameOp}, {}};
    t += name_string(path);
    t += value;
    return t;
}

Term scope(std::string_view path, const std::vector<Term>& body) {
    Term inner = name_string(path);
    inner += concat(body);
    return with_pkg_length({kScopeOp}, inner);
}

Term device(std::string_view path, const std::vector<Term>& body) {
    Term inner = name_string(path);
    inner += concat(body);
    return with_pkg_length({kExtOpPrefix, kDeviceOp}, inner);
}

Term method(std::string_view path, uint8_t arg_count, bool serialized, const std::vector<Term>& body) {
    if (arg_count > 7) return fail("AML method " + std::string(path) + " takes more than 7 arguments");
    Term inner = name_string(path);
    inner.bytes.push_back(static_cast<uint8_t>(arg_count | (serialized ? 0x08 : 0x00)));
    inner += concat(body);
    return with_pkg_length({kMethodOp}, inner);
}

Term return_value(const Term& value) {
    Term t{{kReturnOp}, {}};
    t += value;
    return t;
}

namespace {

// A NameSeg on its own ("GDAT"), as a field unit is named.
Term name_seg(std::string_view seg) {
    if (seg.find_first_of(".\\^") != std::string_view::npos)
        return fail("invalid ACPI name \"" + std::string(seg) + "\": expected one name segment");
    return name_string(seg);
}

Term opcode(uint8_t op, const std::vector<Term>& operands) {
    Term t{{op}, {}};
    t += concat(operands);
    return t;
}

}  // namespace

Term operation_region(std::string_view path, RegionSpace space, uint64_t offset, uint64_t length) {
    Term t{{kExtOpPrefix, kOpRegionOp}, {}};
    t += name_string(path);
    t.bytes.push_back(static_cast<uint8_t>(space));
    t += integer(offset);
    t += integer(length);
    return t;
}

Term field(std::string_view region, FieldAccess access, bool lock, FieldUpdate update,
           const std::vector<FieldUnit>& units) {
    Term inner = name_string(region);
    inner.bytes.push_back(static_cast<uint8_t>(static_cast<unsigned>(access) | (lock ? kFieldLockRule : 0u) |
                                               (static_cast<unsigned>(update) << 5)));
    for (const FieldUnit& unit : units) {
        if (unit.bits == 0) return fail("AML field unit " + unit.name + " has no bits");
        if (unit.name.empty()) inner.bytes.push_back(kNullName);  // ReservedField
        else inner += name_seg(unit.name);
        auto length = encode_pkg_length(unit.bits);  // the bit count, not counting its own bytes
        if (!length.ok()) return fail(length.error().message);
        inner.bytes.insert(inner.bytes.end(), length->begin(), length->end());
    }
    return with_pkg_length({kExtOpPrefix, kFieldOp}, inner);
}

Term local(unsigned index) {
    if (index >= kLocalCount) return fail("AML has Local0..Local7, not Local" + std::to_string(index));
    return Term{{static_cast<uint8_t>(kLocal0Op + index)}, {}};
}

Term arg(unsigned index) {
    if (index >= kArgCount) return fail("AML has Arg0..Arg6, not Arg" + std::to_string(index));
    return Term{{static_cast<uint8_t>(kArg0Op + index)}, {}};
}

Term store(const Term& source, const Term& target) { return opcode(kStoreOp, {source, target}); }
Term bit_and(const Term& left, const Term& right) { return opcode(kAndOp, {left, right, Term{{kNullName}, {}}}); }
Term logical_and(const Term& left, const Term& right) { return opcode(kLAndOp, {left, right}); }
Term logical_equal(const Term& left, const Term& right) { return opcode(kLEqualOp, {left, right}); }
Term to_integer(const Term& operand) { return opcode(kToIntegerOp, {operand, Term{{kNullName}, {}}}); }

Term if_then(const Term& predicate, const std::vector<Term>& body) {
    Term inner = predicate;
    inner += concat(body);
    return with_pkg_length({kIfOp}, inner);
}

Term notify(std::string_view object, const Term& value) { return opcode(kNotifyOp, {name_string(object), value}); }

Term io(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length) {
    Term t{{kIoTag, 0x01}, {}};  // information bit 0: decodes 16 address bits
    put_le(t.bytes, min, 2);
    put_le(t.bytes, max, 2);
    t.bytes.push_back(alignment);
    t.bytes.push_back(length);
    return t;
}

Term irq_no_flags(uint8_t irq) {
    if (irq > 15) return fail("ISA IRQ " + std::to_string(irq) + " is out of range 0..15");
    Term t{{kIrqNoFlagsTag}, {}};
    put_le(t.bytes, 1u << irq, 2);
    return t;
}

Term memory32_fixed(bool writable, uint32_t base, uint32_t length) {
    Term t{{kMemory32FixedTag, 9, 0, static_cast<uint8_t>(writable ? 1 : 0)}, {}};
    put_le(t.bytes, base, 4);
    put_le(t.bytes, length, 4);
    return t;
}

Term interrupt(InterruptFlags flags, uint32_t gsi) {
    uint8_t bits = static_cast<uint8_t>((flags.consumer ? 0x01 : 0) | (flags.level ? 0 : 0x02) |
                                        (flags.active_low ? 0x04 : 0) | (flags.shared ? 0x08 : 0));
    Term t{{kExtendedIrqTag, 6, 0, bits, 1}, {}};  // one interrupt number follows
    put_le(t.bytes, gsi, 4);
    return t;
}

namespace {

// Word (16-bit) or DWord (32-bit) address space descriptor.
Term address_space(unsigned width, uint8_t space, uint8_t type_flags, uint64_t min, uint64_t max) {
    const uint64_t limit = width == 2 ? 0xffff : 0xffffffff;
    if (min > max || max - min + 1 > limit)
        return fail("address range " + std::to_string(min) + "-" + std::to_string(max) + " does not fit a " +
                    std::to_string(8 * width) + "-bit address space descriptor");
    const uint8_t data_length = static_cast<uint8_t>(3 + 5 * width);
    Term t{{width == 2 ? kWordAddressTag : kDWordAddressTag, data_length, 0, space, kProducerMinMaxFixed, type_flags},
           {}};
    put_le(t.bytes, 0, width);  // granularity
    put_le(t.bytes, min, width);
    put_le(t.bytes, max, width);
    put_le(t.bytes, 0, width);  // translation offset
    put_le(t.bytes, max - min + 1, width);
    return t;
}

}  // namespace

Term word_bus_number(uint16_t min, uint16_t max) { return address_space(2, kSpaceBusNumber, 0, min, max); }

Term word_io(uint16_t min, uint16_t max) { return address_space(2, kSpaceIo, kIoEntireRange, min, max); }

Term dword_memory(bool cacheable, bool writable, uint32_t min, uint32_t max) {
    const uint8_t flags = static_cast<uint8_t>((writable ? kMemReadWrite : 0) | (cacheable ? kMemCacheable : 0));
    return address_space(4, kSpaceMemory, flags, min, max);
}

Term resource_template(const std::vector<Term>& descriptors) {
    Term all = concat(descriptors);
    if (!all.ok()) return all;
    all.bytes.push_back(kEndTag);
    all.bytes.push_back(0);  // checksum 0: "treat as correct"
    return buffer(all.bytes);
}

base::Result<std::vector<uint8_t>> finish(const Term& term) {
    if (!term.ok()) return base::Error{"building AML: " + term.error};
    return term.bytes;
}

}  // namespace popek::arch::x86::aml
