/* stats_sinks: which sinks the bootstrap names, and the periodic flush that
 * feeds them. One stats_flush() pass per interval serves every sink, so the
 * per-thread slots are read once however many sinks there are. */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config/schema.h"
#include "log.h"
#include "stats.h"
#include "stats_sink.h"
#include "stats_sink_statsd.h"

static struct statsd_sink **sinks;
static size_t nsinks, sinks_cap;
static struct event *flush_timer;
static uint64_t flush_interval_ms;
static bool flush_on_admin;
static bool final_flush;   /* the timer ran: what the last interval counted goes out at exit */

/* Type URLs and names, v3 first; the @type decides when there is one (Envoy
 * looks factories up by type first). */
struct sink_kind {
    bool dog;
    const char *type_urls[3];
    const char *names[3];
};
static const struct sink_kind sink_kinds[] = {
    { false, {"envoy.config.metrics.v3.StatsdSink", "envoy.config.metrics.v2.StatsdSink", NULL},
      {"envoy.stat_sinks.statsd", "envoy.statsd", NULL} },
    { true, {"envoy.config.metrics.v3.DogStatsdSink", "envoy.config.metrics.v2.DogStatsdSink", NULL},
      {"envoy.stat_sinks.dog_statsd", "envoy.dog_statsd", NULL} },
};

static bool in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (strcmp(*list, s) == 0)
            return true;
    return false;
}

static const struct sink_kind *find_kind(const struct herald_cfg *entry, struct cfg_diag *d)
{
    const char *name = herald_cfg_str(herald_cfg_get(entry, "name"), "");
    const struct herald_cfg *tc = herald_cfg_get(entry, "typed_config");
    const struct herald_cfg *type = herald_cfg_get(tc, "@type");
    const char *url = herald_cfg_str(type, NULL);
    if (url && strrchr(url, '/'))
        url = strrchr(url, '/') + 1;
    for (size_t i = 0; i < ARRAY_SIZE(sink_kinds); i++)
        if (url ? in_list(sink_kinds[i].type_urls, url) : in_list(sink_kinds[i].names, name))
            return &sink_kinds[i];
    if (url)
        diag_error(d, type, "not supported: stats sink type %s (herald has envoy.stat_sinks.statsd: "
                   "envoy.config.metrics.v3.StatsdSink and envoy.stat_sinks.dog_statsd: "
                   "envoy.config.metrics.v3.DogStatsdSink)", url);
    else
        diag_error(d, herald_cfg_get(entry, "name") ? herald_cfg_get(entry, "name") : entry,
                   "not supported: stats sink '%s' (herald has envoy.stat_sinks.statsd and "
                   "envoy.stat_sinks.dog_statsd, each with a typed_config)", name);
    return NULL;
}

int stats_sinks_init(const struct bootstrap *b, struct event_base *base, struct cfg_diag *d)
{
    const struct herald_cfg *root = b->doc->root;
    const struct herald_cfg *list = herald_cfg_get(root, "stats_sinks");
    size_t errors_before = d->nerrors;
    flush_interval_ms = b->stats_flush_interval_ms;
    flush_on_admin = herald_cfg_bool(herald_cfg_get(root, "stats_flush_on_admin"), false);
    for (size_t i = 0; i < herald_cfg_len(list); i++) {
        const struct herald_cfg *entry = herald_cfg_at(list, i);
        const struct sink_kind *k = find_kind(entry, d);
        if (!k)
            continue;
        struct herald_cfg *tc = (struct herald_cfg *)herald_cfg_get(entry, "typed_config");
        if (!tc) {
            diag_error(d, entry, "%s needs a typed_config (\"@type\": type.googleapis.com/%s)", k->names[0],
                       k->type_urls[0]);
            continue;
        }
        if (schema_check(tc, k->dog ? &schema_dog_statsd_sink : &schema_statsd_sink, d) < 0)
            continue;
        struct statsd_sink *s = statsd_sink_new(tc, k->dog, b, base, d);
        if (s)
            *VEC_PUSH(sinks, nsinks, sinks_cap) = s;
    }
    if (nsinks && flush_interval_ms == 0) {
        diag_error(d, herald_cfg_get(root, "stats_flush_interval"), "stats_flush_interval must be at least 1ms");
    }
    return d->nerrors == errors_before ? 0 : -1;
}

static void on_counter(void *arg, const char *name, uint64_t delta)
{
    UNUSED(arg);
    for (size_t i = 0; i < nsinks; i++)
        statsd_sink_counter(sinks[i], name, delta);
}

static void on_gauge(void *arg, const char *name, uint64_t value)
{
    UNUSED(arg);
    for (size_t i = 0; i < nsinks; i++)
        statsd_sink_gauge(sinks[i], name, value);
}

static void on_histogram(void *arg, const char *name, uint64_t value, uint64_t times)
{
    UNUSED(arg);
    for (size_t i = 0; i < nsinks; i++)
        statsd_sink_histogram(sinks[i], name, value, times);
}

void stats_sinks_flush(void)
{
    static const struct stats_flush_visitor visitor = { on_counter, on_gauge, on_histogram };
    if (!nsinks)
        return;
    for (size_t i = 0; i < nsinks; i++)
        statsd_sink_begin(sinks[i]);
    stats_flush(&visitor, NULL);
    for (size_t i = 0; i < nsinks; i++)
        statsd_sink_end(sinks[i]);
}

bool stats_sinks_flush_on_admin(void)
{
    return flush_on_admin && nsinks;
}

static void on_flush_timer(evutil_socket_t fd, short what, void *arg)
{
    UNUSED(fd);
    UNUSED(what);
    UNUSED(arg);
    stats_sinks_flush();
}

void stats_sinks_start(struct event_base *base)
{
    /* with stats_flush_on_admin, Envoy flushes only when the admin's stats are read */
    if (!nsinks || flush_on_admin)
        return;
    flush_timer = event_new(base, -1, EV_PERSIST, on_flush_timer, NULL);
    final_flush = true;
    struct timeval tv = { (time_t)(flush_interval_ms / 1000), (suseconds_t)(flush_interval_ms % 1000) * 1000 };
    evtimer_add(flush_timer, &tv);
}

void stats_sinks_shutdown(void)
{
    /* the workers are gone: nothing counts any more. Without this, the
     * last interval (and, after a reload, the old process's drain) is lost */
    if (final_flush)
        stats_sinks_flush();
    final_flush = false;
    if (flush_timer)
        event_free(flush_timer);
    flush_timer = NULL;
    for (size_t i = 0; i < nsinks; i++)
        statsd_sink_free(sinks[i]);
    free(sinks);
    sinks = NULL;
    nsinks = sinks_cap = 0;
}
