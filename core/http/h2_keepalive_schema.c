/* connection_keepalive's schema and reading (KeepaliveSettings), apart from
 * the timers in h2_keepalive.c: the config code and its tests need only this. */
#include "config.h"

#include "config/schema.h"
#include "config/schema_tables.h"
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
