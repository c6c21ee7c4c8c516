/* SDK timers over libevent timers on the calling thread's loop. */
#include "config.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

#include "common.h"
#include "mem_cache.h"
#include "herald/timer.h"
#include "timer.h"
#include "worker.h"

/* One allocation: the libevent event lives right after the struct. */
struct herald_timer {
    struct event *ev;
    herald_timer_cb cb;
    void *arg;
    bool activated;             /* armed with 0: in the active queue, not the heap */
    bool pending;               /* in libevent's heap or active queue: only then has event_del work to do */
    uint64_t due, deadline;     /* timer_arm_lazy: when libevent fires it, when the callback is due (0: none) */
    _Alignas(max_align_t) unsigned char ev_storage[];
};

static void fire(evutil_socket_t fd, short what, void *arg)
{
    struct herald_timer *t = arg;
    t->activated = t->pending = false;
    if (t->due) {   /* armed lazily: the deadline may have moved since */
        t->due = 0;
        if (!t->deadline)
            return;   /* disarmed meanwhile */
        uint64_t now = herald_now_ms();
        if (now < t->deadline) {
            timer_arm_lazy(t, t->deadline - now);
            return;
        }
        t->deadline = 0;
    }
    t->cb(t, t->arg);
}

/* the struct and libevent's event after it */
static size_t timer_size(void) { return sizeof(struct herald_timer) + event_get_struct_event_size(); }

struct herald_timer *herald_timer_new(herald_timer_cb cb, void *arg)
{
    struct event_base *base = current_base();
    if (!base)
        return NULL;
    /* evtimer_assign sets up the event */
    struct herald_timer *t = mem_cache_alloc(timer_size());
    t->cb = cb;
    t->arg = arg;
    t->activated = t->pending = false;
    t->due = t->deadline = 0;
    t->ev = (struct event *)t->ev_storage;
    evtimer_assign(t->ev, base, fire, t);
    return t;
}

void herald_timer_arm(struct herald_timer *t, uint64_t ms)
{
    t->due = t->deadline = 0;
    if (ms == 0) {
        /* "as soon as the stack unwinds" (the connection manager's teardown
         * after a filter's call): the active queue, not the timer heap */
        if (t->activated)
            return;
        if (t->pending)
            event_del(t->ev);   /* re-arming moves it: no second firing */
        t->activated = t->pending = true;
        event_active(t->ev, EV_TIMEOUT, 1);
        return;
    }
    if (t->activated) {
        event_del(t->ev);   /* out of the active queue */
        t->activated = false;
    }
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(t->ev, &tv);
    t->pending = true;
}

void herald_timer_cancel(struct herald_timer *t)
{
    if (t) {
        if (t->pending)
            evtimer_del(t->ev);
        t->activated = t->pending = false;
        t->due = t->deadline = 0;
    }
}

void timer_arm_lazy(struct herald_timer *t, uint64_t ms)
{
    uint64_t deadline = herald_now_ms() + ms;
    if (t->due && t->due <= deadline) {
        t->deadline = deadline;   /* fires earlier, finds this, arms for the rest */
        return;
    }
    herald_timer_arm(t, ms);
    t->due = t->deadline = deadline;
}

void timer_disarm_lazy(struct herald_timer *t) { t->deadline = 0; }

void herald_timer_free(struct herald_timer *t)
{
    if (!t)
        return;
    if (t->pending)
        event_del(t->ev);
    mem_cache_free(t, timer_size());
}

uint64_t herald_now_ms(void)
{
    struct event_base *base = current_base();
    struct timeval tv;
    if (base && event_base_gettimeofday_cached(base, &tv) == 0)
        return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
    return wall_ms();
}
