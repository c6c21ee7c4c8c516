/* core/timer.c: the timing wheel against a model. Thousands of timers with
 * deadlines from 1 ms to past the wheel's 4.6-hour span, a clock moved in
 * steps of every size, timers cancelled, re-armed and freed between steps
 * and from inside callbacks: each armed timer fires exactly once, at the
 * first run whose clock has reached its deadline, and a cancelled one never.
 * Then the parts that need the real loop: timers armed with 0 (after the
 * stack unwinds, in arming order) and loop_run's clock. */
#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "timer.h"
#include "tap.h"

static struct event_base *test_base;

/* the seam: core/worker.c is not linked here */
struct event_base *current_base(void);
struct event_base *current_base(void) { return test_base; }

#define N 3000

struct rec {
    struct herald_timer *t;
    uint64_t deadline;      /* 0: not armed */
    uint64_t fired_at;
    unsigned fires;
    unsigned early;         /* fired before its deadline */
    unsigned late;          /* a run at or past the deadline went by without it */
};

static struct rec recs[N];
static uint64_t clock_now;
static unsigned rearm_from_cb;

static uint64_t rnd_state = 88172645463325252ull;
static uint64_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

/* delays of every level: level 0 (< 256 ms), level 1 (< 65.5 s), level 2, and beyond the span */
static uint64_t some_delay(void)
{
    switch (rnd() % 4) {
    case 0: return 1 + rnd() % 255;
    case 1: return 256 + rnd() % 65280;
    case 2: return 65536 + rnd() % 16711680;
    default: return 16777216 + rnd() % 10000000;
    }
}

static void arm(struct rec *r, uint64_t delay)
{
    herald_timer_arm(r->t, delay);
    r->deadline = clock_now + delay;
}

static void on_fire(struct herald_timer *t, void *arg)
{
    struct rec *r = arg;
    r->fires++;
    r->fired_at = clock_now;
    if (!r->deadline || clock_now < r->deadline)
        r->early++;
    r->deadline = 0;
    if (rnd() % 8 == 0) {   /* re-armed from its own callback */
        arm(r, some_delay());
        rearm_from_cb++;
    }
    if (rnd() % 16 == 0) {  /* another one cancelled from here */
        struct rec *o = &recs[rnd() % N];
        if (o != r) {
            herald_timer_cancel(o->t);
            o->deadline = 0;
        }
    }
}

static void model(void)
{
    clock_now = 1000000;
    timer_test_set_clock(clock_now);
    for (int i = 0; i < N; i++) {
        recs[i].t = herald_timer_new(on_fire, &recs[i]);
        arm(&recs[i], some_delay());
    }
    unsigned runs = 0, cancels = 0, rearms = 0, fires_before = 0;
    uint64_t end = clock_now + 30000000;   /* past every first deadline and most re-arms */
    while (clock_now < end) {
        /* steps of every size: 1 ms, a few, across a block, across a level-1 slot, hours */
        static const uint64_t steps[] = {1, 3, 17, 255, 256, 257, 1000, 65536, 70000, 1000000};
        clock_now += steps[rnd() % 10] + (rnd() % 4 == 0 ? rnd() % 500 : 0);
        timer_test_set_clock(clock_now);
        unsigned before = 0;
        for (int i = 0; i < N; i++)
            before += recs[i].fires;
        timer_test_run();
        runs++;
        unsigned after = 0;
        for (int i = 0; i < N; i++) {
            after += recs[i].fires;
            if (recs[i].deadline && recs[i].deadline <= clock_now)
                recs[i].late++;
        }
        fires_before += after - before;
        /* between runs: a few cancelled, a few moved */
        for (int k = 0; k < 5; k++) {
            struct rec *r = &recs[rnd() % N];
            if (rnd() % 2) {
                herald_timer_cancel(r->t);
                r->deadline = 0;
                cancels++;
            } else {
                arm(r, some_delay());
                rearms++;
            }
        }
    }
    unsigned early = 0, late = 0, fired = 0, pending = 0;
    for (int i = 0; i < N; i++) {
        early += recs[i].early;
        late += recs[i].late;
        fired += recs[i].fires > 0;
        pending += recs[i].deadline != 0;
    }
    ok(runs > 100, "%u runs of the wheel", runs);
    ok(fired > N / 2 && rearm_from_cb > 10 && cancels > 100 && rearms > 100,
       "%u timers fired, %u re-armed from their callback, %u cancelled and %u moved between runs", fired,
       rearm_from_cb, cancels, rearms);
    is_int(early, 0, "no timer fires before its deadline (or after it was cancelled)");
    is_int(late, 0, "no timer is left behind by a run that reached its deadline");
    (void)pending;
    (void)fires_before;
    for (int i = 0; i < N; i++)
        herald_timer_free(recs[i].t);
    timer_test_set_clock(0);
}

/* ---------------------------------------------------------------- the loop */

static char order[16];
static size_t norder;
static struct herald_timer *zt[3];

static void zero_cb(struct herald_timer *t, void *arg)
{
    char c = *(const char *)arg;
    order[norder++] = c;
    if (c == 'a')
        herald_timer_arm(zt[2], 0);   /* armed from a callback: still this pass */
}

static uint64_t fired_ms;
static void real_cb(struct herald_timer *t, void *arg)
{
    fired_ms = herald_now_ms();
    ok(herald_now_ms() == herald_now_ms(), "within an iteration the clock is read once");
    event_base_loopexit(test_base, NULL);
}

static void freed_cb(struct herald_timer *t, void *arg)
{
    ok(0, "a freed timer never fires");
}

static void self_free_cb(struct herald_timer *t, void *arg)
{
    herald_timer_free(t);
    *(int *)arg = 1;
}

static void loop_parts(void)
{
    zt[0] = herald_timer_new(zero_cb, "a");
    zt[1] = herald_timer_new(zero_cb, "b");
    zt[2] = herald_timer_new(zero_cb, "c");
    herald_timer_arm(zt[1], 500);   /* moved from the wheel to the active queue */
    herald_timer_arm(zt[0], 0);
    herald_timer_arm(zt[1], 0);
    herald_timer_arm(zt[1], 0);     /* twice: once */
    is_int((int)norder, 0, "armed with 0: nothing runs on the arming stack");
    event_base_loop(test_base, EVLOOP_NONBLOCK);
    order[norder] = '\0';
    is_str(order, "abc", "then all run in arming order, one armed from a callback included, each once");
    for (int i = 0; i < 3; i++)
        herald_timer_free(zt[i]);

    struct herald_timer *gone = herald_timer_new(freed_cb, NULL);
    herald_timer_arm(gone, 5);
    herald_timer_free(gone);
    struct herald_timer *gone0 = herald_timer_new(freed_cb, NULL);
    herald_timer_arm(gone0, 0);
    herald_timer_free(gone0);
    int self_freed = 0;
    struct herald_timer *sf = herald_timer_new(self_free_cb, &self_freed);
    herald_timer_arm(sf, 10);

    struct herald_timer *t = herald_timer_new(real_cb, NULL);
    uint64_t start = mono_ms();
    herald_timer_arm(t, 40);
    struct timeval limit = {2, 0};
    event_base_loopexit(test_base, &limit);   /* a bound, should the timer never come */
    loop_run(test_base);
    uint64_t elapsed = mono_ms() - start;
    ok(fired_ms != 0, "a 40 ms timer fired under loop_run");
    ok(elapsed >= 40 && elapsed < 1500, "after 40 ms or more (%llu)", (unsigned long long)elapsed);
    is_int(self_freed, 1, "a timer that frees itself in its callback");
    herald_timer_free(t);
    uint64_t a = herald_now_ms(), b = mono_ms();
    ok(b >= a && b - a < 1000, "outside loop_run the clock is read each time");
    timer_thread_exit();
}

int main(void)
{
    test_base = event_base_new();
    model();
    loop_parts();
    event_base_free(test_base);
    return done_testing();
}
