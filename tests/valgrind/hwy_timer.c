/* hwy_timer.c: preloaded into the processes valgrind runs (tests/valgrind/meson.build).
 *
 * libavcodec loads libjxl, which loads libhwy, whose initialiser calibrates its timer with
 * RDTSCP when CPUID says the CPU has it. valgrind 3.19 presents a CPU model that says so even on
 * hosts whose hypervisor hides the instruction's flag (some AMD cloud machines), and then cannot
 * decode it: every process that links libavcodec dies of SIGILL before main. This definition
 * takes the place of libhwy's (its initialiser calls it through the PLT), so nothing executes
 * RDTSCP; the resolution is only used by libhwy's own benchmarking helpers. */
#include <stdint.h>

uint64_t hwy_timer_resolution(void) __asm__("_ZN3hwy8platform15TimerResolutionEv");

uint64_t hwy_timer_resolution(void)
{
  return 1;
}
