/* Probe guest: workloads that exercise the platform around the CPU: a full
 * trip to the VMM's device model, ACPI power-off, the ACPI power button,
 * i8042 reset, and a crash the VMM must report. All ring 3. */
#include "probe.h"

#define PORT_COM1_SCRATCH (PORT_COM1 + 7)
#define PORT_I8042_CMD 0x64
#define I8042_PULSE_RESET 0xfe
#define FADT_SLEEP_CONTROL 244 /* Generic Address Structure in the FADT */
#define GAS_SYSTEM_IO 1
#define SLP_TYP_S5 5           /* popek's and QEMU's \_S5 value */
#define SLP_EN 0x20

/* pio-read N: N reads of the UART scratch register. Unlike writes to the
 * POST port, a read needs its answer, so each one is a full round trip
 * through the VMM's device model in user space. */
void workload_pio_read(u64 n) {
    u8 acc = 0;
    for (u64 i = 0; i < n; i++) acc = (u8)(acc ^ inb(PORT_COM1_SCRATCH));
    put_str("PROBE-DONE pio-read ");
    put_dec(n);
    put_str(acc == 0 || acc == 0xff ? "\n" : "\n"); /* acc only keeps the reads alive */
}

/* poweroff: SLP_TYP=S5 | SLP_EN to the FADT's sleep control register, the
 * hardware-reduced ACPI power-off a Linux guest performs. */
void workload_poweroff(void) {
    const u8 *fadt = (const u8 *)acpi_find("FACP");
    if (((const struct acpi_header *)fadt)->length < FADT_SLEEP_CONTROL + 12)
        probe_error("FADT too short for SLEEP_CONTROL_REG", NULL);
    const u8 *gas = fadt + FADT_SLEEP_CONTROL;
    u64 port = *(const u64 *)(gas + 4);
    if (gas[0] != GAS_SYSTEM_IO || port == 0 || port > 0xffff)
        probe_error("no I/O-port SLEEP_CONTROL_REG in the FADT", NULL);
    put_str("PROBE-POWEROFF port=");
    put_hex(port);
    put_char('\n');
    outb((u16)port, SLP_TYP_S5 << 2 | SLP_EN);
    probe_error("still running after ACPI power-off", NULL);
}

/* wait-power-button: poll the GED's event register until the VMM presses
 * the power button, then power off the way an OS would. Ring 3 reads the
 * register through the identity map (one MMIO exit per read); about a
 * millisecond apart, so waiting costs little. The read clears the event. */
void workload_wait_power_button(void) {
    const u64 gap = tsc_hz() / 1000;
    put_str("PROBE-WAIT power-button\n");
    for (;;) {
        u32 events = *(volatile const u32 *)GED_BASE;
        if (events == 0xffffffff) probe_error("no GED event register at", "0xfea00000"); /* undecoded: floats high */
        if (events & GED_EVENT_POWER_BUTTON) break;
        u64 start = rdtsc();
        while (rdtsc() - start < gap) cpu_relax();
    }
    put_str("PROBE-DONE power-button\n");
    workload_poweroff();
}

/* reset: the i8042 "pulse reset line" command. */
void workload_reset(void) {
    put_str("PROBE-RESET\n");
    outb(PORT_I8042_CMD, I8042_PULSE_RESET);
    probe_error("still running after i8042 reset", NULL);
}

/* crash: point every TSS's ring-0 stack at unmapped memory, then raise #UD.
 * Delivering #UD faults on the stack, so does the #DF after it: a triple
 * fault, which the VMM must report as a crash. */
extern char tss_area[];
void workload_crash(void) {
    put_str("PROBE-CRASH\n");
    for (u32 cpu = 0; cpu < MAX_CPUS; cpu++)
        *(volatile u64 *)(tss_area + cpu * TSS_STRIDE + 4) = FAULT_ADDR; /* rsp0 */
    __asm__ volatile("ud2");
    probe_error("survived a triple fault", NULL);
}
