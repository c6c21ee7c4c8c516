/* bandwidth_limit (HTTP): envoy.filters.http.bandwidth_limit. The request
 * body, the response body or both (enable_mode) leave at most limit_kbps KiB
 * a second, all the streams of one config together on every worker (one
 * byte bucket, refilled every fill_interval), as Envoy's. A route, virtual
 * host or route configuration may give its own BandwidthLimit in
 * typed_per_filter_config (with its own limit_kbps, which it must have, and
 * its own bucket); the filter's own config may leave the limit out when
 * only the routes limit. The pacing is plugins/common/stream_pacer: it holds
 * the bytes and sends them on from a timer through SDK 1.10's inject, and
 * stops the source when it holds more than the connection's buffer limit.
 *
 * Stats (Envoy's, under <stat_prefix>.http_bandwidth_limit.): for request_
 * and response_: enabled, enforced, incoming_total_size,
 * allowed_total_size (counters), pending (gauge), transfer_duration
 * (histogram, ms). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "feature_flag.h"
#include "herald/herald.h"
#include "stream_pacer.h"
#include "xalloc.h"

enum { MODE_REQUEST = 1, MODE_RESPONSE = 2 };

struct dir_stats {
    struct herald_stat *enabled, *enforced, *incoming, *allowed, *pending, *duration;
};

struct conf {
    unsigned mode;
    bool limited;                          /* limit_kbps set */
    uint64_t fill_ms;
    struct feature_flag enabled;
    struct pace_bucket bucket;             /* shared by this config's streams */
    struct dir_stats st[2];                /* [0] request, [1] response */
};

struct dir {
    struct stream_pacer *pacer;
    bool started;                          /* its first bytes came */
    bool pending;                          /* counted in the pending gauge */
};

struct session {
    struct conf *conf;
    struct herald_http_stream *s;
    struct dir d[2];
};

/* ------------------------------------------------------------ schema */

static const char *const modes[] = {"DISABLED", "REQUEST", "RESPONSE", "REQUEST_AND_RESPONSE", NULL};

static int conf_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *k = herald_cfg_get(n, "limit_kbps");
    if (k && herald_cfg_int(k, 0) < 1)
        return herald_cfg_errorf(k, err, "limit_kbps must be at least 1");
    const struct herald_cfg *f = herald_cfg_get(n, "fill_interval");
    if (f) {
        uint64_t ms = herald_cfg_duration_ms(f, 50);
        if (ms < 20 || ms > 1000)
            return herald_cfg_errorf(f, err, "fill_interval must be from 20ms to 1s");
    }
    const struct herald_cfg *sp = herald_cfg_get(n, "stat_prefix");
    if (!*herald_cfg_str(sp, ""))
        return herald_cfg_errorf(sp ? sp : n, err, "stat_prefix must not be empty");
    const struct herald_cfg *t = herald_cfg_get(n, "enable_response_trailers");
    if (t && herald_cfg_bool(t, false))
        return herald_cfg_errorf(t, err, "enable_response_trailers is not supported: herald cannot add trailers "
                                 "to a response that has none");
    return 0;
}

static const struct herald_field bwl_fields[] = {
    {.name = "stat_prefix", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "stats under <stat_prefix>.http_bandwidth_limit."},
    {.name = "enable_mode", .kind = HERALD_FIELD_ENUM, .enum_values = modes,
     .help = "which bodies are limited; default DISABLED"},
    {.name = "limit_kbps", .kind = HERALD_FIELD_UINT,
     .help = "KiB a second for all the streams of this config; required per route"},
    {.name = "fill_interval", .kind = HERALD_FIELD_DURATION,
     .help = "how often the bucket is refilled and bytes go on; 20ms to 1s, default 50ms"},
    {.name = "runtime_enabled", .kind = HERALD_FIELD_MESSAGE, .message = &feature_flag_schema,
     .help = "a runtime flag that turns the filter off; default on"},
    {.name = "enable_response_trailers", .kind = HERALD_FIELD_BOOL,
     .help = "false only: the delay trailers are not supported"},
    {.name = "response_trailer_prefix", .kind = HERALD_FIELD_STRING,
     .help = "accepted; without enable_response_trailers it names nothing"},
    {.name = "named_bucket_selector", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = "named_bucket_configurations", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = NULL},
};
static const struct herald_message bwl_schema = {
    "envoy.extensions.filters.http.bandwidth_limit.v3.BandwidthLimit", bwl_fields, conf_check,
};

/* ------------------------------------------------------------ config */

static unsigned mode_of(const char *m)
{
    if (!strcmp(m, "REQUEST"))
        return MODE_REQUEST;
    if (!strcmp(m, "RESPONSE"))
        return MODE_RESPONSE;
    if (!strcmp(m, "REQUEST_AND_RESPONSE"))
        return MODE_REQUEST | MODE_RESPONSE;
    return 0;
}

static void dir_stats_init(struct dir_stats *st, const char *prefix, const char *dir)
{
    char name[64];
#define STAT(field, kind, suffix)                                   \
    snprintf(name, sizeof(name), "%s_%s", dir, suffix);            \
    st->field = kind(prefix, name)
    STAT(enabled, herald_counter, "enabled");
    STAT(enforced, herald_counter, "enforced");
    STAT(incoming, herald_counter, "incoming_total_size");
    STAT(allowed, herald_counter, "allowed_total_size");
    STAT(pending, herald_gauge, "pending");
    STAT(duration, herald_histogram, "transfer_duration");
#undef STAT
}

static void conf_destroy(void *p)
{
    struct conf *c = p;
    if (!c)
        return;
    feature_flag_free(&c->enabled);
    pace_bucket_destroy(&c->bucket);
    free(c);
}

static struct conf *conf_make(const struct herald_cfg *n)
{
    struct conf *c = xcalloc(1, sizeof(*c));
    c->mode = mode_of(herald_cfg_str(herald_cfg_get(n, "enable_mode"), "DISABLED"));
    const struct herald_cfg *k = herald_cfg_get(n, "limit_kbps");
    c->limited = k != NULL;
    c->fill_ms = herald_cfg_duration_ms(herald_cfg_get(n, "fill_interval"), 50);
    pace_bucket_init(&c->bucket, (uint64_t)herald_cfg_int(k, 0));
    feature_flag_parse(herald_cfg_get(n, "runtime_enabled"), true, &c->enabled);
    char prefix[256];
    snprintf(prefix, sizeof(prefix), "%s.http_bandwidth_limit", herald_cfg_str(herald_cfg_get(n, "stat_prefix"), ""));
    dir_stats_init(&c->st[0], prefix, "request");
    dir_stats_init(&c->st[1], prefix, "response");
    return c;
}

static int conf_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out, char **err)
{
    (void)err;
    struct conf *c = conf_make(n);
    if (c->mode && !c->limited)
        herald_env_warn(env, n, "enable_mode without limit_kbps: only routes with their own limit are limited");
    *out = c;
    return 0;
}

/* Envoy: "limit must be set for per route filter config". */
static int route_conf_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out, char **err)
{
    (void)env;
    if (!herald_cfg_get(n, "limit_kbps"))
        return herald_cfg_errorf(n, err, "limit_kbps must be set in a per-route BandwidthLimit");
    *out = conf_make(n);
    return 0;
}

/* ------------------------------------------------------------ the filter */

static void *session_new(void *conf, struct herald_http_stream *s)
{
    struct session *ss = xcalloc(1, sizeof(*ss));
    ss->conf = conf;
    ss->s = s;
    return ss;
}

static void dir_done(struct session *ss, int i)
{
    if (ss->d[i].pending) {
        ss->d[i].pending = false;
        herald_gauge_add(ss->conf->st[i].pending, -1);
    }
}

static void session_destroy(void *p)
{
    struct session *ss = p;
    for (int i = 0; i < 2; i++) {
        stream_pacer_free(ss->d[i].pacer);
        dir_done(ss, i);
    }
    free(ss);
}

static void on_complete(void *p)
{
    struct session *ss = p;
    for (int i = 0; i < 2; i++) {
        stream_pacer_stop(ss->d[i].pacer);
        dir_done(ss, i);
    }
}

static void sent_request(void *arg, uint64_t bytes, bool enforced, bool last, uint64_t ms);
static void sent_response(void *arg, uint64_t bytes, bool enforced, bool last, uint64_t ms);

static void sent(struct session *ss, int i, uint64_t bytes, bool enforced, bool last, uint64_t ms)
{
    struct dir_stats *st = &ss->conf->st[i];
    herald_stat_add(st->allowed, bytes);
    if (enforced)
        herald_stat_inc(st->enforced);
    if (last) {
        herald_histogram_record(st->duration, ms);
        dir_done(ss, i);
    }
}

static void sent_request(void *arg, uint64_t bytes, bool enforced, bool last, uint64_t ms)
{
    sent(arg, 0, bytes, enforced, last, ms);
}

static void sent_response(void *arg, uint64_t bytes, bool enforced, bool last, uint64_t ms)
{
    sent(arg, 1, bytes, enforced, last, ms);
}

/* Envoy's decodeHeaders / encodeHeaders: a pacer for the direction when the
 * config limits it and the runtime flag is on. */
static void maybe_pace(struct session *ss, int i)
{
    struct conf *c = ss->conf;
    unsigned want = i ? MODE_RESPONSE : MODE_REQUEST;
    if (!(c->mode & want) || !c->limited || !feature_flag_on(&c->enabled))
        return;
    herald_stat_inc(c->st[i].enabled);
    ss->d[i].pacer = stream_pacer_new(ss->s, ss, i == 1, &c->bucket, 0, c->fill_ms,
                                      i ? sent_response : sent_request, ss);
}

static enum herald_http_status pace_data(struct session *ss, int i, struct herald_buf *data, bool end_stream)
{
    struct dir *d = &ss->d[i];
    if (!d->pacer)
        return HERALD_HTTP_CONTINUE;
    if (!d->started) {
        d->started = d->pending = true;
        herald_gauge_add(ss->conf->st[i].pending, 1);
    }
    herald_stat_add(ss->conf->st[i].incoming, herald_buf_len(data));
    return stream_pacer_data(d->pacer, data, end_stream);
}

static enum herald_http_status pace_trailers(struct session *ss, int i)
{
    struct dir *d = &ss->d[i];
    if (!d->pacer)
        return HERALD_HTTP_CONTINUE;
    enum herald_http_status st = stream_pacer_trailers(d->pacer);
    if (st == HERALD_HTTP_CONTINUE)
        dir_done(ss, i);
    return st;
}

static enum herald_http_status decode_headers(void *p, struct herald_headers *headers, bool end_stream)
{
    (void)headers;
    (void)end_stream;
    struct session *ss = p;
    struct conf *route = herald_http_stream_route_config(ss->s, ss->conf);
    if (route)
        ss->conf = route;
    maybe_pace(ss, 0);
    return HERALD_HTTP_CONTINUE;
}

static enum herald_http_status decode_data(void *p, struct herald_buf *data, bool end_stream)
{
    return pace_data(p, 0, data, end_stream);
}

static enum herald_http_status decode_trailers(void *p, struct herald_headers *trailers)
{
    (void)trailers;
    return pace_trailers(p, 0);
}

static enum herald_http_status encode_headers(void *p, struct herald_headers *headers, bool end_stream)
{
    (void)headers;
    struct session *ss = p;
    if (!end_stream)
        maybe_pace(ss, 1);
    return HERALD_HTTP_CONTINUE;
}

static enum herald_http_status encode_data(void *p, struct herald_buf *data, bool end_stream)
{
    return pace_data(p, 1, data, end_stream);
}

static enum herald_http_status encode_trailers(void *p, struct herald_headers *trailers)
{
    (void)trailers;
    return pace_trailers(p, 1);
}

static const struct herald_http_filter_ops ops = {
    .size = sizeof(struct herald_http_filter_ops),
    .config_create = conf_create,
    .config_destroy = conf_destroy,
    .session_new = session_new,
    .session_destroy = session_destroy,
    .decode_headers = decode_headers,
    .decode_data = decode_data,
    .decode_trailers = decode_trailers,
    .encode_headers = encode_headers,
    .encode_data = encode_data,
    .encode_trailers = encode_trailers,
    .on_complete = on_complete,
    .route_config_schema = &bwl_schema,
    .route_config_create = route_conf_create,
    .route_config_destroy = conf_destroy,
};

static const char *const type_urls[] = {
    "envoy.extensions.filters.http.bandwidth_limit.v3.BandwidthLimit",
    "envoy.extensions.filters.http.bandwidth_limit.v3alpha.BandwidthLimit",
    NULL,
};

HERALD_PLUGIN(.name = "envoy.filters.http.bandwidth_limit",
              .kind = HERALD_PLUGIN_HTTP_FILTER,
              .type_urls = type_urls,
              .version = "1.0.0",
              .description = "bandwidth limit: request and response bodies at most limit_kbps KiB/s",
              .config_schema = &bwl_schema,
              .ops = &ops);
