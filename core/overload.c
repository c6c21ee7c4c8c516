/* Downstream connection limits (see overload.h). The counts are atomics
 * shared by the workers: one fetch-add per accept and one fetch-sub per
 * close, which is what Envoy pays for the same limits. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "common.h"
#include "log.h"
#include "overload.h"
#include "runtime.h"

#define DOWNSTREAM_CX_TYPE \
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"

static atomic_uint_least64_t global_open;
static atomic_uint_least64_t monitor_max; /* 0: no resource monitor */

static const char *type_name(const char *url)
{
    const char *slash = url ? strrchr(url, '/') : NULL;
    return slash ? slash + 1 : url;
}

static int check_monitor(const struct herald_cfg *m, struct cfg_diag *d)
{
    int pressure = overload_monitor_add(m, d);
    if (pressure <= 0)
        return pressure;
    const char *name = herald_cfg_str(herald_cfg_get(m, "name"), "");
    const struct herald_cfg *tc = herald_cfg_get(m, "typed_config");
    const char *type = type_name(herald_cfg_str(herald_cfg_get(tc, "@type"), NULL));
    bool known_type = type && strcmp(type, DOWNSTREAM_CX_TYPE) == 0;
    if (strcmp(name, OVERLOAD_MONITOR_DOWNSTREAM_CX) != 0 && !known_type) {
        diag_error(d, m, "resource monitor '%s' is not supported (herald implements %s, "
                   "envoy.resource_monitors.fixed_heap and envoy.resource_monitors.injected_resource)", name,
                   OVERLOAD_MONITOR_DOWNSTREAM_CX);
        return -1;
    }
    if (!tc) {
        diag_error(d, m, "%s needs a typed_config (%s)", OVERLOAD_MONITOR_DOWNSTREAM_CX, DOWNSTREAM_CX_TYPE);
        return -1;
    }
    if (type && strcmp(type, DOWNSTREAM_CX_TYPE) != 0) {
        diag_error(d, tc, "unexpected @type '%s' for %s (expected %s)", type, name, DOWNSTREAM_CX_TYPE);
        return -1;
    }
    const struct herald_cfg *max = NULL;
    for (size_t i = 0; i < herald_cfg_len(tc); i++) {
        const char *k = herald_cfg_key_at(tc, i);
        if (strcmp(k, "@type") == 0)
            continue;
        if (strcmp(k, "max_active_downstream_connections") == 0 ||
            strcmp(k, "maxActiveDownstreamConnections") == 0) {
            max = herald_cfg_at(tc, i);
            continue;
        }
        diag_error(d, herald_cfg_at(tc, i), "unknown field '%s' in DownstreamConnectionsConfig "
                   "(expected max_active_downstream_connections)", k);
        return -1;
    }
    int64_t v = herald_cfg_int(max, 0);
    bool is_num = herald_cfg_type(max) == HERALD_CFG_INT ||
                  (herald_cfg_type(max) == HERALD_CFG_STRING && herald_cfg_int(max, -1) >= 0);
    if (!max || !is_num || v <= 0) {
        diag_error(d, max ? max : tc, "max_active_downstream_connections: must be an integer greater than 0");
        return -1;
    }
    if (atomic_load(&monitor_max)) {
        diag_error(d, m, "resource monitor %s is given twice", OVERLOAD_MONITOR_DOWNSTREAM_CX);
        return -1;
    }
    atomic_store(&monitor_max, (uint64_t)v);
    return 0;
}

int overload_init(const struct herald_cfg *om, struct cfg_diag *d)
{
    atomic_store(&monitor_max, 0);
    const struct herald_cfg *monitors = herald_cfg_get(om, "resource_monitors");
    int rc = 0;
    for (size_t i = 0; i < herald_cfg_len(monitors); i++)
        if (check_monitor(herald_cfg_at(monitors, i), d) < 0)
            rc = -1;
    if (overload_actions_init(om, d) < 0)
        rc = -1;
    if (rc == 0 && atomic_load(&monitor_max))
        log_info("overload", "global downstream connection limit: %llu",
                 (unsigned long long)atomic_load(&monitor_max));
    return rc;
}

void overload_shutdown(void)
{
    atomic_store(&monitor_max, 0);
    overload_actions_shutdown();
}

uint64_t overload_global_limit(void)
{
    uint64_t m = atomic_load_explicit(&monitor_max, memory_order_relaxed);
    /* Envoy: the resource monitor wins over the (deprecated) runtime key. */
    return m ? m : runtime_get_uint(OVERLOAD_RUNTIME_GLOBAL_CX, UINT64_MAX);
}

uint64_t overload_global_active(void)
{
    return atomic_load_explicit(&global_open, memory_order_relaxed);
}

enum overload_cx overload_cx_acquire(const char *listener_name, atomic_uint_least64_t *listener_open,
                                     bool ignore_global)
{
    if (!ignore_global) {
        uint64_t limit = overload_global_limit();
        uint64_t n = atomic_fetch_add_explicit(&global_open, 1, memory_order_relaxed) + 1;
        if (n > limit) {
            atomic_fetch_sub_explicit(&global_open, 1, memory_order_relaxed);
            return OVERLOAD_CX_GLOBAL;
        }
    }
    char key[512];
    int kl = snprintf(key, sizeof(key), "envoy.resource_limits.listener.%s.connection_limit",
                      listener_name ? listener_name : "");
    uint64_t llimit = kl > 0 && (size_t)kl < sizeof(key) ? runtime_get_uint(key, UINT64_MAX) : UINT64_MAX;
    uint64_t n = atomic_fetch_add_explicit(listener_open, 1, memory_order_relaxed) + 1;
    if (n > llimit) {
        atomic_fetch_sub_explicit(listener_open, 1, memory_order_relaxed);
        if (!ignore_global)
            atomic_fetch_sub_explicit(&global_open, 1, memory_order_relaxed);
        return OVERLOAD_CX_LISTENER;
    }
    return OVERLOAD_CX_OK;
}

void overload_cx_release(atomic_uint_least64_t *listener_open, bool ignore_global)
{
    atomic_fetch_sub_explicit(listener_open, 1, memory_order_relaxed);
    if (!ignore_global)
        atomic_fetch_sub_explicit(&global_open, 1, memory_order_relaxed);
}
