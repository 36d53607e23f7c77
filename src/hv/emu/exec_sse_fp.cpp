// SSE/SSE2 floating point: arithmetic, min/max, square roots and
// reciprocal estimates, compares (to masks and to RFLAGS), conversions.
// Each operation runs on the host's SSE unit with the guest's MXCSR rounding
// and flush-to-zero bits, so results (NaN propagation, rounding, integer
// indefinite values) and the exception flags are the hardware's own; an
// exception the guest unmasked becomes #XM (#UD without CR4.OSXMMEXCPT).
#include <immintrin.h>

#include "hv/emu/sse.hpp"

namespace popek::hv::emu {

namespace {

__m128i to_m(const Xmm& x) {
    __m128i m;
    std::memcpy(&m, &x, 16);
    return m;
}
Xmm from_m(__m128i m) {
    Xmm x;
    std::memcpy(static_cast<void*>(&x), &m, 16);
    return x;
}

// Runs `op` under the guest's MXCSR (all exceptions masked) and returns the
// exception flags it raised; false (with #XM/#UD pending) if one is unmasked.
template <class Op>
bool guest_fp(Engine& e, Op op) {
    const unsigned host = _mm_getcsr();
    _mm_setcsr((e.s.mxcsr & ~0x3fu) | 0x1f80u);
    op();
    const unsigned flags = _mm_getcsr() & 0x3fu;
    _mm_setcsr(host);
    e.s.mxcsr |= flags;
    const unsigned unmasked = flags & ~(e.s.mxcsr >> 7) & 0x3fu;
    if (unmasked == 0) return true;
    e.raise((e.s.cr4 & cr4::OSXMMEXCPT) != 0 ? kVecXM : kVecUD);
    return false;
}

// Keeps the compiler from moving arithmetic across the MXCSR switches.
template <class T>
void pin(T& v) { asm volatile("" : "+x"(v)); }

using Fn2 = __m128i (*)(__m128i, __m128i);

// dst ← f(dst, src): arithmetic, min/max, compares, conversions between
// float formats. Scalar sources may be unaligned memory of their own size.
template <Fn2 f>
Flow fp_binary(Engine& e, const Insn& i) {
    if (!sse::available(e)) return Flow::Fault;
    if (i.op[0].kind != OpKind::Xmm) return e.raise(kVecUD);
    Xmm src;
    if (!sse::read(e, i, i.op[1], src)) return Flow::Fault;
    __m128i a = to_m(e.s.xmm[i.op[0].reg]), b = to_m(src), r;
    if (!guest_fp(e, [&] {
            pin(a);
            pin(b);
            r = f(a, b);
            pin(r);
        })) {
        return Flow::Fault;
    }
    e.s.xmm[i.op[0].reg] = from_m(r);
    return Flow::Next;
}

#define POPEK_FP(name, expr)                                                          \
    __m128i name(__m128i a, __m128i b) {                                              \
        [[maybe_unused]] const __m128 fa = _mm_castsi128_ps(a), fb = _mm_castsi128_ps(b); \
        [[maybe_unused]] const __m128d da = _mm_castsi128_pd(a), db = _mm_castsi128_pd(b); \
        return expr;                                                                  \
    }

POPEK_FP(addss, _mm_castps_si128(_mm_add_ss(fa, fb)))
POPEK_FP(addps, _mm_castps_si128(_mm_add_ps(fa, fb)))
POPEK_FP(addsd, _mm_castpd_si128(_mm_add_sd(da, db)))
POPEK_FP(addpd, _mm_castpd_si128(_mm_add_pd(da, db)))
POPEK_FP(subss, _mm_castps_si128(_mm_sub_ss(fa, fb)))
POPEK_FP(subps, _mm_castps_si128(_mm_sub_ps(fa, fb)))
POPEK_FP(subsd, _mm_castpd_si128(_mm_sub_sd(da, db)))
POPEK_FP(subpd, _mm_castpd_si128(_mm_sub_pd(da, db)))
POPEK_FP(mulss, _mm_castps_si128(_mm_mul_ss(fa, fb)))
POPEK_FP(mulps, _mm_castps_si128(_mm_mul_ps(fa, fb)))
POPEK_FP(mulsd, _mm_castpd_si128(_mm_mul_sd(da, db)))
POPEK_FP(mulpd, _mm_castpd_si128(_mm_mul_pd(da, db)))
POPEK_FP(divss, _mm_castps_si128(_mm_div_ss(fa, fb)))
POPEK_FP(divps, _mm_castps_si128(_mm_div_ps(fa, fb)))
POPEK_FP(divsd, _mm_castpd_si128(_mm_div_sd(da, db)))
POPEK_FP(divpd, _mm_castpd_si128(_mm_div_pd(da, db)))
POPEK_FP(minss, _mm_castps_si128(_mm_min_ss(fa, fb)))
POPEK_FP(minps, _mm_castps_si128(_mm_min_ps(fa, fb)))
POPEK_FP(minsd, _mm_castpd_si128(_mm_min_sd(da, db)))
POPEK_FP(minpd, _mm_castpd_si128(_mm_min_pd(da, db)))
POPEK_FP(maxss, _mm_castps_si128(_mm_max_ss(fa, fb)))
POPEK_FP(maxps, _mm_castps_si128(_mm_max_ps(fa, fb)))
POPEK_FP(maxsd, _mm_castpd_si128(_mm_max_sd(da, db)))
POPEK_FP(maxpd, _mm_castpd_si128(_mm_max_pd(da, db)))
POPEK_FP(sqrtss, _mm_castps_si128(_mm_move_ss(fa, _mm_sqrt_ss(fb))))
POPEK_FP(sqrtps, _mm_castps_si128(_mm_sqrt_ps(fb)))
POPEK_FP(sqrtsd, _mm_castpd_si128(_mm_sqrt_sd(da, db)))
POPEK_FP(sqrtpd, _mm_castpd_si128(_mm_sqrt_pd(db)))
POPEK_FP(rcpss, _mm_castps_si128(_mm_move_ss(fa, _mm_rcp_ss(fb))))
POPEK_FP(rcpps, _mm_castps_si128(_mm_rcp_ps(fb)))
POPEK_FP(rsqrtss, _mm_castps_si128(_mm_move_ss(fa, _mm_rsqrt_ss(fb))))
POPEK_FP(rsqrtps, _mm_castps_si128(_mm_rsqrt_ps(fb)))
POPEK_FP(cvtss2sd, _mm_castpd_si128(_mm_cvtss_sd(da, fb)))
POPEK_FP(cvtsd2ss, _mm_castps_si128(_mm_cvtsd_ss(fa, db)))
POPEK_FP(cvtps2pd, _mm_castpd_si128(_mm_cvtps_pd(fb)))
POPEK_FP(cvtpd2ps, _mm_castps_si128(_mm_cvtpd_ps(db)))
POPEK_FP(cvtdq2ps, _mm_castps_si128(_mm_cvtepi32_ps(b)))
POPEK_FP(cvtps2dq, _mm_cvtps_epi32(fb))
POPEK_FP(cvttps2dq, _mm_cvttps_epi32(fb))
POPEK_FP(cvtdq2pd, _mm_castpd_si128(_mm_cvtepi32_pd(b)))
POPEK_FP(cvtpd2dq, _mm_cvtpd_epi32(db))
POPEK_FP(cvttpd2dq, _mm_cvttpd_epi32(db))
#undef POPEK_FP

// CMPccSS/SD/PS/PD: the eight SSE predicates, selected by the immediate.
template <bool dbl, bool scalar>
Flow fp_compare(Engine& e, const Insn& i) {
    if (!sse::available(e)) return Flow::Fault;
    Xmm src;
    if (!sse::read(e, i, i.op[1], src)) return Flow::Fault;
    const auto pred = static_cast<unsigned>(i.op[2].value) & 7;
    __m128i a = to_m(e.s.xmm[i.op[0].reg]), b = to_m(src), r;
    const auto run = [&] {
        pin(a);
        pin(b);
        if (dbl) {
            const __m128d x = _mm_castsi128_pd(a), y = _mm_castsi128_pd(b);
            __m128d c;
            switch (pred) {
            case 0: c = scalar ? _mm_cmpeq_sd(x, y) : _mm_cmpeq_pd(x, y); break;
            case 1: c = scalar ? _mm_cmplt_sd(x, y) : _mm_cmplt_pd(x, y); break;
            case 2: c = scalar ? _mm_cmple_sd(x, y) : _mm_cmple_pd(x, y); break;
            case 3: c = scalar ? _mm_cmpunord_sd(x, y) : _mm_cmpunord_pd(x, y); break;
            case 4: c = scalar ? _mm_cmpneq_sd(x, y) : _mm_cmpneq_pd(x, y); break;
            case 5: c = scalar ? _mm_cmpnlt_sd(x, y) : _mm_cmpnlt_pd(x, y); break;
            case 6: c = scalar ? _mm_cmpnle_sd(x, y) : _mm_cmpnle_pd(x, y); break;
            default: c = scalar ? _mm_cmpord_sd(x, y) : _mm_cmpord_pd(x, y); break;
            }
            r = _mm_castpd_si128(c);
        } else {
            const __m128 x = _mm_castsi128_ps(a), y = _mm_castsi128_ps(b);
            __m128 c;
            switch (pred) {
            case 0: c = scalar ? _mm_cmpeq_ss(x, y) : _mm_cmpeq_ps(x, y); break;
            case 1: c = scalar ? _mm_cmplt_ss(x, y) : _mm_cmplt_ps(x, y); break;
            case 2: c = scalar ? _mm_cmple_ss(x, y) : _mm_cmple_ps(x, y); break;
            case 3: c = scalar ? _mm_cmpunord_ss(x, y) : _mm_cmpunord_ps(x, y); break;
            case 4: c = scalar ? _mm_cmpneq_ss(x, y) : _mm_cmpneq_ps(x, y); break;
            case 5: c = scalar ? _mm_cmpnlt_ss(x, y) : _mm_cmpnlt_ps(x, y); break;
            case 6: c = scalar ? _mm_cmpnle_ss(x, y) : _mm_cmpnle_ps(x, y); break;
            default: c = scalar ? _mm_cmpord_ss(x, y) : _mm_cmpord_ps(x, y); break;
            }
            r = _mm_castps_si128(c);
        }
        pin(r);
    };
    if (!guest_fp(e, run)) return Flow::Fault;
    e.s.xmm[i.op[0].reg] = from_m(r);
    return Flow::Next;
}

// COMISS/COMISD/UCOMISS/UCOMISD: ZF PF CF from the comparison, OF SF AF cleared.
// Run as the instruction itself (compilers may pick the quiet form for the intrinsics).
template <bool dbl, bool signalling>
Flow fp_rflags_compare(Engine& e, const Insn& i) {
    if (!sse::available(e)) return Flow::Fault;
    Xmm src;
    if (!sse::read(e, i, i.op[1], src)) return Flow::Fault;
    __m128i a = to_m(e.s.xmm[i.op[0].reg]), b = to_m(src);
    uint8_t zf = 0, pf = 0, cf = 0;
    const auto run = [&] {
        if (dbl && signalling) {
            asm volatile("comisd %[b], %[a]\n\tsetz %[z]\n\tsetp %[p]\n\tsetc %[c]"
                         : [z] "=r"(zf), [p] "=r"(pf), [c] "=r"(cf) : [a] "x"(a), [b] "x"(b) : "cc");
        } else if (dbl) {
            asm volatile("ucomisd %[b], %[a]\n\tsetz %[z]\n\tsetp %[p]\n\tsetc %[c]"
                         : [z] "=r"(zf), [p] "=r"(pf), [c] "=r"(cf) : [a] "x"(a), [b] "x"(b) : "cc");
        } else if (signalling) {
            asm volatile("comiss %[b], %[a]\n\tsetz %[z]\n\tsetp %[p]\n\tsetc %[c]"
                         : [z] "=r"(zf), [p] "=r"(pf), [c] "=r"(cf) : [a] "x"(a), [b] "x"(b) : "cc");
        } else {
            asm volatile("ucomiss %[b], %[a]\n\tsetz %[z]\n\tsetp %[p]\n\tsetc %[c]"
                         : [z] "=r"(zf), [p] "=r"(pf), [c] "=r"(cf) : [a] "x"(a), [b] "x"(b) : "cc");
        }
    };
    if (!guest_fp(e, run)) return Flow::Fault;
    alu::set_arith(e.s, (zf ? rflags::ZF : 0) | (pf ? rflags::PF : 0) | (cf ? rflags::CF : 0));
    return Flow::Next;
}

// CVTSI2SS/CVTSI2SD: a 32- or 64-bit integer (register or memory) into the low element.
template <bool dbl>
Flow fp_from_int(Engine& e, const Insn& i) {
    if (!sse::available(e)) return Flow::Fault;
    uint64_t v = 0;
    if (!e.read_op(i, i.op[1], v)) return Flow::Fault;
    const bool wide = i.op[1].size == 8;
    __m128i a = to_m(e.s.xmm[i.op[0].reg]), r;
    const auto run = [&] {
        pin(a);
        if (dbl) {
            const __m128d x = _mm_castsi128_pd(a);
            r = _mm_castpd_si128(wide ? _mm_cvtsi64_sd(x, static_cast<int64_t>(v))
                                      : _mm_cvtsi32_sd(x, static_cast<int32_t>(v)));
        } else {
            const __m128 x = _mm_castsi128_ps(a);
            r = _mm_castps_si128(wide ? _mm_cvtsi64_ss(x, static_cast<int64_t>(v))
                                      : _mm_cvtsi32_ss(x, static_cast<int32_t>(v)));
        }
        pin(r);
    };
    if (!guest_fp(e, run)) return Flow::Fault;
    e.s.xmm[i.op[0].reg] = from_m(r);
    return Flow::Next;
}

// CVT(T)SS2SI / CVT(T)SD2SI: the low element into a 32- or 64-bit register.
template <bool dbl, bool truncate>
Flow fp_to_int(Engine& e, const Insn& i) {
    if (!sse::available(e)) return Flow::Fault;
    Xmm src;
    if (!sse::read(e, i, i.op[1], src)) return Flow::Fault;
    const bool wide = i.op[0].size == 8;
    __m128i b = to_m(src);
    int64_t r = 0;
    const auto run = [&] {
        pin(b);
        if (dbl) {
            const __m128d y = _mm_castsi128_pd(b);
            r = wide ? (truncate ? _mm_cvttsd_si64(y) : _mm_cvtsd_si64(y))
                     : (truncate ? _mm_cvttsd_si32(y) : _mm_cvtsd_si32(y));
        } else {
            const __m128 y = _mm_castsi128_ps(b);
            r = wide ? (truncate ? _mm_cvttss_si64(y) : _mm_cvtss_si64(y))
                     : (truncate ? _mm_cvttss_si32(y) : _mm_cvtss_si32(y));
        }
        asm volatile("" : "+r"(r));
    };
    if (!guest_fp(e, run)) return Flow::Fault;
    e.set_gpr(i.op[0].reg, wide ? 8 : 4, static_cast<uint64_t>(r));
    return Flow::Next;
}

Flow exec_shufpd(Engine& e, const Insn& i) {
    if (!sse::available(e)) return Flow::Fault;
    Xmm src;
    if (!sse::read(e, i, i.op[1], src)) return Flow::Fault;
    Xmm& d = e.s.xmm[i.op[0].reg];
    const auto imm = static_cast<unsigned>(i.op[2].value);
    d = Xmm{(imm & 1) ? d.hi : d.lo, (imm & 2) ? src.hi : src.lo};
    return Flow::Next;
}

}  // namespace

void register_sse_fp(HandlerTable& t) {
    t.set(ZYDIS_MNEMONIC_ADDSS, fp_binary<addss>);
    t.set(ZYDIS_MNEMONIC_ADDPS, fp_binary<addps>);
    t.set(ZYDIS_MNEMONIC_ADDSD, fp_binary<addsd>);
    t.set(ZYDIS_MNEMONIC_ADDPD, fp_binary<addpd>);
    t.set(ZYDIS_MNEMONIC_SUBSS, fp_binary<subss>);
    t.set(ZYDIS_MNEMONIC_SUBPS, fp_binary<subps>);
    t.set(ZYDIS_MNEMONIC_SUBSD, fp_binary<subsd>);
    t.set(ZYDIS_MNEMONIC_SUBPD, fp_binary<subpd>);
    t.set(ZYDIS_MNEMONIC_MULSS, fp_binary<mulss>);
    t.set(ZYDIS_MNEMONIC_MULPS, fp_binary<mulps>);
    t.set(ZYDIS_MNEMONIC_MULSD, fp_binary<mulsd>);
    t.set(ZYDIS_MNEMONIC_MULPD, fp_binary<mulpd>);
    t.set(ZYDIS_MNEMONIC_DIVSS, fp_binary<divss>);
    t.set(ZYDIS_MNEMONIC_DIVPS, fp_binary<divps>);
    t.set(ZYDIS_MNEMONIC_DIVSD, fp_binary<divsd>);
    t.set(ZYDIS_MNEMONIC_DIVPD, fp_binary<divpd>);
    t.set(ZYDIS_MNEMONIC_MINSS, fp_binary<minss>);
    t.set(ZYDIS_MNEMONIC_MINPS, fp_binary<minps>);
    t.set(ZYDIS_MNEMONIC_MINSD, fp_binary<minsd>);
    t.set(ZYDIS_MNEMONIC_MINPD, fp_binary<minpd>);
    t.set(ZYDIS_MNEMONIC_MAXSS, fp_binary<maxss>);
    t.set(ZYDIS_MNEMONIC_MAXPS, fp_binary<maxps>);
    t.set(ZYDIS_MNEMONIC_MAXSD, fp_binary<maxsd>);
    t.set(ZYDIS_MNEMONIC_MAXPD, fp_binary<maxpd>);
    t.set(ZYDIS_MNEMONIC_SQRTSS, fp_binary<sqrtss>);
    t.set(ZYDIS_MNEMONIC_SQRTPS, fp_binary<sqrtps>);
    t.set(ZYDIS_MNEMONIC_SQRTSD, fp_binary<sqrtsd>);
    t.set(ZYDIS_MNEMONIC_SQRTPD, fp_binary<sqrtpd>);
    t.set(ZYDIS_MNEMONIC_RCPSS, fp_binary<rcpss>);
    t.set(ZYDIS_MNEMONIC_RCPPS, fp_binary<rcpps>);
    t.set(ZYDIS_MNEMONIC_RSQRTSS, fp_binary<rsqrtss>);
    t.set(ZYDIS_MNEMONIC_RSQRTPS, fp_binary<rsqrtps>);
    t.set(ZYDIS_MNEMONIC_CVTSS2SD, fp_binary<cvtss2sd>);
    t.set(ZYDIS_MNEMONIC_CVTSD2SS, fp_binary<cvtsd2ss>);
    t.set(ZYDIS_MNEMONIC_CVTPS2PD, fp_binary<cvtps2pd>);
    t.set(ZYDIS_MNEMONIC_CVTPD2PS, fp_binary<cvtpd2ps>);
    t.set(ZYDIS_MNEMONIC_CVTDQ2PS, fp_binary<cvtdq2ps>);
    t.set(ZYDIS_MNEMONIC_CVTPS2DQ, fp_binary<cvtps2dq>);
    t.set(ZYDIS_MNEMONIC_CVTTPS2DQ, fp_binary<cvttps2dq>);
    t.set(ZYDIS_MNEMONIC_CVTDQ2PD, fp_binary<cvtdq2pd>);
    t.set(ZYDIS_MNEMONIC_CVTPD2DQ, fp_binary<cvtpd2dq>);
    t.set(ZYDIS_MNEMONIC_CVTTPD2DQ, fp_binary<cvttpd2dq>);
    t.set(ZYDIS_MNEMONIC_CMPSS, fp_compare<false, true>);
    t.set(ZYDIS_MNEMONIC_CMPPS, fp_compare<false, false>);
    t.set(ZYDIS_MNEMONIC_CMPPD, fp_compare<true, false>);
    t.set(ZYDIS_MNEMONIC_COMISS, fp_rflags_compare<false, true>);
    t.set(ZYDIS_MNEMONIC_COMISD, fp_rflags_compare<true, true>);
    t.set(ZYDIS_MNEMONIC_UCOMISS, fp_rflags_compare<false, false>);
    t.set(ZYDIS_MNEMONIC_UCOMISD, fp_rflags_compare<true, false>);
    t.set(ZYDIS_MNEMONIC_CVTSI2SS, fp_from_int<false>);
    t.set(ZYDIS_MNEMONIC_CVTSI2SD, fp_from_int<true>);
    t.set(ZYDIS_MNEMONIC_CVTSS2SI, fp_to_int<false, false>);
    t.set(ZYDIS_MNEMONIC_CVTTSS2SI, fp_to_int<false, true>);
    t.set(ZYDIS_MNEMONIC_CVTSD2SI, fp_to_int<true, false>);
    t.set(ZYDIS_MNEMONIC_CVTTSD2SI, fp_to_int<true, true>);
    t.set(ZYDIS_MNEMONIC_SHUFPD, exec_shufpd);
}

// CMPSD (SSE2 scalar double compare), reached through exec_sse.cpp's MOVSD/CMPSD split.
Flow exec_cmpsd_sse(Engine& e, const Insn& i) { return fp_compare<true, true>(e, i); }

}  // namespace popek::hv::emu
