/* herald SDK: timers on the calling thread's event loop (a worker for
 * per-connection state, the main thread in config code). */
#ifndef HERALD_TIMER_H
#define HERALD_TIMER_H

#include <stdint.h>

#include "herald/version.h"

#ifdef __cplusplus
extern "C" {
#endif

struct herald_timer;
typedef void (*herald_timer_cb)(struct herald_timer *t, void *arg);

HERALD_EXPORT struct herald_timer *herald_timer_new(herald_timer_cb cb, void *arg);
/* Re-arming moves it; 0: runs once the current callbacks have returned.
 * Arming and cancelling are list operations (a timing wheel of 1 ms slots). */
HERALD_EXPORT void herald_timer_arm(struct herald_timer *t, uint64_t ms);
HERALD_EXPORT void herald_timer_cancel(struct herald_timer *t);
HERALD_EXPORT void herald_timer_free(struct herald_timer *t);
HERALD_EXPORT uint64_t herald_now_ms(void); /* monotonic ms, read once per loop iteration */

#ifdef __cplusplus
}
#endif
#endif
