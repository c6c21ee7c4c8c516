/* Core side of the SDK timers (sdk/include/herald/timer.h). */
#ifndef HERALD_CORE_TIMER_H
#define HERALD_CORE_TIMER_H

#include <stdint.h>

#include "herald/timer.h"

/* Fires ms from now, or later: a timer that will fire sooner stays armed,
 * and when it fires before the deadline it arms itself for the rest instead
 * of calling back. For deadlines that move later on every request (idle and
 * stream timeouts): no timer-heap operation per move. */
void timer_arm_lazy(struct herald_timer *t, uint64_t ms);
/* No callback until armed again; the heap entry stays (a firing finds
 * nothing due). herald_timer_cancel() removes it at once. */
void timer_disarm_lazy(struct herald_timer *t);

#endif
