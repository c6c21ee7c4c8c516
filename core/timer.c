/* SDK timers over libevent timers on the calling thread's loop. */
#include "config.h"

#include <event2/event.h>
#include <stddef.h>

#include "common.h"
#include "herald/timer.h"
#include "worker.h"

/* One allocation: the libevent event lives right after the struct. */
struct herald_timer {
    struct event *ev;
    herald_timer_cb cb;
    void *arg;
    _Alignas(max_align_t) unsigned char ev_storage[];
};

static void fire(evutil_socket_t fd, short what, void *arg)
{
    struct herald_timer *t = arg;
    t->cb(t, t->arg);
}

struct herald_timer *herald_timer_new(herald_timer_cb cb, void *arg)
{
    struct event_base *base = current_base();
    if (!base)
        return NULL;
    struct herald_timer *t = xcalloc(1, sizeof(*t) + event_get_struct_event_size());
    t->cb = cb;
    t->arg = arg;
    t->ev = (struct event *)t->ev_storage;
    evtimer_assign(t->ev, base, fire, t);
    return t;
}

void herald_timer_arm(struct herald_timer *t, uint64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(t->ev, &tv);
}

void herald_timer_cancel(struct herald_timer *t)
{
    if (t)
        evtimer_del(t->ev);
}

void herald_timer_free(struct herald_timer *t)
{
    if (!t)
        return;
    event_del(t->ev);
    free(t);
}

uint64_t herald_now_ms(void)
{
    struct event_base *base = current_base();
    struct timeval tv;
    if (base && event_base_gettimeofday_cached(base, &tv) == 0)
        return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
    return wall_ms();
}
