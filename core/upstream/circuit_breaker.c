/* Circuit breakers: see circuit_breaker.h. The 0/1 "open" gauges move only
 * when a count crosses the boundary between max-1 and max, and remaining_*
 * only while the count is at or below max, so concurrent workers keep them
 * exact without a lock: each crossing is one atomic step of the count. */
#include <stdlib.h>

#include "common.h"
#include "herald/stats.h"
#include "upstream/circuit_breaker.h"

static const char *const res_open[CB_NRES] = { "cx_open", "rq_pending_open", "rq_open", "rq_retry_open" };
static const char *const res_remaining[CB_NRES] = { "remaining_cx", "remaining_pending", "remaining_rq",
                                                    "remaining_retries" };

struct circuit_breakers *cb_new(const struct cluster_cfg *cfg)
{
    struct circuit_breakers *cb = xcalloc(1, sizeof(*cb));
    for (int p = 0; p < CB_NPRIO; p++) {
        struct cb_level *l = &cb->level[p];
        const struct thresholds_cfg *t = &cfg->thresholds[p];
        l->max[CB_CX] = t->max_connections;
        l->max[CB_PENDING] = t->max_pending_requests;
        l->max[CB_RQ] = t->max_requests;
        l->max[CB_RETRY] = t->max_retries;
        char *prefix = xasprintf("cluster.%s.circuit_breakers.%s", cfg->name, p ? "high" : "default");
        for (int r = 0; r < CB_NRES; r++) {
            atomic_init(&l->count[r], 0);
            l->open[r] = herald_gauge(prefix, res_open[r]);
            if (l->max[r] == 0)
                herald_gauge_add(l->open[r], 1); /* nothing fits: open from the start */
            if (cfg->track_remaining[p]) {
                l->remaining[r] = herald_gauge(prefix, res_remaining[r]);
                herald_gauge_add(l->remaining[r], l->max[r]);
            }
        }
        l->cx_pool_open = herald_gauge(prefix, "cx_pool_open");
        if (cfg->track_remaining[p])
            herald_gauge_add(herald_gauge(prefix, "remaining_cx_pools"), UINT32_MAX);
        free(prefix);
    }
    return cb;
}

void cb_free(struct circuit_breakers *cb)
{
    free(cb);
}

static void on_inc(struct cb_level *l, enum cb_resource r, unsigned now)
{
    if (now == l->max[r])
        herald_gauge_add(l->open[r], 1);
    if (l->remaining[r] && now <= l->max[r])
        herald_gauge_add(l->remaining[r], -1);
}

static void dec(struct cb_level *l, enum cb_resource r)
{
    unsigned was = atomic_fetch_sub_explicit(&l->count[r], 1, memory_order_relaxed);
    if (was == l->max[r])
        herald_gauge_add(l->open[r], -1);
    if (l->remaining[r] && was <= l->max[r])
        herald_gauge_add(l->remaining[r], 1);
}

bool cb_acquire(struct circuit_breakers *cb, int p, enum cb_resource r)
{
    struct cb_level *l = &cb->level[cb_prio(p)];
    if (atomic_load_explicit(&l->count[r], memory_order_relaxed) >= l->max[r])
        return false;
    unsigned now = atomic_fetch_add_explicit(&l->count[r], 1, memory_order_relaxed) + 1;
    on_inc(l, r, now);
    if (now > l->max[r]) {
        /* another worker took the last one between the load and the add */
        dec(l, r);
        return false;
    }
    return true;
}

void cb_take(struct circuit_breakers *cb, int p, enum cb_resource r)
{
    struct cb_level *l = &cb->level[cb_prio(p)];
    on_inc(l, r, atomic_fetch_add_explicit(&l->count[r], 1, memory_order_relaxed) + 1);
}

void cb_release(struct circuit_breakers *cb, int p, enum cb_resource r)
{
    dec(&cb->level[cb_prio(p)], r);
}

bool cb_can_create(const struct circuit_breakers *cb, int p, enum cb_resource r)
{
    const struct cb_level *l = &cb->level[cb_prio(p)];
    return atomic_load_explicit(&l->count[r], memory_order_relaxed) < l->max[r];
}
