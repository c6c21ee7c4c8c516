/* HTTP/2 PING keepalive; see h2_keepalive.h. */
#include "config.h"

#include <stdlib.h>

#include "common.h"
#include "herald/timer.h"
#include "http/h2_keepalive.h"

struct h2_keepalive {
    struct h2_keepalive_cfg cfg;
    const struct h2_frame_counts *counts;
    const struct h2_keepalive_ops *ops;
    void *arg;
    struct herald_timer *timer;
    bool waiting;                    /* a PING is out */
    uint64_t acks_before, frames_before;
};

static uint64_t next_interval(const struct h2_keepalive *k)
{
    uint64_t spread = k->cfg.interval_ms * k->cfg.jitter_permille / 1000;
    return k->cfg.interval_ms + (spread ? (uint64_t)random() % (spread + 1) : 0);
}

static void on_timer(struct herald_timer *t, void *arg)
{
    struct h2_keepalive *k = arg;
    (void)t;
    if (k->waiting) {
        if (k->counts->ping_acks != k->acks_before) {
            k->waiting = false;              /* answered: the next PING after an interval */
            herald_timer_arm(k->timer, next_interval(k));
            return;
        }
        if (k->counts->frames != k->frames_before) {
            k->frames_before = k->counts->frames; /* alive, only behind: wait again */
            herald_timer_arm(k->timer, k->cfg.timeout_ms);
            return;
        }
        k->ops->timed_out(k->arg);
        return;
    }
    k->acks_before = k->counts->ping_acks;
    k->frames_before = k->counts->frames;
    k->waiting = true;
    herald_timer_arm(k->timer, k->cfg.timeout_ms);
    /* last: a sent PING may end the connection (and k) on the way out */
    if (!k->ops->ping(k->arg)) {
        k->waiting = false;
        herald_timer_arm(k->timer, next_interval(k));
    }
}

struct h2_keepalive *h2_keepalive_start(const struct h2_keepalive_cfg *cfg, const struct h2_frame_counts *counts,
                                        const struct h2_keepalive_ops *ops, void *arg)
{
    if (!cfg->interval_ms)
        return NULL;
    struct h2_keepalive *k = xcalloc(1, sizeof(*k));
    k->cfg = *cfg;
    k->counts = counts;
    k->ops = ops;
    k->arg = arg;
    k->timer = herald_timer_new(on_timer, k);
    herald_timer_arm(k->timer, next_interval(k));
    return k;
}

void h2_keepalive_stop(struct h2_keepalive *k)
{
    if (!k)
        return;
    herald_timer_free(k->timer);
    free(k);
}
