/* Upstream TCP connections for filters (the SDK's herald_upstream_*): the
 * connect with its timeout and circuit breaker, stats under
 * cluster.<name>.upstream_cx_*, watermarks and half-close like downstream. */
#include "config.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buffer.h"
#include "common.h"
#include "herald/stats.h"
#include "log.h"
#include "net/address.h"
#include "net/connection.h"
#include "net/proxy_header.h"
#include "net/tls.h"
#include "net/upstream_conn.h"
#include "net/sock_reader.h"
#include "upstream/circuit_breaker.h"
#include "upstream/cluster.h"
#include "upstream/outlier.h"
#include "worker.h"


#define DEFER_FREE 0x1u
#define DEFER_READ 0x2u
#define DEFER_FLUSH 0x4u /* plain sockets: write what was queued this iteration (see connection.c) */

static void defer(struct herald_upstream *u, unsigned work)
{
    u->work |= work;
    herald_timer_arm(u->deferred, 0);
}

static void free_upstream(struct herald_upstream *u);
static void redispatch(struct herald_upstream *u);

static void flush_output(struct herald_upstream *u);

/* Plain sockets are read by sock_reader once connected (see there why). */
static void read_on(struct herald_upstream *u)
{
    if (u->read_stopped)
        return;
    if (u->reader)
        sock_reader_enable(u->reader);
    else
        bufferevent_enable(u->bev, EV_READ);
}

static void read_off(struct herald_upstream *u)
{
    if (u->reader)
        sock_reader_disable(u->reader);
    bufferevent_disable(u->bev, EV_READ);
}

void upstream_read_stop(struct herald_upstream *u)
{
    read_off(u);
    u->read_stopped = true;
    sock_reader_free(u->reader);   /* spliced for good (see connection.c) */
    u->reader = NULL;
}

static void run_deferred(struct herald_timer *t, void *arg)
{
    struct herald_upstream *u = arg;
    unsigned work = u->work;
    u->work &= DEFER_FREE;
    if (work & DEFER_FREE) {
        free_upstream(u);
        return;
    }
    if (work & DEFER_FLUSH)
        flush_output(u);
    if ((work & DEFER_READ) && !(u->work & DEFER_FREE))
        redispatch(u);
}

static void schedule_free(struct herald_upstream *u, bool reset)
{
    if (u->gone)
        return;
    u->gone = u->closing = true;
    read_off(u);
    bufferevent_disable(u->bev, EV_WRITE);
    bufferevent_setcb(u->bev, NULL, NULL, NULL, NULL);
    if (u->timeout_ev)
        evtimer_del(u->timeout_ev);
    if (reset) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(bufferevent_getfd(u->bev), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    } else if (u->ssl && u->connected) {
        tls_shutdown(u->ssl);
    }
    defer(u, DEFER_FREE);
}

void upstream_release(struct herald_upstream *u, bool reset)
{
    struct cluster_stats *st = &u->cluster->stats;
    herald_stat_add(st->upstream_cx_rx_bytes_total, u->rx_bytes);
    herald_stat_add(st->upstream_cx_tx_bytes_total, u->tx_bytes);
    herald_stat_inc(reset ? st->upstream_cx_destroy_remote : st->upstream_cx_destroy_local);
    schedule_free(u, reset);
}

static void free_upstream(struct herald_upstream *u)
{
    struct cluster_stats *st = &u->cluster->stats;
    herald_stat_inc(st->upstream_cx_destroy);
    herald_gauge_add(st->upstream_cx_active, -1);
    herald_histogram_record(st->upstream_cx_length_ms, mono_ms() - u->start_mono_ms);
    atomic_fetch_sub_explicit(&u->cluster->cx_active, 1, memory_order_relaxed);
    cb_release(u->cluster->cb, u->priority, CB_CX);
    atomic_fetch_sub_explicit(&u->host->cx_active, 1, memory_order_relaxed);
    if (u->prev)
        u->prev->next = u->next;
    else
        u->worker->upstreams = u->next;
    if (u->next)
        u->next->prev = u->prev;
    sock_reader_free(u->reader);
    bufferevent_free(u->bev);
    if (u->timeout_ev)
        event_free(u->timeout_ev);
    herald_timer_free(u->deferred);
    host_put(u->host);
    free(u);
}

/* An event the filter hears about, after which the upstream is gone. */
static void end_with(struct herald_upstream *u, enum herald_conn_event ev, bool reset)
{
    const struct herald_upstream_cbs *cbs = u->cbs;
    void *arg = u->arg;
    schedule_free(u, reset);
    if (cbs->on_event)
        cbs->on_event(arg, ev);
}

static void dispatch(struct herald_upstream *u)
{
    struct evbuffer *in = bufferevent_get_input(u->bev);
    size_t n = evbuffer_get_length(in);
    if (n)
        herald_stat_add(u->cluster->stats.upstream_cx_rx_bytes_total, n);
    bool end = u->read_eof;
    if (end)
        u->eof_delivered = true;
    u->cbs->on_data(u->arg, ev_buf(in), end);
}

static void check_done(struct herald_upstream *u)
{
    if (!u->closing && u->eof_delivered && u->shut_wr_done) {
        herald_stat_inc(u->cluster->stats.upstream_cx_destroy_remote);
        end_with(u, HERALD_EV_REMOTE_CLOSE, false);
    }
}

/* Our half-close: TLS says close_notify first, then the TCP FIN. */
static void shut_wr(struct herald_upstream *u)
{
    if (u->ssl)
        tls_shutdown(u->ssl);
    shutdown(bufferevent_getfd(u->bev), SHUT_WR);
    u->shut_wr_done = true;
}

static void on_readable(struct bufferevent *bev, void *arg)
{
    struct herald_upstream *u = arg;
    if (u->closing || u->pause_mask)
        return;
    dispatch(u);
}

static void on_writable(struct bufferevent *bev, void *arg)
{
    struct herald_upstream *u = arg;
    size_t len = evbuffer_get_length(bufferevent_get_output(bev));
    if (len == 0 && !u->ssl && u->connected)
        bufferevent_disable(bev, EV_WRITE); /* back to flush_output(): no arming per write */
    if (u->above_high && len <= u->buffer_limit / 2) {
        u->above_high = false;
        if (!u->closing && u->cbs->on_event)
            u->cbs->on_event(u->arg, HERALD_EV_BELOW_WRITE_LOW);
    }
    if (len > 0 || u->gone)
        return;
    if (u->flush_close) {
        schedule_free(u, false);
        return;
    }
    if (u->shut_wr_pending && !u->shut_wr_done) {
        shut_wr(u);
        check_done(u);
    }
}

static void flush_output(struct herald_upstream *u)
{
    struct evbuffer *out = bufferevent_get_output(u->bev);
    if (u->gone || (u->closing && !u->flush_close))
        return;
    if (evbuffer_get_length(out) > 0 && write_out(out, bufferevent_getfd(u->bev)) < 0 && errno != EAGAIN &&
        errno != EINTR) {
        herald_stat_inc(u->cluster->stats.upstream_cx_destroy_remote);
        if (u->closing)
            schedule_free(u, true);
        else
            end_with(u, HERALD_EV_REMOTE_CLOSE, true);
        return;
    }
    if (evbuffer_get_length(out) > 0) {
        bufferevent_enable(u->bev, EV_WRITE); /* the rest when the socket takes it */
        return;
    }
    on_writable(u->bev, u);
}

static void on_bev_event(struct bufferevent *bev, short what, void *arg)
{
    struct herald_upstream *u = arg;
    struct cluster_stats *st = &u->cluster->stats;
    if (what & BEV_EVENT_CONNECTED) {
        /* with TLS this is after the handshake */
        if (u->ssl)
            tls_handshake_done(u->cluster->cfg->tls, u->ssl);
        u->connected = true;
        event_free(u->timeout_ev); /* not needed any more: one event less per idle connection */
        u->timeout_ev = NULL;
        herald_histogram_record(st->upstream_cx_connect_ms, mono_ms() - u->start_mono_ms);
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = bufferevent_getfd(bev);
        if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
            addr_format((struct sockaddr *)&ss, u->local_str, sizeof(u->local_str));
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (!u->ssl)
            u->reader = sock_reader_new(u->worker->base, bev, fd, u->buffer_limit, on_readable, on_bev_event, u);
        if (!u->pause_mask)
            read_on(u);
        size_t queued = evbuffer_get_length(bufferevent_get_output(bev));
        if (!u->ssl) {
            /* from now on flush_output() writes (see connection.c) */
            bufferevent_disable(bev, EV_WRITE);
            if (queued > 0)
                defer(u, DEFER_FLUSH);
        }
        /* an end given before the connection was up, with no bytes before it: the FIN now */
        if (u->shut_wr_pending && queued == 0)
            defer(u, DEFER_FLUSH);
        outlier_report_local(u->host, u->http ? OUTLIER_CONNECT_SUCCESS : OUTLIER_CONNECT_SUCCESS_FINAL);
        if (u->cbs->on_event)
            u->cbs->on_event(u->arg, HERALD_EV_CONNECTED);
        return;
    }
    if ((what & BEV_EVENT_ERROR) || (!u->connected && (what & BEV_EVENT_EOF))) {
        if (!u->connected) {
            int err = EVUTIL_SOCKET_ERROR();
            herald_stat_inc(st->upstream_cx_connect_fail);
            atomic_fetch_add_explicit(&u->host->cx_connect_fail, 1, memory_order_relaxed);
            /* the TCP connect succeeded when the socket has a peer: then TLS failed */
            struct sockaddr_storage peer;
            socklen_t plen = sizeof(peer);
            if (u->ssl && getpeername(bufferevent_getfd(bev), (struct sockaddr *)&peer, &plen) == 0) {
                char why[256];
                unsigned long e = 0, x;
                while ((x = bufferevent_get_openssl_error(bev)))
                    if (!e)
                        e = x;
                tls_handshake_failed(u->cluster->cfg->tls, u->ssl, e, why, sizeof(why));
                log_debug("upstream", "TLS handshake with %s failed: %s", u->host->addr_str, why);
            } else {
                log_debug("upstream", "connect to %s failed: %s", u->host->addr_str,
                          evutil_socket_error_to_string(err));
            }
            if (!u->http)
                outlier_report_local(u->host, OUTLIER_CONNECT_FAILED);
            end_with(u, HERALD_EV_CONNECT_FAILED, false);
        } else {
            herald_stat_inc(st->upstream_cx_destroy_remote);
            end_with(u, HERALD_EV_REMOTE_CLOSE, true);
        }
        return;
    }
    if (what & BEV_EVENT_EOF) {
        u->read_eof = true;
        if (!u->pause_mask)
            dispatch(u);
        check_done(u);
    }
}

static void on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct herald_upstream *u = arg;
    herald_stat_inc(u->cluster->stats.upstream_cx_connect_timeout);
    atomic_fetch_add_explicit(&u->host->cx_connect_fail, 1, memory_order_relaxed);
    if (!u->http)
        outlier_report_local(u->host, OUTLIER_TIMEOUT);
    end_with(u, HERALD_EV_CONNECT_TIMEOUT, true);
}

static void redispatch(struct herald_upstream *u)
{
    if (u->closing || u->pause_mask)
        return;
    if (evbuffer_get_length(bufferevent_get_input(u->bev)) > 0 || (u->read_eof && !u->eof_delivered)) {
        dispatch(u);
        check_done(u);
    }
}

struct herald_upstream *herald_upstream_connect(struct herald_cluster *view, struct herald_host *h,
                                                const struct herald_upstream_cbs *cbs, void *arg,
                                                enum herald_upstream_error *why)
{
    return upstream_connect(view, h, cbs, arg, why, 0, false, NULL, 0);
}

struct herald_upstream *herald_upstream_connect_from(struct herald_cluster *view, struct herald_host *h,
                                                     const struct herald_upstream_cbs *cbs, void *arg,
                                                     enum herald_upstream_error *why, const struct herald_conn *d)
{
    const struct pp_upstream *pp = view && view->cluster ? view->cluster->cfg->proxy_protocol : NULL;
    if (!pp || !h)
        return upstream_connect(view, h, cbs, arg, why, 0, false, NULL, 0);
    size_t len;
    uint8_t *hdr = pp_header_new(pp, h->ep ? h->ep->pp_tlvs : NULL, d, &len);
    struct herald_upstream *u = upstream_connect(view, h, cbs, arg, why, 0, false, hdr, len);
    free(hdr);
    return u;
}

struct bufferevent *upstream_bev_new(struct event_base *base, const struct cluster_cfg *cfg,
                                     const struct herald_host *h, const uint8_t *pp, size_t pplen, SSL **ssl_out,
                                     struct bufferevent **connect_bev)
{
    SSL *ssl = NULL;
    struct bufferevent *bev, *raw;
    *ssl_out = NULL;
    if (cfg->tls && !(ssl = tls_ssl_new(cfg->tls)))
        return NULL;
    if (ssl && !cfg->proxy_protocol) {
        bev = *connect_bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                            BEV_OPT_CLOSE_ON_FREE);
        if (!bev) {
            SSL_free(ssl);
            return NULL;
        }
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
        *ssl_out = ssl;
        return bev;
    }
    raw = *connect_bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!raw) {
        SSL_free(ssl);
        return NULL;
    }
    if (cfg->proxy_protocol) {
        /* the PROXY header goes first, once connected; none given: a connection of our own */
        uint8_t *own = pp ? NULL : pp_header_new(cfg->proxy_protocol, h && h->ep ? h->ep->pp_tlvs : NULL, NULL,
                                                  &pplen);
        evbuffer_add(bufferevent_get_output(raw), pp ? pp : own, pplen);
        free(own);
    }
    if (!ssl)
        return raw;
    /* TLS after a PROXY header, which goes out in the clear: a filter over the plain bufferevent */
    bev = bufferevent_openssl_filter_new(base, raw, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        bufferevent_free(raw);
        SSL_free(ssl);
        return NULL;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    *ssl_out = ssl;
    return bev;
}

struct herald_upstream *upstream_connect(struct herald_cluster *view, struct herald_host *h,
                                         const struct herald_upstream_cbs *cbs, void *arg,
                                         enum herald_upstream_error *why, int priority, bool http,
                                         const uint8_t *pp, size_t pplen)
{
    struct worker *w = worker_self();
    struct cluster *cl = view ? view->cluster : NULL;
    enum herald_upstream_error dummy;
    if (!why)
        why = &dummy;
    *why = HERALD_UPSTREAM_FAILED;
    if (!w || !cl || !h || !cbs || !cbs->on_data)
        return NULL;
    priority = cb_prio(priority);
    if (!cb_acquire(cl->cb, priority, CB_CX)) {
        herald_stat_inc(cl->stats.upstream_cx_overflow);
        *why = HERALD_UPSTREAM_OVERFLOW;
        return NULL;
    }
    /* The transport socket seam: a cluster with an UpstreamTlsContext gets an OpenSSL bufferevent;
     * CONNECTED then comes after the handshake. */
    SSL *ssl = NULL;
    struct bufferevent *connect_bev = NULL;
    struct bufferevent *bev = upstream_bev_new(w->base, cl->cfg, h, pp, pplen, &ssl, &connect_bev);
    if (!bev) {
        cb_release(cl->cb, priority, CB_CX);
        return NULL;
    }
    struct herald_upstream *u = xcalloc(1, sizeof(*u));
    u->id = ((uint64_t)w->index << 48) | ++w->next_conn_id;   /* one sequence with the downstream ids */
    u->priority = priority;
    u->http = http;
    u->worker = w;
    u->cluster = cl;
    u->host = h;
    host_get(h);
    u->cbs = cbs;
    u->arg = arg;
    u->bev = bev;
    u->ssl = ssl;
    u->buffer_limit = cl->cfg->buffer_limit ? cl->cfg->buffer_limit : DEFAULT_BUFFER_LIMIT;
    u->start_mono_ms = mono_ms();
    u->timeout_ev = evtimer_new(w->base, on_connect_timeout, u);
    u->deferred = herald_timer_new(run_deferred, u);
    u->next = w->upstreams;
    if (w->upstreams)
        w->upstreams->prev = u;
    w->upstreams = u;
    atomic_fetch_add_explicit(&cl->cx_active, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->cx_active, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->cx_total, 1, memory_order_relaxed);
    herald_stat_inc(cl->stats.upstream_cx_total);
    herald_gauge_add(cl->stats.upstream_cx_active, 1);

    bufferevent_setcb(bev, on_readable, on_writable, on_bev_event, u);
    /* libevent's default of 16 KiB per read/write costs a syscall and a
     * filter pass per 16 KiB; bulk transfers want bigger bites. */
    /* TLS (bufferevent_openssl, upstream only): it reserves twice this for every read */
    bufferevent_set_max_single_read(bev, ssl ? 16 * 1024 : 256 * 1024);
    bufferevent_set_max_single_write(bev, 256 * 1024);
    if (ssl)   /* plain sockets: sock_reader keeps the input under the limit itself */
        bufferevent_setwatermark(bev, EV_READ, 0, u->buffer_limit);
    bufferevent_setwatermark(bev, EV_WRITE, u->buffer_limit / 2, 0);
    uint64_t ms = cl->cfg->connect_timeout_ms ? cl->cfg->connect_timeout_ms : 5000;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(u->timeout_ev, &tv);
    /* Refusals come back as an error event (libevent defers them), never from here. */
    if (bufferevent_socket_connect(connect_bev, (struct sockaddr *)&h->addr, (int)h->addrlen) < 0) {
        herald_stat_inc(cl->stats.upstream_cx_connect_fail);
        atomic_fetch_add_explicit(&h->cx_connect_fail, 1, memory_order_relaxed);
        if (!http)
            outlier_report_local(h, OUTLIER_CONNECT_FAILED);
        schedule_free(u, false);
        return NULL;
    }
    bufferevent_disable(bev, EV_READ);
    *why = HERALD_UPSTREAM_OK;
    return u;
}

int herald_upstream_write(struct herald_upstream *u, struct herald_buf *buf, bool end_stream)
{
    if (u->closing || u->shut_wr_pending) {
        herald_buf_drain(buf, herald_buf_len(buf));
        return -1;
    }
    struct evbuffer *out = bufferevent_get_output(u->bev);
    size_t n = herald_buf_len(buf);
    if (n)
        herald_stat_add(u->cluster->stats.upstream_cx_tx_bytes_total, n);
    evbuffer_add_buffer(out, buf_ev(buf));
    if (!u->ssl && u->connected && evbuffer_get_length(out) > 0) {
        /* a whole buffer's worth now, as connection.c's write_now() (errors: flush_output's) */
        if (evbuffer_get_length(out) >= WRITE_NOW_BYTES && !u->closing)
            (void)write_out(out, bufferevent_getfd(u->bev));
        defer(u, DEFER_FLUSH);   /* also when written: flush_output() tells who waits for the drain */
    }
    size_t len = evbuffer_get_length(out);
    if (end_stream) {
        u->shut_wr_pending = true;
        if (len == 0 && u->connected) {
            shut_wr(u);
            check_done(u);
            return 0;
        }
    }
    if (!u->above_high && len > u->buffer_limit) {
        u->above_high = true;
        if (u->cbs->on_event)
            u->cbs->on_event(u->arg, HERALD_EV_ABOVE_WRITE_HIGH);
    }
    return 0;
}

size_t herald_upstream_output_len(const struct herald_upstream *u)
{
    return evbuffer_get_length(bufferevent_get_output(u->bev));
}

void herald_upstream_close(struct herald_upstream *u, enum herald_close_mode mode)
{
    if (u->gone)
        return;
    herald_stat_inc(u->cluster->stats.upstream_cx_destroy_local);
    u->closing = true;
    read_off(u);
    if (mode == HERALD_CLOSE_FLUSH && u->connected && evbuffer_get_length(bufferevent_get_output(u->bev)) > 0) {
        u->flush_close = true; /* on_writable frees it once flushed */
        if (!u->ssl)
            defer(u, DEFER_FLUSH);
        return;
    }
    schedule_free(u, mode == HERALD_CLOSE_RESET);
}

void herald_upstream_pause_reading(struct herald_upstream *u, unsigned reason)
{
    u->pause_mask |= reason;
    read_off(u);
}

void herald_upstream_resume_reading(struct herald_upstream *u, unsigned reason)
{
    u->pause_mask &= ~reason;
    if (u->pause_mask || u->closing)
        return;
    if (u->connected && !u->read_eof)
        read_on(u);
    if (evbuffer_get_length(bufferevent_get_input(u->bev)) > 0 || (u->read_eof && !u->eof_delivered))
        defer(u, DEFER_READ);
}

const struct herald_host *herald_upstream_host(const struct herald_upstream *u) { return u->host; }
const char *herald_upstream_local_str(const struct herald_upstream *u) { return u->local_str; }
uint64_t herald_upstream_id(const struct herald_upstream *u) { return u->id; }

void upstream_close_all(struct worker *w)
{
    for (struct herald_upstream *u = w->upstreams; u; u = u->next)
        schedule_free(u, false);
}
