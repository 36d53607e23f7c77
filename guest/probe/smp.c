/* Probe guest: the smp workload. The BSP counts CPUs in the ACPI MADT,
 * starts every AP with INIT-SIPI-SIPI through the xAPIC (LAPIC accesses go
 * through the int3 gate: ring 0 only for the MMIO loads and stores) and
 * waits for all of them to check in from ring 3. */
#include "probe.h"

#define LAPIC_ID 0x20
#define LAPIC_SVR 0xf0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define ICR_INIT 0x00004500 /* delivery mode INIT, level assert */
#define ICR_SIPI 0x00004600 /* delivery mode start-up; | vector */

static volatile u32 checked_in;

/* Enabled processors from MADT local APIC (type 0) and x2APIC (type 9)
 * entries; returns the total, fills at most `max` APIC IDs. */
static u32 madt_cpus(const struct acpi_header *madt, u32 *ids, u32 max) {
    const u8 *p = (const u8 *)madt + sizeof(*madt) + 8; /* + LAPIC addr, flags */
    const u8 *end = (const u8 *)madt + madt->length;
    u32 n = 0;
    while (p + 2 <= end && p[1] >= 2) {
        u32 id = ~0u, flags = 0;
        if (p[0] == 0 && p[1] >= 8) {
            id = p[3];
            flags = *(const u32 *)(p + 4);
        } else if (p[0] == 9 && p[1] >= 16) {
            id = *(const u32 *)(p + 4);
            flags = *(const u32 *)(p + 8);
        }
        if (id != ~0u && (flags & 1)) {
            if (n < max) ids[n] = id;
            n++;
        }
        p += p[1];
    }
    return n;
}

static void delay_tsc(u64 ticks) {
    u64 start = rdtsc();
    while (rdtsc() - start < ticks) cpu_relax();
}

/* From the LAPIC ID register, not CPUID: under KVM-PVM on AMD, CPUID from
 * the guest is not intercepted by PVM (no CPUID faulting), so it reports the
 * host CPU the vCPU thread happens to run on. */
static u32 my_apic_id(void) { return mmio_read32(LAPIC_BASE + LAPIC_ID) >> 24; }

static void check_in(void) {
    u32 id = my_apic_id();
    lock_output();
    put_str("PROBE-CPU ");
    put_dec(id);
    put_char('\n');
    unlock_output();
    __atomic_fetch_add(&checked_in, 1, __ATOMIC_SEQ_CST);
}

static void send_ipi(u32 apic_id, u32 icr_lo) {
    mmio_write32(LAPIC_BASE + LAPIC_ICR_HI, apic_id << 24);
    mmio_write32(LAPIC_BASE + LAPIC_ICR_LO, icr_lo);
}

void ap_main(u32 cpu) {
    (void)cpu;
    check_in();
    sys_halt();
}

void workload_smp(void) {
    u32 ids[MAX_CPUS];
    u32 total = madt_cpus(acpi_find("APIC"), ids, MAX_CPUS);
    if (total == 0) probe_error("smp: MADT lists no enabled CPU", NULL);
    u32 expected = total < MAX_CPUS ? total : MAX_CPUS;
    u64 hz = tsc_hz();
    u32 self = my_apic_id();

    check_in(); /* the BSP counts too */

    if (expected > 1) {
        /* Software-enable the local APIC (SVR bit 8, spurious vector 0xff)
         * before using the ICR, as the SDM asks. */
        mmio_write32(LAPIC_BASE + LAPIC_SVR, mmio_read32(LAPIC_BASE + LAPIC_SVR) | 0x1ff);
        memcpy((void *)TRAMPOLINE_ADDR, trampoline_start, (size_t)(trampoline_end - trampoline_start));

        /* INIT all, wait 10 ms, then two SIPIs 200 us apart (the MP spec
         * sequence; a SIPI to a CPU that already started is ignored). */
        for (u32 i = 0; i < expected; i++)
            if (ids[i] != self) send_ipi(ids[i], ICR_INIT);
        delay_tsc(hz / 100);
        for (int round = 0; round < 2; round++) {
            for (u32 i = 0; i < expected; i++)
                if (ids[i] != self) send_ipi(ids[i], ICR_SIPI | (TRAMPOLINE_ADDR >> 12));
            delay_tsc(hz / 5000);
        }
    }

    u64 start = rdtsc();
    while (checked_in < expected && rdtsc() - start < 2 * hz) cpu_relax();

    u32 got = checked_in;
    lock_output();
    put_str("PROBE-DONE smp cpus=");
    put_dec(got);
    if (got != expected || total > MAX_CPUS) {
        put_str(" expected=");
        put_dec(total);
        put_char('\n');
        probe_exit(1);
    }
    put_char('\n');
    unlock_output();
}
