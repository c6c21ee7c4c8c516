/* The SDK's HTTP upstream requests (herald_http_upstream_*): circuit
 * breakers, the pending queue, request encoding with the HTTP/1 encoders
 * (HTTP/2 streams: h2_client.c), and the callbacks to the owner. Callbacks that the owner's own calls cause
 * (on_ready, on_reset) come from a timer armed with 0, never from inside the
 * call. See pool.h. */
#include "config.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <string.h>

#include "buffer.h"
#include "common.h"
#include "herald/stats.h"
#include "herald/timer.h"
#include "http/conn_manager.h"
#include "http/headers.h"
#include "http/h2_client.h"
#include "http/pool.h"
#include "log.h"
#include "mem_cache.h"
#include "net/upstream_conn.h"
#include "upstream/circuit_breaker.h"
#include "upstream/cluster.h"
#include "upstream/outlier.h"
#include "worker.h"

static __thread struct herald_http_upstream *tls_reqs; /* every live request of this worker */
static __thread bool tls_closed;                       /* the worker's pools are gone */

/* ------------------------------------------------------------ accounting */

static void activate(struct herald_http_upstream *r)
{
    struct cluster *cl = r->pcl->cluster;
    r->active_counted = true;
    cb_take(cl->cb, r->priority, CB_RQ);
    atomic_fetch_add_explicit(&r->host->rq_active, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->host->rq_total, 1, memory_order_relaxed);
    herald_stat_inc(cl->stats.upstream_rq_total);
    herald_gauge_add(cl->stats.upstream_rq_active, 1);
}

static void deactivate(struct herald_http_upstream *r)
{
    if (!r->active_counted)
        return;
    r->active_counted = false;
    cb_release(r->pcl->cluster->cb, r->priority, CB_RQ);
    atomic_fetch_sub_explicit(&r->host->rq_active, 1, memory_order_relaxed);
    herald_gauge_add(r->pcl->cluster->stats.upstream_rq_active, -1);
}

static void pending_add(struct herald_http_upstream *r)
{
    struct http_pool *p = r->pool;
    r->queued = true;
    r->state = UREQ_PENDING;
    r->prev = p->pending_tail;
    r->next = NULL;
    if (p->pending_tail)
        p->pending_tail->next = r;
    else
        p->pending_head = r;
    p->pending_tail = r;
    p->npending++;
    cb_take(p->cluster->cb, r->priority, CB_PENDING);
    herald_stat_inc(p->cluster->stats.upstream_rq_pending_total);
    herald_gauge_add(p->cluster->stats.upstream_rq_pending_active, 1);
}

void ureq_pending_remove(struct herald_http_upstream *r)
{
    if (!r->queued)
        return;
    struct http_pool *p = r->pool;
    r->queued = false;
    if (r->prev)
        r->prev->next = r->next;
    else
        p->pending_head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        p->pending_tail = r->prev;
    r->prev = r->next = NULL;
    p->npending--;
    cb_release(p->cluster->cb, r->priority, CB_PENDING);
    herald_gauge_add(p->cluster->stats.upstream_rq_pending_active, -1);
}

static void ureq_destroy(struct herald_http_upstream *r)
{
    ureq_pending_remove(r);
    deactivate(r);
    if (r->wprev)
        r->wprev->wnext = r->wnext;
    else
        tls_reqs = r->wnext;
    if (r->wnext)
        r->wnext->wprev = r->wprev;
    herald_timer_free(r->kick);
    herald_headers_free(r->q_headers);
    herald_headers_free(r->q_trailers);
    if (r->q_body)
        evbuffer_free(r->q_body);
    if (r->h2_out)
        evbuffer_free(r->h2_out);
    if (r->h2_in)
        evbuffer_free(r->h2_in);
    herald_headers_free(r->h2_out_trailers);
    herald_headers_free(r->h2_in_headers);
    herald_headers_free(r->h2_in_trailers);
    host_put(r->host);
    pool_unref(r->pool);
    mem_cache_free(r, sizeof(*r));
}

/* ------------------------------------------------------------ callbacks to the owner */

static void on_deferred(struct herald_timer *t, void *arg)
{
    struct herald_http_upstream *r = arg;
    if (r->reset_due) {
        r->reset_due = false;
        r->in_cb = true;
        if (r->cbs->on_reset)
            r->cbs->on_reset(r->arg, r->reset_why);
        ureq_destroy(r);
        return;
    }
    ureq_hold(r);
    if (r->ready_due) {
        r->ready_due = false;
        if (r->cbs->on_ready)
            r->cbs->on_ready(r->arg);
    }
    if (r->wm_low_due && !r->freed && r->state == UREQ_BOUND) {
        r->wm_low_due = false;
        ureq_watermark(r, false);
    }
    if (r->resume_due && !r->freed) {
        r->resume_due = false;
        h2_deliver_held(r);
    }
    ureq_unhold(r);
}

void ureq_hold(struct herald_http_upstream *r)
{
    r->holds++;
}

bool ureq_unhold(struct herald_http_upstream *r)
{
    r->holds--;
    if (r->freed && !r->holds) {
        ureq_destroy(r);
        return false;
    }
    return !r->freed;
}

void ureq_kick(struct herald_http_upstream *r)
{
    herald_timer_arm(r->kick, 0);
}

void ureq_fail(struct herald_http_upstream *r, enum herald_upstream_reset why)
{
    if (r->state == UREQ_FAILED || r->state == UREQ_ORPHAN)
        return;
    ureq_pending_remove(r);
    if (r->conn) {
        r->conn->req = NULL;
        r->conn = NULL;
    }
    if (r->h2)
        h2_stream_detach(r, true);
    deactivate(r);
    if (why == HERALD_UPSTREAM_RESET_CONNECT_FAILURE || why == HERALD_UPSTREAM_RESET_REMOTE ||
        why == HERALD_UPSTREAM_RESET_PROTOCOL) {
        atomic_fetch_add_explicit(&r->host->rq_error, 1, memory_order_relaxed);
        /* Envoy's router reports every reset but overflow as a local-origin connect failure */
        outlier_report_local(r->host, OUTLIER_CONNECT_FAILED);
    }
    r->state = UREQ_FAILED;
    r->reset_why = why;
    r->reset_due = true;
    r->ready_due = r->wm_low_due = r->resume_due = false;
    herald_timer_arm(r->kick, 0);
}

void ureq_done(struct herald_http_upstream *r)
{
    r->state = UREQ_DONE;
    deactivate(r);
}

void ureq_watermark(struct herald_http_upstream *r, bool above)
{
    if (r->wm_above == above)
        return;
    r->wm_above = above;
    if (r->cbs->on_watermark)
        r->cbs->on_watermark(r->arg, above);
}

/* Runs an owner callback that may free r; false when it did (r is gone). */
static bool watermark_held(struct herald_http_upstream *r, bool above)
{
    ureq_hold(r);
    ureq_watermark(r, above);
    return ureq_unhold(r);
}

/* ------------------------------------------------------------ encoding */

void ureq_count_sent(struct herald_http_upstream *r, size_t bytes, bool headers)
{
    if (r->count_wire && r->stream)
        cm_stream_upstream_bytes(r->stream, true, bytes, headers);
}

void ureq_count_received(struct herald_http_upstream *r, size_t bytes, bool headers)
{
    if (r->count_wire && r->stream)
        cm_stream_upstream_bytes(r->stream, false, bytes, headers);
}

void ureq_mark_sent(struct herald_http_upstream *r)
{
    r->req_done = true;
    if (r->stream)
        cm_stream_upstream_request_sent(r->stream);
}

static void req_end(struct herald_http_upstream *r)
{
    ureq_mark_sent(r);
    if (r->conn)
        r->conn->req_sent_all = true;
}

/* The request cannot be written as given: it fails, its connection goes. */
static void encode_failed(struct herald_http_upstream *r, const char *what)
{
    struct pool_conn *c = r->conn;
    log_debug("http_pool", "%s: cannot encode the request %s", r->host->addr_str, what);
    r->conn = NULL;
    c->req = NULL;
    deactivate(r);
    bool written = r->headers_sent;
    ureq_fail(r, HERALD_UPSTREAM_RESET_LOCAL);
    pool_conn_cancel(c, written);
}

static int encode_headers(struct herald_http_upstream *r, struct herald_headers *h, bool end)
{
    if (r->h2)
        return h2_encode_headers(r, h, end);
    struct pool_conn *c = r->conn;
    const char *method = HEADERS_GET(h, ":method");
    bool upgrade = (method && !strcmp(method, "CONNECT")) ||
                   headers_upgrade_requested(h);
    if (!HEADERS_GET(h, ":authority"))
        herald_headers_set(h, ":authority", r->host->addr_str);
    if (upgrade) {
        /* the head alone, then raw bytes; the connection is this exchange's for good
         * (its "connection: upgrade" stays: the close comes anyway) */
        r->enc.flags |= H1_ENC_UPGRADE;
        c->upgrade = true;
        c->last = true;
    } else if (c->last) {
        herald_headers_set(h, "connection", "close");
    }
    size_t queued = r->count_wire ? evbuffer_get_length(c->wbuf) : 0;
    int rc = h1_encode_request_headers(&r->enc, c->wbuf, h, end);
    if (rc == 0) {
        h1_codec_expect_response(c->codec, method);   /* the set()s above leave it valid */
        if (r->count_wire)
            ureq_count_sent(r, evbuffer_get_length(c->wbuf) - queued, true);
    }
    herald_headers_free(h);
    if (rc < 0) {
        evbuffer_drain(c->wbuf, evbuffer_get_length(c->wbuf));
        encode_failed(r, "headers");
        return -1;
    }
    r->headers_sent = true;
    /* An upgrade's end given with its head is the tunnel's half-close:
     * pool.c sends the FIN once the upstream has taken the upgrade. */
    if (end)
        req_end(r);
    pool_conn_flush(c, false);
    return 0;
}

static int encode_data(struct herald_http_upstream *r, struct evbuffer *data, bool end)
{
    if (r->h2)
        return h2_encode_data(r, data, end);
    struct pool_conn *c = r->conn;
    size_t queued = r->count_wire ? evbuffer_get_length(c->wbuf) : 0;
    if (h1_encode_data(&r->enc, c->wbuf, data, end) < 0) {
        evbuffer_drain(data, evbuffer_get_length(data));
        encode_failed(r, "body");
        return -1;
    }
    if (r->count_wire)
        ureq_count_sent(r, evbuffer_get_length(c->wbuf) - queued, false);
    if (end)
        req_end(r);
    /* in a tunnel the client's end is a half-close of the upstream */
    pool_conn_flush(c, end && c->tunnel);
    return 0;
}

static int encode_trailers(struct herald_http_upstream *r, struct herald_headers *t)
{
    if (r->h2)
        return h2_encode_trailers(r, t);
    struct pool_conn *c = r->conn;
    size_t queued = r->count_wire ? evbuffer_get_length(c->wbuf) : 0;
    int rc = h1_encode_trailers(&r->enc, c->wbuf, t);
    herald_headers_free(t);
    if (rc < 0) {
        encode_failed(r, "trailers");
        return -1;
    }
    if (r->count_wire)
        ureq_count_sent(r, evbuffer_get_length(c->wbuf) - queued, false);
    req_end(r);
    pool_conn_flush(c, false);
    return 0;
}

/* Writes what the owner sent before r had a connection. false: r failed. */
static bool flush_queued(struct herald_http_upstream *r)
{
    if (!r->headers_sent) {
        struct herald_headers *h = r->q_headers;
        if (!h)
            return true; /* nothing yet */
        r->q_headers = NULL;
        size_t blen = r->q_body ? evbuffer_get_length(r->q_body) : 0;
        bool end = r->q_end && !blen && !r->q_trailers;
        if (encode_headers(r, h, end) < 0)
            return false;
        if (end)
            return true;
    }
    if (r->q_body && (evbuffer_get_length(r->q_body) || (r->q_end && !r->q_trailers)))
        if (encode_data(r, r->q_body, r->q_end && !r->q_trailers) < 0)
            return false;
    if (r->q_trailers) {
        struct herald_headers *t = r->q_trailers;
        r->q_trailers = NULL;
        if (encode_trailers(r, t) < 0)
            return false;
    }
    if (r->wm_above && r->conn && !r->conn->above_high)
        return watermark_held(r, false);
    return true;
}

static void apply_pause(struct pool_conn *c, bool pause)
{
    if (!c->up)
        return;
    if (pause) {
        herald_upstream_pause_reading(c->up, HERALD_PAUSE_PEER);
        /* a tunnel's codec must reach the 101's end: reading stops all the same */
        if (c->codec && !c->tunnel)
            h1_codec_pause(c->codec);
        return;
    }
    if (c->codec && !c->resp_complete && !c->tunnel)
        h1_codec_resume(c->codec);
    herald_upstream_resume_reading(c->up, HERALD_PAUSE_PEER);
}

/* The owner's stream learns which connection its attempt got. */
static void report_bound(struct herald_http_upstream *r)
{
    if (!r->stream)
        return;
    const struct herald_upstream *up = r->conn ? r->conn->up : h2_conn_upstream(r->h2);
    if (up)
        cm_stream_upstream_bound(r->stream, up->local_str, up->id, r->bound_ms - r->created_ms, r->h2 != NULL,
                                 up->ssl);
}

void ureq_bind(struct herald_http_upstream *r, struct pool_conn *c)
{
    r->conn = c;
    c->req = r;
    r->state = UREQ_BOUND;
    r->bound_ms = herald_now_ms();
    report_bound(r);
    pool_conn_bound(c);
    activate(r);
    h1_encoder_init(&r->enc, 0);
    r->ready_due = true;
    herald_timer_arm(r->kick, 0);
    if (r->paused)
        apply_pause(c, true);
    flush_queued(r);
}

void ureq_bound_h2(struct herald_http_upstream *r)
{
    r->state = UREQ_BOUND;
    r->bound_ms = herald_now_ms();
    report_bound(r);
    activate(r);
    r->ready_due = true;
    herald_timer_arm(r->kick, 0);
    flush_queued(r);
}

void ureq_orphan_all(struct worker *w)
{
    tls_closed = true;
    /* the queues first: an HTTP/2 connection a stream leaves must find nobody to bind */
    for (struct herald_http_upstream *r = tls_reqs; r; r = r->wnext)
        ureq_pending_remove(r);
    for (struct herald_http_upstream *r = tls_reqs; r; r = r->wnext) {
        if (r->conn) {
            r->conn->req = NULL;
            r->conn = NULL;
        }
        if (r->h2)
            h2_stream_detach(r, false);
        deactivate(r);
        herald_timer_cancel(r->kick);
        r->ready_due = r->reset_due = r->wm_low_due = r->resume_due = false;
        r->pool = NULL;
        if (r->state == UREQ_FAILED && !r->in_cb) {
            /* its on_reset never comes, so the owner still holds it and frees it */
        }
        r->state = UREQ_ORPHAN;
    }
}

/* ------------------------------------------------------------ SDK */

static struct herald_http_upstream *ureq_new(struct herald_cluster *view, struct herald_host *h,
                                             const struct herald_http_upstream_cbs *cbs, void *arg,
                                             enum herald_priority priority, const struct herald_conn *d);

struct herald_http_upstream *herald_http_upstream_new(struct herald_cluster *view, struct herald_host *h,
                                                      const struct herald_http_upstream_cbs *cbs, void *arg)
{
    return herald_http_upstream_new_priority(view, h, cbs, arg, HERALD_PRIORITY_DEFAULT);
}

struct herald_http_upstream *herald_http_upstream_new_priority(struct herald_cluster *view,
                                                               struct herald_host *h,
                                                               const struct herald_http_upstream_cbs *cbs,
                                                               void *arg, enum herald_priority priority)
{
    return ureq_new(view, h, cbs, arg, priority, NULL);
}

struct herald_http_upstream *herald_http_upstream_new_for(struct herald_cluster *view, struct herald_host *h,
                                                          const struct herald_http_upstream_cbs *cbs, void *arg,
                                                          enum herald_priority priority, const struct herald_conn *d)
{
    return ureq_new(view, h, cbs, arg, priority, d);
}

/* A request of downstream connection d (NULL: none known) */
static struct herald_http_upstream *ureq_new(struct herald_cluster *view, struct herald_host *h,
                                             const struct herald_http_upstream_cbs *cbs, void *arg,
                                             enum herald_priority priority, const struct herald_conn *d)
{
    struct worker *w = worker_self();
    if (!w || !view || !h || !cbs || tls_closed)
        return NULL;
    struct http_pool *p = pool_get_for(view, h, d);
    struct herald_http_upstream *r = mem_cache_alloc_zeroed(sizeof(*r));
    r->pool = p;
    pool_ref(p);
    r->pcl = p->pc;
    r->priority = cb_prio((int)priority);
    r->host = h;
    host_get(h);
    r->cbs = cbs;
    r->arg = arg;
    r->created_ms = herald_now_ms();
    r->kick = herald_timer_new(on_deferred, r);
    r->wnext = tls_reqs;
    if (tls_reqs)
        tls_reqs->wprev = r;
    tls_reqs = r;

    struct cluster *cl = p->cluster;
    if (!cb_can_create(cl->cb, r->priority, CB_RQ))
        goto overflow;
    bool h1 = p->proto == POOL_H1;
    if (h1 ? pool_bind_idle(p, r) : h2_pool_bind(p, r))
        return r;
    if (!cb_can_create(cl->cb, r->priority, CB_PENDING))
        goto overflow;
    pending_add(r);
    enum herald_upstream_reset why;
    if ((h1 ? pool_grow(p, &why) : h2_pool_grow(p, &why)) < 0)
        ureq_fail(r, why);
    return r;

overflow:
    herald_stat_inc(cl->stats.upstream_rq_pending_overflow);
    ureq_fail(r, HERALD_UPSTREAM_RESET_OVERFLOW);
    return r;
}

void herald_http_upstream_send_headers(struct herald_http_upstream *r, struct herald_headers *headers,
                                       bool end_stream)
{
    if (r->headers_sent || r->q_headers || (r->state != UREQ_PENDING && r->state != UREQ_BOUND)) {
        herald_headers_free(headers);
        return;
    }
    if (r->state == UREQ_PENDING || r->q_body || r->q_trailers) {
        r->q_headers = headers;
        r->q_end = r->q_end || end_stream;
        if (r->state == UREQ_BOUND)
            flush_queued(r);
        return;
    }
    encode_headers(r, headers, end_stream);
}

void herald_http_upstream_send_data(struct herald_http_upstream *r, struct herald_buf *data, bool end_stream)
{
    struct evbuffer *in = buf_ev(data);
    if (r->req_done || r->q_end || (r->state != UREQ_PENDING && r->state != UREQ_BOUND)) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    if (r->state == UREQ_BOUND && r->headers_sent) {
        encode_data(r, in, end_stream);
        return;
    }
    if (!r->q_body)
        r->q_body = evbuffer_new();
    evbuffer_add_buffer(r->q_body, in);
    r->q_end = end_stream;
    uint32_t limit = r->pcl->cluster->cfg->buffer_limit;
    if (!limit)
        limit = DEFAULT_BUFFER_LIMIT;
    if (evbuffer_get_length(r->q_body) > limit)
        ureq_watermark(r, true);
}

void herald_http_upstream_send_trailers(struct herald_http_upstream *r, struct herald_headers *trailers)
{
    if (r->req_done || r->q_end || r->q_trailers || (r->state != UREQ_PENDING && r->state != UREQ_BOUND)) {
        herald_headers_free(trailers);
        return;
    }
    if (r->state == UREQ_BOUND && r->headers_sent) {
        encode_trailers(r, trailers);
        return;
    }
    r->q_trailers = trailers;
    r->q_end = true;
}

void herald_http_upstream_pause_reading(struct herald_http_upstream *r, bool pause)
{
    if (r->paused == pause)
        return;
    r->paused = pause;
    herald_stat_inc(pause ? r->pcl->cluster->stats.upstream_flow_control_paused_reading_total
                          : r->pcl->cluster->stats.upstream_flow_control_resumed_reading_total);
    if (r->state == UREQ_BOUND && r->conn)
        apply_pause(r->conn, pause);
    if (!pause && r->state == UREQ_BOUND && !r->conn &&
        ((r->h2_in && evbuffer_get_length(r->h2_in)) || r->h2_in_end || r->h2_in_trailers)) {
        r->resume_due = true; /* HTTP/2: what came while paused goes out from the event loop */
        ureq_kick(r);
    }
}

void herald_http_upstream_set_stream(struct herald_http_upstream *r, struct herald_http_stream *s)
{
    if (!r || !s)
        return;
    r->stream = s;
    r->count_wire = cm_stream_counts_upstream_bytes(s);
    cm_stream_upstream_attempt(s, r->host);
    if (r->state == UREQ_BOUND)
        report_bound(r);   /* bound while it was being made: an idle connection */
}

void herald_http_upstream_free(struct herald_http_upstream *r)
{
    if (!r)
        return;
    r->stream = NULL;   /* the stream may go before the core lets go of r */
    switch (r->state) {
    case UREQ_PENDING:
        ureq_pending_remove(r);
        herald_stat_inc(r->pcl->upstream_rq_cancelled);
        break;
    case UREQ_BOUND: {
        struct pool_conn *c = r->conn;
        deactivate(r);
        r->state = UREQ_DONE;
        if (r->h2) {
            if (!r->end_delivered)
                herald_stat_inc(r->ready_due ? r->pcl->upstream_rq_cancelled : r->pcl->upstream_rq_tx_reset);
            h2_stream_detach(r, true);
            break;
        }
        if (!c)
            break;
        c->req = NULL;
        r->conn = NULL;
        if (r->end_delivered)
            break; /* released inside the last callback: the codec's on_complete follows */
        herald_stat_inc(r->ready_due ? r->pcl->upstream_rq_cancelled : r->pcl->upstream_rq_tx_reset);
        if (r->paused)
            apply_pause(c, false);
        pool_conn_cancel(c, r->headers_sent);
        break;
    }
    case UREQ_FAILED:
        if (r->in_cb)
            return; /* inside on_reset: freed right after it */
        break;      /* its on_reset is not delivered now */
    case UREQ_DONE:
    case UREQ_ORPHAN:
        break;
    }
    r->state = UREQ_DONE;
    r->ready_due = r->reset_due = r->wm_low_due = r->resume_due = false;
    if (r->holds) {
        r->freed = true;
        return;
    }
    ureq_destroy(r);
}

const struct herald_host *herald_http_upstream_host(const struct herald_http_upstream *r)
{
    return r->host;
}

bool herald_cluster_retry_begin(struct herald_cluster *view, enum herald_priority priority)
{
    return view && view->cluster && cb_acquire(view->cluster->cb, (int)priority, CB_RETRY);
}

void herald_cluster_retry_end(struct herald_cluster *view, enum herald_priority priority)
{
    if (view && view->cluster)
        cb_release(view->cluster->cb, (int)priority, CB_RETRY);
}
