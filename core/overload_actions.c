/* The overload manager's pressure side (see overload.h): resource monitors
 * read every refresh_interval on the main thread, and the actions whose
 * trigger a monitor's pressure reaches. The workers only read one atomic
 * per action (per new stream, keep-alive decision or accepted socket).
 *
 * Monitors: envoy.resource_monitors.fixed_heap (the bytes malloc has handed
 * out, mallinfo2(), over max_heap_size_bytes) and
 * envoy.resource_monitors.injected_resource (a number read from a file,
 * Envoy's way to drive the overload manager in tests and drills).
 *
 * Each action has a scale from 0 to 1, the highest of its triggers': a
 * threshold trigger gives 1 from its value on, a scaled one rises linearly
 * from scaling_threshold to 1 at saturation_threshold. The on/off actions
 * are on when saturated (Envoy's isSaturated()); reduce_timeouts uses the
 * scale itself to shorten the timers its typed_config names. */
#include "config.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#if defined(__SANITIZE_ADDRESS__)
/* the sanitizer runtime's public interface (sanitizer/allocator_interface.h,
 * which Debian ships with clang only) */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

#include "common.h"
#include "config/schema.h"
#include "herald/stats.h"
#include "log.h"
#include "overload.h"

#define FIXED_HEAP "envoy.resource_monitors.fixed_heap"
#define FIXED_HEAP_TYPE "envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig"
#define INJECTED "envoy.resource_monitors.injected_resource"
#define INJECTED_TYPE "envoy.extensions.resource_monitors.injected_resource.v3.InjectedResourceConfig"
/* the v2alpha names, still in configs Envoy ships (configs/google-vrp) */
#define FIXED_HEAP_TYPE_V2 "envoy.config.resource_monitor.fixed_heap.v2alpha.FixedHeapConfig"
#define INJECTED_TYPE_V2 "envoy.config.resource_monitor.injected_resource.v2alpha.InjectedResourceConfig"

enum monitor_kind { MON_FIXED_HEAP, MON_INJECTED };

struct monitor {
    char *name;
    enum monitor_kind kind;
    uint64_t max_heap;                     /* FIXED_HEAP */
    char *file;                            /* INJECTED */
    double pressure;                       /* the last reading; < 0: none yet */
    struct herald_stat *st_pressure, *st_failed;
};

struct trigger {
    struct monitor *m;
    bool scaled;
    double threshold;                      /* threshold: value; scaled: scaling_threshold */
    double saturation;                     /* scaled: saturation_threshold */
};

struct action {
    enum overload_action id;
    const char *name;
    struct trigger *t; size_t nt;
    struct herald_stat *st_active, *st_scale;
};

static const char *const action_names[OVERLOAD_NACTIONS] = {
    [OVERLOAD_STOP_ACCEPTING_REQUESTS] = "envoy.overload_actions.stop_accepting_requests",
    [OVERLOAD_DISABLE_HTTP_KEEPALIVE] = "envoy.overload_actions.disable_http_keepalive",
    [OVERLOAD_REJECT_INCOMING_CONNECTIONS] = "envoy.overload_actions.reject_incoming_connections",
    [OVERLOAD_SHRINK_HEAP] = "envoy.overload_actions.shrink_heap",
    [OVERLOAD_REDUCE_TIMEOUTS] = "envoy.overload_actions.reduce_timeouts",
};


/* reduce_timeouts' timer_scale_factors; read by the workers, written once
 * at start-up. */
static struct scaled_timer {
    bool set;
    bool by_scale;                         /* min_scale, else min_timeout */
    uint64_t min_ms;
    double min_scale;                      /* 0 to 1 */
} scaled_timers[OVERLOAD_NTIMERS];
/* reduce_timeouts' scale now, in millionths */
static _Atomic uint32_t timer_scale_ppm;

uint64_t overload_scaled_ms(enum overload_timer t, uint64_t ms)
{
    const struct scaled_timer *st = &scaled_timers[t];
    uint32_t ppm = atomic_load_explicit(&timer_scale_ppm, memory_order_relaxed);
    if (!ppm || !st->set || !ms)
        return ms;
    uint64_t min = st->by_scale ? (uint64_t)((double)ms * st->min_scale) : st->min_ms;
    if (min >= ms)
        return ms;
    /* Envoy's ScaledRangeTimer: from the full length down to the minimum */
    return min + (uint64_t)((double)(ms - min) * (1.0 - (double)ppm / 1e6));
}

static struct {
    struct monitor *m; size_t nm;
    struct action *a; size_t na;
    uint64_t refresh_ms;
    struct event *timer;
} om;

atomic_bool overload_active[OVERLOAD_NACTIONS];

static const char *type_name(const char *url)
{
    const char *slash = url ? strrchr(url, '/') : NULL;
    return slash ? slash + 1 : url;
}

/* ------------------------------------------------------------ reading the monitors */

/* The bytes malloc has handed out: glibc's own count, or under
 * AddressSanitizer (whose allocator replaces glibc's, and whose mallinfo2
 * says 0) the sanitizer's. */
static uint64_t heap_in_use(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return __sanitizer_get_current_allocated_bytes();
#else
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
#endif
}

static int read_pressure(struct monitor *m, double *out)
{
    if (m->kind == MON_FIXED_HEAP) {
        *out = (double)heap_in_use() / (double)m->max_heap;
        return 0;
    }
    FILE *f = fopen(m->file, "r");
    if (!f)
        return -1;
    int n = fscanf(f, "%lf", out);
    fclose(f);
    return n == 1 && *out >= 0 ? 0 : -1;
}

static double trigger_value(const struct trigger *t)
{
    double p = t->m->pressure;
    if (!t->scaled)
        return p >= t->threshold ? 1.0 : 0.0;
    if (p < t->threshold)
        return 0.0;
    if (p >= t->saturation)
        return 1.0;
    return (p - t->threshold) / (t->saturation - t->threshold);
}

static void (*rescale_hook)(void);

void overload_on_rescale(void (*fn)(void))
{
    rescale_hook = fn;
}

/* The workers re-arm their scaled timers for their new length (the server's hook). */
static void rescale_timers(uint32_t ppm)
{
    uint32_t was = atomic_exchange(&timer_scale_ppm, ppm);
    if (was != ppm && rescale_hook)
        rescale_hook();
}

static void refresh(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    for (size_t i = 0; i < om.nm; i++) {
        struct monitor *m = &om.m[i];
        double p;
        if (read_pressure(m, &p) < 0) {
            herald_stat_inc(m->st_failed);       /* keeps the last reading, as Envoy */
            continue;
        }
        m->pressure = p;
        int64_t pct = (int64_t)(p * 100.0 + 0.5);
        herald_gauge_add(m->st_pressure, pct - (int64_t)herald_stat_value(m->st_pressure));
    }
    for (size_t i = 0; i < om.na; i++) {
        struct action *a = &om.a[i];
        double v = 0;
        for (size_t k = 0; k < a->nt; k++) {
            double tv = trigger_value(&a->t[k]);
            if (tv > v)
                v = tv;
        }
        bool on = v >= 1.0;
        bool was = atomic_exchange(&overload_active[a->id], on);
        int64_t pct = (int64_t)(v * 100.0 + 0.5);
        herald_gauge_add(a->st_scale, pct - (int64_t)herald_stat_value(a->st_scale));
        if (on != was) {
            herald_gauge_add(a->st_active, on ? 1 : -1);
            log_warn("overload", "%s %s", a->name, on ? "active" : "no longer active");
        }
        if (a->id == OVERLOAD_REDUCE_TIMEOUTS)
            rescale_timers((uint32_t)(v * 1e6 + 0.5));
        /* shrink_heap: give what malloc holds free back to the system */
        if (on && a->id == OVERLOAD_SHRINK_HEAP)
            malloc_trim(0);
    }
}

/* ------------------------------------------------------------ config */

/* Envoy's names: overload.<monitor>.pressure, overload.<action>.active, ... */
static struct herald_stat *stat_of(bool gauge, const char *name, const char *suffix)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s.%s", name, suffix);
    return gauge ? herald_gauge("overload", buf) : herald_counter("overload", buf);
}

static struct monitor *find_monitor(const char *name)
{
    for (size_t i = 0; i < om.nm; i++)
        if (!strcmp(om.m[i].name, name))
            return &om.m[i];
    return NULL;
}

/* One resource_monitors entry of the pressure kind; 1: not one of those. */
int overload_monitor_add(const struct herald_cfg *m, struct cfg_diag *d)
{
    const char *name = herald_cfg_str(herald_cfg_get(m, "name"), "");
    const struct herald_cfg *tc = herald_cfg_get(m, "typed_config");
    const char *type = type_name(herald_cfg_str(herald_cfg_get(tc, "@type"), NULL));
    enum monitor_kind kind;
    const char *want_type;
    const char *old_type;
    if (!strcmp(name, FIXED_HEAP) || (type && (!strcmp(type, FIXED_HEAP_TYPE) || !strcmp(type, FIXED_HEAP_TYPE_V2)))) {
        kind = MON_FIXED_HEAP;
        want_type = FIXED_HEAP_TYPE;
        old_type = FIXED_HEAP_TYPE_V2;
    } else if (!strcmp(name, INJECTED) || (type && (!strcmp(type, INJECTED_TYPE) || !strcmp(type, INJECTED_TYPE_V2)))) {
        kind = MON_INJECTED;
        want_type = INJECTED_TYPE;
        old_type = INJECTED_TYPE_V2;
    } else {
        return 1;
    }
    if (type && strcmp(type, want_type) != 0 && strcmp(type, old_type) != 0) {
        diag_error(d, tc, "unexpected @type '%s' for %s (expected %s)", type, name, want_type);
        return -1;
    }
    if (find_monitor(name)) {
        diag_error(d, m, "resource monitor '%s' is given twice", name);
        return -1;
    }
    const char *field = kind == MON_FIXED_HEAP ? "max_heap_size_bytes" : "filename";
    const struct herald_cfg *v = NULL;
    for (size_t i = 0; i < herald_cfg_len(tc); i++) {
        const char *k = herald_cfg_key_at(tc, i);
        if (!strcmp(k, "@type"))
            continue;
        if (strcmp(k, field) != 0) {
            diag_error(d, herald_cfg_at(tc, i), "unknown field '%s' in %s (expected %s)", k, want_type, field);
            return -1;
        }
        v = herald_cfg_at(tc, i);
    }
    struct monitor mon = {.name = xstrdup(name), .kind = kind, .pressure = -1};
    if (kind == MON_FIXED_HEAP) {
        int64_t max = herald_cfg_int(v, 0);
        if (max <= 0) {
            diag_error(d, v ? v : m, "max_heap_size_bytes: must be an integer greater than 0");
            free(mon.name);
            return -1;
        }
        mon.max_heap = (uint64_t)max;
    } else {
        const char *f = herald_cfg_str(v, "");
        if (!*f) {
            diag_error(d, v ? v : m, "filename: the file the pressure is read from is required");
            free(mon.name);
            return -1;
        }
        mon.file = xstrdup(f);
    }
    mon.st_pressure = stat_of(true, name, "pressure");
    mon.st_failed = stat_of(false, name, "failed_updates");
    om.m = xrealloc(om.m, (om.nm + 1) * sizeof(*om.m));
    om.m[om.nm++] = mon;
    return 0;
}

/* envoy.config.overload.v3.ScaleTimersOverloadActionConfig. TimerType in
 * Envoy's order: entry t + 1 is overload_timer t; those past
 * OVERLOAD_NTIMERS are refused. */
static const char *const timer_enum[] = {"UNSPECIFIED", "HTTP_DOWNSTREAM_CONNECTION_IDLE", "HTTP_DOWNSTREAM_STREAM_IDLE",
                                         "TRANSPORT_SOCKET_CONNECT", "HTTP_DOWNSTREAM_CONNECTION_MAX",
                                         "HTTP_DOWNSTREAM_STREAM_FLUSH", NULL};
static const struct herald_field scale_timer_fields[] = {
    {.name = "timer", .kind = HERALD_FIELD_ENUM, .flags = HERALD_F_REQUIRED, .enum_values = timer_enum,
     .help = "HTTP_DOWNSTREAM_CONNECTION_IDLE, HTTP_DOWNSTREAM_STREAM_IDLE or TRANSPORT_SOCKET_CONNECT"},
    {.name = "min_timeout", .kind = HERALD_FIELD_DURATION, .oneof = "overload_adjust",
     .help = "the timer's length when the action is saturated"},
    {.name = "min_scale", .kind = HERALD_FIELD_MESSAGE, .oneof = "overload_adjust", .message = &schema_percent,
     .help = "the same, as a percent of the configured length"},
    {.name = NULL},
};
static const struct herald_message scale_timer_msg = {
    "envoy.config.overload.v3.ScaleTimersOverloadActionConfig.ScaleTimer", scale_timer_fields, NULL,
};
static const struct herald_field scale_timers_fields[] = {
    {.name = "timer_scale_factors", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED | HERALD_F_REQUIRED,
     .message = &scale_timer_msg, .help = "the timers to shorten, and how far"},
    {.name = NULL},
};
static const struct herald_message scale_timers_msg = {
    "envoy.config.overload.v3.ScaleTimersOverloadActionConfig", scale_timers_fields, NULL,
};
#define SCALE_TIMERS_TYPE "envoy.config.overload.v3.ScaleTimersOverloadActionConfig"

static int parse_scale_timers(const struct herald_cfg *action, const struct herald_cfg *tc, struct cfg_diag *d)
{
    if (!tc) {
        diag_error(d, action, "reduce_timeouts needs a typed_config (" SCALE_TIMERS_TYPE ")");
        return -1;
    }
    const char *type = type_name(herald_cfg_str(herald_cfg_get(tc, "@type"), NULL));
    if (!type || strcmp(type, SCALE_TIMERS_TYPE) != 0) {
        diag_error(d, tc, "unexpected @type '%s' for reduce_timeouts (expected " SCALE_TIMERS_TYPE ")",
                   type ? type : "(none)");
        return -1;
    }
    if (schema_check((struct herald_cfg *)tc, &scale_timers_msg, d) < 0)
        return -1;
    const struct herald_cfg *list = herald_cfg_get(tc, "timer_scale_factors");
    for (size_t i = 0; i < herald_cfg_len(list); i++) {
        const struct herald_cfg *e = herald_cfg_at(list, i), *tn = herald_cfg_get(e, "timer");
        const char *tname = herald_cfg_str(tn, "");
        int t = -1;
        for (int k = 0; k < OVERLOAD_NTIMERS; k++)
            if (!strcmp(timer_enum[k + 1], tname))
                t = k;
        if (t < 0) {
            diag_error(d, tn, "not supported: timer %s (herald scales HTTP_DOWNSTREAM_CONNECTION_IDLE, "
                       "HTTP_DOWNSTREAM_STREAM_IDLE and TRANSPORT_SOCKET_CONNECT)", tname);
            return -1;
        }
        const struct herald_cfg *mt = herald_cfg_get(e, "min_timeout"), *ms = herald_cfg_get(e, "min_scale");
        if (!mt && !ms) {
            diag_error(d, e, "a timer needs min_timeout or min_scale");
            return -1;
        }
        if (scaled_timers[t].set) {
            diag_error(d, tn, "timer %s is given twice", tname);
            return -1;
        }
        double pct = herald_cfg_real(herald_cfg_get(ms, "value"), 0);
        if (ms && (pct < 0 || pct > 100)) {
            diag_error(d, ms, "min_scale must be from 0 to 100 (percent)");
            return -1;
        }
        scaled_timers[t] = (struct scaled_timer){.set = true, .by_scale = ms != NULL,
                                                 .min_ms = herald_cfg_duration_ms(mt, 0), .min_scale = pct / 100.0};
    }
    return 0;
}

static int add_action(const struct herald_cfg *n, struct cfg_diag *d)
{
    const char *name = herald_cfg_str(herald_cfg_get(n, "name"), "");
    int id = -1;
    for (int i = 0; i < OVERLOAD_NACTIONS; i++)
        if (!strcmp(action_names[i], name))
            id = i;
    if (!strcmp(name, "envoy.overload_actions.stop_accepting_connections"))
        id = OVERLOAD_REJECT_INCOMING_CONNECTIONS; /* herald closes them at accept */
    if (id < 0) {
        diag_error(d, herald_cfg_get(n, "name"), "not supported: overload action '%s' (herald has "
                   "stop_accepting_requests, disable_http_keepalive, stop_accepting_connections, "
                   "reject_incoming_connections, shrink_heap and reduce_timeouts)", name);
        return -1;
    }
    for (size_t i = 0; i < om.na; i++)
        if (om.a[i].id == (enum overload_action)id) {
            diag_error(d, n, "overload action '%s' is given twice", name);
            return -1;
        }
    const struct herald_cfg *ts = herald_cfg_get(n, "triggers");
    struct action a = {.id = (enum overload_action)id, .name = action_names[id]};
    a.nt = herald_cfg_len(ts);
    a.t = xcalloc(a.nt ? a.nt : 1, sizeof(*a.t));
    for (size_t i = 0; i < a.nt; i++) {
        const struct herald_cfg *t = herald_cfg_at(ts, i);
        const char *mname = herald_cfg_str(herald_cfg_get(t, "name"), "");
        struct monitor *m = find_monitor(mname);
        if (!m) {
            diag_error(d, herald_cfg_get(t, "name") ? herald_cfg_get(t, "name") : t,
                       "trigger names resource monitor '%s', which resource_monitors does not have%s", mname,
                       !strcmp(mname, OVERLOAD_MONITOR_DOWNSTREAM_CX) ? " as a pressure monitor (it is a limit, "
                       "not a trigger)" : "");
            free(a.t);
            return -1;
        }
        const struct herald_cfg *th = herald_cfg_get(t, "threshold"), *sc = herald_cfg_get(t, "scaled");
        if (sc)
            a.t[i] = (struct trigger){.m = m, .scaled = true,
                                      .threshold = herald_cfg_real(herald_cfg_get(sc, "scaling_threshold"), 1.0),
                                      .saturation = herald_cfg_real(herald_cfg_get(sc, "saturation_threshold"), 1.0)};
        else
            a.t[i] = (struct trigger){.m = m, .threshold = herald_cfg_real(herald_cfg_get(th, "value"), 1.0)};
    }
    const struct herald_cfg *tc = herald_cfg_get(n, "typed_config");
    bool bad = false;
    if (id == OVERLOAD_REDUCE_TIMEOUTS) {
        bad = parse_scale_timers(n, tc, d) < 0;
    } else if (tc) {
        diag_error(d, tc, "overload action '%s' takes no typed_config (only reduce_timeouts does)", name);
        bad = true;
    }
    if (bad) {
        free(a.t);
        return -1;
    }
    a.st_active = stat_of(true, a.name, "active");
    a.st_scale = stat_of(true, a.name, "scale_percent");
    om.a = xrealloc(om.a, (om.na + 1) * sizeof(*om.a));
    om.a[om.na++] = a;
    return 0;
}

int overload_actions_init(const struct herald_cfg *overload_manager, struct cfg_diag *d)
{
    om.refresh_ms = herald_cfg_duration_ms(herald_cfg_get(overload_manager, "refresh_interval"), 1000);
    if (!om.refresh_ms)
        om.refresh_ms = 1000;
    const struct herald_cfg *acts = herald_cfg_get(overload_manager, "actions");
    int rc = 0;
    for (size_t i = 0; i < herald_cfg_len(acts); i++)
        if (add_action(herald_cfg_at(acts, i), d) < 0)
            rc = -1;
    return rc;
}

void overload_actions_start(struct event_base *base)
{
    if (!om.nm || !base)
        return;
    refresh(-1, 0, NULL);
    om.timer = event_new(base, -1, EV_PERSIST, refresh, NULL);
    struct timeval tv = {(time_t)(om.refresh_ms / 1000), (suseconds_t)(om.refresh_ms % 1000) * 1000};
    event_add(om.timer, &tv);
}

void overload_actions_shutdown(void)
{
    if (om.timer)
        event_free(om.timer);
    for (size_t i = 0; i < om.nm; i++) {
        free(om.m[i].name);
        free(om.m[i].file);
    }
    for (size_t i = 0; i < om.na; i++)
        free(om.a[i].t);
    free(om.m);
    free(om.a);
    memset(&om, 0, sizeof(om));
    for (int i = 0; i < OVERLOAD_NACTIONS; i++)
        atomic_store(&overload_active[i], false);
    memset(scaled_timers, 0, sizeof(scaled_timers));
    rescale_hook = NULL;
    atomic_store(&timer_scale_ppm, 0);
}
