/* HTTP/1.1 connection pools, one per worker x cluster x host: connections
 * with the response codec on them, the idle list (most recently used first,
 * so a few connections stay warm), idle timeouts, max_requests_per_connection,
 * and the pending requests waiting for a connection. The pools' HTTP/2
 * connections are h2_client.c's. See pool.h. */
#include "config.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "buffer.h"
#include "common.h"
#include "herald/stats.h"
#include "http/h2_client.h"
#include "http/headers.h"
#include "http/pool.h"
#include "log.h"
#include "net/proxy_header.h"
#include "net/upstream_conn.h"
#include "upstream/cluster.h"
#include "upstream/outlier.h"
#include "worker.h"

/* This worker's pools. */
struct worker_pools {
    struct worker *worker;
    struct http_pool *pools;
    struct worker_pools *next;         /* in the registry */
    /* Pools owned by one downstream connection (PROXY protocol clusters): a
     * list of their own, so that the shared pools' lookup never walks them */
    struct http_pool *owned;
    unsigned nowned;
    struct event *sweep_ev;            /* an owned pool may be free to go (made on first need) */
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pool_cluster *clusters;  /* never freed: counters outlive reloads */
static struct worker_pools *registry;
static __thread struct worker_pools *tls_pools;

/* ------------------------------------------------------------ cluster-wide state */

int pool_grow_priority(const struct http_pool *p)
{
    return p->pending_head ? p->pending_head->priority : 0;
}

struct pool_cluster *pool_cluster_get(struct cluster *cl)
{
    pthread_mutex_lock(&reg_lock);
    struct pool_cluster *pc;
    for (pc = clusters; pc; pc = pc->next)
        if (pc->cluster == cl)
            break;
    if (!pc) {
        pc = xcalloc(1, sizeof(*pc));
        pc->cluster = cl;
        char *p = xasprintf("cluster.%s", cl->cfg->name);
        pc->upstream_rq_rx_reset = herald_counter(p, "upstream_rq_rx_reset");
        pc->upstream_rq_tx_reset = herald_counter(p, "upstream_rq_tx_reset");
        pc->upstream_rq_cancelled = herald_counter(p, "upstream_rq_cancelled");
        if (cl->cfg->http_protocol != UPSTREAM_HTTP1) {
            char *h2p = xasprintf("%s.http2", p);
            struct h2_stats *h = &pc->h2;
            h->rx_reset = herald_counter(h2p, "rx_reset");
            h->tx_reset = herald_counter(h2p, "tx_reset");
            h->goaway_sent = herald_counter(h2p, "goaway_sent");
            h->trailers = herald_counter(h2p, "trailers");
            h->stream_refused_errors = herald_counter(h2p, "stream_refused_errors");
            h->rx_messaging_error = herald_counter(h2p, "rx_messaging_error");
            h->header_overflow = herald_counter(h2p, "header_overflow");
            h->keepalive_timeout = herald_counter(h2p, "keepalive_timeout");
            h->streams_active = herald_gauge(h2p, "streams_active");
            free(h2p);
        }
        free(p);
        pc->next = clusters;
        clusters = pc;
    }
    pthread_mutex_unlock(&reg_lock);
    return pc;
}

/* ------------------------------------------------------------ connection lists */

static void conn_unlink(struct pool_conn *c)
{
    struct http_pool *p = c->pool;
    if (c->prev)
        c->prev->next = c->next;
    else
        p->conns[c->state] = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    p->nconns[c->state]--;
}

static void conn_link(struct pool_conn *c, enum pconn_state st)
{
    struct http_pool *p = c->pool;
    c->state = st;
    c->prev = NULL;
    c->next = p->conns[st];
    if (c->next)
        c->next->prev = c;
    p->conns[st] = c;
    p->nconns[st]++;
}

static void conn_move(struct pool_conn *c, enum pconn_state st)
{
    conn_unlink(c);
    conn_link(c, st);
}

static unsigned pool_nconns(const struct http_pool *p)
{
    return p->nconns[PCONN_CONNECTING] + p->nconns[PCONN_IDLE] + p->nconns[PCONN_BUSY];
}

/* ------------------------------------------------------------ closing */

static void conn_free(struct pool_conn *c)
{
    if (c->codec)
        h1_codec_free(c->codec);
    evbuffer_free(c->wbuf);
    event_free(c->idle_ev);
    pool_unref(c->pool);
    free(c);
}

/* Takes c out of the pool and closes its socket. The struct goes now, or
 * when the dispatch running on it returns. */
static void conn_close(struct pool_conn *c, enum herald_close_mode mode)
{
    if (c->dead)
        return;
    c->dead = true;
    conn_unlink(c);
    evtimer_del(c->idle_ev);
    if (c->draining) /* the cancelled request's response never ended here */
        herald_stat_inc(c->pool->cluster->stats.upstream_cx_destroy_with_active_rq);
    if (c->req) {
        c->req->conn = NULL;
        c->req = NULL;
    }
    if (c->up)
        herald_upstream_close(c->up, mode);
    c->up = NULL;
    if (c->dispatching) {
        /* inside a codec callback: the codec frees itself when dispatch unwinds */
        if (c->codec)
            h1_codec_free(c->codec);
        c->codec = NULL;
        return;
    }
    conn_free(c);
}

/* The bound request loses its connection mid-exchange. */
static void conn_fail_request(struct pool_conn *c, enum herald_upstream_reset why)
{
    struct herald_http_upstream *r = c->req;
    if (!r)
        return;
    struct cluster *cl = c->pool->cluster;
    herald_stat_inc(cl->stats.upstream_cx_destroy_with_active_rq);
    herald_stat_inc(c->pool->pc->upstream_rq_rx_reset);
    c->req = NULL;
    r->conn = NULL;
    ureq_fail(r, why);
}

void pool_purge_pending(struct http_pool *p, enum herald_upstream_reset why)
{
    while (p->pending_head)
        ureq_fail(p->pending_head, why);
}

/* After a connection went away: pending requests may need another. */
static void pool_refill(struct http_pool *p)
{
    enum herald_upstream_reset why;
    if (p->npending && pool_grow(p, &why) < 0)
        pool_purge_pending(p, why);
}

/* ------------------------------------------------------------ idle and reuse */

static __thread bool pools_draining; /* this worker is shutting down */

bool pool_draining(void)
{
    return pools_draining;
}

static void on_idle_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct pool_conn *c = arg;
    struct http_pool *p = c->pool;
    if (c->draining) {
        /* the abandoned response did not end in time: as if never drained */
        log_debug("http_pool", "%s: response to a cancelled request still unfinished; closing",
                  p->host->addr_str);
        conn_close(c, HERALD_CLOSE_RESET);
        pool_refill(p);
        return;
    }
    herald_stat_inc(p->cluster->stats.upstream_cx_idle_timeout);
    conn_close(c, HERALD_CLOSE_FLUSH);
}

/* c can take a request: the first pending one, or it waits in the idle list. */
static void conn_available(struct pool_conn *c)
{
    struct http_pool *p = c->pool;
    if (c->draining) {
        c->draining = false;
        evtimer_del(c->idle_ev);
        herald_stat_inc(p->cluster->stats.upstream_cx_drained_after_cancel);
    }
    c->last = c->resp_complete = c->req_sent_all = c->resp_started = false;
    c->upgrade = c->tunnel = false; /* never set here: an upgraded connection is not reused */
    if (c->codec && h1_codec_paused(c->codec))
        h1_codec_resume(c->codec);
    if (c->up)
        herald_upstream_resume_reading(c->up, HERALD_PAUSE_PEER); /* a paused owner is gone */
    if (p->pending_head) {
        struct herald_http_upstream *r = p->pending_head;
        ureq_pending_remove(r);
        if (c->state != PCONN_BUSY)
            conn_move(c, PCONN_BUSY);
        ureq_bind(r, c);
        return;
    }
    if (pools_draining || p->owner_gone) {   /* no one is left to reuse it */
        conn_close(c, HERALD_CLOSE_FLUSH);
        return;
    }
    if (c->state != PCONN_IDLE)
        conn_move(c, PCONN_IDLE);
    uint64_t ms = p->cluster->cfg->http_idle_timeout_ms;
    if (ms) {
        struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
        evtimer_add(c->idle_ev, &tv);
    }
}

bool pool_bind_idle(struct http_pool *p, struct herald_http_upstream *r)
{
    struct pool_conn *c = p->conns[PCONN_IDLE];
    if (!c)
        return false;
    evtimer_del(c->idle_ev);
    conn_move(c, PCONN_BUSY);
    ureq_bind(r, c);
    return true;
}

void pool_conn_bound(struct pool_conn *c)
{
    uint32_t max = c->pool->cluster->cfg->max_requests_per_connection;
    c->nrequests++;
    c->last = max && c->nrequests >= max;
    c->resp_complete = c->req_sent_all = c->resp_started = false;
    if (c->last)
        herald_stat_inc(c->pool->cluster->stats.upstream_cx_max_requests);
}

/* A request cancelled after it was sent whole (its client left, a timeout, a
 * retry elsewhere) still gets its response. Envoy closes the connection then
 * and the next request pays for a new one: a burst of client aborts (a load
 * test's end, browsers cancelling) becomes a burst of upstream connects, each
 * waiting for the upstream's accept loop. As HAProxy does, herald reads the
 * response to its end instead and drops it, then reuses the connection; a
 * response that has not ended within DRAIN_MS, or sends more than
 * DRAIN_BYTES, closes it as Envoy would (upstream_cx_destroy_with_active_rq). */
#define DRAIN_MS 1000
#define DRAIN_BYTES (256 * 1024)

static bool conn_can_drain(const struct pool_conn *c)
{
    return c->up && c->codec && c->req_sent_all && !c->last && !c->upgrade && !c->tunnel && !c->eof &&
           !c->resp_complete && !pools_draining;
}

static void conn_drain(struct pool_conn *c)
{
    c->draining = true;
    c->drained = 0;
    if (h1_codec_paused(c->codec))
        h1_codec_resume(c->codec);
    herald_upstream_resume_reading(c->up, HERALD_PAUSE_PEER);
    struct timeval tv = {.tv_sec = DRAIN_MS / 1000, .tv_usec = (DRAIN_MS % 1000) * 1000};
    evtimer_add(c->idle_ev, &tv);
}

void pool_conn_cancel(struct pool_conn *c, bool written)
{
    c->req = NULL;
    if (!written && !c->resp_started && !c->last && !c->dispatching && c->up) {
        /* nothing went either way: the connection is as clean as before */
        c->nrequests--;
        conn_available(c);
        return;
    }
    if (conn_can_drain(c)) {
        conn_drain(c);
        return;
    }
    herald_stat_inc(c->pool->cluster->stats.upstream_cx_destroy_with_active_rq);
    struct http_pool *p = c->pool;
    conn_close(c, HERALD_CLOSE_RESET);
    pool_refill(p);
}

void pool_conn_flush(struct pool_conn *c, bool end)
{
    if (c->up && (evbuffer_get_length(c->wbuf) || end))
        herald_upstream_write(c->up, ev_buf(c->wbuf), end);
    else
        evbuffer_drain(c->wbuf, evbuffer_get_length(c->wbuf));
}

/* A response ended (codec on_complete) and its dispatch returned. */
static void conn_response_done(struct pool_conn *c, struct evbuffer *in, bool eof)
{
    struct http_pool *p = c->pool;
    bool reuse = c->up && c->codec && !eof && !c->last && c->req_sent_all && h1_codec_keep_alive(c->codec) &&
                 evbuffer_get_length(in) == 0;
    if (!reuse) {
        c->draining = false; /* its response ended: a plain close */
        if (evbuffer_get_length(in) && !c->last)
            log_debug("http_pool", "%s: bytes after the response; closing", c->pool->host->addr_str);
        conn_close(c, HERALD_CLOSE_FLUSH);
        pool_refill(p);
        return;
    }
    conn_available(c);
}

/* ------------------------------------------------------------ the response codec */

static void on_message_begin(void *arg)
{
    struct pool_conn *c = arg;
    c->resp_started = true;
    if (c->req)
        c->req->resp_started = true;
}

/* What the codec read of the response since the last call, for the stream's log. */
static void count_rx(struct pool_conn *c, struct herald_http_upstream *r, bool head)
{
    if (!r->count_wire || !c->codec)
        return;
    if (head) {
        r->rx_counted = h1_codec_head_bytes(c->codec);
        ureq_count_received(r, r->rx_counted, true);
    }
    uint64_t total = h1_codec_wire_bytes(c->codec);
    if (total > r->rx_counted) {
        ureq_count_received(r, total - r->rx_counted, false);
        r->rx_counted = total;
    }
}

static void on_resp_headers(void *arg, struct herald_headers *h, bool end_stream)
{
    struct pool_conn *c = arg;
    struct herald_http_upstream *r = c->req;
    c->resp_started = true;
    if (!r) {
        herald_headers_free(h);
        return;
    }
    r->resp_started = true;
    count_rx(c, r, true);
    if (r->host->cluster->cfg->outlier.enabled) {
        const char *st = HEADERS_GET(h, ":status");
        outlier_report_status(r->host, status_code(st));
    }
    if (c->upgrade && c->codec && h1_codec_is_upgrade(c->codec)) {
        /* 101 (CONNECT: 2xx) to an upgrade: the codec stops after this head and
         * the connection's bytes are the new protocol's, for the owner as they come */
        c->tunnel = true;
        end_stream = false;
        /* the client's end came before this answer: it is a half-close now */
        if (c->req_sent_all)
            pool_conn_flush(c, true);
    }
    if (end_stream)
        r->end_delivered = true;
    if (r->cbs->on_headers)
        r->cbs->on_headers(r->arg, h, end_stream);
    else
        herald_headers_free(h);
}

static void on_resp_data(void *arg, struct evbuffer *chunk, bool end_stream)
{
    struct pool_conn *c = arg;
    struct herald_http_upstream *r = c->req;
    if (!r || r->end_delivered)
        return;
    count_rx(c, r, false);
    if (end_stream)
        r->end_delivered = true;
    if (r->cbs->on_data)
        r->cbs->on_data(r->arg, ev_buf(chunk), end_stream);
}

static void on_resp_trailers(void *arg, struct herald_headers *t)
{
    struct pool_conn *c = arg;
    struct herald_http_upstream *r = c->req;
    if (!r || r->end_delivered) {
        herald_headers_free(t);
        return;
    }
    count_rx(c, r, false);
    r->end_delivered = true;
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
}

static void on_resp_complete(void *arg)
{
    struct pool_conn *c = arg;
    struct herald_http_upstream *r = c->req;
    if (c->tunnel)
        return; /* the end of the 101's head: the exchange goes on unparsed */
    if (r && !r->end_delivered) {
        count_rx(c, r, false);
        r->end_delivered = true;
        if (r->cbs->on_data) {
            struct evbuffer *empty = evbuffer_new();
            r->cbs->on_data(r->arg, ev_buf(empty), true);
            evbuffer_free(empty);
        }
        if (c->dead)
            return;
        r = c->req;
    }
    c->resp_complete = true;
    /* one response per request: what follows is looked at after dispatch */
    if (c->codec)
        h1_codec_pause(c->codec);
    if (r) {
        c->req = NULL;
        r->conn = NULL;
        ureq_done(r);
    }
}

static void on_resp_error(void *arg, int status, const char *details)
{
    struct pool_conn *c = arg;
    struct http_pool *p = c->pool;
    bool remote = c->eof || (details && strstr(details, "premature_eof"));
    log_debug("http_pool", "%s: bad response (%s)", p->host->addr_str, details ? details : "?");
    if (!remote)
        herald_stat_inc(p->cluster->stats.upstream_cx_protocol_error);
    conn_fail_request(c, remote ? HERALD_UPSTREAM_RESET_REMOTE : HERALD_UPSTREAM_RESET_PROTOCOL);
    conn_close(c, HERALD_CLOSE_RESET);
    pool_refill(p);
}

static const struct h1_callbacks codec_cbs = {
    .on_message_begin = on_message_begin,
    .on_headers = on_resp_headers,
    .on_data = on_resp_data,
    .on_trailers = on_resp_trailers,
    .on_complete = on_resp_complete,
    .on_error = on_resp_error,
};

/* ------------------------------------------------------------ the TCP connection */

/* After the switch of protocols: every byte from the upstream goes to the
 * owner as it is. Bytes already read go even while the owner has paused
 * reading (at most one read's worth): the TCP layer delivers its EOF once. The
 * upstream's end (FIN) ends the exchange and closes the connection, which the
 * owner turns into the downstream's end. */
static void tunnel_data(struct pool_conn *c, struct evbuffer *in, bool end_stream)
{
    struct http_pool *p = c->pool;
    struct herald_http_upstream *r = c->req;
    if (r && !r->end_delivered && (evbuffer_get_length(in) || end_stream)) {
        if (end_stream)
            r->end_delivered = true;
        if (r->cbs->on_data) {
            c->dispatching++;
            r->cbs->on_data(r->arg, ev_buf(in), end_stream);
            c->dispatching--;
        }
    }
    evbuffer_drain(in, evbuffer_get_length(in));
    if (c->dead) {
        conn_free(c);
        return;
    }
    if (!end_stream)
        return;
    c->eof = true;
    if ((r = c->req)) {
        c->req = NULL;
        r->conn = NULL;
        ureq_done(r);
    }
    conn_close(c, HERALD_CLOSE_FLUSH);
    pool_refill(p);
}

static void conn_on_data(void *arg, struct herald_buf *data, bool end_stream)
{
    struct pool_conn *c = arg;
    struct http_pool *p = c->pool;
    struct evbuffer *in = buf_ev(data);
    if (c->dead)
        return;
    if (c->tunnel) {
        tunnel_data(c, in, end_stream);
        return;
    }
    if (c->draining) {
        c->drained += evbuffer_get_length(in);
        if (c->drained > DRAIN_BYTES) {
            log_debug("http_pool", "%s: response to a cancelled request over %d bytes; closing",
                      p->host->addr_str, DRAIN_BYTES);
            evbuffer_drain(in, evbuffer_get_length(in));
            conn_close(c, HERALD_CLOSE_RESET);
            pool_refill(p);
            return;
        }
    } else if ((!c->req || !c->req->headers_sent) && evbuffer_get_length(in)) {
        /* bytes nobody asked for (an idle connection, or a request not sent yet) */
        log_debug("http_pool", "%s: unexpected bytes on an idle connection", p->host->addr_str);
        evbuffer_drain(in, evbuffer_get_length(in));
        herald_stat_inc(p->cluster->stats.upstream_cx_protocol_error);
        conn_fail_request(c, HERALD_UPSTREAM_RESET_REMOTE);
        conn_close(c, HERALD_CLOSE_RESET);
        pool_refill(p);
        return;
    }
    c->dispatching++;
    if (c->codec && !h1_codec_paused(c->codec))
        h1_codec_dispatch(c->codec, in);
    if (end_stream && !c->dead && !c->resp_complete && !c->tunnel && c->codec) {
        c->eof = true;
        h1_codec_dispatch_eof(c->codec);
    }
    c->dispatching--;
    if (c->dead) {
        conn_free(c);
        return;
    }
    if (c->tunnel) {
        /* what came behind the 101 in the same read is the new protocol's */
        tunnel_data(c, in, end_stream);
        return;
    }
    if (c->resp_complete) {
        conn_response_done(c, in, end_stream);
        return;
    }
    if (end_stream) {
        /* closed by the server: idle, or before any response to the bound request */
        conn_fail_request(c, HERALD_UPSTREAM_RESET_REMOTE);
        conn_close(c, HERALD_CLOSE_FLUSH);
        pool_refill(p);
    }
}

static void conn_on_event(void *arg, enum herald_conn_event ev)
{
    struct pool_conn *c = arg;
    struct http_pool *p = c->pool;
    switch (ev) {
    case HERALD_EV_CONNECTED:
        conn_available(c);
        break;
    case HERALD_EV_CONNECT_FAILED:
    case HERALD_EV_CONNECT_TIMEOUT:
        c->up = NULL; /* gone already; the TCP layer counted it */
        conn_close(c, HERALD_CLOSE_RESET);
        pool_purge_pending(p, HERALD_UPSTREAM_RESET_CONNECT_FAILURE);
        break;
    case HERALD_EV_REMOTE_CLOSE:
    case HERALD_EV_LOCAL_CLOSE:
        c->up = NULL;
        conn_fail_request(c, HERALD_UPSTREAM_RESET_REMOTE);
        conn_close(c, HERALD_CLOSE_RESET);
        pool_refill(p);
        break;
    case HERALD_EV_DRAIN: /* only downstream connections hear these */
    case HERALD_EV_TIMERS_RESCALED:
        break;
    case HERALD_EV_ABOVE_WRITE_HIGH:
    case HERALD_EV_BELOW_WRITE_LOW:
        c->above_high = ev == HERALD_EV_ABOVE_WRITE_HIGH;
        if (c->req)
            ureq_watermark(c->req, c->above_high);
        break;
    }
}

static const struct herald_upstream_cbs conn_cbs = {
    .size = sizeof(struct herald_upstream_cbs),
    .on_data = conn_on_data,
    .on_event = conn_on_event,
};

int pool_grow(struct http_pool *p, enum herald_upstream_reset *why)
{
    /* one connection per pending request beyond those already connecting */
    if (p->npending <= p->nconns[PCONN_CONNECTING])
        return 0;
    enum herald_upstream_error err;
    struct pool_conn *c = xcalloc(1, sizeof(*c));
    c->pool = p;
    c->up = upstream_connect(p->view, p->host, &conn_cbs, c, &err, pool_grow_priority(p), true, p->pp, p->pplen);
    if (!c->up) {
        free(c);
        if (err == HERALD_UPSTREAM_OVERFLOW && pool_nconns(p) > 0)
            return 0; /* wait for one of ours to free up */
        *why = err == HERALD_UPSTREAM_OVERFLOW ? HERALD_UPSTREAM_RESET_OVERFLOW
                                               : HERALD_UPSTREAM_RESET_CONNECT_FAILURE;
        return -1;
    }
    const struct cluster_cfg *cfg = p->cluster->cfg;
    if (cfg->http_protocol == UPSTREAM_HTTP_AUTO && c->up->ssl && !cfg->tls_alpn_set) {
        /* auto_config found HTTP/1.1 on this host: say so in the ALPN of the connections after */
        static const unsigned char h1[] = "\x08http/1.1";
        SSL_set_alpn_protos(c->up->ssl, h1, sizeof(h1) - 1);
    }
    struct h1_limits lim = {.max_headers_count = cfg->max_headers_count};
    c->codec = h1_codec_new(H1_CLIENT, &lim, &codec_cbs, c);
    c->wbuf = evbuffer_new();
    c->idle_ev = evtimer_new(p->wp->worker->base, on_idle_timeout, c);
    pool_ref(p);
    herald_stat_inc(p->cluster->stats.upstream_cx_http1_total);
    conn_link(c, PCONN_CONNECTING);
    return 0;
}

void pool_adopt_h1(struct http_pool *p, struct herald_upstream *up)
{
    const struct cluster_cfg *cfg = p->cluster->cfg;
    struct pool_conn *c = xcalloc(1, sizeof(*c));
    struct h1_limits lim = {.max_headers_count = cfg->max_headers_count};
    p->proto = POOL_H1;
    c->pool = p;
    c->up = up;
    up->cbs = &conn_cbs; /* the connection changes hands: its events are this pool's now */
    up->arg = c;
    c->codec = h1_codec_new(H1_CLIENT, &lim, &codec_cbs, c);
    c->wbuf = evbuffer_new();
    c->idle_ev = evtimer_new(p->wp->worker->base, on_idle_timeout, c);
    pool_ref(p);
    herald_stat_inc(p->cluster->stats.upstream_cx_http1_total);
    conn_link(c, PCONN_CONNECTING);
    conn_available(c);
    pool_refill(p);
}

/* ------------------------------------------------------------ pools */

static struct worker_pools *worker_pools(void)
{
    struct worker_pools *wp = tls_pools;
    if (!wp) {
        wp = xcalloc(1, sizeof(*wp));
        wp->worker = worker_self();
        pthread_mutex_lock(&reg_lock);
        wp->next = registry;
        registry = wp;
        pthread_mutex_unlock(&reg_lock);
        tls_pools = wp;
    }
    return wp;
}

static void pool_free(struct http_pool *p)
{
    host_put(p->host);
    free(p->pp);
    free(p);
}

/* Frees the owned pools whose owner left and that nothing refers to. It runs
 * from the event loop, never under a pool's own callbacks. */
static void sweep(evutil_socket_t fd, short what, void *arg)
{
    struct worker_pools *wp = arg;
    for (struct http_pool **pp = &wp->owned, *p; (p = *pp);) {
        if (p->owner_gone && p->refs == 0) {
            *pp = p->next;
            wp->nowned--;
            pool_free(p);
        } else {
            pp = &p->next;
        }
    }
}

static void sweep_soon(struct worker_pools *wp)
{
    if (!wp->sweep_ev)
        wp->sweep_ev = evtimer_new(wp->worker->base, sweep, wp);
    if (!evtimer_pending(wp->sweep_ev, NULL)) {
        struct timeval now = {0, 0};
        evtimer_add(wp->sweep_ev, &now);
    }
}

void pool_ref(struct http_pool *p)
{
    if (p)
        p->refs++;
}

void pool_unref(struct http_pool *p)
{
    if (p && --p->refs == 0 && p->owner_gone)
        sweep_soon(p->wp);
}

void http_pools_owner_closed(uint64_t id)
{
    struct worker_pools *wp = tls_pools;
    if (!wp || !wp->nowned)
        return;
    for (struct http_pool *p = wp->owned; p; p = p->next) {
        if (p->owner != id || p->owner_gone)
            continue;
        p->owner_gone = true;
        while (p->conns[PCONN_IDLE])
            conn_close(p->conns[PCONN_IDLE], HERALD_CLOSE_FLUSH);
        h2_pool_drain(p);   /* HTTP/2: GOAWAY, and close once its streams are done */
        if (p->refs == 0)
            sweep_soon(wp);
    }
}

/* A new pool of this worker for h; first in *list (the most recently used) */
static struct http_pool *pool_new(struct worker_pools *wp, struct http_pool **list, struct herald_cluster *view,
                                  struct herald_host *h)
{
    struct http_pool *p = xcalloc(1, sizeof(*p));
    p->wp = wp;
    p->cluster = view->cluster;
    p->view = view;
    p->pc = pool_cluster_get(view->cluster);
    switch (view->cluster->cfg->http_protocol) {
    case UPSTREAM_HTTP1: p->proto = POOL_H1; break;
    case UPSTREAM_HTTP2: p->proto = POOL_H2; break;
    case UPSTREAM_HTTP_AUTO: p->proto = POOL_UNDECIDED; break;
    }
    p->host = h;
    host_get(h);
    p->next = *list;
    *list = p;
    return p;
}

struct http_pool *pool_get_for(struct herald_cluster *view, struct herald_host *h, const struct herald_conn *d)
{
    const struct pp_upstream *pp = view->cluster->cfg->proxy_protocol;
    if (!pp || !d)
        return pool_get(view, h);
    struct worker_pools *wp = worker_pools();
    uint64_t owner = herald_conn_id(d);
    struct http_pool **link, *p;
    for (link = &wp->owned; (p = *link); link = &p->next)
        if (p->owner == owner && p->host == h && p->cluster == view->cluster) {
            /* most recently used first: a connection's requests come close together */
            *link = p->next;
            p->next = wp->owned;
            wp->owned = p;
            p->view = view;
            return p;
        }
    p = pool_new(wp, &wp->owned, view, h);
    p->owner = owner;
    p->pp = pp_header_new(pp, h->ep ? h->ep->pp_tlvs : NULL, d, &p->pplen);
    wp->nowned++;
    return p;
}

struct http_pool *pool_get(struct herald_cluster *view, struct herald_host *h)
{
    struct worker_pools *wp = worker_pools();
    struct http_pool **pp, *p;
    for (pp = &wp->pools; (p = *pp); pp = &p->next)
        if (p->host == h && p->cluster == view->cluster)
            break;
    if (p) {
        /* most recently used first: few hosts per worker are hot */
        *pp = p->next;
        p->next = wp->pools;
        wp->pools = p;
        p->view = view;
        return p;
    }
    return pool_new(wp, &wp->pools, view, h);
}

void http_pools_worker_drain(struct worker *w)
{
    pools_draining = true;
    struct worker_pools *wp = tls_pools;
    if (!wp || wp->worker != w)
        return;
    for (int owned = 0; owned < 2; owned++)
        for (struct http_pool *p = owned ? wp->owned : wp->pools; p; p = p->next) {
            while (p->conns[PCONN_IDLE])
                conn_close(p->conns[PCONN_IDLE], HERALD_CLOSE_FLUSH);
            h2_pool_drain(p);
        }
}

void http_pools_worker_close_all(struct worker *w)
{
    pthread_mutex_lock(&reg_lock);
    struct worker_pools **pp, *wp;
    for (pp = &registry; (wp = *pp); pp = &wp->next)
        if (wp->worker == w)
            break;
    if (wp)
        *pp = wp->next;
    pthread_mutex_unlock(&reg_lock);
    if (!wp)
        return;
    ureq_orphan_all(w);
    if (wp->owned) {   /* one list to empty */
        struct http_pool *last = wp->owned;
        while (last->next)
            last = last->next;
        last->next = wp->pools;
        wp->pools = wp->owned;
        wp->owned = NULL;
    }
    while (wp->pools) {
        struct http_pool *p = wp->pools;
        wp->pools = p->next;
        for (int st = 0; st < PCONN_NSTATES; st++)
            while (p->conns[st])
                conn_close(p->conns[st], HERALD_CLOSE_RESET);
        h2_pool_close_all(p);
        pool_free(p);
    }
    if (tls_pools == wp)
        tls_pools = NULL;
    if (wp->sweep_ev)
        event_free(wp->sweep_ev);
    free(wp);
}
