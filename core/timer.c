/* SDK timers: a hierarchical timing wheel per thread, in milliseconds, over
 * one libevent timer (the wheel's tick) and one libevent event for timers
 * armed with 0.
 *
 * Why not a libevent timer per herald timer: a proxied request arms and
 * cancels two or three timers (stream idle, route timeout) that almost never
 * fire, and each event_add / event_del is a heap operation of a few hundred
 * instructions through libevent's cold code. Here arming is a list insert
 * and cancelling an unlink; libevent is called when the earliest due time
 * moves earlier, which with timeouts of seconds is seldom.
 *
 * Levels (the Linux kernel's old timer wheel, Varghese & Lauck): level 0 has
 * 256 slots of 1 ms, level 1 256 of 256 ms, level 2 256 of 65.5 s. A timer
 * goes to the lowest level whose span holds its deadline; when level 0 wraps
 * (every 256 ms) the level-1 slot of the new block is spread into level 0,
 * and likewise level 2 into level 1. Deadlines beyond 4.6 hours wait in
 * level 2's farthest slot and are placed again when it comes.
 *
 * Time is herald_now_ms(): the thread's monotonic clock, read once per loop
 * iteration (see loop_run). */
#include "config.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common.h"
#include "herald/timer.h"
#include "mem_cache.h"
#include "timer.h"
#include "worker.h"

#define SLOT_BITS 8u
#define SLOTS (1u << SLOT_BITS)
#define LEVELS 3u
#define NEVER UINT64_MAX

enum where { NOWHERE, IN_SLOT, IN_SOON };

struct herald_timer {
    herald_timer_cb cb;
    void *arg;
    struct wheel *w;
    struct herald_timer *next, **pprev;   /* in a slot's list or the soon list */
    uint64_t deadline;
    uint8_t where, level, slot;
};

struct wheel {
    struct event_base *base;
    struct event *tick;                   /* fires when the next slot is due */
    struct event *soon_ev;                /* runs the timers armed with 0 */
    uint64_t now;                         /* every slot up to this ms has run */
    uint64_t tick_due;                    /* what the tick is armed for (NEVER: not armed) */
    struct herald_timer *slot[LEVELS][SLOTS];
    uint64_t used[LEVELS][SLOTS / 64];    /* non-empty slots */
    size_t queued[LEVELS];                /* timers in each level */
    struct herald_timer *soon, **soon_tail;
    size_t ntimers;                       /* allocated on this wheel: it is freed with the last */
    bool running;                         /* in advance(): schedule once at the end */
    bool dead;                            /* its thread's loop is gone */
};

static __thread struct wheel *thread_wheel;
static __thread bool clock_driven;        /* loop_run drives this thread's clock */
static __thread uint64_t cached_ms;       /* this iteration's time, 0: not read yet */

static __thread uint64_t test_clock;      /* unit tests: the clock's value, 0: the real one */

uint64_t herald_now_ms(void)
{
    if (cached_ms)
        return cached_ms;
    if (test_clock)
        return test_clock;
    uint64_t now = mono_ms();
    if (clock_driven)
        cached_ms = now;
    return now;
}

/* Until its loopexit or loopbreak: one iteration per event_base_loop call,
 * so that herald_now_ms() is read afresh after each wait and then costs one
 * load for every stream and timer that asks within the iteration. The
 * thread's mem_cache is trimmed from here too (every thread that runs a
 * loop keeps lists). */
void loop_run(struct event_base *base)
{
    struct event *trim = mem_cache_trim_start(base);
    clock_driven = true;
    for (;;) {
        cached_ms = 0;
        if (event_base_loop(base, EVLOOP_ONCE | EVLOOP_NO_EXIT_ON_EMPTY) < 0)
            break;
        if (event_base_got_exit(base) || event_base_got_break(base))
            break;
    }
    clock_driven = false;
    cached_ms = 0;
    mem_cache_trim_stop(trim);
}

/* ---------------------------------------------------------------- lists */

static void set_used(struct wheel *w, unsigned level, unsigned slot, bool on)
{
    uint64_t bit = (uint64_t)1 << (slot & 63u);
    if (on)
        w->used[level][slot >> 6] |= bit;
    else
        w->used[level][slot >> 6] &= ~bit;
}

static void unlink_timer(struct herald_timer *t)
{
    struct wheel *w = t->w;
    if (t->where == NOWHERE)
        return;
    *t->pprev = t->next;
    if (t->next)
        t->next->pprev = t->pprev;
    if (t->where == IN_SLOT) {
        w->queued[t->level]--;
        if (!w->slot[t->level][t->slot])
            set_used(w, t->level, t->slot, false);
    } else if (w->soon_tail == &t->next) {
        w->soon_tail = t->pprev;
    }
    t->where = NOWHERE;
    t->next = NULL;
    t->pprev = NULL;
}

/* Into the lowest level whose span holds the deadline, counted from the
 * wheel's time (not the clock's: the wheel may lag until its next tick).
 * Level 0 holds the next 256 ms (now + 256 in the slot just run: its turn
 * comes last); level 1 the next 256 blocks of 256 ms, each spread into
 * level 0 when its block starts; level 2 the next 256 units of 65.5 s. */
static void place(struct wheel *w, struct herald_timer *t)
{
    uint64_t now = w->now, d = t->deadline > now ? t->deadline : now + 1;
    unsigned level;
    if (d - now <= SLOTS)
        level = 0;
    else if ((d >> SLOT_BITS) - (now >> SLOT_BITS) <= SLOTS)
        level = 1;
    else
        level = 2;
    /* beyond the span: the farthest slot, and placed again from there */
    if (level == 2 && (d >> (2 * SLOT_BITS)) - (now >> (2 * SLOT_BITS)) > SLOTS)
        d = now + ((uint64_t)SLOTS << (2 * SLOT_BITS));
    unsigned slot = (unsigned)(d >> (level * SLOT_BITS)) & (SLOTS - 1);
    struct herald_timer **head = &w->slot[level][slot];
    t->next = *head;
    if (t->next)
        t->next->pprev = &t->next;
    t->pprev = head;
    *head = t;
    t->where = IN_SLOT;
    t->level = (uint8_t)level;
    t->slot = (uint8_t)slot;
    w->queued[level]++;
    set_used(w, level, slot, true);
}

/* ---------------------------------------------------------------- time */

/* When the first non-empty slot of a level after the wheel's time has its
 * turn: a level-0 slot's own ms, a higher level's slot the start of its
 * block, when it spreads into the level below. */
static uint64_t next_in_level(const struct wheel *w, unsigned level)
{
    if (!w->queued[level])
        return NEVER;
    unsigned shift = level * SLOT_BITS;
    uint64_t cur = w->now >> shift;   /* the unit of this level the wheel is in */
    unsigned from = (unsigned)(cur + 1) & (SLOTS - 1);
    for (unsigned k = 0; k <= SLOTS / 64; k++) {
        unsigned word = ((from >> 6) + k) & (SLOTS / 64 - 1);
        uint64_t bits = w->used[level][word];
        if (k == 0)
            bits &= ~(uint64_t)0 << (from & 63u);
        else if (k == SLOTS / 64)
            bits &= ((uint64_t)1 << (from & 63u)) - 1;   /* the wrap: the first word's lower part */
        if (bits) {
            unsigned slot = word * 64u + (unsigned)__builtin_ctzll(bits);
            uint64_t dist = (slot - (unsigned)cur) & (SLOTS - 1);
            return (cur + (dist ? dist : SLOTS)) << shift;
        }
    }
    return NEVER;
}

/* The tick sleeps until then: no wake-ups while only far timers wait. */
static uint64_t next_due(const struct wheel *w)
{
    uint64_t due = NEVER;
    for (unsigned level = 0; level < LEVELS; level++) {
        uint64_t t = next_in_level(w, level);
        if (t < due)
            due = t;
    }
    return due;
}

static void schedule(struct wheel *w)
{
    if (w->running || w->dead)
        return;
    uint64_t due = next_due(w);
    if (due == NEVER || due >= w->tick_due)
        return;   /* nothing, or the tick comes sooner and schedules again */
    uint64_t now = herald_now_ms();
    uint64_t ms = due > now ? due - now : 0;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(w->tick, &tv);
    w->tick_due = due;
}

/* A slot of a higher level whose time has come: each timer placed again
 * from the wheel's time (the list is taken whole first, so nothing placed
 * back into it is seen twice). */
static void cascade(struct wheel *w, unsigned level, unsigned slot)
{
    struct herald_timer *t = w->slot[level][slot], *next;
    w->slot[level][slot] = NULL;
    set_used(w, level, slot, false);
    for (; t; t = next) {
        next = t->next;
        w->queued[level]--;
        t->where = NOWHERE;
        place(w, t);
    }
}

static bool wheel_empty(const struct wheel *w) { return !w->queued[0] && !w->queued[1] && !w->queued[2]; }

/* Runs every slot up to target, in order, stepping over the empty ones. */
static void advance(struct wheel *w, uint64_t target)
{
    w->running = true;
    while (w->now < target) {
        if (wheel_empty(w)) {
            w->now = target;
            break;
        }
        uint64_t next = w->now + 1;
        if ((next & (SLOTS - 1)) == 0) {
            /* a new block: its level-1 slot (and at a level-1 wrap, level
             * 2's first) spreads into the levels below */
            if (((next >> SLOT_BITS) & (SLOTS - 1)) == 0 && w->queued[2])
                cascade(w, 2, (unsigned)(next >> (2 * SLOT_BITS)) & (SLOTS - 1));
            if (w->queued[1])
                cascade(w, 1, (unsigned)(next >> SLOT_BITS) & (SLOTS - 1));
        } else {
            /* nothing in level 0 before its due slot (or the block's end): jump there */
            uint64_t due0 = next_in_level(w, 0), block_end = next | (SLOTS - 1);
            uint64_t stop = due0 <= block_end ? due0 - 1 : block_end;
            if (stop >= next) {
                w->now = stop < target ? stop : target;
                continue;
            }
        }
        w->now = next;
        struct herald_timer *t, **head = &w->slot[0][next & (SLOTS - 1)];
        while ((t = *head)) {
            unlink_timer(t);
            t->cb(t, t->arg);   /* may free t, arm or free others */
        }
    }
    w->running = false;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct wheel *w = arg;
    w->tick_due = NEVER;
    advance(w, herald_now_ms());
    schedule(w);
}

static void on_soon(evutil_socket_t fd, short what, void *arg)
{
    struct wheel *w = arg;
    struct herald_timer *t;
    while ((t = w->soon)) {   /* armed with 0 from a callback here: runs in this pass too */
        unlink_timer(t);
        t->cb(t, t->arg);
    }
}

/* ---------------------------------------------------------------- wheels */

static struct wheel *wheel_for_thread(void)
{
    struct event_base *base = current_base();
    if (!base)
        return NULL;
    if (thread_wheel && thread_wheel->base == base)
        return thread_wheel;
    struct wheel *w = xcalloc(1, sizeof(*w));
    w->base = base;
    w->tick = evtimer_new(base, on_tick, w);
    w->soon_ev = event_new(base, -1, 0, on_soon, w);
    w->soon_tail = &w->soon;
    w->tick_due = NEVER;
    w->now = herald_now_ms();
    thread_wheel = w;
    return w;
}

void timer_thread_exit(void)
{
    struct wheel *w = thread_wheel;
    if (!w)
        return;
    thread_wheel = NULL;
    event_free(w->tick);
    event_free(w->soon_ev);
    w->tick = w->soon_ev = NULL;
    w->dead = true;
    if (!w->ntimers)
        free(w);
}

/* ---------------------------------------------------------------- the SDK */

struct herald_timer *herald_timer_new(herald_timer_cb cb, void *arg)
{
    struct wheel *w = wheel_for_thread();
    if (!w)
        return NULL;
    struct herald_timer *t = mem_cache_alloc_zeroed(sizeof(*t));
    t->cb = cb;
    t->arg = arg;
    t->w = w;
    w->ntimers++;
    return t;
}

void herald_timer_arm(struct herald_timer *t, uint64_t ms)
{
    struct wheel *w = t->w;
    if (w->dead)
        return;
    if (ms == 0) {
        /* "as soon as the stack unwinds" (the connection manager's teardown
         * after a filter's call): the active queue, not the wheel */
        if (t->where == IN_SOON)
            return;
        unlink_timer(t);
        t->next = NULL;
        t->pprev = w->soon_tail;
        *w->soon_tail = t;
        w->soon_tail = &t->next;
        t->where = IN_SOON;
        event_active(w->soon_ev, EV_TIMEOUT, 0);
        return;
    }
    uint64_t now = herald_now_ms();
    if (t->where == IN_SLOT && t->deadline == now + ms)
        return;   /* idle timeouts re-armed on every read within one iteration */
    unlink_timer(t);
    if (wheel_empty(w) && !w->running)
        w->now = now;   /* an empty wheel has nothing to catch up on */
    t->deadline = now + ms;
    place(w, t);
    schedule(w);
}

void herald_timer_cancel(struct herald_timer *t)
{
    if (t)
        unlink_timer(t);
}

void herald_timer_free(struct herald_timer *t)
{
    if (!t)
        return;
    struct wheel *w = t->w;
    unlink_timer(t);
    mem_cache_free(t, sizeof(*t));
    if (--w->ntimers == 0 && w->dead)
        free(w);
}

void timer_test_set_clock(uint64_t ms) { test_clock = ms; }

void timer_test_run(void)
{
    struct wheel *w = thread_wheel;
    if (w) {
        advance(w, herald_now_ms());
        schedule(w);
    }
}
