/* Circuit breakers (cluster circuit_breakers.thresholds[], per priority):
 * counts of connections, pending requests, active requests and retries in
 * flight, shared by every worker as relaxed atomics, as Envoy's resource
 * manager keeps them. A resource is taken before the thing it guards starts
 * and given back when it ends; the cx_open/rq_pending_open/rq_open/
 * rq_retry_open gauges (0/1) and, with track_remaining, remaining_* follow
 * the counts. */
#ifndef HERALD_CORE_UPSTREAM_CIRCUIT_BREAKER_H
#define HERALD_CORE_UPSTREAM_CIRCUIT_BREAKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/bootstrap.h"

enum cb_priority { CB_DEFAULT = 0, CB_HIGH = 1, CB_NPRIO };
enum cb_resource { CB_CX = 0, CB_PENDING, CB_RQ, CB_RETRY, CB_NRES };

struct herald_stat;

struct cb_level {
    atomic_uint count[CB_NRES];
    uint32_t max[CB_NRES];
    struct herald_stat *open[CB_NRES];       /* cx_open, rq_pending_open, rq_open, rq_retry_open */
    struct herald_stat *remaining[CB_NRES];  /* track_remaining only, else NULL */
    struct herald_stat *cx_pool_open;        /* max_connection_pools is not supported: stays 0 */
};

struct circuit_breakers {
    struct cb_level level[CB_NPRIO];
};

/* Main thread: the breakers and their gauges under cluster.<name>.circuit_breakers.<prio>. */
struct circuit_breakers *cb_new(const struct cluster_cfg *cfg);
void cb_free(struct circuit_breakers *cb);
/* Any thread: takes one of r at priority p; false (nothing taken) when it is at its maximum. */
bool cb_acquire(struct circuit_breakers *cb, int p, enum cb_resource r);
void cb_release(struct circuit_breakers *cb, int p, enum cb_resource r);
/* Takes one of r even past its maximum (the check came earlier, with cb_can_create). */
void cb_take(struct circuit_breakers *cb, int p, enum cb_resource r);
/* Whether one more of r fits now (nothing taken). */
bool cb_can_create(const struct circuit_breakers *cb, int p, enum cb_resource r);

static inline int cb_prio(int p)
{
    return p == CB_HIGH ? CB_HIGH : CB_DEFAULT;
}

#endif
