/* Core side of the SDK timers (sdk/include/herald/timer.h). */
#ifndef HERALD_CORE_TIMER_H
#define HERALD_CORE_TIMER_H

#include <stdint.h>

#include "herald/timer.h"

struct event_base;

/* Runs base's loop on the calling thread until event_base_loopexit or
 * loopbreak, reading the thread's clock (herald_now_ms) once per iteration
 * and trimming its mem_cache lists every MEM_CACHE_TRIM_SECONDS. */
void loop_run(struct event_base *base);
/* The calling thread's loop is about to go: its timer wheel lets go of the
 * loop's events (timers still allocated stay valid and inert until freed). */
void timer_thread_exit(void);

/* Unit tests: herald_now_ms() returns ms from now on (0: the real clock
 * again); timer_test_run() runs what is due by it, as the tick would. */
void timer_test_set_clock(uint64_t ms);
void timer_test_run(void);

#endif
