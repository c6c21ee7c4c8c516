/* HTTP/2 upstream connections (nghttp2 client sessions) and the upstream
 * requests as streams on them. See h2_client.h.
 *
 * nghttp2 is driven with mem_recv/mem_send: bytes from the TCP layer go in,
 * what it has to write goes out through herald_upstream_write (stopped while
 * the socket is over its high watermark). The receive windows are given back
 * by hand (no automatic WINDOW_UPDATE): when the owner takes the data.
 * Owner callbacks run from nghttp2 callbacks, so the connection is never
 * freed inside them: `dispatching`/`running` defer the free and the
 * maintenance (binding pending requests, idle timer, closing) to the end. */
#include "config.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buffer.h"
#include "common.h"
#include "herald/stats.h"
#include "herald/timer.h"
#include "http/conn_manager.h"
#include "http/h2_client.h"
#include "http/h2_keepalive.h"
#include "http/headers.h"
#include "log.h"
#include "mem_cache.h"
#include "net/upstream_conn.h"
#include "upstream/cluster.h"
#include "upstream/outlier.h"
#include "worker.h"

/* nghttp2 assumes this many streams until the peer's SETTINGS say otherwise */
#define PEER_STREAMS_BEFORE_SETTINGS 100u
#define WRITE_CHUNK (64 * 1024)

struct h2_conn {
    struct http_pool *pool;
    struct herald_upstream *up;        /* NULL once the TCP layer dropped it */
    nghttp2_session *sess;             /* made once connected */
    struct h2_conn *prev, *next;       /* in pool->h2_conns */
    struct herald_http_upstream *streams;
    unsigned nstreams;
    uint32_t nrequests;                /* streams bound so far (max_requests_per_connection) */
    struct event *idle_ev;
    struct herald_timer *send_soon;    /* new requests' frames: once per loop iteration */
    struct h2_keepalive *keepalive;    /* PINGs (connection_keepalive), NULL: none */
    struct h2_frame_counts counts;     /* what the keepalive reads */
    struct evbuffer *wbuf;
    unsigned dispatching;              /* inside nghttp2_session_mem_recv */
    bool running;                      /* inside h2c_run */
    bool again;                        /* more to write or look after once the current pass ends */
    bool connected, draining, dead, above_high, failed;
};

static void h2c_run(struct h2_conn *hc);
static void h2c_close(struct h2_conn *hc, enum herald_close_mode mode, enum herald_upstream_reset why);
static void deliver(struct herald_http_upstream *r);
static uint32_t buffer_limit(const struct herald_http_upstream *r);

static const struct cluster_cfg *cfg_of(const struct h2_conn *hc)
{
    return hc->pool->cluster->cfg;
}

static struct h2_stats *stats_of(const struct h2_conn *hc)
{
    return &hc->pool->pc->h2;
}

static bool busy(const struct h2_conn *hc)
{
    return hc->dispatching || hc->running;
}

/* Something changed: write and look after the pool now, or after the pass that is running. */
static void h2c_poke(struct h2_conn *hc)
{
    if (hc->dead)
        return;
    if (busy(hc)) {
        hc->again = true;
        return;
    }
    h2c_run(hc);
}

/* A new request or more of its body: written with the others that come in
 * the same loop iteration (one nghttp2 send loop, one socket write for
 * all of them) rather than one by one. */
static void h2c_poke_soon(struct h2_conn *hc)
{
    if (!hc->dead)
        herald_timer_arm(hc->send_soon, 0);
}

static void on_send_soon(struct herald_timer *t, void *arg)
{
    (void)t;
    h2c_poke(arg);
}

/* ------------------------------------------------------------ lists */

static void conn_link(struct h2_conn *hc)
{
    struct http_pool *p = hc->pool;
    hc->prev = NULL;
    hc->next = p->h2_conns;
    if (hc->next)
        hc->next->prev = hc;
    p->h2_conns = hc;
    p->nh2++;
    p->nh2_connecting++;
}

static void conn_unlink(struct h2_conn *hc)
{
    struct http_pool *p = hc->pool;
    if (hc->prev)
        hc->prev->next = hc->next;
    else
        p->h2_conns = hc->next;
    if (hc->next)
        hc->next->prev = hc->prev;
    hc->prev = hc->next = NULL;
    p->nh2--;
    if (!hc->connected)
        p->nh2_connecting--;
}

static void stream_link(struct h2_conn *hc, struct herald_http_upstream *r)
{
    r->h2 = hc;
    r->h2prev = NULL;
    r->h2next = hc->streams;
    if (r->h2next)
        r->h2next->h2prev = r;
    hc->streams = r;
    hc->nstreams++;
    herald_gauge_add(stats_of(hc)->streams_active, 1);
}

static void stream_unlink(struct herald_http_upstream *r)
{
    struct h2_conn *hc = r->h2;
    if (r->h2prev)
        r->h2prev->h2next = r->h2next;
    else
        hc->streams = r->h2next;
    if (r->h2next)
        r->h2next->h2prev = r->h2prev;
    r->h2prev = r->h2next = NULL;
    r->h2 = NULL;
    hc->nstreams--;
    herald_gauge_add(stats_of(hc)->streams_active, -1);
}

/* ------------------------------------------------------------ capacity and binding */

static uint32_t capacity(const struct h2_conn *hc)
{
    uint32_t cap = cfg_of(hc)->http2.max_concurrent_streams;
    uint32_t peer = PEER_STREAMS_BEFORE_SETTINGS;
    if (hc->sess)
        peer = nghttp2_session_get_remote_settings(hc->sess, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    return peer < cap ? peer : cap;
}

static bool usable(const struct h2_conn *hc)
{
    uint32_t max = cfg_of(hc)->max_requests_per_connection;
    return hc->connected && hc->sess && !hc->draining && !hc->dead && !hc->failed && !pool_draining() &&
           hc->nstreams < capacity(hc) && (!max || hc->nrequests < max);
}

static void stream_bind(struct h2_conn *hc, struct herald_http_upstream *r)
{
    uint32_t max = cfg_of(hc)->max_requests_per_connection;
    evtimer_del(hc->idle_ev);
    stream_link(hc, r);
    if (max && ++hc->nrequests >= max) {
        hc->draining = true; /* the last stream: no more after it */
        herald_stat_inc(hc->pool->cluster->stats.upstream_cx_max_requests);
    } else if (!max) {
        hc->nrequests++;
    }
    ureq_bound_h2(r); /* writes what the owner queued (which may end hc: not touched after) */
}

struct herald_upstream *h2_conn_upstream(const struct h2_conn *hc)
{
    return hc ? hc->up : NULL;
}

bool h2_pool_bind(struct http_pool *p, struct herald_http_upstream *r)
{
    for (struct h2_conn *hc = p->h2_conns; hc; hc = hc->next)
        if (usable(hc)) {
            stream_bind(hc, r);
            return true;
        }
    return false;
}

static void serve_pending(struct h2_conn *hc)
{
    struct http_pool *p = hc->pool;
    while (p->pending_head && usable(hc)) {
        struct herald_http_upstream *r = p->pending_head;
        ureq_pending_remove(r);
        stream_bind(hc, r);
    }
}

/* After a connection went away or filled up: pending requests may need another. */
static void refill(struct http_pool *p)
{
    enum herald_upstream_reset why;
    if (p->npending && p->proto != POOL_H1 && h2_pool_grow(p, &why) < 0)
        pool_purge_pending(p, why);
}

/* ------------------------------------------------------------ writing */

static void write_out(struct h2_conn *hc)
{
    if (!hc->sess || !hc->up || hc->failed)
        return;
    while (!hc->above_high && hc->up) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(hc->sess, &data);
        if (n < 0) {
            log_debug("http2", "%s: nghttp2_session_mem_send: %s", hc->pool->host->addr_str,
                      nghttp2_strerror((int)n));
            hc->failed = true;
            break;
        }
        if (n == 0)
            break;
        evbuffer_add(hc->wbuf, data, (size_t)n);
        if (evbuffer_get_length(hc->wbuf) >= WRITE_CHUNK)
            herald_upstream_write(hc->up, ev_buf(hc->wbuf), false); /* may say ABOVE_WRITE_HIGH */
    }
    if (hc->up && evbuffer_get_length(hc->wbuf))
        herald_upstream_write(hc->up, ev_buf(hc->wbuf), false);
}

static void h2c_free(struct h2_conn *hc)
{
    h2_keepalive_stop(hc->keepalive);
    if (hc->sess)
        nghttp2_session_del(hc->sess);
    evbuffer_free(hc->wbuf);
    event_free(hc->idle_ev);
    herald_timer_free(hc->send_soon);
    pool_unref(hc->pool);
    free(hc);
}

/* Closes after a GOAWAY(NO_ERROR) once nothing is in flight. */
static void close_graceful(struct h2_conn *hc)
{
    if (hc->sess && hc->up && !hc->failed) {
        nghttp2_session_terminate_session(hc->sess, NGHTTP2_NO_ERROR);
        write_out(hc);
    }
    h2c_close(hc, HERALD_CLOSE_FLUSH, HERALD_UPSTREAM_RESET_REMOTE);
}

static void maintain(struct h2_conn *hc)
{
    struct http_pool *p = hc->pool;
    if (hc->failed) {
        herald_stat_inc(p->cluster->stats.upstream_cx_protocol_error);
        h2c_close(hc, HERALD_CLOSE_RESET, HERALD_UPSTREAM_RESET_PROTOCOL);
        refill(p);
        return;
    }
    if (!hc->connected)
        return;
    serve_pending(hc);
    if (hc->dead)
        return;
    if (hc->nstreams == 0) {
        bool done = hc->sess && !nghttp2_session_want_read(hc->sess) && !nghttp2_session_want_write(hc->sess);
        if (hc->draining || pool_draining() || done) {
            close_graceful(hc);
            refill(p);
            return;
        }
        uint64_t ms = cfg_of(hc)->http_idle_timeout_ms;
        if (ms && !evtimer_pending(hc->idle_ev, NULL)) {
            struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
            evtimer_add(hc->idle_ev, &tv);
        }
    }
    if (p->npending)
        refill(p); /* this one is full or going: another connection */
}

static void h2c_run(struct h2_conn *hc)
{
    if (hc->dead)
        return;
    hc->running = true;
    int rounds = 0;
    do {
        hc->again = false;
        write_out(hc);
        if (!hc->dead)
            maintain(hc);
    } while (hc->again && !hc->dead && ++rounds < 64);
    hc->running = false;
    if (hc->dead)
        h2c_free(hc);
}

/* ------------------------------------------------------------ closing */

static void h2c_close(struct h2_conn *hc, enum herald_close_mode mode, enum herald_upstream_reset why)
{
    if (hc->dead)
        return;
    struct http_pool *p = hc->pool;
    hc->dead = true;
    conn_unlink(hc);
    evtimer_del(hc->idle_ev);
    h2_keepalive_stop(hc->keepalive);
    hc->keepalive = NULL;
    if (hc->nstreams)
        herald_stat_inc(p->cluster->stats.upstream_cx_destroy_with_active_rq);
    while (hc->streams) {
        struct herald_http_upstream *r = hc->streams;
        stream_unlink(r);
        if (r->h2_in_end || r->end_delivered)
            continue; /* its response is all here: delivered once the owner reads again */
        herald_stat_inc(p->pc->upstream_rq_rx_reset);
        ureq_fail(r, why);
    }
    if (hc->up)
        herald_upstream_close(hc->up, mode);
    hc->up = NULL;
    if (!busy(hc))
        h2c_free(hc);
}

/* ------------------------------------------------------------ headers */

/* connection-specific fields, and host (:authority says it in HTTP/2) */
static bool hop_by_hop(const char *name)
{
    return headers_hop_of(name, strlen(name)) || !strcmp(name, "host");
}

struct nv_list {
    nghttp2_nv *nv;
    size_t n;
};

static void nv_add(struct nv_list *l, const char *name, const char *value)
{
    l->nv[l->n++] = (nghttp2_nv){.name = (uint8_t *)name, .namelen = strlen(name), .value = (uint8_t *)value,
                                 .valuelen = strlen(value), .flags = NGHTTP2_NV_FLAG_NONE};
}

/* The regular fields of h (names are lower-case in a header map), without
 * hop-by-hop ones (te: only "trailers"). */
static void nv_add_fields(struct nv_list *l, const struct herald_headers *h)
{
    const char *name, *value;
    for (size_t i = 0; herald_headers_at(h, i, &name, &value); i++) {
        if (name[0] == ':')
            continue;
        if (hop_by_hop(name) || (!strcmp(name, "te") && strcasecmp(value, "trailers") != 0))
            continue;
        nv_add(l, name, !strcmp(name, "te") ? "trailers" : value);
    }
}

static void nv_init(struct nv_list *l, const struct herald_headers *h, size_t extra)
{
    size_t n = herald_headers_count(h) + extra;
    l->nv = xcalloc(n ? n : 1, sizeof(*l->nv));
    l->n = 0;
}

static void nv_free(struct nv_list *l)
{
    free(l->nv);
}

/* ------------------------------------------------------------ the request side */

static ssize_t data_read(nghttp2_session *sess, int32_t sid, uint8_t *buf, size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *user)
{
    struct herald_http_upstream *r = nghttp2_session_get_stream_user_data(sess, sid);
    if (!r)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the owner left mid-body: the stream is reset */
    size_t avail = r->h2_out ? evbuffer_get_length(r->h2_out) : 0;
    size_t n = avail < length ? avail : length;
    if (n)
        evbuffer_remove(r->h2_out, buf, n);
    if (avail == n) {
        if (r->h2_out_end) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            if (r->h2_out_trailers) {
                struct nv_list l;
                nv_init(&l, r->h2_out_trailers, 0);
                nv_add_fields(&l, r->h2_out_trailers);
                if (nghttp2_submit_trailer(sess, sid, l.nv, l.n) == 0)
                    *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
                nv_free(&l);
                herald_headers_free(r->h2_out_trailers);
                r->h2_out_trailers = NULL;
            }
        } else if (n == 0) {
            r->h2_deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    uint32_t limit = buffer_limit(r);
    if (r->wm_above && !r->wm_low_due && avail - n <= limit / 2) {
        r->wm_low_due = true; /* told from the event loop, not from inside nghttp2 */
        ureq_kick(r);
    }
    return (ssize_t)n;
}

static uint32_t buffer_limit(const struct herald_http_upstream *r)
{
    uint32_t l = r->pcl->cluster->cfg->buffer_limit;
    return l ? l : DEFAULT_BUFFER_LIMIT;
}

/* The stream cannot be sent: it fails, the connection stays. */
static int encode_failed(struct herald_http_upstream *r, const char *what)
{
    log_debug("http2", "%s: cannot send the request %s", r->host->addr_str, what);
    h2_stream_detach(r, true);
    ureq_fail(r, HERALD_UPSTREAM_RESET_LOCAL);
    return -1;
}

int h2_encode_headers(struct herald_http_upstream *r, struct herald_headers *h, bool end)
{
    struct h2_conn *hc = r->h2;
    const char *method = HEADERS_GET(h, ":method");
    if (!method || headers_upgrade_requested(h)) {
        /* extended CONNECT (RFC 8441: WebSocket over HTTP/2) is not spoken to upstreams */
        herald_headers_free(h);
        return encode_failed(r, "(an upgrade over HTTP/2)");
    }
    /* CONNECT (RFC 9113 8.5): :authority only, the stream is the tunnel */
    bool connect = !strcmp(method, "CONNECT");
    const char *authority = HEADERS_GET(h, ":authority");
    const char *path = HEADERS_GET(h, ":path");
    struct nv_list l;
    nv_init(&l, h, 4);
    nv_add(&l, ":method", method);
    if (!connect)
        nv_add(&l, ":scheme", hc->up && hc->up->ssl ? "https" : "http");
    nv_add(&l, ":authority", authority ? authority : r->host->addr_str);
    if (!connect)
        nv_add(&l, ":path", path ? path : "/");
    nv_add_fields(&l, h);
    nghttp2_data_provider dp = {.source.ptr = NULL, .read_callback = data_read};
    /* a CONNECT's end is the tunnel's half-close: an empty DATA with
     * END_STREAM after the HEADERS, never END_STREAM on them */
    bool end_on_headers = end && !connect;
    int32_t sid = nghttp2_submit_request(hc->sess, NULL, l.nv, l.n, end_on_headers ? NULL : &dp, r);
    nv_free(&l);
    herald_headers_free(h);
    if (sid < 0)
        return encode_failed(r, nghttp2_strerror(sid));
    r->stream_id = sid;
    r->headers_sent = true;
    if (end) {
        r->h2_out_end = !end_on_headers;
        ureq_mark_sent(r);
    }
    h2c_poke_soon(hc);
    return 0;
}

static void resume_body(struct herald_http_upstream *r)
{
    struct h2_conn *hc = r->h2;
    if (r->h2_deferred && r->stream_id) {
        r->h2_deferred = false;
        nghttp2_session_resume_data(hc->sess, r->stream_id);
    }
    h2c_poke_soon(hc);
}

int h2_encode_data(struct herald_http_upstream *r, struct evbuffer *data, bool end)
{
    if (!r->h2_out)
        r->h2_out = evbuffer_new();
    evbuffer_add_buffer(r->h2_out, data);
    if (end) {
        r->h2_out_end = true;
        ureq_mark_sent(r);
    }
    uint32_t limit = buffer_limit(r);
    struct h2_conn *hc = r->h2;
    resume_body(r);
    /* what nghttp2 could not take now (window, socket) waits here: over the limit, the owner stops */
    if (r->h2 == hc && r->h2_out && evbuffer_get_length(r->h2_out) > limit && !r->wm_above) {
        r->wm_low_due = false;
        ureq_watermark(r, true);
    }
    return 0;
}

int h2_encode_trailers(struct herald_http_upstream *r, struct herald_headers *t)
{
    herald_headers_free(r->h2_out_trailers);
    r->h2_out_trailers = t;
    r->h2_out_end = true;
    ureq_mark_sent(r);
    resume_body(r);
    return 0;
}

void h2_stream_detach(struct herald_http_upstream *r, bool reset)
{
    struct h2_conn *hc = r->h2;
    if (!hc)
        return;
    stream_unlink(r);
    if (hc->dead || !hc->sess || !r->stream_id)
        goto out;
    nghttp2_session_set_stream_user_data(hc->sess, r->stream_id, NULL);
    /* what it holds unread goes back to the connection's window (the stream's is moot) */
    if (r->h2_in && evbuffer_get_length(r->h2_in))
        nghttp2_session_consume_connection(hc->sess, evbuffer_get_length(r->h2_in));
    if (reset && nghttp2_session_find_stream(hc->sess, r->stream_id) && !(r->req_done && r->end_delivered)) {
        /* RFC 9113 8.1: a complete response before the whole request ends it with NO_ERROR */
        uint32_t code = r->end_delivered ? NGHTTP2_NO_ERROR : NGHTTP2_CANCEL;
        nghttp2_submit_rst_stream(hc->sess, NGHTTP2_FLAG_NONE, r->stream_id, code);
    }
out:
    h2c_poke(hc);
}

/* ------------------------------------------------------------ the response side */

/* The response is over for the owner: r is done and off its stream. */
static void finish(struct herald_http_upstream *r)
{
    if (r->state == UREQ_BOUND)
        ureq_done(r);
    h2_stream_detach(r, true);
}

/* Hands what was received to the owner unless it paused reading. */
static void deliver(struct herald_http_upstream *r)
{
    if (r->end_delivered || r->paused)
        return;
    size_t n = r->h2_in ? evbuffer_get_length(r->h2_in) : 0;
    bool end = r->h2_in_end && !r->h2_in_trailers;
    if (n || end) {
        if (!r->h2_in)
            r->h2_in = evbuffer_new();
        if (n && r->h2 && r->h2->sess && r->stream_id) {
            nghttp2_session_consume(r->h2->sess, r->stream_id, n);
            h2c_poke(r->h2);
        }
        if (end)
            r->end_delivered = true;
        ureq_hold(r);
        if (r->cbs->on_data)
            r->cbs->on_data(r->arg, ev_buf(r->h2_in), end);
        if (!ureq_unhold(r))
            return;
        evbuffer_drain(r->h2_in, evbuffer_get_length(r->h2_in));
    }
    if (r->h2_in_trailers && !r->paused && !r->end_delivered) {
        struct herald_headers *t = r->h2_in_trailers;
        r->h2_in_trailers = NULL;
        r->end_delivered = true;
        ureq_hold(r);
        if (r->cbs->on_trailers) {
            r->cbs->on_trailers(r->arg, t);
        } else {
            herald_headers_free(t);
            if (r->cbs->on_data) {
                struct evbuffer *empty = evbuffer_new();
                r->cbs->on_data(r->arg, ev_buf(empty), true);
                evbuffer_free(empty);
            }
        }
        if (!ureq_unhold(r))
            return;
    }
    if (r->end_delivered)
        finish(r);
}

void h2_deliver_held(struct herald_http_upstream *r)
{
    deliver(r);
}

static struct herald_http_upstream *stream_req(nghttp2_session *sess, int32_t sid)
{
    return sid ? nghttp2_session_get_stream_user_data(sess, sid) : NULL;
}

static int on_begin_headers(nghttp2_session *sess, const nghttp2_frame *frame, void *user)
{
    struct herald_http_upstream *r = stream_req(sess, frame->hd.stream_id);
    if (r && frame->hd.type == NGHTTP2_HEADERS) {
        herald_headers_free(r->h2_in_headers);
        r->h2_in_headers = herald_headers_new();
    }
    return 0;
}

static int on_header(nghttp2_session *sess, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
    struct h2_conn *hc = user;
    struct herald_http_upstream *r = stream_req(sess, frame->hd.stream_id);
    if (!r || !r->h2_in_headers)
        return 0;
    if (herald_headers_count(r->h2_in_headers) >= cfg_of(hc)->max_headers_count) {
        r->h2_overflow = true;
        herald_stat_inc(stats_of(hc)->header_overflow);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the stream is reset */
    }
    /* nghttp2 NUL-terminates both */
    herald_headers_add(r->h2_in_headers, (const char *)name, (const char *)value);
    return 0;
}

static void on_headers_frame(struct h2_conn *hc, struct herald_http_upstream *r, const nghttp2_frame *frame)
{
    struct herald_headers *h = r->h2_in_headers;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    r->h2_in_headers = NULL;
    if (!h)
        return;
    if (r->h2_final) {
        /* trailers (nghttp2 made sure they end the stream) */
        herald_stat_inc(stats_of(hc)->trailers);
        r->h2_in_trailers = h;
        r->h2_in_end = true;
        deliver(r);
        return;
    }
    const char *st = HEADERS_GET(h, ":status");
    if (st && st[0] == '1' && !end) {
        herald_headers_free(h); /* informational: Expect is answered downstream */
        return;
    }
    r->h2_final = true;
    r->resp_started = true;
    if (r->host->cluster->cfg->outlier.enabled)
        outlier_report_status(r->host, status_code(st));
    if (end)
        r->h2_in_end = r->end_delivered = true;
    ureq_hold(r);
    if (r->cbs->on_headers)
        r->cbs->on_headers(r->arg, h, end);
    else
        herald_headers_free(h);
    if (!ureq_unhold(r))
        return;
    if (end)
        finish(r);
}

static int on_frame_recv(nghttp2_session *sess, const nghttp2_frame *frame, void *user)
{
    struct h2_conn *hc = user;
    struct herald_http_upstream *r = stream_req(sess, frame->hd.stream_id);
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (r)
            on_headers_frame(hc, r, frame);
        break;
    case NGHTTP2_DATA:
        if (r && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
            r->h2_in_end = true;
        if (r)
            deliver(r);
        break;
    case NGHTTP2_RST_STREAM:
        herald_stat_inc(stats_of(hc)->rx_reset);
        if (frame->rst_stream.error_code == NGHTTP2_REFUSED_STREAM)
            herald_stat_inc(stats_of(hc)->stream_refused_errors);
        if (r)
            r->h2_rx_rst = true;
        break;
    case NGHTTP2_GOAWAY:
        /* no new streams here; those past last_stream_id close as refused */
        log_debug("http2", "%s: GOAWAY (last stream %d, error %u)", hc->pool->host->addr_str,
                  frame->goaway.last_stream_id, frame->goaway.error_code);
        hc->draining = true;
        h2c_poke(hc);
        break;
    case NGHTTP2_SETTINGS:
        h2c_poke(hc); /* MAX_CONCURRENT_STREAMS may have grown */
        break;
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK)
            hc->counts.ping_acks++;
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *sess, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                         void *user)
{
    struct h2_conn *hc = user;
    struct herald_http_upstream *r = stream_req(sess, sid);
    if (!r || r->end_delivered) {
        nghttp2_session_consume(sess, sid, len); /* nobody wants it */
        h2c_poke(hc);
        return 0;
    }
    if (!r->h2_in)
        r->h2_in = evbuffer_new();
    evbuffer_add(r->h2_in, data, len);
    return 0;
}

static int on_stream_close(nghttp2_session *sess, int32_t sid, uint32_t code, void *user)
{
    struct h2_conn *hc = user;
    struct herald_http_upstream *r = stream_req(sess, sid);
    if (!r)
        return 0;
    if (r->h2_in_end) {
        /* all of the response is here, held for a paused owner */
        h2_stream_detach(r, false);
        return 0;
    }
    bool protocol = r->h2_overflow || (code == NGHTTP2_PROTOCOL_ERROR && !r->h2_rx_rst);
    log_debug("http2", "%s: stream %d reset (%s, %s)", hc->pool->host->addr_str, sid,
              nghttp2_http2_strerror(code), r->h2_rx_rst ? "by the upstream" : "here");
    herald_stat_inc(hc->pool->pc->upstream_rq_rx_reset);
    h2_stream_detach(r, false);
    ureq_fail(r, protocol ? HERALD_UPSTREAM_RESET_PROTOCOL : HERALD_UPSTREAM_RESET_REMOTE);
    return 0;
}

/* The request's frames, for its stream's log (%UPSTREAM_WIRE_BYTES_*%). */
static void count_frame(nghttp2_session *sess, const nghttp2_frame_hd *hd, bool sent)
{
    if (hd->type != NGHTTP2_DATA && hd->type != NGHTTP2_HEADERS && hd->type != NGHTTP2_CONTINUATION)
        return;
    if (!cm_any_counts_upstream_bytes())
        return;   /* no log wants them: spare the lookup per frame */
    struct herald_http_upstream *r = stream_req(sess, hd->stream_id);
    if (!r)
        return;
    if (sent)
        ureq_count_sent(r, hd->length + 9, hd->type != NGHTTP2_DATA);
    else
        ureq_count_received(r, hd->length + 9, hd->type != NGHTTP2_DATA);
}

static int on_begin_frame(nghttp2_session *sess, const nghttp2_frame_hd *hd, void *user)
{
    struct h2_conn *hc = user;
    hc->counts.frames++;
    count_frame(sess, hd, false);
    return 0;
}

static int on_frame_send(nghttp2_session *sess, const nghttp2_frame *frame, void *user)
{
    struct h2_conn *hc = user;
    count_frame(sess, &frame->hd, true);
    if (frame->hd.type == NGHTTP2_RST_STREAM)
        herald_stat_inc(stats_of(hc)->tx_reset);
    else if (frame->hd.type == NGHTTP2_GOAWAY)
        herald_stat_inc(stats_of(hc)->goaway_sent);
    return 0;
}

static int on_invalid_frame(nghttp2_session *sess, const nghttp2_frame *frame, int err, void *user)
{
    struct h2_conn *hc = user;
    herald_stat_inc(stats_of(hc)->rx_messaging_error);
    log_debug("http2", "%s: invalid frame on stream %d: %s", hc->pool->host->addr_str, frame->hd.stream_id,
              nghttp2_strerror(err));
    return 0;
}

/* ------------------------------------------------------------ the TCP connection */

static int session_start(struct h2_conn *hc)
{
    const struct http2_cfg *o = &cfg_of(hc)->http2;
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return -1;
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame);
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cbs);
        return -1;
    }
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_peer_max_concurrent_streams(opt, PEER_STREAMS_BEFORE_SETTINGS);
    int rc = nghttp2_session_client_new3(&hc->sess, cbs, hc, opt, mem_cache_nghttp2());
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (rc != 0)
        return -1;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, o->initial_stream_window_size},
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, o->hpack_table_size},
    };
    if (nghttp2_submit_settings(hc->sess, NGHTTP2_FLAG_NONE, iv, ARRAY_SIZE(iv)) != 0)
        return -1;
    if (o->initial_connection_window_size > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE &&
        nghttp2_session_set_local_window_size(hc->sess, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)o->initial_connection_window_size) != 0)
        return -1;
    return 0;
}

static bool alpn_is_h2(struct herald_upstream *up)
{
    const unsigned char *a = NULL;
    unsigned len = 0;
    if (!up->ssl)
        return false;
    SSL_get0_alpn_selected(up->ssl, &a, &len);
    return len == 2 && !memcmp(a, "h2", 2);
}

static bool keepalive_ping(void *arg)
{
    struct h2_conn *hc = arg;
    if (hc->dead || hc->failed || !hc->sess || nghttp2_submit_ping(hc->sess, NGHTTP2_FLAG_NONE, NULL) != 0)
        return false;
    h2c_poke(hc);
    return true;
}

/* The upstream answered nothing: its streams fail (retriable as resets) and
 * the connection goes without a GOAWAY, as Envoy's. */
static void keepalive_timed_out(void *arg)
{
    struct h2_conn *hc = arg;
    log_debug("http2", "%s: no answer to a keepalive PING: closing", hc->pool->host->addr_str);
    herald_stat_inc(stats_of(hc)->keepalive_timeout);
    h2c_close(hc, HERALD_CLOSE_RESET, HERALD_UPSTREAM_RESET_REMOTE);
}

static const struct h2_keepalive_ops keepalive_ops = {
    .ping = keepalive_ping,
    .timed_out = keepalive_timed_out,
};

static void on_connected(struct h2_conn *hc)
{
    struct http_pool *p = hc->pool;
    hc->connected = true;
    p->nh2_connecting--;
    if (cfg_of(hc)->http_protocol == UPSTREAM_HTTP_AUTO) {
        if (!alpn_is_h2(hc->up)) {
            /* the upstream chose HTTP/1.1 (or no ALPN): the pool's connection is HTTP/1's now */
            struct herald_upstream *up = hc->up;
            log_debug("http2", "%s: ALPN did not pick h2: HTTP/1.1", p->host->addr_str);
            hc->up = NULL;
            hc->dead = true;
            p->nh2--;
            if (hc->prev)
                hc->prev->next = hc->next;
            else
                p->h2_conns = hc->next;
            if (hc->next)
                hc->next->prev = hc->prev;
            h2c_free(hc);
            pool_adopt_h1(p, up);
            return;
        }
        p->proto = POOL_H2;
        herald_stat_inc(p->cluster->stats.upstream_cx_http2_total);
    }
    if (session_start(hc) < 0) {
        log_warn("http2", "%s: cannot start an HTTP/2 session", p->host->addr_str);
        hc->failed = true;
    } else {
        hc->keepalive = h2_keepalive_start(&cfg_of(hc)->http2.keepalive, &hc->counts, &keepalive_ops, hc);
    }
    h2c_poke(hc);
}

static void conn_on_data(void *arg, struct herald_buf *data, bool end_stream)
{
    struct h2_conn *hc = arg;
    struct http_pool *p = hc->pool;
    struct evbuffer *in = buf_ev(data);
    if (hc->dead || !hc->sess || hc->failed) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    hc->dispatching++;
    while (evbuffer_get_length(in) && !hc->dead && !hc->failed) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        ssize_t n = nghttp2_session_mem_recv(hc->sess, v.iov_base, v.iov_len);
        if (n < 0) {
            log_debug("http2", "%s: bad HTTP/2 from the upstream: %s", p->host->addr_str,
                      nghttp2_strerror((int)n));
            hc->failed = true;
            break;
        }
        evbuffer_drain(in, v.iov_len);
    }
    evbuffer_drain(in, evbuffer_get_length(in));
    hc->dispatching--;
    if (hc->dead) {
        if (!busy(hc))
            h2c_free(hc);
        return;
    }
    if (end_stream && !hc->failed) {
        /* the server closed: streams not finished are lost (their responses never come) */
        hc->running = true;
        write_out(hc);
        hc->running = false;
        h2c_close(hc, HERALD_CLOSE_FLUSH, HERALD_UPSTREAM_RESET_REMOTE);
        refill(p);
        return;
    }
    h2c_run(hc);
}

static void conn_on_event(void *arg, enum herald_conn_event ev)
{
    struct h2_conn *hc = arg;
    struct http_pool *p = hc->pool;
    switch (ev) {
    case HERALD_EV_CONNECTED:
        on_connected(hc);
        break;
    case HERALD_EV_CONNECT_FAILED:
    case HERALD_EV_CONNECT_TIMEOUT:
        hc->up = NULL;
        h2c_close(hc, HERALD_CLOSE_RESET, HERALD_UPSTREAM_RESET_CONNECT_FAILURE);
        if (!p->h2_conns)
            pool_purge_pending(p, HERALD_UPSTREAM_RESET_CONNECT_FAILURE);
        else
            refill(p);
        break;
    case HERALD_EV_REMOTE_CLOSE:
    case HERALD_EV_LOCAL_CLOSE:
        hc->up = NULL;
        h2c_close(hc, HERALD_CLOSE_RESET, HERALD_UPSTREAM_RESET_REMOTE);
        refill(p);
        break;
    case HERALD_EV_DRAIN:
    case HERALD_EV_TIMERS_RESCALED:
        break;
    case HERALD_EV_ABOVE_WRITE_HIGH:
        hc->above_high = true;
        break;
    case HERALD_EV_BELOW_WRITE_LOW:
        hc->above_high = false;
        h2c_poke(hc);
        break;
    }
}

static const struct herald_upstream_cbs conn_cbs = {
    .size = sizeof(struct herald_upstream_cbs),
    .on_data = conn_on_data,
    .on_event = conn_on_event,
};

static void on_idle_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct h2_conn *hc = arg;
    if (hc->nstreams || busy(hc))
        return;
    herald_stat_inc(hc->pool->cluster->stats.upstream_cx_idle_timeout);
    hc->running = true;
    close_graceful(hc);
    hc->running = false;
    h2c_free(hc);
}

int h2_pool_grow(struct http_pool *p, enum herald_upstream_reset *why)
{
    const struct cluster_cfg *cfg = p->cluster->cfg;
    if (p->proto == POOL_H1)
        return 0;
    if (p->proto == POOL_UNDECIDED) {
        if (p->nh2_connecting)
            return 0; /* one connection finds out what the host speaks */
    } else {
        uint64_t per = cfg->http2.max_concurrent_streams < PEER_STREAMS_BEFORE_SETTINGS
                           ? cfg->http2.max_concurrent_streams : PEER_STREAMS_BEFORE_SETTINGS;
        if (p->npending <= (uint64_t)p->nh2_connecting * per)
            return 0;
    }
    enum herald_upstream_error err;
    struct h2_conn *hc = xcalloc(1, sizeof(*hc));
    hc->pool = p;
    hc->up = upstream_connect(p->view, p->host, &conn_cbs, hc, &err, pool_grow_priority(p), true, p->pp, p->pplen);
    if (!hc->up) {
        free(hc);
        if (err == HERALD_UPSTREAM_OVERFLOW && p->nh2 > 0)
            return 0; /* wait for a stream of ours to end */
        *why = err == HERALD_UPSTREAM_OVERFLOW ? HERALD_UPSTREAM_RESET_OVERFLOW
                                               : HERALD_UPSTREAM_RESET_CONNECT_FAILURE;
        return -1;
    }
    if (hc->up->ssl && !cfg->tls_alpn_set) {
        /* Envoy's ALPN fallback when the UpstreamTlsContext names none */
        static const unsigned char h2_only[] = "\x02h2";
        static const unsigned char h2_h1[] = "\x02h2\x08http/1.1";
        if (cfg->http_protocol == UPSTREAM_HTTP_AUTO)
            SSL_set_alpn_protos(hc->up->ssl, h2_h1, sizeof(h2_h1) - 1);
        else
            SSL_set_alpn_protos(hc->up->ssl, h2_only, sizeof(h2_only) - 1);
    }
    hc->wbuf = evbuffer_new();
    hc->idle_ev = evtimer_new(worker_self()->base, on_idle_timeout, hc);
    hc->send_soon = herald_timer_new(on_send_soon, hc);
    pool_ref(p);
    if (cfg->http_protocol != UPSTREAM_HTTP_AUTO)
        herald_stat_inc(p->cluster->stats.upstream_cx_http2_total);
    conn_link(hc);
    return 0;
}

void h2_pool_drain(struct http_pool *p)
{
    struct h2_conn *next;
    for (struct h2_conn *hc = p->h2_conns; hc; hc = next) {
        next = hc->next;
        hc->draining = true;
        h2c_poke(hc);
    }
}

void h2_pool_close_all(struct http_pool *p)
{
    while (p->h2_conns)
        h2c_close(p->h2_conns, HERALD_CLOSE_RESET, HERALD_UPSTREAM_RESET_REMOTE);
}
