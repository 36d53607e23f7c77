#include "migration/cpu_state.hpp"

#include <limits>
#include <string>

namespace popek::migration {

using base::Error;
using base::Result;
using nlohmann::json;

namespace {

// Named fields of the plain register structs, so writer and reader share one list.
template <class S>
struct U64Field {
    const char* name;
    uint64_t S::*member;
};
constexpr U64Field<hv::Regs> kRegs[] = {
    {"rax", &hv::Regs::rax}, {"rbx", &hv::Regs::rbx}, {"rcx", &hv::Regs::rcx}, {"rdx", &hv::Regs::rdx},
    {"rsi", &hv::Regs::rsi}, {"rdi", &hv::Regs::rdi}, {"rsp", &hv::Regs::rsp}, {"rbp", &hv::Regs::rbp},
    {"r8", &hv::Regs::r8},   {"r9", &hv::Regs::r9},   {"r10", &hv::Regs::r10}, {"r11", &hv::Regs::r11},
    {"r12", &hv::Regs::r12}, {"r13", &hv::Regs::r13}, {"r14", &hv::Regs::r14}, {"r15", &hv::Regs::r15},
    {"rip", &hv::Regs::rip}, {"rflags", &hv::Regs::rflags},
};
constexpr U64Field<hv::Sregs> kControlRegs[] = {
    {"cr0", &hv::Sregs::cr0}, {"cr2", &hv::Sregs::cr2},   {"cr3", &hv::Sregs::cr3},
    {"cr4", &hv::Sregs::cr4}, {"cr8", &hv::Sregs::cr8},   {"efer", &hv::Sregs::efer},
    {"apic_base", &hv::Sregs::apic_base},
};
struct SegmentField {
    const char* name;
    hv::Segment hv::Sregs::*member;
};
constexpr SegmentField kSegments[] = {
    {"cs", &hv::Sregs::cs}, {"ds", &hv::Sregs::ds}, {"es", &hv::Sregs::es}, {"fs", &hv::Sregs::fs},
    {"gs", &hv::Sregs::gs}, {"ss", &hv::Sregs::ss}, {"tr", &hv::Sregs::tr}, {"ldt", &hv::Sregs::ldt},
};
struct U8Field {
    const char* name;
    uint8_t hv::VcpuEvents::*member;
};
constexpr U8Field kEventBytes[] = {
    {"exception_injected", &hv::VcpuEvents::exception_injected},
    {"exception_nr", &hv::VcpuEvents::exception_nr},
    {"exception_has_error_code", &hv::VcpuEvents::exception_has_error_code},
    {"interrupt_injected", &hv::VcpuEvents::interrupt_injected},
    {"interrupt_nr", &hv::VcpuEvents::interrupt_nr},
    {"interrupt_soft", &hv::VcpuEvents::interrupt_soft},
    {"interrupt_shadow", &hv::VcpuEvents::interrupt_shadow},
    {"nmi_injected", &hv::VcpuEvents::nmi_injected},
    {"nmi_pending", &hv::VcpuEvents::nmi_pending},
    {"nmi_masked", &hv::VcpuEvents::nmi_masked},
    {"smm", &hv::VcpuEvents::smm},
    {"smi_pending", &hv::VcpuEvents::smi_pending},
    {"smm_inside_nmi", &hv::VcpuEvents::smm_inside_nmi},
    {"latched_init", &hv::VcpuEvents::latched_init},
};

json segment_to_json(const hv::Segment& s) {
    return json{{"base", s.base}, {"limit", s.limit}, {"selector", s.selector}, {"type", s.type},
                {"present", s.present}, {"dpl", s.dpl}, {"db", s.db}, {"s", s.s}, {"l", s.l}, {"g", s.g},
                {"avl", s.avl}, {"unusable", s.unusable}};
}

json msrs_to_json(const std::vector<hv::MsrEntry>& msrs) {
    json out = json::array();
    for (const auto& m : msrs) out.push_back(json{{"index", m.index}, {"value", m.value}});
    return out;
}

// Checks that `v` is a non-negative integer no greater than `max`; on
// success stores it in `out`, else returns what is wrong.
std::string uint_problem(const json& v, uint64_t max, uint64_t& out) {
    if (v.is_number_unsigned()) {
        out = v.get<uint64_t>();
    } else if (v.is_number_integer()) {
        auto i = v.get<int64_t>();
        if (i < 0) return "is negative";
        out = static_cast<uint64_t>(i);
    } else {
        return "has the wrong type (want an unsigned integer)";
    }
    if (out > max) return "is out of range (at most " + std::to_string(max) + ")";
    return {};
}

// A JSON object being read, with its path for error messages
// ("vcpu state: field 'sregs.cs.base' missing").
struct Obj {
    const json& j;
    std::string path;  // "" for the root, else "sregs.cs", "msrs[3]"
    const char* doc;   // "vcpu state", "vm state"

    [[nodiscard]] std::string name(const std::string& field) const {
        return path.empty() ? field : path + "." + field;
    }
    [[nodiscard]] Error error(const std::string& field, const std::string& what) const {
        return Error{std::string(doc) + ": field '" + name(field) + "' " + what};
    }

    [[nodiscard]] Result<const json*> get(const char* field) const {
        auto it = j.find(field);
        if (it == j.end()) return error(field, "missing");
        return &*it;
    }

    [[nodiscard]] Result<Obj> object(const char* field) const {
        POPEK_ASSIGN_OR_RETURN(const json* v, get(field));
        if (!v->is_object()) return error(field, "has the wrong type (want an object)");
        return Obj{*v, name(field), doc};
    }

    [[nodiscard]] Result<const json*> array(const char* field, size_t max) const {
        POPEK_ASSIGN_OR_RETURN(const json* v, get(field));
        if (!v->is_array()) return error(field, "has the wrong type (want an array)");
        if (v->size() > max)
            return error(field, "has " + std::to_string(v->size()) + " entries, at most " + std::to_string(max) +
                                    " allowed");
        return v;
    }

    // Element i of array `field` (checked by array()) as an object.
    [[nodiscard]] Result<Obj> element(const char* field, const json& arr, size_t i) const {
        std::string elem = std::string(field) + "[" + std::to_string(i) + "]";
        if (!arr[i].is_object()) return error(elem, "has the wrong type (want an object)");
        return Obj{arr[i], name(elem), doc};
    }

    template <class T>
    [[nodiscard]] Result<T> uint(const char* field) const {
        POPEK_ASSIGN_OR_RETURN(const json* v, get(field));
        uint64_t x = 0;
        std::string problem = uint_problem(*v, std::numeric_limits<T>::max(), x);
        if (!problem.empty()) return error(field, problem);
        return static_cast<T>(x);
    }

    [[nodiscard]] Result<std::vector<uint8_t>> bytes_of(const json& v, const std::string& field, size_t min,
                                                      size_t max) const {
        if (!v.is_binary()) return error(field, "has the wrong type (want a byte string)");
        const auto& b = v.get_binary();
        if (b.size() < min || b.size() > max) {
            std::string want = min == max ? std::to_string(min) : std::to_string(min) + " to " + std::to_string(max);
            return error(field, "is " + std::to_string(b.size()) + " bytes, want " + want);
        }
        return std::vector<uint8_t>(b.begin(), b.end());
    }

    [[nodiscard]] Result<std::vector<uint8_t>> bytes(const char* field, size_t min, size_t max) const {
        POPEK_ASSIGN_OR_RETURN(const json* v, get(field));
        return bytes_of(*v, field, min, max);
    }

    [[nodiscard]] Result<std::string> string(const char* field) const {
        POPEK_ASSIGN_OR_RETURN(const json* v, get(field));
        if (!v->is_string()) return error(field, "has the wrong type (want a string)");
        return v->get_ref<const std::string&>();
    }
};

Result<hv::Segment> segment_from_json(const Obj& o) {
    hv::Segment s{};
    POPEK_ASSIGN_OR_RETURN(s.base, o.uint<uint64_t>("base"));
    POPEK_ASSIGN_OR_RETURN(s.limit, o.uint<uint32_t>("limit"));
    POPEK_ASSIGN_OR_RETURN(s.selector, o.uint<uint16_t>("selector"));
    POPEK_ASSIGN_OR_RETURN(s.type, o.uint<uint8_t>("type"));
    POPEK_ASSIGN_OR_RETURN(s.present, o.uint<uint8_t>("present"));
    POPEK_ASSIGN_OR_RETURN(s.dpl, o.uint<uint8_t>("dpl"));
    POPEK_ASSIGN_OR_RETURN(s.db, o.uint<uint8_t>("db"));
    POPEK_ASSIGN_OR_RETURN(s.s, o.uint<uint8_t>("s"));
    POPEK_ASSIGN_OR_RETURN(s.l, o.uint<uint8_t>("l"));
    POPEK_ASSIGN_OR_RETURN(s.g, o.uint<uint8_t>("g"));
    POPEK_ASSIGN_OR_RETURN(s.avl, o.uint<uint8_t>("avl"));
    POPEK_ASSIGN_OR_RETURN(s.unusable, o.uint<uint8_t>("unusable"));
    return s;
}

Result<hv::DescriptorTable> table_from_json(const Obj& o) {
    hv::DescriptorTable t{};
    POPEK_ASSIGN_OR_RETURN(t.base, o.uint<uint64_t>("base"));
    POPEK_ASSIGN_OR_RETURN(t.limit, o.uint<uint16_t>("limit"));
    return t;
}

Result<hv::Sregs> sregs_from_json(const Obj& o) {
    hv::Sregs s{};
    for (const auto& seg : kSegments) {
        POPEK_ASSIGN_OR_RETURN(Obj so, o.object(seg.name));
        POPEK_ASSIGN_OR_RETURN(s.*seg.member, segment_from_json(so));
    }
    POPEK_ASSIGN_OR_RETURN(Obj gdt, o.object("gdt"));
    POPEK_ASSIGN_OR_RETURN(s.gdt, table_from_json(gdt));
    POPEK_ASSIGN_OR_RETURN(Obj idt, o.object("idt"));
    POPEK_ASSIGN_OR_RETURN(s.idt, table_from_json(idt));
    for (const auto& f : kControlRegs) {
        POPEK_ASSIGN_OR_RETURN(s.*f.member, o.uint<uint64_t>(f.name));
    }
    return s;
}

// An array of {"index": u32, "value": u64} (MSRs, XCRs).
Result<std::vector<hv::MsrEntry>> msrs_from_json(const Obj& o, const char* field, size_t max) {
    POPEK_ASSIGN_OR_RETURN(const json* arr, o.array(field, max));
    std::vector<hv::MsrEntry> out;
    out.reserve(arr->size());
    for (size_t i = 0; i < arr->size(); i++) {
        POPEK_ASSIGN_OR_RETURN(Obj e, o.element(field, *arr, i));
        hv::MsrEntry m{};
        POPEK_ASSIGN_OR_RETURN(m.index, e.uint<uint32_t>("index"));
        POPEK_ASSIGN_OR_RETURN(m.value, e.uint<uint64_t>("value"));
        out.push_back(m);
    }
    return out;
}

Result<hv::VcpuEvents> events_from_json(const Obj& o) {
    hv::VcpuEvents e{};
    for (const auto& f : kEventBytes) {
        POPEK_ASSIGN_OR_RETURN(e.*f.member, o.uint<uint8_t>(f.name));
    }
    POPEK_ASSIGN_OR_RETURN(e.exception_error_code, o.uint<uint32_t>("exception_error_code"));
    POPEK_ASSIGN_OR_RETURN(e.sipi_vector, o.uint<uint32_t>("sipi_vector"));
    return e;
}

Result<hv::DebugRegs> debug_from_json(const Obj& o) {
    hv::DebugRegs d{};
    POPEK_ASSIGN_OR_RETURN(const json* db, o.array("db", d.db.size()));
    if (db->size() != d.db.size()) return o.error("db", "has " + std::to_string(db->size()) + " entries, want 4");
    for (size_t i = 0; i < d.db.size(); i++) {
        std::string problem = uint_problem((*db)[i], std::numeric_limits<uint64_t>::max(), d.db[i]);
        if (!problem.empty()) return o.error("db[" + std::to_string(i) + "]", problem);
    }
    POPEK_ASSIGN_OR_RETURN(d.dr6, o.uint<uint64_t>("dr6"));
    POPEK_ASSIGN_OR_RETURN(d.dr7, o.uint<uint64_t>("dr7"));
    return d;
}

}  // namespace

json vcpu_state_to_json(const hv::VcpuState& s) {
    json regs = json::object();
    for (const auto& f : kRegs) regs[f.name] = s.regs.*f.member;
    json sregs = json::object();
    for (const auto& seg : kSegments) sregs[seg.name] = segment_to_json(s.sregs.*seg.member);
    sregs["gdt"] = json{{"base", s.sregs.gdt.base}, {"limit", s.sregs.gdt.limit}};
    sregs["idt"] = json{{"base", s.sregs.idt.base}, {"limit", s.sregs.idt.limit}};
    for (const auto& f : kControlRegs) sregs[f.name] = s.sregs.*f.member;
    json events = json::object();
    for (const auto& f : kEventBytes) events[f.name] = s.events.*f.member;
    events["exception_error_code"] = s.events.exception_error_code;
    events["sipi_vector"] = s.events.sipi_vector;
    json debug{{"db", s.debug.db}, {"dr6", s.debug.dr6}, {"dr7", s.debug.dr7}};
    return json{{"regs", std::move(regs)},
                {"sregs", std::move(sregs)},
                {"msrs", msrs_to_json(s.msrs)},
                {"xsave", json::binary(s.xsave)},
                {"xcrs", msrs_to_json(s.xcrs)},
                {"lapic", json::binary(s.lapic)},
                {"events", std::move(events)},
                {"debug", std::move(debug)},
                {"mp_state", s.mp_state}};
}

Result<hv::VcpuState> vcpu_state_from_json(const json& j) {
    if (!j.is_object()) return Error{"vcpu state: not an object"};
    Obj root{j, "", "vcpu state"};
    hv::VcpuState s;
    POPEK_ASSIGN_OR_RETURN(Obj regs, root.object("regs"));
    for (const auto& f : kRegs) {
        POPEK_ASSIGN_OR_RETURN(s.regs.*f.member, regs.uint<uint64_t>(f.name));
    }
    POPEK_ASSIGN_OR_RETURN(Obj sregs, root.object("sregs"));
    POPEK_ASSIGN_OR_RETURN(s.sregs, sregs_from_json(sregs));
    POPEK_ASSIGN_OR_RETURN(s.msrs, msrs_from_json(root, "msrs", kMaxMsrs));
    POPEK_ASSIGN_OR_RETURN(s.xsave, root.bytes("xsave", kMinXsaveBytes, kMaxXsaveBytes));
    POPEK_ASSIGN_OR_RETURN(s.xcrs, msrs_from_json(root, "xcrs", kMaxXcrs));
    POPEK_ASSIGN_OR_RETURN(s.lapic, root.bytes("lapic", kLapicBytes, kLapicBytes));
    POPEK_ASSIGN_OR_RETURN(Obj events, root.object("events"));
    POPEK_ASSIGN_OR_RETURN(s.events, events_from_json(events));
    POPEK_ASSIGN_OR_RETURN(Obj debug, root.object("debug"));
    POPEK_ASSIGN_OR_RETURN(s.debug, debug_from_json(debug));
    POPEK_ASSIGN_OR_RETURN(s.mp_state, root.uint<uint32_t>("mp_state"));
    return s;
}

json vm_state_to_json(const hv::VmState& s) {
    json blobs = json::object();
    for (const auto& [name, bytes] : s.blobs) blobs[name] = json::binary(bytes);
    return json{{"backend", s.backend}, {"blobs", std::move(blobs)}, {"clock_ns", s.clock_ns}};
}

Result<hv::VmState> vm_state_from_json(const json& j) {
    if (!j.is_object()) return Error{"vm state: not an object"};
    Obj root{j, "", "vm state"};
    hv::VmState s;
    POPEK_ASSIGN_OR_RETURN(s.backend, root.string("backend"));
    POPEK_ASSIGN_OR_RETURN(Obj blobs, root.object("blobs"));
    if (blobs.j.size() > kMaxVmBlobs)
        return root.error("blobs", "has " + std::to_string(blobs.j.size()) + " entries, at most " +
                                       std::to_string(kMaxVmBlobs) + " allowed");
    for (auto it = blobs.j.begin(); it != blobs.j.end(); ++it) {
        POPEK_ASSIGN_OR_RETURN(auto bytes, blobs.bytes_of(it.value(), it.key(), 0, kMaxVmBlobBytes));
        s.blobs.emplace_back(it.key(), std::move(bytes));
    }
    POPEK_ASSIGN_OR_RETURN(s.clock_ns, root.uint<uint64_t>("clock_ns"));
    return s;
}

}  // namespace popek::migration
