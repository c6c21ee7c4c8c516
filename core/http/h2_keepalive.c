/* HTTP/2 PING keepalive; see h2_keepalive.h. */
#include "config.h"

#include <stdlib.h>

#include "common.h"
#include "config/schema.h"
#include "config/schema_tables.h"
#include "herald/timer.h"
#include "http/h2_keepalive.h"

static const struct herald_field keepalive_fields[] = {
    F_("interval", DURATION, HERALD_F_REQUIRED, .help = "between PINGs (at least 1ms)"),
    F_("timeout", DURATION, HERALD_F_REQUIRED,
       .help = "how long to wait for the PING's ACK or any other frame before closing (at least 1ms)"),
    MSG("interval_jitter", schema_percent, .help = "up to this percent of interval added to each (default 15)"),
    UNSUP("connection_idle_interval"),
    END,
};

static int keepalive_check(const struct herald_cfg *n, char **err)
{
    static const char *const positive[] = {"interval", "timeout"};
    for (size_t i = 0; i < 2; i++) {
        const struct herald_cfg *v = herald_cfg_get(n, positive[i]);
        if (v && herald_cfg_duration_ms(v, 0) < 1)
            return herald_cfg_errorf(v, err, "%s must be at least 1ms", positive[i]);
    }
    const struct herald_cfg *j = herald_cfg_get(herald_cfg_get(n, "interval_jitter"), "value");
    if (j && (herald_cfg_real(j, 0) < 0 || herald_cfg_real(j, 0) > 100))
        return herald_cfg_errorf(j, err, "interval_jitter must be from 0 to 100 (percent)");
    return 0;
}

const struct herald_message schema_h2_keepalive = {
    "envoy.config.core.v3.KeepaliveSettings", keepalive_fields, keepalive_check,
};

void h2_keepalive_cfg_read(const struct herald_cfg *n, struct h2_keepalive_cfg *out)
{
    out->interval_ms = n ? herald_cfg_duration_ms(herald_cfg_get(n, "interval"), 0) : 0;
    out->timeout_ms = n ? herald_cfg_duration_ms(herald_cfg_get(n, "timeout"), 0) : 0;
    const struct herald_cfg *j = herald_cfg_get(herald_cfg_get(n, "interval_jitter"), "value");
    out->jitter_permille = (uint32_t)(herald_cfg_real(j, 15.0) * 10.0 + 0.5);
}

struct h2_keepalive {
    struct h2_keepalive_cfg cfg;
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
        if (k->ops->acks(k->arg) != k->acks_before) {
            k->waiting = false;              /* answered: the next PING after an interval */
            herald_timer_arm(k->timer, next_interval(k));
            return;
        }
        uint64_t frames = k->ops->frames(k->arg);
        if (frames != k->frames_before) {
            k->frames_before = frames;       /* alive, only behind: wait again */
            herald_timer_arm(k->timer, k->cfg.timeout_ms);
            return;
        }
        k->ops->timed_out(k->arg);
        return;
    }
    k->acks_before = k->ops->acks(k->arg);
    k->frames_before = k->ops->frames(k->arg);
    k->waiting = true;
    herald_timer_arm(k->timer, k->cfg.timeout_ms);
    /* last: a sent PING may end the connection (and k) on the way out */
    if (!k->ops->ping(k->arg)) {
        k->waiting = false;
        herald_timer_arm(k->timer, next_interval(k));
    }
}

struct h2_keepalive *h2_keepalive_start(const struct h2_keepalive_cfg *cfg, const struct h2_keepalive_ops *ops,
                                        void *arg)
{
    if (!cfg->interval_ms)
        return NULL;
    struct h2_keepalive *k = xcalloc(1, sizeof(*k));
    k->cfg = *cfg;
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
