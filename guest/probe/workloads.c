/* Probe guest: the single-CPU workloads (ring 3). smp lives in smp.c. */
#include "probe.h"

/* ---- exits N: N port-I/O exits ---------------------------------------- */
void workload_exits(u64 n) {
    for (u64 i = 0; i < n; i++) outb(PORT_POST, (u8)i);
    put_str("PROBE-DONE exits ");
    put_dec(n);
    put_char('\n');
}

/* ---- dirty MIB: dirty every 4 KiB page of [16 MiB, 16 MiB + MIB) forever */
#define DIRTY_BASE (16ull << 20)
#define PAGE_SIZE 4096ull

/* True if [base, end) is RAM according to the PVH memory map (possibly
 * spread over adjacent entries). */
static bool is_ram(u64 base, u64 end) {
    if (!have_memmap()) probe_error("no memory map in hvm_start_info", NULL);
    return memmap_covers(base, end);
}

void workload_dirty(u64 mib) {
    if (mib == 0 || mib > 4096) probe_error("bad dirty size", NULL);
    u64 end = DIRTY_BASE + (mib << 20);
    if (end > (4ull << 30)) probe_error("dirty region beyond the 4 GiB identity map", NULL);
    if (!is_ram(DIRTY_BASE, end)) probe_error("dirty region is not RAM", NULL);

    /* A gap is the TSC delta between two consecutive page writes; the
     * largest one bounds how long the guest was stopped (e.g. migration
     * downtime) while dirtying. maxgap_tsc is the maximum over all passes
     * (pass 1 includes first-touch faults), pass_maxgap_tsc over this pass
     * alone. The serial line between passes is not counted: each pass
     * restarts the clock. */
    u64 maxgap = 0;
    for (u64 pass = 1;; pass++) {
        u64 pass_maxgap = 0;
        u64 prev = rdtsc();
        for (u64 addr = DIRTY_BASE; addr < end; addr += PAGE_SIZE) {
            *(volatile u8 *)addr = (u8)pass;
            u64 now = rdtsc();
            if (now - prev > pass_maxgap) pass_maxgap = now - prev;
            prev = now;
        }
        if (pass_maxgap > maxgap) maxgap = pass_maxgap;
        put_str("PROBE-DIRTY pass ");
        put_dec(pass);
        put_str(" maxgap_tsc=");
        put_dec(maxgap);
        put_str(" pass_maxgap_tsc=");
        put_dec(pass_maxgap);
        put_char('\n');
    }
}

/* ---- pulse MIB: fill memory, then show it runs -------------------------- */
/* Writes a non-zero word into every page of MIB MiB (so snapshots and
 * migrations have that much to carry), prints PROBE-PULSE filled, then one
 * '.' after another forever: whoever restores or receives the VM sees the
 * guest running again by the next dot. */
void workload_pulse(u64 mib) {
    if (mib > 4096) probe_error("bad pulse size", NULL);
    u64 end = DIRTY_BASE + (mib << 20);
    if (end > (4ull << 30)) probe_error("pulse region beyond the 4 GiB identity map", NULL);
    if (mib && !is_ram(DIRTY_BASE, end)) probe_error("pulse region is not RAM", NULL);
    for (u64 addr = DIRTY_BASE; addr < end; addr += PAGE_SIZE) *(volatile u64 *)addr = addr | 1;
    put_str("PROBE-PULSE filled=");
    put_dec(mib);
    put_str("M\n");
    for (;;) put_char('.');
}

/* ---- idle MIB, dirty-rate MIB MIBPS [TSC_KHZ]: migration benchmark guests -- */
/* Both watch the guest's clock (the TSC) in a tight loop and print, about
 * every 100 ms, the largest gap between two consecutive readings in that
 * window (and the pages written so far): a pause of the VM (a migration's downtime) shows up as the gap of
 * the window it fell in, which the first line after the pause reports.
 * (How much of a migration's pause it shows depends on how the VMM and KVM
 * carry the TSC over.) */
struct clock_window {
    u64 prev, max_gap, next_report, interval, lines;
};

static void window_start(struct clock_window *w, u64 hz) {
    w->interval = hz / 10;
    w->prev = rdtsc();
    w->max_gap = 0;
    w->next_report = w->prev + w->interval;
    w->lines = 0;
}

/* Reads the clock; prints the window's line when it is over. Returns now. */
static u64 window_tick(struct clock_window *w, u64 pages) {
    u64 now = rdtsc();
    if (now - w->prev > w->max_gap) w->max_gap = now - w->prev;
    w->prev = now;
    if (now >= w->next_report) {
        put_str("PROBE-CLOCK window=");
        put_dec(++w->lines);
        put_str(" max_gap_cycles=");
        put_dec(w->max_gap);
        put_str(" pages=");
        put_dec(pages);
        put_char('\n');
        now = rdtsc(); /* the serial line is not a gap */
        w->prev = now;
        w->max_gap = 0;
        w->next_report = now + w->interval;
    }
    return now;
}

static u64 region_end(u64 mib, const char *what) {
    if (mib > 4096) probe_error("bad size for", what);
    u64 end = DIRTY_BASE + (mib << 20);
    if (end > (4ull << 30)) probe_error("region beyond the 4 GiB identity map:", what);
    if (mib && !is_ram(DIRTY_BASE, end)) probe_error("region is not RAM:", what);
    return end;
}

/* Fills MIB MiB like pulse (one non-zero word a page), then only watches
 * the clock: a guest that dirties (almost) nothing. */
void workload_idle(u64 mib) {
    u64 end = region_end(mib, "idle");
    for (u64 addr = DIRTY_BASE; addr < end; addr += PAGE_SIZE) *(volatile u64 *)addr = addr | 1;
    put_str("PROBE-IDLE filled=");
    put_dec(mib);
    put_str("M\n");
    struct clock_window w;
    window_start(&w, tsc_hz());
    for (;;) {
        window_tick(&w, 0);
        cpu_relax();
    }
}

/* Writes one byte in every page of [16 MiB, 16 MiB + MIB), pass after pass
 * like dirty, at MIBPS MiB/s of pages (0: as fast as it can) from the second
 * pass on (the first fills the region at full speed). The rate is
 * paced with the TSC: TSC_KHZ if given, else what CPUID says (tsc_hz). After
 * a pause the pace restarts rather than catching up in a burst. */
void workload_dirty_rate(u64 mib, u64 mibps, u64 tsc_khz) {
    if (mib == 0) probe_error("bad size for", "dirty-rate");
    u64 end = region_end(mib, "dirty-rate");
    u64 hz = tsc_khz ? tsc_khz * 1000 : tsc_hz();
    u64 pages_per_s = mibps * 256; /* 4 KiB pages */
    put_str("PROBE-DIRTY-RATE mib=");
    put_dec(mib);
    put_str(" mibps=");
    put_dec(mibps);
    put_str(" tsc_hz=");
    put_dec(hz);
    put_char('\n');
    struct clock_window w;
    window_start(&w, hz);
    u64 t0 = w.prev, written = 0, total = 0; /* pages written since t0, in all */
    for (u64 pass = 1;; pass++) {
        if (pass == 2) { /* the first pass fills the region at full speed */
            t0 = rdtsc();
            written = 0;
        }
        for (u64 addr = DIRTY_BASE; addr < end; addr += PAGE_SIZE) {
            *(volatile u8 *)addr = (u8)pass;
            written++;
            u64 now = window_tick(&w, ++total);
            if (!pages_per_s || pass == 1) continue;
            for (;;) {
                u64 allowed = (now - t0) * pages_per_s / hz;
                if (allowed > written + pages_per_s / 50) { /* > 20 ms behind: a pause */
                    t0 = now;
                    written = 0;
                    break;
                }
                if (allowed >= written) break;
                cpu_relax();
                now = window_tick(&w, total);
            }
        }
    }
}

/* ---- compute N: deterministic integer work over a 1 MiB buffer ---------- */
#define COMPUTE_WORDS (1u << 17) /* 1 MiB of u64 */
#define COMPUTE_STEPS 4096       /* per round: N=1000 is ~4M dependent steps */

/* Not in the zeroed .bss: compute fills all of it first, and clearing 1 MiB
 * at boot costs ~0.2 ms of first-touch faults under KVM-PVM. */
static u64 compute_buf[COMPUTE_WORDS] __attribute__((section(".bss.noinit")));

/* splitmix64's finalizer: cheap, well mixed, integer-only. */
static u64 mix(u64 x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void workload_compute(u64 n) {
    u64 s = 0;
    for (u32 i = 0; i < COMPUTE_WORDS; i++) compute_buf[i] = mix(s += 0x9e3779b97f4a7c15ull);

    /* Each step's address depends on the previous result, so the work is a
     * serial chain of loads and multiplies (no vectorization, same result
     * everywhere). */
    u64 h = n;
    /* The guest's clock across the run: a snapshot/restore or a migration
     * in the middle must never make it go backwards; the largest gap
     * between two rounds is the pause the guest saw. */
    u64 prev = rdtsc(), max_gap = 0, backwards = 0;
    for (u64 r = 0; r < n; r++) {
        for (u32 k = 0; k < COMPUTE_STEPS; k++) {
            u32 idx = (u32)(h ^ (h >> 23)) & (COMPUTE_WORDS - 1);
            u64 v = compute_buf[idx];
            h = (h ^ v ^ r) * 0x9e3779b97f4a7c15ull;
            h ^= h >> 29;
            compute_buf[idx] = v + h;
        }
        u64 now = rdtsc();
        if (now < prev) backwards++;
        else if (now - prev > max_gap) max_gap = now - prev;
        prev = now;
    }

    u64 sum = h;
    for (u32 i = 0; i < COMPUTE_WORDS; i++) sum = mix(sum ^ compute_buf[i]);

    put_str("PROBE-CLOCK backwards=");
    put_dec(backwards);
    put_str(" max_gap_cycles=");
    put_dec(max_gap);
    put_char('\n');
    put_str("PROBE-DONE compute ");
    put_dec(n);
    put_str(" checksum=");
    put_hex16(sum);
    put_char('\n');
}

/* ---- fault: a deliberate ring-3 #PF that ring 0 resumes ----------------- */
void workload_fault(void) {
    g_fault.armed = 1;
    fault_touch((const volatile u8 *)FAULT_ADDR); /* ring 0 skips the load */
    if (!g_fault.hit) probe_error("fault: no page fault at", "0x7f0000000000");
    bool ok = g_fault.cr2 == FAULT_ADDR;

    put_str("PROBE-FAULT vector=14 error=");
    put_hex(g_fault.error);
    put_str(" cr2=");
    put_hex(g_fault.cr2);
    put_str(" rip=");
    put_hex(g_fault.rip);
    put_str("\nPROBE-DONE fault cr2=");
    put_hex(g_fault.cr2);
    put_char('\n');
    if (!ok) probe_exit(1); /* faulted, but not where expected */
}

/* ---- initrd: FNV-1a (64-bit) over the initrd's bytes ------------------- */
/* PVH passes the initrd as module 0; main.c maps the Linux ramdisk_image /
 * ramdisk_size fields onto the same entry. */
void workload_initrd(void) {
    const struct hvm_start_info *si = g_start_info;
    if (si->nr_modules == 0 || !si->modlist_paddr) probe_error("no initrd", NULL);
    const struct hvm_modlist_entry *m = (const struct hvm_modlist_entry *)si->modlist_paddr;
    if (m->paddr > (4ull << 30) || m->size > (4ull << 30) - m->paddr)
        probe_error("initrd beyond the 4 GiB identity map", NULL);

    const u8 *p = (const u8 *)m->paddr;
    u64 h = 0xcbf29ce484222325ull; /* FNV-1a 64 offset basis */
    for (u64 i = 0; i < m->size; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull; /* FNV 64 prime */
    }

    put_str("PROBE-DONE initrd size=");
    put_dec(m->size);
    put_str(" fnv=");
    put_hex16(h);
    put_char('\n');
}
