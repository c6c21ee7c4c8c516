/* fault (HTTP): envoy.filters.http.fault, Envoy's fault injection. For the
 * requests it applies to (headers, downstream_nodes, max_active_faults), a
 * share of them (delay.percentage) waits fixed_delay before going on, and a
 * share (abort.percentage) is then answered http_status from here, body
 * "fault filter abort". header_delay / header_abort take the delay and the
 * status from the request's x-envoy-fault-delay-request and
 * x-envoy-fault-abort-request headers instead. The shares, the delay and the
 * status can be overridden by Envoy's runtime keys (fault.http.*). A share
 * (response_rate_limit.percentage) gets its response body at
 * fixed_limit.limit_kbps KiB/s (header_limit: the request's
 * x-envoy-fault-throughput-response), paced by plugins/common/stream_pacer.
 * The request headers' percentage headers lower the shares of the faults
 * whose values come from headers (header_delay, header_abort, header_limit),
 * as Envoy's HeaderPercentageProvider; fixed faults keep their share.
 *
 * A route, virtual host or route configuration may give its own HTTPFault in
 * typed_per_filter_config: the most specific one replaces the filter's for
 * its requests (its own max_active_faults count; the same stats), as Envoy.
 *
 * Stats (Envoy's): http.<stat_prefix>.fault.delays_injected,
 * .aborts_injected, .response_rl_injected, .faults_overflow and the gauge
 * .active_faults. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fraction.h"
#include "herald/herald.h"
#include "stream_pacer.h"

#define DELAY_HEADER "x-envoy-fault-delay-request"
#define DELAY_PERCENT_HEADER "x-envoy-fault-delay-request-percentage"
#define ABORT_HEADER "x-envoy-fault-abort-request"
#define ABORT_PERCENT_HEADER "x-envoy-fault-abort-request-percentage"
#define ABORT_GRPC_HEADER "x-envoy-fault-abort-grpc-request"
#define NODE_HEADER "x-envoy-downstream-service-node"
#define THROUGHPUT_HEADER "x-envoy-fault-throughput-response"
#define THROUGHPUT_PERCENT_HEADER "x-envoy-fault-throughput-response-percentage"

struct conf {
    bool has_delay, delay_from_header;
    uint64_t delay_ms;
    struct fraction delay_pct;
    bool has_abort, abort_from_header;
    int abort_status;
    bool abort_grpc;                       /* grpc_status instead of http_status */
    uint32_t abort_grpc_status;
    struct fraction abort_pct;
    bool has_rate_limit, rate_from_header;
    uint64_t rate_kbps;
    struct fraction rate_pct;
    struct herald_header_matcher **hm; size_t nhm;
    char **nodes; size_t nnodes;
    bool has_max_active;
    uint32_t max_active;
    char *rt_delay_pct, *rt_abort_pct, *rt_delay_ms, *rt_abort_status, *rt_max_active, *rt_rate_pct,
        *rt_abort_grpc;
    _Atomic uint64_t active;               /* faults in progress, on all workers */
    struct herald_stat *st_delays, *st_aborts, *st_rl, *st_overflow, *st_active;
};

struct session {
    struct conf *conf;
    struct herald_http_stream *s;
    struct herald_timer *timer;            /* the delay */
    bool delaying;
    bool active;                           /* counted in conf->active until the stream ends, as Envoy */
    uint64_t abort_status_hdr;             /* header_abort: the request's status, 0: none */
    bool has_grpc_hdr;                     /* header_abort: the request's gRPC status ... */
    uint64_t abort_grpc_hdr;               /* ... this one */
    struct fraction abort_pct;              /* this request's abort share */
    struct stream_pacer *pacer;            /* response_rate_limit: the body at its rate */
};

/* ------------------------------------------------------------ schema */

static const struct herald_field empty_fields[] = {
    {.name = NULL},
};
static const struct herald_message header_delay_msg = {
    "envoy.extensions.filters.common.fault.v3.FaultDelay.HeaderDelay", empty_fields, NULL,
};
static const struct herald_message header_abort_msg = {
    "envoy.extensions.filters.http.fault.v3.FaultAbort.HeaderAbort", empty_fields, NULL,
};

static int delay_check(const struct herald_cfg *n, char **err)
{
    if (!herald_cfg_get(n, "fixed_delay") && !herald_cfg_get(n, "header_delay"))
        return herald_cfg_errorf(n, err, "a delay needs fixed_delay or header_delay");
    return 0;
}

static const struct herald_field delay_fields[] = {
    {.name = "fixed_delay", .kind = HERALD_FIELD_DURATION, .oneof = "fault_delay_secifier",
     .help = "how long the request waits"},
    {.name = "header_delay", .kind = HERALD_FIELD_MESSAGE, .oneof = "fault_delay_secifier",
     .message = &header_delay_msg, .help = "{}: the request's " DELAY_HEADER " (ms)"},
    {.name = "percentage", .kind = HERALD_FIELD_MESSAGE, .message = &fraction_percent_schema,
     .help = "the share of requests delayed; default 100%"},
    {.name = "type", .kind = HERALD_FIELD_REMOVED, .hint = "v2 field: the delay is always FIXED"},
    {.name = NULL},
};
static const struct herald_message delay_msg = {
    "envoy.extensions.filters.common.fault.v3.FaultDelay", delay_fields, delay_check,
};

static int abort_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *st = herald_cfg_get(n, "http_status");
    if (st && (herald_cfg_int(st, 0) < 200 || herald_cfg_int(st, 0) >= 600))
        return herald_cfg_errorf(st, err, "http_status must be from 200 to 599");
    if (!st && !herald_cfg_get(n, "header_abort") && !herald_cfg_get(n, "grpc_status"))
        return herald_cfg_errorf(n, err, "an abort needs http_status, grpc_status or header_abort");
    return 0;
}

static const struct herald_field abort_fields[] = {
    {.name = "http_status", .kind = HERALD_FIELD_UINT, .oneof = "error_type", .help = "200 to 599"},
    {.name = "grpc_status", .kind = HERALD_FIELD_UINT, .oneof = "error_type",
     .help = "a gRPC request gets this grpc-status (HTTP 200); another gets 200 and the abort body"},
    {.name = "header_abort", .kind = HERALD_FIELD_MESSAGE, .oneof = "error_type", .message = &header_abort_msg,
     .help = "{}: the status from the request's " ABORT_HEADER " (or " ABORT_GRPC_HEADER ")"},
    {.name = "percentage", .kind = HERALD_FIELD_MESSAGE, .message = &fraction_percent_schema,
     .help = "the share of requests aborted; default 100%"},
    {.name = NULL},
};
static const struct herald_message abort_msg = {
    "envoy.extensions.filters.http.fault.v3.FaultAbort", abort_fields, abort_check,
};

static const struct herald_field fixed_limit_fields[] = {
    {.name = "limit_kbps", .kind = HERALD_FIELD_UINT, .flags = HERALD_F_REQUIRED, .help = "KiB/s, at least 1"},
    {.name = NULL},
};

static int fixed_limit_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *k = herald_cfg_get(n, "limit_kbps");
    if (k && herald_cfg_int(k, 0) < 1)
        return herald_cfg_errorf(k, err, "limit_kbps must be at least 1");
    return 0;
}

static const struct herald_message fixed_limit_msg = {
    "envoy.extensions.filters.common.fault.v3.FaultRateLimit.FixedLimit", fixed_limit_fields, fixed_limit_check,
};
static const struct herald_message header_limit_msg = {
    "envoy.extensions.filters.common.fault.v3.FaultRateLimit.HeaderLimit", empty_fields, NULL,
};

static int rate_limit_check(const struct herald_cfg *n, char **err)
{
    if (!herald_cfg_get(n, "fixed_limit") && !herald_cfg_get(n, "header_limit"))
        return herald_cfg_errorf(n, err, "a response_rate_limit needs fixed_limit or header_limit");
    return 0;
}

static const struct herald_field rate_limit_fields[] = {
    {.name = "fixed_limit", .kind = HERALD_FIELD_MESSAGE, .oneof = "limit_type", .message = &fixed_limit_msg,
     .help = "the response body at limit_kbps KiB/s"},
    {.name = "header_limit", .kind = HERALD_FIELD_MESSAGE, .oneof = "limit_type", .message = &header_limit_msg,
     .help = "{}: the rate from the request's " THROUGHPUT_HEADER " (KiB/s, > 0)"},
    {.name = "percentage", .kind = HERALD_FIELD_MESSAGE, .message = &fraction_percent_schema,
     .help = "the share of requests whose responses are slowed; default 100%"},
    {.name = NULL},
};
static const struct herald_message rate_limit_msg = {
    "envoy.extensions.filters.common.fault.v3.FaultRateLimit", rate_limit_fields, rate_limit_check,
};

static const struct herald_field fault_fields[] = {
    {.name = "delay", .kind = HERALD_FIELD_MESSAGE, .message = &delay_msg},
    {.name = "abort", .kind = HERALD_FIELD_MESSAGE, .message = &abort_msg},
    {.name = "upstream_cluster", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = "headers", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED,
     .message = &herald_header_matcher_schema, .help = "faults only for requests matching all of them"},
    {.name = "downstream_nodes", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REPEATED,
     .help = "faults only for requests whose " NODE_HEADER " is one of them"},
    {.name = "max_active_faults", .kind = HERALD_FIELD_UINT,
     .help = "faults at once, all workers together; past it counted in faults_overflow; default no limit"},
    {.name = "response_rate_limit", .kind = HERALD_FIELD_MESSAGE, .message = &rate_limit_msg,
     .help = "the response body of a share of requests, slowed to a rate"},
    {.name = "delay_percent_runtime", .kind = HERALD_FIELD_STRING,
     .help = "default fault.http.delay.fixed_delay_percent"},
    {.name = "abort_percent_runtime", .kind = HERALD_FIELD_STRING, .help = "default fault.http.abort.abort_percent"},
    {.name = "delay_duration_runtime", .kind = HERALD_FIELD_STRING,
     .help = "default fault.http.delay.fixed_duration_ms"},
    {.name = "abort_http_status_runtime", .kind = HERALD_FIELD_STRING, .help = "default fault.http.abort.http_status"},
    {.name = "max_active_faults_runtime", .kind = HERALD_FIELD_STRING, .help = "default fault.http.max_active_faults"},
    {.name = "response_rate_limit_percent_runtime", .kind = HERALD_FIELD_STRING,
     .help = "default fault.http.rate_limit.response_percent"},
    {.name = "abort_grpc_status_runtime", .kind = HERALD_FIELD_STRING, .help = "default fault.http.abort.grpc_status"},
    {.name = "disable_downstream_cluster_stats", .kind = HERALD_FIELD_BOOL,
     .help = "accepted; herald keeps no per-downstream-cluster fault stats"},
    {.name = "filter_metadata", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = NULL},
};
static const struct herald_message fault_schema = {
    "envoy.extensions.filters.http.fault.v3.HTTPFault", fault_fields, NULL,
};

/* ------------------------------------------------------------ config */

static char *xdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d)
        abort();
    return d;
}

/* Envoy: a FaultDelay / FaultAbort without percentage applies to every request. */
static struct fraction percent_of(const struct herald_cfg *n)
{
    struct fraction f = {.set = true, .numerator = 100, .denominator = 100};
    fraction_parse_percent(n, &f);
    return f;
}

static char *runtime_key(const struct herald_cfg *n, const char *field, const char *dflt)
{
    return xdup(herald_cfg_str(herald_cfg_get(n, field), dflt));
}

static void conf_destroy(void *p)
{
    struct conf *c = p;
    if (!c)
        return;
    for (size_t i = 0; i < c->nhm; i++)
        herald_header_matcher_free(c->hm[i]);
    free(c->hm);
    for (size_t i = 0; i < c->nnodes; i++)
        free(c->nodes[i]);
    free(c->nodes);
    free(c->rt_delay_pct);
    free(c->rt_abort_pct);
    free(c->rt_delay_ms);
    free(c->rt_abort_status);
    free(c->rt_max_active);
    free(c->rt_rate_pct);
    free(c->rt_abort_grpc);
    free(c);
}

static int conf_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out, char **err)
{
    struct conf *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    const struct herald_cfg *d = herald_cfg_get(n, "delay"), *a = herald_cfg_get(n, "abort");
    if (d) {
        c->has_delay = true;
        c->delay_from_header = herald_cfg_get(d, "header_delay") != NULL;
        c->delay_ms = herald_cfg_duration_ms(herald_cfg_get(d, "fixed_delay"), 0);
        c->delay_pct = percent_of(herald_cfg_get(d, "percentage"));
    }
    if (a) {
        c->has_abort = true;
        c->abort_from_header = herald_cfg_get(a, "header_abort") != NULL;
        c->abort_status = (int)herald_cfg_int(herald_cfg_get(a, "http_status"), 503);
        c->abort_grpc = herald_cfg_get(a, "grpc_status") != NULL;
        c->abort_grpc_status = (uint32_t)herald_cfg_int(herald_cfg_get(a, "grpc_status"), 0);
        c->abort_pct = percent_of(herald_cfg_get(a, "percentage"));
    }
    const struct herald_cfg *rl = herald_cfg_get(n, "response_rate_limit");
    if (rl) {
        c->has_rate_limit = true;
        c->rate_from_header = herald_cfg_get(rl, "header_limit") != NULL;
        c->rate_kbps = (uint64_t)herald_cfg_int(herald_cfg_get(herald_cfg_get(rl, "fixed_limit"), "limit_kbps"), 0);
        c->rate_pct = percent_of(herald_cfg_get(rl, "percentage"));
    }
    if (!d && !a && !rl)
        herald_env_warn(env, n, "no delay, abort or response_rate_limit: the filter injects no fault");
    const struct herald_cfg *hs = herald_cfg_get(n, "headers");
    c->nhm = herald_cfg_len(hs);
    c->hm = calloc(c->nhm + 1, sizeof(*c->hm));
    if (!c->hm)
        abort();
    for (size_t i = 0; i < c->nhm; i++)
        if (!(c->hm[i] = herald_header_matcher_new(herald_cfg_at(hs, i), err))) {
            c->nhm = i;
            conf_destroy(c);
            return -1;
        }
    const struct herald_cfg *ns = herald_cfg_get(n, "downstream_nodes");
    c->nnodes = herald_cfg_len(ns);
    c->nodes = calloc(c->nnodes + 1, sizeof(*c->nodes));
    if (!c->nodes)
        abort();
    for (size_t i = 0; i < c->nnodes; i++)
        c->nodes[i] = xdup(herald_cfg_str(herald_cfg_at(ns, i), ""));
    const struct herald_cfg *ma = herald_cfg_get(n, "max_active_faults");
    c->has_max_active = ma != NULL;
    c->max_active = (uint32_t)herald_cfg_int(ma, 0);
    c->rt_delay_pct = runtime_key(n, "delay_percent_runtime", "fault.http.delay.fixed_delay_percent");
    c->rt_abort_pct = runtime_key(n, "abort_percent_runtime", "fault.http.abort.abort_percent");
    c->rt_delay_ms = runtime_key(n, "delay_duration_runtime", "fault.http.delay.fixed_duration_ms");
    c->rt_abort_status = runtime_key(n, "abort_http_status_runtime", "fault.http.abort.http_status");
    c->rt_max_active = runtime_key(n, "max_active_faults_runtime", "fault.http.max_active_faults");
    c->rt_rate_pct = runtime_key(n, "response_rate_limit_percent_runtime", "fault.http.rate_limit.response_percent");
    c->rt_abort_grpc = runtime_key(n, "abort_grpc_status_runtime", "fault.http.abort.grpc_status");

    char prefix[256];
    const char *sp = herald_env_stat_prefix(env);
    snprintf(prefix, sizeof(prefix), "%s.fault", sp ? sp : "http");
    c->st_delays = herald_counter(prefix, "delays_injected");
    c->st_aborts = herald_counter(prefix, "aborts_injected");
    c->st_rl = herald_counter(prefix, "response_rl_injected");
    c->st_overflow = herald_counter(prefix, "faults_overflow");
    c->st_active = herald_gauge(prefix, "active_faults");
    *out = c;
    return 0;
}

/* ------------------------------------------------------------ the filter */

static void *session_new(void *conf, struct herald_http_stream *s)
{
    struct session *ss = calloc(1, sizeof(*ss));
    if (!ss)
        return NULL;
    ss->conf = conf;
    ss->s = s;
    return ss;
}

static void fault_end(struct session *ss)
{
    if (ss->active) {
        ss->active = false;
        atomic_fetch_sub(&ss->conf->active, 1);
        herald_gauge_add(ss->conf->st_active, -1);
    }
}

static void session_destroy(void *p)
{
    struct session *ss = p;
    herald_timer_free(ss->timer);
    stream_pacer_free(ss->pacer);
    fault_end(ss);
    free(ss);
}

static void on_complete(void *p)
{
    struct session *ss = p;
    if (ss->timer)
        herald_timer_cancel(ss->timer);
    stream_pacer_stop(ss->pacer);
    ss->delaying = false;
    fault_end(ss);
}

/* A header's unsigned value; false when absent or not a number. */
static bool header_u64(const struct herald_headers *h, const char *name, uint64_t *v)
{
    const char *s = herald_headers_get(h, name);
    if (!s || *s < '0' || *s > '9')
        return false;
    char *end;
    unsigned long long x = strtoull(s, &end, 10);
    if (*end)
        return false;
    *v = x;
    return true;
}

/* Envoy's HeaderPercentageProvider: the request's header is a numerator over
 * the configured denominator, and may lower the configured share, never raise it. */
static struct fraction header_percent(const struct herald_headers *h, const char *name, struct fraction p)
{
    uint64_t v;
    if (header_u64(h, name, &v) && v < p.numerator)
        p.numerator = (uint32_t)v;
    return p;
}

/* Envoy counts all of a request's faults as one active fault. */
static void fault_begin(struct session *ss)
{
    if (ss->active)
        return;
    atomic_fetch_add(&ss->conf->active, 1);
    ss->active = true;
    herald_gauge_add(ss->conf->st_active, 1);
}

/* Envoy's maybeSetupResponseRateLimit: the response body of this request at
 * the configured (or the request's) rate, for the configured share. */
static bool maybe_rate_limit(struct session *ss, const struct herald_headers *h)
{
    struct conf *c = ss->conf;
    if (!c->has_rate_limit)
        return false;
    uint64_t kbps = c->rate_kbps;
    struct fraction pct = c->rate_pct;
    if (c->rate_from_header) {
        if (!header_u64(h, THROUGHPUT_HEADER, &kbps) || !kbps)
            return false;
        pct = header_percent(h, THROUGHPUT_PERCENT_HEADER, c->rate_pct);
    }
    if (!herald_runtime_feature_enabled(c->rt_rate_pct, pct.numerator, pct.denominator))
        return false;
    fault_begin(ss);
    herald_stat_inc(c->st_rl);
    ss->pacer = stream_pacer_new(ss->s, ss, true, NULL, kbps, 0, NULL, NULL);
    return true;
}

static bool applies(const struct conf *c, const struct herald_headers *h)
{
    for (size_t i = 0; i < c->nhm; i++)
        if (!herald_header_matcher_match(c->hm[i], h))
            return false;
    if (c->nnodes) {
        const char *node = herald_headers_get(h, NODE_HEADER);
        if (!node)
            return false;
        for (size_t i = 0; i < c->nnodes; i++)
            if (!strcmp(c->nodes[i], node))
                return true;
        return false;
    }
    return true;
}

/* Envoy's abortStatus: whether this request is aborted, with which HTTP
 * status, and for a gRPC abort (HTTP 200) which grpc-status (-1: none). An
 * HTTP status wins over a gRPC one, as in Envoy. */
static bool abort_codes(struct session *ss, int *http, int *grpc)
{
    struct conf *c = ss->conf;
    *grpc = -1;
    if (!c->has_abort)
        return false;
    if (c->abort_from_header && !ss->abort_status_hdr && !ss->has_grpc_hdr)
        return false;
    if (!herald_runtime_feature_enabled(c->rt_abort_pct, ss->abort_pct.numerator, ss->abort_pct.denominator))
        return false;
    if (c->abort_from_header ? ss->abort_status_hdr != 0 : !c->abort_grpc) {
        uint64_t st = c->abort_from_header ? ss->abort_status_hdr
                                           : herald_runtime_uint(c->rt_abort_status, (uint64_t)c->abort_status);
        if (st >= 200 && st < 600) {
            *http = (int)st;
            return true;
        }
        if (!c->abort_from_header || !ss->has_grpc_hdr)
            return false;
    }
    uint64_t g = c->abort_from_header ? ss->abort_grpc_hdr : herald_runtime_uint(c->rt_abort_grpc, c->abort_grpc_status);
    *http = 200;
    *grpc = (int)(g > 1000 ? 2 : g);           /* a nonsense code: UNKNOWN */
    return true;
}

/* After the delay (or at once): abort, or let the request go on. */
static bool maybe_abort(struct session *ss)
{
    int http, grpc;
    if (!abort_codes(ss, &http, &grpc))
        return false;
    herald_stat_inc(ss->conf->st_aborts);
    if (grpc >= 0)
        herald_http_stream_send_local_reply_grpc(ss->s, http, grpc, "fault filter abort", "fault_filter_abort", "FI");
    else
        herald_http_stream_send_local_reply(ss->s, http, "fault filter abort", "fault_filter_abort", "FI");
    return true;
}

static void on_delay_over(struct herald_timer *t, void *arg)
{
    (void)t;
    struct session *ss = arg;
    ss->delaying = false;
    if (!maybe_abort(ss))
        herald_http_stream_continue_decoding(ss->s);
}

static enum herald_http_status decode_headers(void *p, struct herald_headers *headers, bool end_stream)
{
    (void)end_stream;
    struct session *ss = p;
    struct conf *route = herald_http_stream_route_config(ss->s, ss->conf);
    if (route)
        ss->conf = route;
    struct conf *c = ss->conf;
    if ((!c->has_delay && !c->has_abort && !c->has_rate_limit) || !applies(c, headers))
        return HERALD_HTTP_CONTINUE;
    /* Envoy's faultOverflow(): a fuzzy limit, like its circuit breakers */
    if (c->has_max_active &&
        atomic_load(&c->active) >= herald_runtime_uint(c->rt_max_active, c->max_active)) {
        herald_stat_inc(c->st_overflow);
        return HERALD_HTTP_CONTINUE;
    }
    if (c->has_abort) {
        uint64_t v;
        if (c->abort_from_header && header_u64(headers, ABORT_HEADER, &v))
            ss->abort_status_hdr = v;
        if (c->abort_from_header && header_u64(headers, ABORT_GRPC_HEADER, &v)) {
            ss->has_grpc_hdr = true;
            ss->abort_grpc_hdr = v;
        }
        ss->abort_pct = c->abort_from_header ? header_percent(headers, ABORT_PERCENT_HEADER, c->abort_pct)
                                             : c->abort_pct;
    }
    maybe_rate_limit(ss, headers);
    uint64_t delay_ms = 0;
    if (c->has_delay) {
        struct fraction pct = c->delay_from_header ? header_percent(headers, DELAY_PERCENT_HEADER, c->delay_pct)
                                                   : c->delay_pct;
        uint64_t from_header = 0;
        bool wanted = c->delay_from_header ? header_u64(headers, DELAY_HEADER, &from_header) && from_header : true;
        if (wanted && herald_runtime_feature_enabled(c->rt_delay_pct, pct.numerator, pct.denominator))
            delay_ms = c->delay_from_header ? from_header : herald_runtime_uint(c->rt_delay_ms, c->delay_ms);
    }
    bool aborting = c->has_abort && (!c->abort_from_header || ss->abort_status_hdr || ss->has_grpc_hdr);
    if (!delay_ms && !aborting)
        return HERALD_HTTP_CONTINUE;
    fault_begin(ss);
    if (delay_ms) {
        herald_stat_inc(c->st_delays);
        herald_http_stream_add_response_flag(ss->s, "DI");
        if (!ss->timer)
            ss->timer = herald_timer_new(on_delay_over, ss);
        ss->delaying = true;
        herald_timer_arm(ss->timer, delay_ms);
        return HERALD_HTTP_STOP;
    }
    if (maybe_abort(ss))
        return HERALD_HTTP_STOP;
    return HERALD_HTTP_CONTINUE;
}

/* The body of a delayed request waits here with it. */
static enum herald_http_status decode_data(void *p, struct herald_buf *data, bool end_stream)
{
    (void)data;
    (void)end_stream;
    struct session *ss = p;
    return ss->delaying ? HERALD_HTTP_STOP_AND_BUFFER : HERALD_HTTP_CONTINUE;
}

static enum herald_http_status decode_trailers(void *p, struct herald_headers *trailers)
{
    (void)trailers;
    struct session *ss = p;
    return ss->delaying ? HERALD_HTTP_STOP : HERALD_HTTP_CONTINUE;
}

/* The response body of a rate-limited request goes through the pacer. */
static enum herald_http_status encode_data(void *p, struct herald_buf *data, bool end_stream)
{
    struct session *ss = p;
    return ss->pacer ? stream_pacer_data(ss->pacer, data, end_stream) : HERALD_HTTP_CONTINUE;
}

static enum herald_http_status encode_trailers(void *p, struct herald_headers *trailers)
{
    (void)trailers;
    struct session *ss = p;
    return ss->pacer ? stream_pacer_trailers(ss->pacer) : HERALD_HTTP_CONTINUE;
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
    .encode_data = encode_data,
    .encode_trailers = encode_trailers,
    .on_complete = on_complete,
    .route_config_schema = &fault_schema,
    .route_config_create = conf_create,
    .route_config_destroy = conf_destroy,
};

static const char *const type_urls[] = {
    "envoy.extensions.filters.http.fault.v3.HTTPFault",
    "envoy.config.filter.http.fault.v2.HTTPFault",
    NULL,
};

static const char *const aliases[] = { "envoy.fault", NULL };

HERALD_PLUGIN(.name = "envoy.filters.http.fault",
              .kind = HERALD_PLUGIN_HTTP_FILTER,
              .aliases = aliases,
              .type_urls = type_urls,
              .version = "1.0.0",
              .description = "fault injection: delays, aborts and slow responses for a share of requests",
              .config_schema = &fault_schema,
              .ops = &ops);
