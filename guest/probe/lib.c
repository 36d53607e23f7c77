/* Probe guest: serial output and small freestanding helpers. Used from ring 3
 * (and from ring 0 by the fatal-exception path in trap.c). */
#include "probe.h"

/* Straight to the THR: no LSR polling and no UART programming. Every port
 * access is a VM exit (~10-25 us under KVM-PVM), and the 8250s of QEMU and
 * popek take THR writes at any time and ignore the baud rate. */
void put_char(char c) { outb(PORT_COM1, (u8)c); }

void put_str(const char *s) {
    while (*s) put_char(*s++);
}

void put_dec(u64 v) {
    char buf[21];
    int i = 20;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put_str(&buf[i]);
}

static void put_hex_digits(u64 v, int digits) {
    for (int shift = (digits - 1) * 4; shift >= 0; shift -= 4) put_char("0123456789abcdef"[(v >> shift) & 0xf]);
}

void put_hex(u64 v) {
    int digits = 1;
    while (digits < 16 && (v >> (digits * 4))) digits++;
    put_str("0x");
    put_hex_digits(v, digits);
}

void put_hex16(u64 v) { put_hex_digits(v, 16); }

/* Ring-3 spinlock so lines from several CPUs do not interleave. */
static volatile u32 output_lock;

void lock_output(void) {
    while (__atomic_exchange_n(&output_lock, 1, __ATOMIC_ACQUIRE)) {
        while (output_lock) cpu_relax();
    }
}

void unlock_output(void) { __atomic_store_n(&output_lock, 0, __ATOMIC_RELEASE); }

/* Status to the debug-exit port (QEMU isa-debug-exit exits with
 * (v << 1) | 1, popek with v). Without such a device the write does
 * nothing; then park the CPU. */
void probe_exit(u32 status) {
    outl(PORT_DEBUG_EXIT, status);
    sys_halt();
}

void probe_error(const char *msg, const char *arg) {
    put_str("PROBE-ERROR ");
    put_str(msg);
    if (arg) {
        put_char(' ');
        put_str(arg);
    }
    put_char('\n');
    probe_exit(1);
}

bool str_eq(const char *a, const char *b) {
    while (*a && *a == *b) a++, b++;
    return *a == *b;
}

/* Decimal only; rejects empty strings, junk and overflow. */
bool parse_u64(const char *s, u64 *out) {
    u64 v = 0;
    if (!s || !*s) return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return false;
        u64 d = (u64)(*s - '0');
        if (v > (~0ull - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* TSC frequency for timeouts only, so a guess is fine when the CPU does not
 * say (AMD hosts have neither leaf 0x15 nor 0x16). */
u64 tsc_hz(void) {
    u32 r[4];
    cpuid(0, 0, r);
    u32 max_leaf = r[0];
    if (max_leaf >= 0x15) {
        cpuid(0x15, 0, r); /* eax = denominator, ebx = numerator, ecx = crystal Hz */
        if (r[0] && r[1] && r[2]) return (u64)r[2] * r[1] / r[0];
    }
    if (max_leaf >= 0x16) {
        cpuid(0x16, 0, r); /* eax = base MHz */
        if (r[0]) return (u64)r[0] * 1000000;
    }
    cpuid(0x40000000, 0, r); /* KVM/VMware leaf 0x40000010: TSC kHz */
    if (r[0] >= 0x40000010) {
        cpuid(0x40000010, 0, r);
        if (r[0]) return (u64)r[0] * 1000;
    }
    return 3000000000ull;
}

/* rep movsb/stosb: short and fast, and gcc cannot turn these back into calls
 * to themselves the way it can with C loops. */
void *memset(void *d, int c, size_t n) {
    void *ret = d;
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
    return ret;
}

void *memcpy(void *d, const void *s, size_t n) {
    void *ret = d;
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    return ret;
}

int memcmp(const void *a, const void *b, size_t n) {
    const u8 *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
    return 0;
}
