// Long-double (x87) arithmetic through glibc: built static and run both on
// the host and in a guest on the emulation engine (tools/emu_boot_initramfs.sh);
// the two outputs must be identical.
#include <stdio.h>
#include <math.h>
#include <fenv.h>
#include <stdlib.h>
int main(void) {
    volatile long double a = 1.0L / 3.0L, b = 2.0L;
    long double s = 0;
    for (int i = 1; i < 200; i++) s += sqrtl((long double)i) * a - sinl(i * b) / (i + 0.5L);
    printf("sum %.21Lg\n", s);
    printf("expl %.21Lg logl %.21Lg atan2l %.21Lg powl %.21Lg\n", expl(a * 7), logl(b * 1000), atan2l(a, b), powl(a, b * 3.3L));
    printf("tanl %.21Lg fmodl %.21Lg remainderl %.21Lg\n", tanl(b), fmodl(1e30L, 7.77L), remainderl(1e20L, 3.1L));
    printf("strtold %.21Lg llrintl %lld\n", strtold("3.14159265358979323846264338", NULL), llrintl(a * 1e18L));
    fenv_t env; fegetenv(&env);
    fesetround(FE_UPWARD);
    volatile long double up = a * 3.0L;
    fesetround(FE_TOWARDZERO);
    volatile long double tz = a * 3.0L;
    fesetenv(&env);
    printf("round up %.21Lg tz %.21Lg\n", up, tz);
    double d = 0; for (int i = 0; i < 100; i++) d += cos(i) * exp(-i / 50.0);
    printf("double %.17g\n", d);
    return 0;
}
