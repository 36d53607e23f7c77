/* Probe guest: the one ring-0 C function, called by boot.S trap_common for
 * all 32 exception vectors. Every instruction here is emulated under
 * KVM-PVM, so the deliberate-fault path only records and resumes; ring 3
 * does the printing. */
#include "probe.h"

struct fault_record g_fault;

static inline u64 read_cr2(void) {
    u64 v;
    __asm__ volatile("mov %%cr2, %0" : "=r"(v));
    return v;
}

void trap_handler(struct trap_frame *f);

void trap_handler(struct trap_frame *f) {
    u64 cr2 = f->vector == 14 ? read_cr2() : 0;

    /* The `fault` workload's deliberate #PF: record it and resume ring 3 at
     * the continuation right after the faulting load. */
    if (f->vector == 14 && g_fault.armed && f->rip == (u64)fault_touch) {
        g_fault.error = f->error;
        g_fault.cr2 = cr2;
        g_fault.rip = f->rip;
        g_fault.armed = 0;
        g_fault.hit = 1;
        f->rip = (u64)fault_touch_resume;
        return;
    }

    /* Anything else is a bug: report and fail. */
    put_str("\nPROBE-EXCEPTION vector=");
    put_dec(f->vector);
    put_str(" error=");
    put_hex(f->error);
    put_str(" rip=");
    put_hex(f->rip);
    put_str(" cs=");
    put_hex(f->cs);
    put_str(" rsp=");
    put_hex(f->rsp);
    if (f->vector == 14) {
        put_str(" cr2=");
        put_hex(cr2);
    }
    put_char('\n');
    outl(PORT_DEBUG_EXIT, 1);
    halt_forever();
}
