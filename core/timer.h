/* Core side of the SDK timers (sdk/include/herald/timer.h). */
#ifndef HERALD_CORE_TIMER_H
#define HERALD_CORE_TIMER_H

/* Frees the calling thread's spare timers (a worker's exit hook). */
void timer_thread_exit(void);

#endif
