/* router: one session per request. It answers from the route (404 without
 * one, direct responses, redirects) or forwards the request: picks the
 * cluster and a host, sends a copy of the request headers (rewritten by the
 * route) and streams the body, then streams the response back into the
 * encoder chain. Retries (per the route's retry_policy) go to a freshly
 * chosen host after a jittered exponential back-off, only while no response
 * byte has reached the downstream and the request body seen so far fits the
 * replay buffer. The route timeout runs from the end of the request to the
 * end of the response; per_try_timeout bounds each attempt until its
 * response headers.
 *
 * Re-entrancy: the connection manager never tears a stream down while one
 * of its filters' callbacks (or an upstream callback of the router) is on
 * the stack, so the session outlives every callback; what can change under
 * a call into the stream is its state (a local reply, a reset, on_complete
 * from a later turn), which `done` and `replied` record. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "router.h"

#define RETRY_BUFFER_LIMIT (64 * 1024) /* request body kept for replays */
#define DEFAULT_BACKOFF_BASE_MS 25
#define COMPONENT "router"

struct session {
    struct router_conf *conf;
    struct herald_http_stream *s;
    const struct herald_route *route;
    char *cluster;                         /* cluster_inline, or malloc'd when longer */
    char cluster_inline[64];
    struct router_cluster_stats *cs;
    struct router_cluster_stats *vcs;      /* the request's virtual cluster, NULL: none */
    const struct herald_retry_policy *rp;  /* route lifetime, or &own_rp */
    struct herald_retry_policy own_rp;     /* the route's, changed by x-envoy-retry-on / -max-retries */

    /* the request as received: a try a retry may follow sends a copy, the
     * last one takes it (NULL after) */
    struct herald_headers *req;
    struct herald_headers *trailers;       /* kept for replays */
    struct herald_buf *body;               /* kept for replays while it fits */
    size_t body_len;
    bool body_overflow;                    /* more than RETRY_BUFFER_LIMIT: no (further) retries */
    bool down_end;                         /* the request is complete */
    bool upgrade;                          /* Upgrade (or CONNECT) kept by the connection manager */
    bool connect;                          /* ... a CONNECT */
    bool terminate;                        /* ... which this proxy ends (connect_config): ss->tun */
    bool upgraded;                         /* 101 (CONNECT: 2xx) passed on: raw bytes both ways */

    uint64_t hash;                         /* the route's hash_policy result, 0: none (random) */
    char *set_cookie;                      /* a cookie hash_policy generated: goes on the response */

    struct herald_http_upstream *u;
    struct connect_tunnel *tun;            /* instead of u for a CONNECT ended here */
    char host[80];
    uint32_t attempts, retries_left;
    struct herald_host **tried;            /* retry_host_predicate previous_hosts: hosts picked so far */
    size_t ntried;
    struct shadow **shadows;               /* request_mirror_policies */
    size_t nshadows;
    bool retry_held;                       /* counts against the cluster's max_retries */
    uint64_t try_start_ms;
    bool response_started;                 /* headers went to the downstream */
    bool replied;                          /* answered (local reply or response over): drop request bytes */
    bool decode_paused_up, decode_paused_wait;
    bool down_blocked;                     /* the downstream is over its limit: keep the upstream paused */

    uint64_t timeout_ms, per_try_ms;
    struct herald_timer *global, *per_try, *backoff;
    bool done;                             /* on_complete ran: no more stream calls */
};

/* A counter of the cluster's, and of the request's virtual cluster's when
 * it has one and the counter (Envoy's virtual cluster stats are fewer). */
#define CHARGE(ss, field)                                                  \
    do {                                                                   \
        herald_stat_inc((ss)->cs->field);                                  \
        if ((ss)->vcs && (ss)->vcs->field)                                 \
            herald_stat_inc((ss)->vcs->field);                             \
    } while (0)

static void count_response(struct session *ss, int status, bool retried);

static const struct herald_http_upstream_cbs upstream_cbs;

/* ---------------------------------------------------------------- helpers */

static uint64_t next_random(void)
{
    static __thread uint64_t s;
    if (!s) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&s;
        if (!s)
            s = 0x9e3779b97f4a7c15ull;
    }
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

static struct herald_headers *headers_copy(const struct herald_headers *h)
{
    return herald_headers_copy(h);
}

void router_buf_copy(struct herald_buf *dst, const struct herald_buf *src)
{
    size_t len = herald_buf_len(src);
    struct iovec small[16], *vec = small;
    if (!len)
        return;
    int n = herald_buf_peek(src, len, small, 16);
    if (n > 16) {
        vec = calloc((size_t)n, sizeof(*vec));
        if (!vec)
            abort();
        n = herald_buf_peek(src, len, vec, n);
    }
    for (int i = 0; i < n && len; i++) {
        size_t k = vec[i].iov_len < len ? vec[i].iov_len : len;
        herald_buf_add(dst, vec[i].iov_base, k);
        len -= k;
    }
    if (vec != small)
        free(vec);
}

static void timer_stop(struct herald_timer *t)
{
    if (t)
        herald_timer_cancel(t);
}

static void free_upstream(struct session *ss)
{
    if (ss->u) {
        struct herald_http_upstream *u = ss->u;
        ss->u = NULL;
        herald_http_upstream_free(u);
    }
    if (ss->tun) {
        struct connect_tunnel *t = ss->tun;
        ss->tun = NULL;
        connect_tunnel_free(t);
    }
    if (ss->decode_paused_up) {
        ss->decode_paused_up = false;
        if (!ss->done && !ss->decode_paused_wait)
            herald_http_stream_pause_decoding(ss->s, false);
    }
}

static void local_reply(struct session *ss, int status, const char *body, const char *details,
                        const char *flags)
{
    timer_stop(ss->global);
    timer_stop(ss->per_try);
    timer_stop(ss->backoff);
    free_upstream(ss);
    ss->replied = true;
    if (ss->done)
        return;
    if (ss->decode_paused_wait) {
        ss->decode_paused_wait = false;
        herald_http_stream_pause_decoding(ss->s, false);
    }
    herald_http_stream_send_local_reply(ss->s, status, body, details, flags);
}

/* The router's http.<stat_prefix>.* counters (no_route, no_cluster,
 * rq_redirect, rq_direct_response, rq_total,
 * rq_reset_after_downstream_response_started) live in the connection manager. */
static void count_http(struct session *ss, const char *name)
{
    struct herald_stat *st = herald_http_stream_counter(ss->s, name);
    if (st)
        herald_stat_inc(st);
}

/* ---------------------------------------------------------------- retries */

static void retry_release(struct session *ss)
{
    if (!ss->retry_held)
        return;
    ss->retry_held = false;
    herald_cluster_retry_end(herald_cluster_get(ss->cluster), herald_route_priority(ss->route));
}

/* Whether a retry may follow the try in progress (or about to start): only
 * then are the request's headers, body and trailers kept for a replay. A
 * route without retry_policy keeps none of them. */
static bool may_replay(const struct session *ss)
{
    return ss->rp && ss->retries_left > 0 && !ss->upgrade;
}

/* The retry circuit breaker comes last, as in Envoy: a retry over the
 * cluster's max_retries is not made (upstream_rq_retry_overflow) and the
 * failure at hand stands. A retry counts until the next decision or the end. */
static bool retry_possible(struct session *ss)
{
    if (!may_replay(ss) || ss->response_started || ss->body_overflow || ss->done || ss->replied)
        return false;
    retry_release(ss);
    if (!herald_cluster_retry_begin(herald_cluster_get(ss->cluster), herald_route_priority(ss->route))) {
        CHARGE(ss, rq_retry_overflow);
        return false;
    }
    ss->retry_held = true;
    return true;
}

static bool status_retriable(const struct session *ss, int status)
{
    const struct herald_retry_policy *rp = ss->rp;
    if (!rp)
        return false;
    if ((rp->on & HERALD_RETRY_5XX) && status >= 500 && status <= 599)
        return true;
    if ((rp->on & HERALD_RETRY_GATEWAY_ERROR) && status >= 502 && status <= 504)
        return true;
    if ((rp->on & HERALD_RETRY_RETRIABLE_4XX) && status == 409)
        return true;
    if (rp->on & HERALD_RETRY_RETRIABLE_CODES)
        for (size_t i = 0; i < rp->nretriable_status_codes; i++)
            if (rp->retriable_status_codes[i] == (uint32_t)status)
                return true;
    return false;
}

/* Envoy counts a reset as the 503 it turns into: 5xx and gateway-error retry it too. */
static bool reset_retriable(const struct session *ss, enum herald_upstream_reset why)
{
    unsigned on = ss->rp ? ss->rp->on : 0;
    switch (why) {
    case HERALD_UPSTREAM_RESET_CONNECT_FAILURE:
        return on & (HERALD_RETRY_CONNECT_FAILURE | HERALD_RETRY_RESET | HERALD_RETRY_5XX |
                     HERALD_RETRY_GATEWAY_ERROR);
    case HERALD_UPSTREAM_RESET_REMOTE:
    case HERALD_UPSTREAM_RESET_PROTOCOL:
        return on & (HERALD_RETRY_RESET | HERALD_RETRY_5XX | HERALD_RETRY_GATEWAY_ERROR);
    case HERALD_UPSTREAM_RESET_OVERFLOW:
    case HERALD_UPSTREAM_RESET_LOCAL:
        return false;
    }
    return false;
}

/* Envoy's jittered exponential back-off: uniform in [0, min(base * (2^n - 1), max)). */
static uint64_t backoff_ms(const struct session *ss)
{
    uint64_t base = ss->rp && ss->rp->backoff_base_ms ? ss->rp->backoff_base_ms : DEFAULT_BACKOFF_BASE_MS;
    uint64_t max = ss->rp && ss->rp->backoff_max_ms ? ss->rp->backoff_max_ms : base * 10;
    unsigned n = ss->attempts < 32 ? ss->attempts : 32;
    uint64_t upper = base * ((1ull << n) - 1);
    if (upper > max || upper / base != (1ull << n) - 1)
        upper = max;
    return upper ? next_random() % upper : 0;
}

static void on_backoff(struct herald_timer *t, void *arg);
static void on_per_try_timeout(struct herald_timer *t, void *arg);

static void schedule_retry(struct session *ss)
{
    free_upstream(ss);
    timer_stop(ss->per_try);
    ss->retries_left--;
    CHARGE(ss, rq_retry);
    uint64_t ms = backoff_ms(ss);
    HERALD_LOGF(HERALD_LOG_DEBUG, COMPONENT, "[S%llu] retrying in %llu ms (%u left)",
                (unsigned long long)herald_http_stream_id(ss->s), (unsigned long long)ms, ss->retries_left);
    if (!ss->backoff)
        ss->backoff = herald_timer_new(on_backoff, ss);
    herald_timer_arm(ss->backoff, ms);
}

/* ---------------------------------------------------------------- tries */

/* per_try and backoff timers exist only for routes that retry */
static void arm_per_try(struct session *ss)
{
    if (!ss->per_try)
        ss->per_try = herald_timer_new(on_per_try_timeout, ss);
    herald_timer_arm(ss->per_try, ss->per_try_ms);
}

static void arm_request_timers(struct session *ss)
{
    if (ss->timeout_ms && !ss->upgraded)
        herald_timer_arm(ss->global, ss->timeout_ms);
    if (ss->u && ss->per_try_ms && !ss->response_started)
        arm_per_try(ss);
}

static void upstream_failed(struct session *ss, enum herald_upstream_reset why);

/* Decimal digits of v into buf (>= 21 bytes); per request, so no printf. */
static const char *u64_str(char *buf, uint64_t v)
{
    char *p = buf + 20;
    *p = '\0';
    do
        *--p = (char)('0' + v % 10);
    while (v /= 10);
    return p;
}

static bool was_tried(const struct session *ss, const struct herald_host *h)
{
    for (size_t i = 0; i < ss->ntried; i++)
        if (ss->tried[i] == h)
            return true;
    return false;
}

/* The cluster's pick (in the subset the route's metadata_match and the
 * stream's envoy.lb metadata select, for a cluster with lb_subset_config);
 * with previous_hosts, a retry asks again (up to host_selection_max_attempts
 * times) while the pick was already tried, and keeps the last one, as Envoy
 * does when every host has been tried. */
static struct herald_host *choose_host(struct session *ss, struct herald_cluster *c)
{
    struct herald_host *h = herald_http_stream_choose_host(ss->s, ss->route, c, ss->hash, 0);
    if (!h || !ss->rp || !ss->rp->other_hosts)
        return h;
    for (uint32_t i = 0; i < ss->rp->host_selection_max_attempts && was_tried(ss, h); i++) {
        struct herald_host *again = herald_http_stream_choose_host(ss->s, ss->route, c, ss->hash, i + 1);
        if (!again)
            break;
        h = again;
    }
    if (!was_tried(ss, h)) {
        ss->tried = realloc(ss->tried, (ss->ntried + 1) * sizeof(*ss->tried));
        if (!ss->tried)
            abort();
        ss->tried[ss->ntried++] = h;
    }
    return h;
}

/* The stream's request body was held while no upstream could take it. */
static void release_wait(struct session *ss)
{
    if (ss->decode_paused_wait) {
        ss->decode_paused_wait = false;
        if (!ss->decode_paused_up)
            herald_http_stream_pause_decoding(ss->s, false);
    }
}

/* A CONNECT ended here: no request goes upstream, a TCP connection does. */
static void start_tunnel(struct session *ss, struct herald_cluster *c, struct herald_host *h)
{
    enum herald_upstream_reset why = HERALD_UPSTREAM_RESET_CONNECT_FAILURE;
    ss->attempts++;
    ss->try_start_ms = herald_now_ms();
    ss->tun = connect_tunnel_start(c, h, herald_http_stream_conn(ss->s), &upstream_cbs, ss, &why);
    if (!ss->tun) {
        upstream_failed(ss, why);
        return;
    }
    if (ss->down_blocked)
        connect_tunnel_pause_reading(ss->tun, true);
    if (ss->down_end) {
        /* the client's end came with its CONNECT (HTTP/2 END_STREAM on the HEADERS) */
        struct herald_buf *b = herald_buf_new();
        connect_tunnel_send(ss->tun, b, true);
        herald_buf_free(b);
    }
    release_wait(ss);
}

static void start_try(struct session *ss)
{
    struct herald_cluster *c = herald_cluster_get(ss->cluster);
    if (!c) {
        /* the cluster went away between tries */
        local_reply(ss, herald_route_cluster_not_found_code(ss->route), "", "cluster_not_found", "NC");
        return;
    }
    struct herald_host *h = choose_host(ss, c);
    if (!h) {
        herald_http_stream_set_upstream(ss->s, ss->cluster, NULL);
        local_reply(ss, 503, "no healthy upstream", "no_healthy_upstream", "UH");
        return;
    }
    const char *addr = herald_host_address(h);
    size_t alen = strlen(addr);
    if (alen >= sizeof(ss->host))
        alen = sizeof(ss->host) - 1;
    memcpy(ss->host, addr, alen);
    ss->host[alen] = '\0';
    herald_http_stream_set_upstream(ss->s, ss->cluster, ss->host);
    if (ss->terminate) {
        start_tunnel(ss, c, h);
        return;
    }

    /* the last try takes the kept request itself; others send a copy */
    bool last = !may_replay(ss);
    struct herald_headers *hdrs = last ? ss->req : headers_copy(ss->req);
    if (last)
        ss->req = NULL;
    herald_route_apply_request_stream(ss->route, hdrs, herald_host_hostname(h), ss->s);
    uint64_t expected = ss->per_try_ms ? ss->per_try_ms : ss->timeout_ms;
    if (!ss->conf->suppress_envoy_headers && expected && !ss->upgrade) {
        char num[24];
        herald_headers_set(hdrs, "x-envoy-expected-rq-timeout-ms", u64_str(num, expected));
    }
    ss->attempts++;
    ss->try_start_ms = herald_now_ms();
    ss->u = herald_http_upstream_new_for(c, h, &upstream_cbs, ss, herald_route_priority(ss->route),
                                         herald_http_stream_conn(ss->s));
    if (!ss->u) {
        herald_headers_free(hdrs);
        upstream_failed(ss, HERALD_UPSTREAM_RESET_CONNECT_FAILURE);
        return;
    }
    herald_http_upstream_set_stream(ss->u, ss->s);
    if (ss->down_blocked)
        herald_http_upstream_pause_reading(ss->u, true);
    bool has_body = ss->body && herald_buf_len(ss->body) > 0;
    herald_http_upstream_send_headers(ss->u, hdrs, ss->down_end && !has_body && !ss->trailers);
    if (has_body) {
        struct herald_buf *b = herald_buf_new();
        router_buf_copy(b, ss->body);
        herald_http_upstream_send_data(ss->u, b, ss->down_end && !ss->trailers);
        herald_buf_free(b);
    }
    if (ss->trailers)
        herald_http_upstream_send_trailers(ss->u, headers_copy(ss->trailers));
    if (ss->body_overflow && ss->body) {
        /* no replay can follow this try */
        herald_buf_free(ss->body);
        ss->body = NULL;
    }
    release_wait(ss);
    if (ss->down_end && ss->per_try_ms)
        arm_per_try(ss);
}

static void on_backoff(struct herald_timer *t, void *arg)
{
    struct session *ss = arg;
    if (!ss->done && !ss->replied)
        start_try(ss);
}

static void fail_reply(struct session *ss, enum herald_upstream_reset why, bool limit)
{
    const char *reason, *flag;
    switch (why) {
    case HERALD_UPSTREAM_RESET_CONNECT_FAILURE:
        reason = "connection_failure", flag = "UF";
        break;
    case HERALD_UPSTREAM_RESET_OVERFLOW:
        reason = "overflow", flag = "UO";
        break;
    case HERALD_UPSTREAM_RESET_REMOTE:
        /* an HTTP/1 upstream closing mid-exchange is Envoy's connection termination */
        reason = "connection_termination", flag = "UC";
        break;
    case HERALD_UPSTREAM_RESET_PROTOCOL:
        reason = "protocol_error", flag = "UPE";
        break;
    default:
        reason = "local_reset", flag = "LR";
        break;
    }
    char details[96], body[160], flags[16];
    snprintf(details, sizeof(details), "upstream_reset_before_response_started{%s}", reason);
    snprintf(body, sizeof(body),
             "upstream connect error or disconnect/reset before headers. reset reason: %s",
             why == HERALD_UPSTREAM_RESET_CONNECT_FAILURE ? "connection failure" :
             why == HERALD_UPSTREAM_RESET_OVERFLOW ? "overflow" :
             why == HERALD_UPSTREAM_RESET_REMOTE ? "connection termination" :
             why == HERALD_UPSTREAM_RESET_PROTOCOL ? "protocol error" : "local reset");
    snprintf(flags, sizeof(flags), "%s%s", flag, limit ? ",URX" : "");
    if (why == HERALD_UPSTREAM_RESET_OVERFLOW && !ss->conf->suppress_envoy_headers)
        herald_http_stream_add_local_reply_header(ss->s, "x-envoy-overloaded", "true");
    count_response(ss, 503, false); /* Envoy's chargeUpstreamAbort: the code the upstream "gave" */
    local_reply(ss, 503, body, details, flags);
}

static void upstream_failed(struct session *ss, enum herald_upstream_reset why)
{
    timer_stop(ss->per_try);
    if (ss->done || ss->replied)
        return;
    bool retriable = reset_retriable(ss, why);
    if (!ss->response_started) {
        if (retriable && retry_possible(ss)) {
            schedule_retry(ss);
            return;
        }
        bool limit = retriable && ss->rp && ss->rp->num_retries && ss->retries_left == 0;
        if (limit)
            CHARGE(ss, rq_retry_limit_exceeded);
        fail_reply(ss, why, limit);
        return;
    }
    /* the response is under way: all we can do is cut the stream */
    timer_stop(ss->global);
    free_upstream(ss);
    count_http(ss, "rq_reset_after_downstream_response_started");
    ss->replied = true;
    herald_http_stream_add_response_flag(ss->s, why == HERALD_UPSTREAM_RESET_REMOTE ? "UC" : "UR");
    herald_http_stream_reset(ss->s);
}

static void on_global_timeout(struct herald_timer *t, void *arg)
{
    struct session *ss = arg;
    if (ss->done || ss->replied)
        return;
    CHARGE(ss, rq_timeout);
    if (ss->response_started) {
        timer_stop(ss->per_try);
        free_upstream(ss);
        ss->replied = true;
        herald_http_stream_add_response_flag(ss->s, "UT");
        herald_http_stream_reset(ss->s);
        return;
    }
    count_response(ss, 504, false);
    local_reply(ss, 504, "upstream request timeout", "upstream_response_timeout", "UT");
}

static void on_per_try_timeout(struct herald_timer *t, void *arg)
{
    struct session *ss = arg;
    if (ss->done || ss->replied || ss->response_started)
        return;
    CHARGE(ss, rq_per_try_timeout);
    free_upstream(ss);
    unsigned on = ss->rp ? ss->rp->on : 0;
    bool retriable = on & (HERALD_RETRY_5XX | HERALD_RETRY_GATEWAY_ERROR | HERALD_RETRY_RESET);
    if (retriable && retry_possible(ss)) {
        schedule_retry(ss);
        return;
    }
    bool limit = retriable && ss->rp && ss->rp->num_retries && ss->retries_left == 0;
    if (limit)
        CHARGE(ss, rq_retry_limit_exceeded);
    count_response(ss, 504, false);
    local_reply(ss, 504, "upstream request timeout", "upstream_per_try_timeout", limit ? "UT,URX" : "UT");
}

/* The response is complete: stop the clocks and give the connection back. */
static void response_over(struct session *ss)
{
    timer_stop(ss->global);
    timer_stop(ss->per_try);
    if (ss->upgraded && !ss->down_end)
        return; /* a half-close of the tunnel: the client's direction goes on */
    ss->replied = true;
    uint64_t took = herald_now_ms() - ss->try_start_ms;
    if (ss->cs->rq_time)
        herald_histogram_record(ss->cs->rq_time, took);
    if (ss->vcs && ss->vcs->rq_time)
        herald_histogram_record(ss->vcs->rq_time, took);
    free_upstream(ss);
}

/* ---------------------------------------------------------------- upstream callbacks */

static void up_ready(void *arg)
{
}

static void count_code(struct router_cluster_stats *cs, int status, bool retried)
{
    struct herald_stat *st = router_code_stat(cs, status, retried);
    if (st)
        herald_stat_inc(st);
    if (!retried) {
        herald_stat_inc(cs->rq_completed);
        if (status >= 100 && status <= 599)
            herald_stat_inc(cs->rq_xx[status / 100]);
    }
}

static void count_response(struct session *ss, int status, bool retried)
{
    if (!ss->conf->dynamic_stats)
        return;
    count_code(ss->cs, status, retried);
    if (ss->vcs && !retried)
        count_code(ss->vcs, status, false);
}

static void up_headers(void *arg, struct herald_headers *h, bool end_stream)
{
    struct session *ss = arg;
    if (ss->done || ss->replied) {
        herald_headers_free(h);
        return;
    }
    const char *st = herald_headers_get(h, ":status");
    int status = st ? atoi(st) : 0;
    if (status >= 100 && status < 200 && status != 101) {
        /* informational: the connection manager answers Expect itself */
        herald_headers_free(h);
        return;
    }
    if (status == 101 && !ss->upgrade) {
        herald_headers_free(h);
        upstream_failed(ss, HERALD_UPSTREAM_RESET_PROTOCOL);
        return;
    }
    if (!ss->response_started && status_retriable(ss, status)) {
        if (retry_possible(ss)) {
            count_response(ss, status, true);
            herald_headers_free(h);
            schedule_retry(ss);
            return;
        }
        if (ss->rp && ss->rp->num_retries && ss->retries_left == 0) {
            CHARGE(ss, rq_retry_limit_exceeded);
            herald_http_stream_add_response_flag(ss->s, "URX");
        }
    } else if (ss->attempts > 1) {
        CHARGE(ss, rq_retry_success);
    }
    count_response(ss, status, false);
    timer_stop(ss->per_try);
    if (!ss->conf->suppress_envoy_headers) {
        char num[24];
        herald_headers_set(h, "x-envoy-upstream-service-time", u64_str(num, herald_now_ms() - ss->try_start_ms));
    }
    ss->response_started = true;
    if (status == 101 || (ss->connect && status >= 200 && status < 300)) {
        ss->upgraded = true;
        timer_stop(ss->global);
    }
    if (ss->set_cookie)
        herald_headers_add(h, "set-cookie", ss->set_cookie);
    if (end_stream)
        response_over(ss);
    /* the route's response_headers_to_add/remove are the connection manager's */
    herald_http_stream_encode_headers(ss->s, h, end_stream);
    if (!end_stream && !ss->done && herald_http_stream_encode_blocked(ss->s)) {
        ss->down_blocked = true;
        if (ss->u)
            herald_http_upstream_pause_reading(ss->u, true);
        else if (ss->tun)
            connect_tunnel_pause_reading(ss->tun, true);
    }
}

static void up_data(void *arg, struct herald_buf *data, bool end_stream)
{
    struct session *ss = arg;
    if (ss->done || !ss->response_started || (ss->replied && !ss->u)) {
        herald_buf_drain(data, herald_buf_len(data));
        return;
    }
    if (end_stream)
        response_over(ss);
    herald_http_stream_encode_data(ss->s, data, end_stream);
}

static void up_trailers(void *arg, struct herald_headers *t)
{
    struct session *ss = arg;
    if (ss->done || !ss->response_started || (ss->replied && !ss->u)) {
        herald_headers_free(t);
        return;
    }
    response_over(ss);
    herald_http_stream_encode_trailers(ss->s, t);
}

static void up_reset(void *arg, enum herald_upstream_reset why)
{
    struct session *ss = arg;
    ss->u = NULL; /* gone with the callback */
    ss->tun = NULL;
    if (ss->decode_paused_up) {
        ss->decode_paused_up = false;
        if (!ss->done && !ss->decode_paused_wait)
            herald_http_stream_pause_decoding(ss->s, false);
    }
    HERALD_LOGF(HERALD_LOG_DEBUG, COMPONENT, "[S%llu] upstream %s reset (%d)",
                ss->done ? 0ull : (unsigned long long)herald_http_stream_id(ss->s), ss->host, (int)why);
    upstream_failed(ss, why);
}

static void up_watermark(void *arg, bool above)
{
    struct session *ss = arg;
    if (ss->done || ss->decode_paused_up == above)
        return;
    ss->decode_paused_up = above;
    if (!ss->decode_paused_wait)
        herald_http_stream_pause_decoding(ss->s, above);
}

static const struct herald_http_upstream_cbs upstream_cbs = {
    .size = sizeof(struct herald_http_upstream_cbs),
    .on_ready = up_ready,
    .on_headers = up_headers,
    .on_data = up_data,
    .on_trailers = up_trailers,
    .on_reset = up_reset,
    .on_watermark = up_watermark,
};

/* ---------------------------------------------------------------- filter callbacks */

static void *session_new(void *conf, struct herald_http_stream *s)
{
    /* malloc, not calloc: one per request, and glibc's calloc skips its
     * per-thread cache */
    struct session *ss = malloc(sizeof(*ss));
    if (!ss)
        return NULL;
    *ss = (struct session){.conf = conf, .s = s};
    return ss;
}

static void on_complete(void *p)
{
    struct session *ss = p;
    ss->done = true;
    ss->replied = true;
    if (ss->global)
        herald_timer_free(ss->global);
    if (ss->per_try)
        herald_timer_free(ss->per_try);
    if (ss->backoff)
        herald_timer_free(ss->backoff);
    ss->global = ss->per_try = ss->backoff = NULL;
    free_upstream(ss);
    retry_release(ss);
}

static void session_destroy(void *p)
{
    struct session *ss = p;
    if (!ss->done)
        on_complete(ss);
    herald_headers_free(ss->req);
    herald_headers_free(ss->trailers);
    if (ss->body)
        herald_buf_free(ss->body);
    if (ss->cluster != ss->cluster_inline)
        free(ss->cluster);
    free(ss->set_cookie);
    free(ss->tried);
    for (size_t i = 0; i < ss->nshadows; i++)
        shadow_release(ss->shadows[i]);
    free(ss->shadows);
    free(ss);
}

/* request_mirror_policies: one shadow per policy that takes this request
 * and whose cluster has a healthy host. */
static void start_shadows(struct session *ss, const struct herald_headers *headers, bool end_stream)
{
    size_t n = herald_route_mirror_count(ss->route);
    ss->shadows = calloc(n, sizeof(*ss->shadows));
    if (!ss->shadows)
        abort();
    for (size_t i = 0; i < n; i++) {
        const char *cluster = herald_route_mirror_cluster(ss->route, i, headers, next_random());
        struct shadow *sh = cluster ? shadow_start(ss->s, ss->route, i, cluster, headers, end_stream, ss->timeout_ms)
                                    : NULL;
        if (sh)
            ss->shadows[ss->nshadows++] = sh;
    }
}

static enum herald_http_status redirect(struct session *ss, const struct herald_headers *req)
{
    const char *scheme = herald_headers_get(req, ":scheme");
    char *loc = herald_route_redirect_location(ss->route, req, scheme ? scheme : "http");
    int code = herald_route_redirect_code(ss->route);
    char num[16];

    ss->replied = true;
    struct herald_headers *h = herald_headers_new();
    snprintf(num, sizeof(num), "%d", code ? code : 301);
    herald_headers_add(h, ":status", num);
    if (loc)
        herald_headers_add(h, "location", loc);
    herald_headers_add(h, "content-length", "0");
    free(loc);
    herald_http_stream_encode_headers(ss->s, h, true);
    return HERALD_HTTP_STOP;
}

static bool parse_ms(const char *v, uint64_t *out)
{
    char *end;
    if (!v || !*v || *v == '-')
        return false;
    unsigned long long n = strtoull(v, &end, 10);
    if (*end)
        return false;
    *out = n;
    return true;
}

static unsigned parse_retry_on(const char *v)
{
    static const struct { const char *name; unsigned bit; } conds[] = {
        {"5xx", HERALD_RETRY_5XX}, {"gateway-error", HERALD_RETRY_GATEWAY_ERROR},
        {"connect-failure", HERALD_RETRY_CONNECT_FAILURE}, {"reset", HERALD_RETRY_RESET},
        {"retriable-status-codes", HERALD_RETRY_RETRIABLE_CODES},
        {"retriable-4xx", HERALD_RETRY_RETRIABLE_4XX},
        {"refused-stream", HERALD_RETRY_REFUSED_STREAM},
    };
    unsigned bits = 0;
    while (*v) {
        size_t n = strcspn(v, ",");
        const char *t = v;
        size_t k = n;
        while (k && (*t == ' ' || *t == '\t'))
            t++, k--;
        while (k && (t[k - 1] == ' ' || t[k - 1] == '\t'))
            k--;
        for (size_t i = 0; i < sizeof(conds) / sizeof(conds[0]); i++)
            if (strlen(conds[i].name) == k && !strncasecmp(t, conds[i].name, k))
                bits |= conds[i].bit;
        v += n;
        if (*v)
            v++;
    }
    return bits;
}

/* Envoy's request headers for the router (the connection manager strips them
 * from external requests): they override the route's timeouts and extend its
 * retry policy, and are not forwarded. */
static void apply_envoy_headers(struct session *ss)
{
    uint64_t n;
    const char *ro = herald_headers_get(ss->req, "x-envoy-retry-on");
    const char *mr = herald_headers_get(ss->req, "x-envoy-max-retries");

    if (parse_ms(herald_headers_get(ss->req, "x-envoy-upstream-rq-timeout-ms"), &n))
        ss->timeout_ms = n;
    if (parse_ms(herald_headers_get(ss->req, "x-envoy-upstream-rq-per-try-timeout-ms"), &n))
        ss->per_try_ms = n;
    if (ro || mr) {
        if (ss->rp)
            ss->own_rp = *ss->rp;
        else
            ss->own_rp = (struct herald_retry_policy){.num_retries = 1};
        if (ro)
            ss->own_rp.on |= parse_retry_on(ro);
        if (parse_ms(mr, &n))
            ss->own_rp.num_retries = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
        ss->rp = &ss->own_rp;
        ss->retries_left = ss->rp->num_retries;
    }
    herald_headers_remove(ss->req, "x-envoy-upstream-rq-timeout-ms");
    herald_headers_remove(ss->req, "x-envoy-upstream-rq-per-try-timeout-ms");
    herald_headers_remove(ss->req, "x-envoy-retry-on");
    herald_headers_remove(ss->req, "x-envoy-max-retries");
}

/* Once per request, so that retries and the generated cookie agree. */
static void compute_hash(struct session *ss, const struct herald_headers *headers)
{
    if (herald_route_hash_policy_count(ss->route) == 0)
        return;   /* the common case: no hash, and no seed to format */
    struct herald_conn *c = herald_http_stream_conn(ss->s);
    char seed[160];
    const char *remote = c ? herald_conn_remote_str(c) : NULL, *local = c ? herald_conn_local_str(c) : NULL;
    snprintf(seed, sizeof(seed), "%s%s", remote ? remote : "", local ? local : "");
    if (!herald_route_hash(ss->route, headers, herald_http_stream_downstream_address(ss->s), seed, &ss->hash,
                           &ss->set_cookie))
        ss->hash = 0;
}

static enum herald_http_status decode_headers(void *p, struct herald_headers *headers, bool end_stream)
{
    struct session *ss = p;

    ss->route = herald_http_stream_route(ss->s);
    if (!ss->route) {
        count_http(ss, "no_route");
        local_reply(ss, 404, "", "route_not_found", "NR");
        return HERALD_HTTP_STOP;
    }
    switch (herald_route_kind(ss->route)) {
    case HERALD_ROUTE_DIRECT_RESPONSE: {
        size_t len = 0;
        const char *body = herald_route_direct_body(ss->route, &len);
        /* the local reply takes a C string: a body with a NUL byte is cut there */
        char *copy = body ? strndup(body, len) : NULL;
        count_http(ss, "rq_direct_response");
        local_reply(ss, herald_route_direct_status(ss->route), copy, "direct_response", NULL);
        free(copy);
        return HERALD_HTTP_STOP;
    }
    case HERALD_ROUTE_REDIRECT:
        count_http(ss, "rq_redirect");
        return redirect(ss, headers);
    case HERALD_ROUTE_FORWARD:
        break;
    }

    const char *cluster = herald_route_cluster(ss->route, headers, next_random());
    if (!cluster || !herald_cluster_get(cluster)) {
        HERALD_LOGF(HERALD_LOG_DEBUG, COMPONENT, "[S%llu] unknown cluster '%s'",
                    (unsigned long long)herald_http_stream_id(ss->s), cluster ? cluster : "(no header)");
        count_http(ss, "no_cluster");
        local_reply(ss, herald_route_cluster_not_found_code(ss->route), "", "cluster_not_found", "NC");
        return HERALD_HTTP_STOP;
    }
    size_t clen = strlen(cluster);
    ss->cluster = clen < sizeof(ss->cluster_inline) ? ss->cluster_inline : malloc(clen + 1);
    if (!ss->cluster)
        abort();
    memcpy(ss->cluster, cluster, clen + 1);
    ss->cs = router_cluster_stats(ss->conf, cluster);
    const char *vprefix;
    if (herald_http_stream_virtual_cluster(ss->s, &vprefix)) {
        ss->vcs = router_vcluster_stats(ss->conf, vprefix);
        herald_stat_inc(ss->vcs->rq_total);
    }
    ss->req = headers_copy(headers);
    compute_hash(ss, headers);
    const char *method = herald_headers_get(headers, ":method");
    ss->connect = method && !strcmp(method, "CONNECT");
    ss->upgrade = herald_headers_get(headers, "upgrade") != NULL || ss->connect;
    ss->terminate = ss->connect && herald_route_connect_terminates(ss->route);
    ss->rp = herald_route_retry_policy(ss->route);
    ss->retries_left = ss->rp ? ss->rp->num_retries : 0;
    ss->timeout_ms = herald_route_timeout_ms(ss->route);
    ss->per_try_ms = ss->rp ? ss->rp->per_try_timeout_ms : 0;
    apply_envoy_headers(ss);
    if (ss->per_try_ms && ss->timeout_ms && ss->per_try_ms >= ss->timeout_ms)
        ss->per_try_ms = 0; /* the route timeout comes first anyway */
    ss->global = herald_timer_new(on_global_timeout, ss);
    ss->down_end = end_stream;
    count_http(ss, "rq_total");

    if (herald_route_mirror_count(ss->route) && !ss->upgrade)
        start_shadows(ss, headers, end_stream);
    start_try(ss);
    if (end_stream && !ss->replied && !ss->done)
        arm_request_timers(ss);
    return HERALD_HTTP_STOP;
}

static enum herald_http_status decode_data(void *p, struct herald_buf *data, bool end_stream)
{
    struct session *ss = p;
    size_t len = herald_buf_len(data);

    for (size_t i = 0; i < ss->nshadows; i++)
        shadow_data(ss->shadows[i], data, end_stream);
    if (ss->done || ss->replied || !ss->cluster) {
        herald_buf_drain(data, len);
        return HERALD_HTTP_STOP;
    }
    if (!ss->upgrade) {
        /* between tries (no upstream) every byte must be kept for the next
         * one; during a try, what fits, if a retry may follow */
        if (!ss->u || (may_replay(ss) && !ss->body_overflow && ss->body_len + len <= RETRY_BUFFER_LIMIT)) {
            if (!ss->body)
                ss->body = herald_buf_new();
            router_buf_copy(ss->body, data);
        } else if (ss->body) {
            herald_buf_free(ss->body);
            ss->body = NULL;
        }
        ss->body_len += len;
        if (ss->body_len > RETRY_BUFFER_LIMIT)
            ss->body_overflow = true;
    }
    if (end_stream)
        ss->down_end = true;
    if (ss->u) {
        herald_http_upstream_send_data(ss->u, data, end_stream);
    } else if (ss->tun) {
        connect_tunnel_send(ss->tun, data, end_stream);
    } else if (ss->body_overflow && !ss->decode_paused_wait && !ss->upgrade) {
        /* waiting for the next try with more than the replay buffer: stop the client */
        ss->decode_paused_wait = true;
        if (!ss->decode_paused_up)
            herald_http_stream_pause_decoding(ss->s, true);
    }
    herald_buf_drain(data, herald_buf_len(data));
    if (end_stream && !ss->done && !ss->replied)
        arm_request_timers(ss);
    return HERALD_HTTP_STOP;
}

static enum herald_http_status decode_trailers(void *p, struct herald_headers *trailers)
{
    struct session *ss = p;
    for (size_t i = 0; i < ss->nshadows; i++)
        shadow_trailers(ss->shadows[i], trailers);

    if (ss->done || ss->replied || !ss->cluster)
        return HERALD_HTTP_STOP;
    ss->down_end = true;
    if ((!ss->u || may_replay(ss)) && !ss->body_overflow && !ss->trailers)
        ss->trailers = headers_copy(trailers);
    if (ss->u) {
        herald_http_upstream_send_trailers(ss->u, headers_copy(trailers));
    } else if (ss->tun) {
        /* a tunnel has no place for trailers: they end the client's side */
        struct herald_buf *none = herald_buf_new();
        connect_tunnel_send(ss->tun, none, true);
        herald_buf_free(none);
    }
    arm_request_timers(ss);
    return HERALD_HTTP_STOP;
}

static void on_watermark(void *p, bool above)
{
    struct session *ss = p;
    ss->down_blocked = above;
    if (ss->u)
        herald_http_upstream_pause_reading(ss->u, above);
    else if (ss->tun)
        connect_tunnel_pause_reading(ss->tun, above);
}

const struct herald_http_filter_ops router_ops = {
    .size = sizeof(struct herald_http_filter_ops),
    .config_create = router_config_create,
    .config_destroy = router_config_destroy,
    .session_new = session_new,
    .session_destroy = session_destroy,
    .decode_headers = decode_headers,
    .decode_data = decode_data,
    .decode_trailers = decode_trailers,
    .on_watermark = on_watermark,
    .on_complete = on_complete,
};
