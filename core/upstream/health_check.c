/* Active health checking on the main thread (Envoy's HealthCheckerImplBase
 * and its HTTP and TCP checkers).
 *
 * A session per host runs: interval timer -> check (connect if needed, send,
 * arm the timeout) -> success or failure -> next interval. The host's health
 * bits follow Envoy's rules:
 *   - a new host starts FAILED_ACTIVE_HC | PENDING_ACTIVE_HC (cluster.c);
 *   - a success clears PENDING; a failed host turns healthy after
 *     healthy_threshold successes in a row, or at once on its first check;
 *   - a healthy host turns unhealthy after unhealthy_threshold failures in a
 *     row (timeouts, connection failures, retriable statuses), or at once on
 *     an unexpected HTTP status (an "active" failure);
 *   - the next check comes after interval / unhealthy_interval, or the edge
 *     intervals while a transition is pending, or the no-traffic intervals
 *     while the cluster has never opened an upstream connection, plus jitter,
 *     clamped by the runtime keys health_check.min_interval/max_interval.
 * HTTP checks speak HTTP/1.1 through the core codec (h1.h) or HTTP/2 (h2c,
 * prior knowledge) through a small nghttp2 client session of their own: the
 * pool's h2 client lives on workers. A cluster with an UpstreamTlsContext
 * is checked over TLS with that context, as Envoy's checker uses the
 * cluster's transport socket: a connect-only check then passes only when
 * the handshake (and the peer's verification) does. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "herald/stats.h"
#include "http/h1.h"
#include "http/header_option.h"
#include "http/headers.h"
#include "log.h"
#include "net/tls.h"
#include "net/upstream_conn.h"
#include "runtime.h"
#include "upstream/cluster.h"
#include "upstream/health_check.h"

#define LOGC "health_check"

enum transition { T_UNCHANGED = 0, T_CHANGED, T_PENDING };
enum failure { FAIL_ACTIVE = 0, FAIL_NETWORK };

struct checker;

struct session {
    struct checker *ck;
    struct herald_host *host;               /* ref held */
    struct event *interval_timer, *timeout_timer;
    struct bufferevent *bev;                /* NULL: not connected */
    bool connected, in_flight, first_check, mark;
    uint32_t num_healthy, num_unhealthy;
    /* HTTP/1 */
    struct h1_codec *h1;
    int status;
    bool keep_alive, complete, conn_error;
    /* HTTP/2 */
    nghttp2_session *h2;
    int32_t stream_id;
    bool h2_stream_done, h2_stream_ok;
};

struct checker {
    struct cluster *cl;
    const struct health_check_cfg *cfg;
    char *authority;
    struct herald_header_options *headers_add;   /* cfg's request_headers_to_add */
    struct session **s; size_t n, cap;
    struct herald_stat *attempt, *success, *failure, *passive_failure, *network_failure, *verify_cluster,
        *healthy, *degraded;
};

static struct {
    struct event_base *base;
    struct checker **ck; size_t n, cap;
    uint64_t rng;
} hc;

static uint64_t rnd(void)
{
    /* xorshift64*: jitter needs no more */
    uint64_t x = hc.rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    hc.rng = x;
    return x * 0x2545f4914f6cdd1dull;
}

static void arm(struct event *ev, uint64_t ms)
{
    struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };
    evtimer_add(ev, &tv);
}

/* ------------------------------------------------------------ intervals */

static bool cluster_has_traffic(const struct checker *ck)
{
    return herald_stat_value(ck->cl->stats.upstream_cx_total) > 0;
}

static uint64_t next_interval(const struct checker *ck, bool healthy, enum transition t)
{
    const struct health_check_cfg *c = ck->cfg;
    uint64_t ms;

    if (cluster_has_traffic(ck)) {
        if (!healthy)
            ms = t == T_PENDING ? c->unhealthy_edge_interval_ms : c->unhealthy_interval_ms;
        else
            ms = t == T_PENDING ? c->healthy_edge_interval_ms : c->interval_ms;
    } else {
        ms = healthy && t != T_PENDING ? c->no_traffic_healthy_interval_ms : c->no_traffic_interval_ms;
    }
    uint64_t pct = (uint64_t)c->interval_jitter_percent * ms / 100;
    if (pct)
        ms += rnd() % pct;
    if (c->interval_jitter_ms)
        ms += rnd() % c->interval_jitter_ms;
    uint64_t lo = runtime_get_uint("health_check.min_interval", 0);
    uint64_t hi = runtime_get_uint("health_check.max_interval", UINT64_MAX);
    if (ms < lo)
        ms = lo;
    if (ms > hi)
        ms = hi;
    return ms;
}

/* ------------------------------------------------------------ results */

static void close_conn(struct session *s)
{
    if (s->h1) {
        h1_codec_free(s->h1);   /* deferred when called from its callback */
        s->h1 = NULL;
    }
    if (s->h2) {
        nghttp2_session_del(s->h2);
        s->h2 = NULL;
    }
    if (s->bev) {
        if (s->connected && s->ck->cl->cfg->tls)
            tls_shutdown(bufferevent_openssl_get_ssl(s->bev));
        bufferevent_free(s->bev);   /* with the SSL, if any */
        s->bev = NULL;
    }
    s->connected = false;
}

/* Other bits (the outlier detector's) are left alone. */
static void set_flags(struct session *s, unsigned set, unsigned clear)
{
    if (set)
        atomic_fetch_or(&s->host->health, set);
    if (clear)
        atomic_fetch_and(&s->host->health, ~clear);
}

static unsigned flags(const struct session *s)
{
    return atomic_load(&s->host->health);
}

/* Envoy's clearPendingFlag: clearing PENDING counts as a change (the host set
 * must be republished for /clusters and the LB). */
static enum transition clear_pending(struct session *s, enum transition t)
{
    if (flags(s) & HOST_PENDING_ACTIVE_HC) {
        set_flags(s, 0, HOST_PENDING_ACTIVE_HC);
        return T_CHANGED;
    }
    return t;
}

static void finish(struct session *s, bool healthy, enum transition t)
{
    s->in_flight = false;
    s->first_check = false;
    evtimer_del(s->timeout_timer);
    if (t == T_CHANGED)
        cluster_health_changed(s->ck->cl);
    arm(s->interval_timer, next_interval(s->ck, healthy, t));
}

static void handle_success(struct session *s)
{
    struct checker *ck = s->ck;
    enum transition t = T_UNCHANGED;

    s->num_unhealthy = 0;
    if (flags(s) & HOST_FAILED_ACTIVE_HC) {
        if (s->first_check || ++s->num_healthy >= ck->cfg->healthy_threshold) {
            set_flags(s, 0, HOST_FAILED_ACTIVE_HC);
            herald_gauge_add(ck->healthy, 1);
            t = T_CHANGED;
            log_info(LOGC, "cluster '%s': host %s is healthy", ck->cl->cfg->name, s->host->addr_str);
        } else {
            t = T_PENDING;
        }
    }
    t = clear_pending(s, t);
    herald_stat_inc(ck->success);
    finish(s, true, t);
}

static void handle_failure(struct session *s, enum failure type, bool retriable, const char *why)
{
    struct checker *ck = s->ck;
    enum transition t = T_UNCHANGED;

    s->num_healthy = 0;
    if (!(flags(s) & HOST_FAILED_ACTIVE_HC)) {
        if ((type == FAIL_ACTIVE && !retriable) || ++s->num_unhealthy >= ck->cfg->unhealthy_threshold) {
            set_flags(s, HOST_FAILED_ACTIVE_HC, 0);
            herald_gauge_add(ck->healthy, -1);
            t = T_CHANGED;
            log_warn(LOGC, "cluster '%s': host %s is unhealthy: %s", ck->cl->cfg->name, s->host->addr_str,
                     why);
        } else {
            t = T_PENDING;
        }
    }
    t = clear_pending(s, t);
    if (t != T_CHANGED && (s->first_check || ck->cfg->always_log_failures))
        log_info(LOGC, "cluster '%s': host %s failed its health check: %s", ck->cl->cfg->name,
                 s->host->addr_str, why);
    herald_stat_inc(ck->failure);
    if (type == FAIL_NETWORK)
        herald_stat_inc(ck->network_failure);
    finish(s, false, t);
}

static bool in_ranges(const struct hc_range *r, size_t n, int status)
{
    for (size_t i = 0; i < n; i++)
        if (status >= (int)r[i].start && status < (int)r[i].end)
            return true;
    return false;
}

static void http_result(struct session *s, int status)
{
    const struct health_check_cfg *c = s->ck->cfg;
    char why[64];

    if (in_ranges(c->expected, c->nexpected, status)) {
        handle_success(s);
        return;
    }
    snprintf(why, sizeof(why), "status %d", status);
    handle_failure(s, FAIL_ACTIVE, in_ranges(c->retriable, c->nretriable, status), why);
}

/* ------------------------------------------------------------ HTTP request */

static struct herald_headers *request_headers(const struct session *s)
{
    const struct health_check_cfg *c = s->ck->cfg;
    struct herald_headers *h = herald_headers_new();

    herald_headers_add(h, ":method", c->method);
    herald_headers_add(h, ":path", c->path);
    herald_headers_add(h, ":scheme", "http");
    herald_headers_add(h, ":authority", s->ck->authority);
    herald_headers_add(h, "user-agent", "Envoy/HC");
    header_options_apply_with(s->ck->headers_add, h, NULL, NULL);
    for (size_t i = 0; i < c->nheaders_remove; i++)
        if (c->headers_remove[i][0] != ':')
            herald_headers_remove(h, c->headers_remove[i]);
    return h;
}

/* ------------------------------------------------------------ HTTP/1.1 */

static void h1_on_headers(void *arg, struct herald_headers *h, bool end_stream)
{
    struct session *s = arg;
    const char *st = HEADERS_GET(h, ":status");

    s->status = st ? atoi(st) : 0;
    herald_headers_free(h);
}

static void h1_on_data(void *arg, struct evbuffer *chunk, bool end_stream)
{
    /* the body is not looked at; it is discarded on return */
}

static void h1_on_complete(void *arg)
{
    struct session *s = arg;

    s->complete = true;
    s->keep_alive = s->h1 && h1_codec_keep_alive(s->h1);
}

static void h1_on_error(void *arg, int http_status, const char *details)
{
    struct session *s = arg;

    s->conn_error = true;
}

static const struct h1_callbacks h1_cbs = {
    .on_headers = h1_on_headers,
    .on_data = h1_on_data,
    .on_complete = h1_on_complete,
    .on_error = h1_on_error,
};

static void h1_send(struct session *s)
{
    struct h1_encoder enc;
    struct herald_headers *h = request_headers(s);

    if (!s->h1)
        s->h1 = h1_codec_new(H1_CLIENT, NULL, &h1_cbs, s);
    s->status = 0;
    s->complete = s->conn_error = false;
    h1_codec_expect_response(s->h1, s->ck->cfg->method);
    h1_encoder_init(&enc, 0);
    h1_encode_request_headers(&enc, bufferevent_get_output(s->bev), h, true);
    herald_headers_free(h);
}

/* After bytes or EOF reached the codec. */
static void h1_settle(struct session *s, bool eof)
{
    if (s->complete) {
        int status = s->status;
        bool reuse = s->ck->cfg->reuse_connection && s->keep_alive && !eof;
        if (!reuse)
            close_conn(s);
        http_result(s, status);
    } else if (s->conn_error || eof) {
        close_conn(s);
        handle_failure(s, FAIL_NETWORK, false, eof ? "connection closed" : "malformed response");
    }
}

/* ------------------------------------------------------------ HTTP/2 (h2c) */

static int h2_on_header(nghttp2_session *ses, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                        const uint8_t *value, size_t valuelen, uint8_t flags_, void *arg)
{
    struct session *s = arg;

    if (frame->hd.type == NGHTTP2_HEADERS && frame->hd.stream_id == s->stream_id && namelen == 7 &&
        memcmp(name, ":status", 7) == 0 && valuelen < 8) {
        char buf[8];
        memcpy(buf, value, valuelen);
        buf[valuelen] = 0;
        if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE)
            s->status = atoi(buf);
    }
    return 0;
}

static int h2_on_close(nghttp2_session *ses, int32_t stream_id, uint32_t error_code, void *arg)
{
    struct session *s = arg;

    if (stream_id == s->stream_id) {
        s->h2_stream_done = true;
        s->h2_stream_ok = error_code == NGHTTP2_NO_ERROR && s->status > 0;
    }
    return 0;
}

static ssize_t h2_on_send(nghttp2_session *ses, const uint8_t *data, size_t len, int fl, void *arg)
{
    struct session *s = arg;

    if (!s->bev || evbuffer_add(bufferevent_get_output(s->bev), data, len) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return (ssize_t)len;
}

static int h2_start(struct session *s)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_settings_entry iv[] = { { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 } };

    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return -1;
    nghttp2_session_callbacks_set_send_callback(cbs, h2_on_send);
    nghttp2_session_callbacks_set_on_header_callback(cbs, h2_on_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2_on_close);
    int rv = nghttp2_session_client_new(&s->h2, cbs, s);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0)
        return -1;
    return nghttp2_submit_settings(s->h2, NGHTTP2_FLAG_NONE, iv, ARRAY_SIZE(iv)) == 0 ? 0 : -1;
}

static int h2_send(struct session *s)
{
    struct herald_headers *h = request_headers(s);
    const char *k, *v;
    nghttp2_nv nv[64];
    size_t n = 0;

    if (!s->h2 && h2_start(s) < 0) {
        herald_headers_free(h);
        return -1;
    }
    /* pseudo-headers first, names lower case (the map keeps them first) */
    for (size_t i = 0; n < ARRAY_SIZE(nv) && herald_headers_at(h, i, &k, &v); i++) {
        if (strcasecmp(k, "connection") == 0 || strcasecmp(k, "host") == 0 ||
            strcasecmp(k, "transfer-encoding") == 0)
            continue;
        nv[n++] = (nghttp2_nv){ (uint8_t *)k, (uint8_t *)v, strlen(k), strlen(v), NGHTTP2_NV_FLAG_NONE };
    }
    s->status = 0;
    s->h2_stream_done = s->h2_stream_ok = false;
    s->stream_id = nghttp2_submit_request(s->h2, NULL, nv, n, NULL, s);
    int rv = s->stream_id > 0 && nghttp2_session_send(s->h2) == 0 ? 0 : -1;
    herald_headers_free(h);
    return rv;
}

static void h2_settle(struct session *s, bool eof, bool err)
{
    if (s->h2_stream_done) {
        int status = s->status;
        bool ok = s->h2_stream_ok;
        if (!s->ck->cfg->reuse_connection || eof || err || !nghttp2_session_want_read(s->h2))
            close_conn(s);
        if (ok)
            http_result(s, status);
        else
            handle_failure(s, FAIL_NETWORK, false, "stream reset");
    } else if (eof || err) {
        close_conn(s);
        handle_failure(s, FAIL_NETWORK, false, eof ? "connection closed" : "HTTP/2 protocol error");
    }
}

/* ------------------------------------------------------------ TCP */

/* Envoy's TcpHealthCheckMatcher: each expected segment, in order, anywhere after the previous. */
static bool tcp_match(const struct health_check_cfg *c, struct evbuffer *in)
{
    struct evbuffer_ptr pos;

    evbuffer_ptr_set(in, &pos, 0, EVBUFFER_PTR_SET);
    for (size_t i = 0; i < c->nreceive; i++) {
        struct evbuffer_ptr start = pos;
        pos = evbuffer_search(in, (const char *)c->receive[i].data, c->receive[i].len, &start);
        if (pos.pos < 0)
            return false;
        if (evbuffer_ptr_set(in, &pos, c->receive[i].len, EVBUFFER_PTR_ADD) < 0)
            return false;
    }
    return true;
}

/* ------------------------------------------------------------ connection */

static void send_check(struct session *s)
{
    const struct health_check_cfg *c = s->ck->cfg;

    if (c->kind == HC_TCP) {
        if (c->send.len)
            bufferevent_write(s->bev, c->send.data, c->send.len);
        return;
    }
    if (!c->http2) {
        h1_send(s);
        return;
    }
    if (h2_send(s) < 0) {
        close_conn(s);
        handle_failure(s, FAIL_NETWORK, false, "cannot start an HTTP/2 request");
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    const struct health_check_cfg *c = s->ck->cfg;
    struct evbuffer *in = bufferevent_get_input(bev);

    if (!s->in_flight) {
        /* nothing asked: a stray byte (or a GOAWAY); HTTP/2 reads it, the rest drop it */
        if (!s->h2) {
            evbuffer_drain(in, evbuffer_get_length(in));
            return;
        }
    }
    if (c->kind == HC_TCP) {
        if (tcp_match(c, in)) {
            evbuffer_drain(in, evbuffer_get_length(in));
            if (!c->reuse_connection)
                close_conn(s);
            handle_success(s);
        }
        return;
    }
    if (!c->http2) {
        h1_codec_dispatch(s->h1, in);
        if (s->bev == bev && s->in_flight)
            h1_settle(s, false);
        return;
    }
    size_t len = evbuffer_get_length(in);
    ssize_t rv = nghttp2_session_mem_recv(s->h2, evbuffer_pullup(in, (ssize_t)len), len);
    evbuffer_drain(in, len);
    bool err = rv < 0 || nghttp2_session_send(s->h2) != 0;
    if (s->in_flight)
        h2_settle(s, false, err);
    else if (err || !nghttp2_session_want_read(s->h2))
        close_conn(s);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct session *s = arg;
    const struct health_check_cfg *c = s->ck->cfg;

    if (what & BEV_EVENT_CONNECTED) {
        s->connected = true;
        struct tls_ctx *tls = s->ck->cl->cfg->tls;
        if (tls && tls_handshake_done(tls, bufferevent_openssl_get_ssl(bev)) < 0) {
            close_conn(s);
            handle_failure(s, FAIL_NETWORK, false, "TLS peer refused");
            return;
        }
        if (c->kind == HC_TCP && c->nreceive == 0) {
            /* a connect-only check: done, and the connection is of no more use (as Envoy) */
            close_conn(s);
            handle_success(s);
            return;
        }
        if (c->kind == HC_HTTP && s->in_flight)
            send_check(s);
        return;
    }
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    if (!s->in_flight) {
        close_conn(s);   /* the peer closed an idle kept connection */
        return;
    }
    if (!s->connected) {
        struct tls_ctx *tls = s->ck->cl->cfg->tls;
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        if (tls && getpeername(bufferevent_getfd(bev), (struct sockaddr *)&peer, &plen) == 0) {
            /* TCP connected: the handshake failed (counted in the cluster's ssl.* stats) */
            char why[256];
            unsigned long e = 0, x;
            while ((x = bufferevent_get_openssl_error(bev)))
                if (!e)
                    e = x;
            tls_handshake_failed(tls, bufferevent_openssl_get_ssl(bev), e, why, sizeof(why));
            log_debug(LOGC, "cluster '%s': TLS handshake with %s failed: %s", s->ck->cl->cfg->name,
                      s->host->addr_str, why);
        }
        close_conn(s);
        handle_failure(s, FAIL_NETWORK, false, "connection failure");
        return;
    }
    if (c->kind == HC_HTTP && !c->http2 && s->h1) {
        h1_codec_dispatch(s->h1, bufferevent_get_input(bev));
        if (s->bev == bev && s->in_flight && !s->complete && !s->conn_error)
            h1_codec_dispatch_eof(s->h1);
        if (s->in_flight)
            h1_settle(s, true);
        return;
    }
    if (c->kind == HC_HTTP && s->h2) {
        h2_settle(s, true, false);
        return;
    }
    close_conn(s);
    handle_failure(s, FAIL_NETWORK, false, "connection closed");
}

static int connect_host(struct session *s)
{
    struct sockaddr_storage ss = s->host->hc_addrlen ? s->host->hc_addr : s->host->addr;
    socklen_t len = s->host->hc_addrlen ? s->host->hc_addrlen : s->host->addrlen;

    /* Endpoint.health_check_config.port_value */
    if (s->host->hc_port && ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&ss)->sin_port = htons(s->host->hc_port);
    else if (s->host->hc_port && ss.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons(s->host->hc_port);
    /* the cluster's transport socket, as its traffic gets: TLS (CONNECTED comes
     * after the handshake; the bufferevent frees the SSL), a PROXY header
     * (LOCAL / UNKNOWN: no client is behind a check) */
    SSL *ssl;
    struct bufferevent *connect_bev;
    s->bev = upstream_bev_new(hc.base, s->ck->cl->cfg, s->host, NULL, 0, &ssl, &connect_bev);
    if (!s->bev)
        return -1;
    bufferevent_setcb(s->bev, on_read, NULL, on_event, s);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    s->connected = false;
    if (bufferevent_socket_connect(connect_bev, (struct sockaddr *)&ss, (int)len) < 0) {
        close_conn(s);
        return -1;
    }
    return 0;
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;

    if (!s->in_flight)
        return;
    close_conn(s);
    handle_failure(s, FAIL_NETWORK, false, "timeout");
}

static void on_interval(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    const struct health_check_cfg *c = s->ck->cfg;

    herald_stat_inc(s->ck->attempt);
    s->in_flight = true;
    arm(s->timeout_timer, c->timeout_ms);
    if (!s->bev) {
        if (connect_host(s) < 0) {
            handle_failure(s, FAIL_NETWORK, false, "cannot connect");
            return;
        }
        if (c->kind == HC_TCP)
            send_check(s);   /* buffered until connected, as Envoy writes right after connect() */
        return;
    }
    send_check(s);
}

/* ------------------------------------------------------------ sessions */

static struct session *session_new(struct checker *ck, struct herald_host *h)
{
    struct session *s = xcalloc(1, sizeof(*s));

    s->ck = ck;
    s->host = h;
    host_get(h);
    h->hc = s;
    s->first_check = true;
    s->mark = true;
    s->interval_timer = evtimer_new(hc.base, on_interval, s);
    s->timeout_timer = evtimer_new(hc.base, on_timeout, s);
    if (!(atomic_load(&h->health) & HOST_FAILED_ACTIVE_HC))
        herald_gauge_add(ck->healthy, 1);
    arm(s->interval_timer, ck->cfg->initial_jitter_ms ? rnd() % ck->cfg->initial_jitter_ms : 0);
    return s;
}

static void session_free(struct session *s)
{
    close_conn(s);
    event_free(s->interval_timer);
    event_free(s->timeout_timer);
    if (!(atomic_load(&s->host->health) & HOST_FAILED_ACTIVE_HC))
        herald_gauge_add(s->ck->healthy, -1);
    if (s->host->hc == s)
        s->host->hc = NULL;
    host_put(s->host);
    free(s);
}

/* Gives every host of the cluster's current set a session and drops the
 * sessions of hosts that left. Main thread (cluster.c's membership callback). */
static void checker_sync(struct checker *ck)
{
    struct host_set *hs = ck->cl->current;
    size_t keep = 0;

    for (size_t i = 0; i < ck->n; i++)
        ck->s[i]->mark = false;
    for (size_t i = 0; hs && i < hs->nhosts; i++) {
        struct herald_host *h = hs->hosts[i];
        struct session *s = h->hc;
        if (s && s->ck == ck)
            s->mark = true;
        else
            *VEC_PUSH(ck->s, ck->n, ck->cap) = session_new(ck, h);
    }
    for (size_t i = 0; i < ck->n; i++) {
        if (ck->s[i]->mark)
            ck->s[keep++] = ck->s[i];
        else
            session_free(ck->s[i]);
    }
    ck->n = keep;
}

static void on_membership(struct cluster *cl)
{
    for (size_t i = 0; i < hc.n; i++)
        if (hc.ck[i]->cl == cl)
            checker_sync(hc.ck[i]);
}

static struct checker *checker_new(struct cluster *cl, const struct health_check_cfg *cfg)
{
    struct checker *ck = xcalloc(1, sizeof(*ck));
    char *p = xasprintf("cluster.%s.health_check", cl->cfg->name);

    ck->cl = cl;
    ck->cfg = cfg;
    ck->authority = xstrdup(cfg->host ? cfg->host : cl->cfg->name);
    char *err = NULL;
    if (herald_header_options_new(cfg->headers_add, &ck->headers_add, &err) < 0) {
        /* health_checks_validate() refused the config before this could happen */
        log_error(LOGC, "cluster %s: health check request_headers_to_add: %s", cl->cfg->name, err);
        free(err);
    }
    ck->attempt = herald_counter(p, "attempt");
    ck->success = herald_counter(p, "success");
    ck->failure = herald_counter(p, "failure");
    ck->passive_failure = herald_counter(p, "passive_failure");
    ck->network_failure = herald_counter(p, "network_failure");
    ck->verify_cluster = herald_counter(p, "verify_cluster");
    ck->healthy = herald_gauge(p, "healthy");
    ck->degraded = herald_gauge(p, "degraded");
    free(p);
    return ck;
}

void health_checks_validate(const struct bootstrap *boot, struct cfg_diag *d)
{
    for (size_t i = 0; i < boot->nclusters; i++)
        for (size_t j = 0; j < boot->clusters[i].nhealth_checks; j++) {
            struct herald_header_options *o;
            char *err = NULL;
            if (herald_header_options_new(boot->clusters[i].health_checks[j].headers_add, &o, &err) < 0)
                diag_error_take(d, err);
            herald_header_options_free(o);
        }
}

int health_check_start(struct event_base *base)
{
    hc.base = base;
    hc.rng = (mono_ms() * 0x9e3779b97f4a7c15ull) | 1;
    for (size_t i = 0; i < cluster_manager_count(); i++) {
        struct cluster *cl = cluster_manager_at(i);
        if (!cl->cfg->nhealth_checks)
            continue;
        struct checker *ck = checker_new(cl, &cl->cfg->health_checks[0]);
        *VEC_PUSH(hc.ck, hc.n, hc.cap) = ck;
        checker_sync(ck);
    }
    if (hc.n)
        cluster_set_membership_cb(on_membership);
    return 0;
}

void health_check_shutdown(void)
{
    cluster_set_membership_cb(NULL);
    for (size_t i = 0; i < hc.n; i++) {
        struct checker *ck = hc.ck[i];
        for (size_t j = 0; j < ck->n; j++)
            session_free(ck->s[j]);
        free(ck->s);
        free(ck->authority);
        herald_header_options_free(ck->headers_add);
        free(ck);
    }
    free(hc.ck);
    hc.ck = NULL;
    hc.n = hc.cap = 0;
}
