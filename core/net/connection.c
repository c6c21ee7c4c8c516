/* Downstream connections: the network filter chain over a bufferevent.
 *
 * Flow control follows libevent's le-proxy and Envoy's watermarks: reading
 * stops while any pause bit is set (a peer's output over its high mark, a
 * filter waiting, ...); the output's high mark is the listener's
 * per_connection_buffer_limit_bytes and its low mark half of it. The input
 * is bounded by the same limit, so a filter that does not drain stops reads.
 *
 * Closing raises the close event to the filters at once, but the memory goes
 * away from a deferred event, so a filter that closes the connection from
 * inside one of its own callbacks never finds its session freed under it. */
#include "config.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buffer.h"
#include "common.h"
#include "herald/stats.h"
#include "herald/timer.h"
#include "log.h"
#include "net/connection.h"
#include "net/listener.h"
#include "net/sock_reader.h"
#include "net/tls.h"
#include "overload.h"
#include "net/tls_stream.h"
#include "worker.h"

/* One timer per connection, armed with 0, does all deferred work (fewer
 * allocations per connection: idle connections are what a proxy has most of). */
#define DEFER_FREE 0x1u               /* destruction */
#define DEFER_READ 0x2u               /* re-read of buffered input after a resume */
#define DEFER_FLUSH 0x4u              /* write the output (plain sockets) */

struct conn_extra {
    struct herald_timer *deferred;
    struct sock_reader *reader;       /* plain sockets */
    struct tls_stream *tls_io;        /* TLS sockets (c->tls is their context) */
    unsigned work;                    /* DEFER_* */
};

/* The extra events live right after the connection in one allocation. */
struct conn_alloc {
    struct herald_conn c;
    struct conn_extra x;
};

static struct conn_extra *extra(struct herald_conn *c) { return &((struct conn_alloc *)c)->x; }

static void finalize(struct herald_conn *c, bool reset);

static void raise_event(struct herald_conn *c, enum herald_conn_event ev)
{
    for (size_t i = 0; i < c->chain->nfilters; i++) {
        const struct herald_network_filter_ops *ops = c->chain->filters[i].ops;
        if (ops->on_event && c->sessions[i])
            ops->on_event(c->sessions[i], ev);
    }
}

/* Runs the read filters from index `from` over the input buffer. */
static void dispatch_read(struct herald_conn *c, size_t from)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    bool end = c->read_eof;
    for (size_t i = from; i < c->chain->nfilters; i++) {
        if (c->closing)
            return;
        const struct herald_network_filter_ops *ops = c->chain->filters[i].ops;
        if (!ops->on_read)
            continue;
        enum herald_status st = ops->on_read(c->sessions[i], ev_buf(in), end);
        if (st == HERALD_STOP) {
            c->stopped_at = i;
            return;
        }
        if (st == HERALD_CLOSE) {
            herald_conn_close(c, HERALD_CLOSE_RESET);
            return;
        }
    }
    c->stopped_at = SIZE_MAX;
    if (end)
        c->eof_delivered = true;
}

/* The connection is over when the peer finished sending, the filters were
 * told, and our own half-close has been flushed. */
static void check_done(struct herald_conn *c)
{
    if (!c->closing && c->eof_delivered && c->shut_wr_done) {
        c->remote_closed = true;
        herald_conn_close(c, HERALD_CLOSE_FLUSH);
    }
}

static void run_new_connection(struct herald_conn *c)
{
    while (c->new_conn_done < c->chain->nfilters && !c->closing) {
        size_t i = c->new_conn_done++;
        const struct herald_network_filter_ops *ops = c->chain->filters[i].ops;
        if (!ops->on_new_connection)
            continue;
        enum herald_status st = ops->on_new_connection(c->sessions[i]);
        if (st == HERALD_STOP) {
            c->stopped_at = i;
            return;
        }
        if (st == HERALD_CLOSE) {
            herald_conn_close(c, HERALD_CLOSE_RESET);
            return;
        }
    }
}

static bool paused(const struct herald_conn *c) { return c->pause_mask != 0; }

/* Our half-close: TLS says close_notify first, then the TCP FIN. */
static void shut_wr(struct herald_conn *c)
{
    if (c->ssl)
        tls_shutdown(c->ssl);
    shutdown(c->fd, SHUT_WR);
    c->shut_wr_done = true;
}

static void on_readable(struct bufferevent *bev, void *arg)
{
    struct herald_conn *c = arg;
    if (c->closing || paused(c))
        return;
    dispatch_read(c, 0);
}

static void on_writable(struct bufferevent *bev, void *arg)
{
    struct herald_conn *c = arg;
    size_t len = evbuffer_get_length(bufferevent_get_output(bev));
    if (len == 0)
        bufferevent_disable(bev, EV_WRITE); /* back to flush_output(): no arming per write */
    if (c->above_high && len <= c->buffer_limit / 2) {
        c->above_high = false;
        if (!c->closing)
            raise_event(c, HERALD_EV_BELOW_WRITE_LOW);
    }
    if (len > 0)
        return;
    if (c->flush_close) {
        finalize(c, false);
        return;
    }
    if (c->shut_wr_pending && !c->shut_wr_done) {
        shut_wr(c);
        check_done(c);
    }
}

static void start_filters(struct herald_conn *c);

static void handshake_event(struct herald_conn *c, short what)
{
    if (what & BEV_EVENT_CONNECTED) {
        c->handshaking = false;
        const unsigned char *p;
        unsigned len;
        SSL_get0_alpn_selected(c->ssl, &p, &len);
        if (len)
            c->alpn = xstrndup((const char *)p, len);
        tls_handshake_done(c->tls, c->ssl);
        log_trace("conn", "C%llu: TLS handshake done (%s, %s)", (unsigned long long)c->id, SSL_get_version(c->ssl),
                  SSL_get_cipher_name(c->ssl));
        start_filters(c);
        return;
    }
    char why[256];
    tls_handshake_failed(c->tls, c->ssl, tls_stream_error(extra(c)->tls_io), why, sizeof(why));
    if (what & BEV_EVENT_TIMEOUT) {
        herald_stat_inc(c->listener->stats.downstream_cx_transport_socket_connect_timeout);
        snprintf(why, sizeof(why), "timeout (transport_socket_connect_timeout)");
    }
    log_debug("conn", "C%llu: TLS handshake with %s failed: %s", (unsigned long long)c->id, herald_conn_remote_str(c), why);
    c->remote_closed = true;
    finalize(c, true);
}

static void on_bev_event(struct bufferevent *bev, short what, void *arg)
{
    struct herald_conn *c = arg;
    if (c->handshaking) {
        handshake_event(c, what);
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        log_debug("conn", "C%llu: %s", (unsigned long long)c->id, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        c->remote_closed = true;
        if (c->closing)
            finalize(c, true);
        else
            herald_conn_close(c, HERALD_CLOSE_RESET);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        c->read_eof = true;
        if (c->closing)
            return;
        if (!paused(c))
            dispatch_read(c, 0);
        check_done(c);
    }
}

static void redispatch(struct herald_conn *c)
{
    if (c->closing || paused(c))
        return;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    if (evbuffer_get_length(in) > 0 || (c->read_eof && !c->eof_delivered)) {
        dispatch_read(c, 0);
        check_done(c);
    }
}

static void defer(struct herald_conn *c, unsigned work)
{
    extra(c)->work |= work;
    herald_timer_arm(extra(c)->deferred, 0);
}

/* Plain sockets are read by sock_reader, TLS ones by tls_stream (see there why). */
static void read_on(struct herald_conn *c)
{
    if (c->splice)
        return;
    if (extra(c)->reader)
        sock_reader_enable(extra(c)->reader);
    else if (extra(c)->tls_io)
        tls_stream_read_enable(extra(c)->tls_io);
}

static void read_off(struct herald_conn *c)
{
    if (extra(c)->reader)
        sock_reader_disable(extra(c)->reader);
    else if (extra(c)->tls_io)
        tls_stream_read_disable(extra(c)->tls_io);
}

void conn_read_stop(struct herald_conn *c)
{
    read_off(c);
    /* spliced for good: the reader's memory goes (idle proxied connections are many) */
    sock_reader_free(extra(c)->reader);
    extra(c)->reader = NULL;
}

static void free_conn(struct herald_conn *c)
{
    struct worker *w = c->worker;
    for (size_t i = c->chain->nfilters; i-- > 0;)
        if (c->sessions[i] && c->chain->filters[i].ops->session_destroy)
            c->chain->filters[i].ops->session_destroy(c->sessions[i]);
    sock_reader_free(extra(c)->reader);
    tls_stream_free(extra(c)->tls_io);   /* before the bufferevent: it hooks the input */
    bufferevent_free(c->bev);
    herald_timer_free(extra(c)->deferred);
    if (c->link.prev)
        c->link.prev->link.next = c->link.next;
    else
        w->conns = c->link.next;
    if (c->link.next)
        c->link.next->link.prev = c->link.prev;
    w->active_conns--;
    listener_conn_closed(c->listener, w, c->start_mono_ms);
    metadata_free(&c->meta);
    free(c->sessions);
    free(c->server_name);
    free(c->alpn);
    free(c->remote_str);
    free(c->local_str);
    free(c->direct_remote);
    free(c->direct_local);
    free(c->direct_remote_str);
    free(c->direct_local_str);
    for (size_t i = 0; i < c->ntlvs; i++)
        free(c->tlvs[i].value);
    free(c->tlvs);
    free(c);
}

#define WRITE_MAX_VECS 64

/* Connections write from here, once per loop iteration, with whatever
 * the filters queued meanwhile (the head and body of a response go in one
 * sendmsg; over TLS, in whole records: an HTTP/2 HEADERS and DATA frame in
 * one). Only what the socket refuses waits for EV_WRITE: arming and
 * disarming it for every write would cost two epoll_ctl and an epoll_wait
 * each time.
 *
 * send/sendmsg, not libevent's writev: a write(2)-family call on a socket
 * also goes through the VFS (permission and fsnotify hooks); with recv on
 * the read side, kernel time per proxied request fell ~4% in A/B runs of
 * bench/cpu_split.sh. */
int write_out(struct evbuffer *out, int fd)
{
    struct evbuffer_iovec v[WRITE_MAX_VECS];
    int nv = evbuffer_peek(out, -1, NULL, v, WRITE_MAX_VECS);
    if (nv <= 0)
        return 0;
    if (nv > WRITE_MAX_VECS)
        nv = WRITE_MAX_VECS;   /* the rest on the next write */
    ssize_t n;
    if (nv == 1) {
        n = send(fd, v[0].iov_base, v[0].iov_len, MSG_NOSIGNAL);
    } else {
        /* struct evbuffer_iovec has struct iovec's layout on Unix (libevent's promise) */
        struct msghdr m = {.msg_iov = (struct iovec *)v, .msg_iovlen = (size_t)nv};
        n = sendmsg(fd, &m, MSG_NOSIGNAL);
    }
    if (n <= 0)
        return n == 0 ? 0 : -1;   /* errno as send left it */
    evbuffer_unfreeze(out, 1);
    evbuffer_drain(out, (size_t)n);
    evbuffer_freeze(out, 1);
    return (int)n;
}

static size_t output_len(const struct herald_conn *c)
{
    return evbuffer_get_length(bufferevent_get_output(c->bev));
}

static void flush_output(struct herald_conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (c->closing && !c->flush_close)
        return;
    int rc = 0;
    if (evbuffer_get_length(out) > 0) {
        if (extra(c)->tls_io)
            rc = tls_stream_flush(extra(c)->tls_io);   /* the rest, if any, when the socket takes it */
        else if (write_out(out, c->fd) < 0 && errno != EAGAIN && errno != EINTR)
            rc = -1;
    }
    if (rc < 0) {
        c->remote_closed = true;
        if (c->closing)
            finalize(c, true);
        else
            herald_conn_close(c, HERALD_CLOSE_RESET);
        return;
    }
    if (evbuffer_get_length(out) > 0) {
        if (!extra(c)->tls_io)
            bufferevent_enable(c->bev, EV_WRITE); /* the rest when the socket takes it */
        return;
    }
    on_writable(c->bev, c);
}

/* A whole buffer's worth goes out now rather than at the end of the loop
 * iteration: with hundreds of connections served in one iteration, holding
 * every response until then made the peak memory one response per ready
 * connection; written at once, the block goes back to the free list and the
 * next read reuses it, still in cache. Errors and the rest of the output
 * are flush_output()'s, which still runs (the caller defers it). */
static void write_now(struct herald_conn *c)
{
    if (c->closing || c->handshaking)
        return;
    if (extra(c)->tls_io)
        (void)tls_stream_flush(extra(c)->tls_io);
    else
        (void)write_out(bufferevent_get_output(c->bev), c->fd);
}

static void run_deferred(struct herald_timer *t, void *arg)
{
    struct herald_conn *c = arg;
    unsigned work = extra(c)->work;
    extra(c)->work &= DEFER_FREE; /* a free stays requested */
    if (work & DEFER_FREE) {
        free_conn(c);
        return;
    }
    if (work & DEFER_FLUSH)
        flush_output(c);
    if ((work & DEFER_READ) && !(extra(c)->work & DEFER_FREE))
        redispatch(c);
}

static void finalize(struct herald_conn *c, bool reset)
{
    if (extra(c)->work & DEFER_FREE)
        return;
    c->closing = true;
    c->flush_close = false;
    if (c->splice)
        splice_abort(c->splice);
    read_off(c);
    bufferevent_disable(c->bev, EV_WRITE);
    bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
    if (extra(c)->tls_io)
        tls_stream_stop(extra(c)->tls_io);
    if (reset) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    } else if (c->ssl && !c->handshaking) {
        tls_shutdown(c->ssl);
    }
    raise_event(c, c->remote_closed ? HERALD_EV_REMOTE_CLOSE : HERALD_EV_LOCAL_CLOSE);
    defer(c, DEFER_FREE);
}

/* A copy of sa when it differs from the presented address p, else NULL. */
static union inet_addr *direct_copy(const struct sockaddr *sa, socklen_t len, const union inet_addr *p,
                                    socklen_t plen)
{
    if (!sa || (len == plen && memcmp(sa, p, len) == 0))
        return NULL;
    union inet_addr *a = xcalloc(1, sizeof(*a));
    memcpy(a, sa, len < sizeof(*a) ? len : sizeof(*a));
    return a;
}

struct herald_conn *conn_new(struct worker *w, struct listener *l, struct filter_chain *chain, struct tls_ctx *tls,
                             struct conn_origin *o)
{
    struct conn_alloc *a = xcalloc(1, sizeof(*a));
    struct herald_conn *c = &a->c;
    int fd = o->fd;
    c->id = ((uint64_t)w->index << 48) | ++w->next_conn_id;
    c->worker = w;
    c->listener = l;
    c->chain = chain;
    c->fd = fd;
    memcpy(&c->remote, o->remote, o->rlen < sizeof(c->remote) ? o->rlen : sizeof(c->remote));
    c->remote_len = o->rlen;
    memcpy(&c->local, o->local, o->llen < sizeof(c->local) ? o->llen : sizeof(c->local));
    c->local_len = o->llen;
    if ((c->direct_remote = direct_copy(o->direct_remote, o->drlen, &c->remote, c->remote_len)))
        c->direct_remote_len = o->drlen;
    if ((c->direct_local = direct_copy(o->direct_local, o->dllen, &c->local, c->local_len)))
        c->direct_local_len = o->dllen;
    c->meta = o->meta;
    c->tlvs = o->tlvs;
    c->ntlvs = o->ntlvs;
    o->meta = (struct metadata){0};
    o->tlvs = NULL;
    o->ntlvs = 0;
    c->server_name = o->server_name ? xstrdup(o->server_name) : NULL;
    c->stopped_at = SIZE_MAX;
    c->buffer_limit = l->cfg->buffer_limit ? l->cfg->buffer_limit : DEFAULT_BUFFER_LIMIT;
    c->start_wall_ms = wall_ms();
    c->start_mono_ms = mono_ms();
    c->link.next = w->conns;
    if (w->conns)
        w->conns->link.prev = c;
    w->conns = c;
    w->active_conns++;

    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* The transport socket seam: the bufferevent holds the plaintext both
     * ways; sock_reader or tls_stream moves it (its own events stay off). */
    c->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_disable(c->bev, EV_WRITE);   /* flush_output() writes; EV_WRITE only when the socket is full */
    a->x.deferred = herald_timer_new(run_deferred, c);
    SSL *ssl = tls ? tls_ssl_new(tls) : NULL;
    if (ssl) {
        uint64_t handshake_ms = overload_scaled_ms(OVERLOAD_TIMER_TRANSPORT_CONNECT, tls_handshake_timeout_ms(tls));
        a->x.tls_io = tls_stream_new(w->base, c->bev, fd, ssl, c->buffer_limit, handshake_ms,
                                     on_readable, on_writable, on_bev_event, c);
        if (!a->x.tls_io) {
            SSL_free(ssl);
            ssl = NULL;
        } else {
            tls_stream_count(a->x.tls_io, &c->rx_bytes);
        }
    }
    if (ssl) {
        c->tls = tls;
        c->ssl = ssl;
        c->handshaking = true;
    }
    if (tls && !ssl) {
        log_warn("conn", "C%llu: cannot make a TLS session (out of memory?)", (unsigned long long)c->id);
        c->sessions = xcalloc(chain->nfilters ? chain->nfilters : 1, sizeof(void *));
        bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
        finalize(c, true);
        return c;
    }
    bufferevent_setcb(c->bev, on_readable, on_writable, on_bev_event, c);
    if (!tls) {
        a->x.reader = sock_reader_new(w->base, c->bev, fd, c->buffer_limit, on_readable, on_bev_event, c);
        sock_reader_count(a->x.reader, &c->rx_bytes);
    }
    /* libevent's default of 16 KiB per write costs a syscall per 16 KiB;
     * bulk transfers want bigger bites (plain sockets; TLS writes records). */
    bufferevent_set_max_single_write(c->bev, 256 * 1024);
    bufferevent_setwatermark(c->bev, EV_WRITE, c->buffer_limit / 2, 0);
    c->sessions = xcalloc(chain->nfilters ? chain->nfilters : 1, sizeof(void *));
    if (c->handshaking) {
        log_trace("conn", "C%llu accepted from %s on %s (TLS)", (unsigned long long)c->id,
                  herald_conn_remote_str(c), herald_conn_local_str(c));
        return c;
    }
    start_filters(c);
    return c;
}

/* The filters' sessions and on_new_connection, then reading. */
static void start_filters(struct herald_conn *c)
{
    struct worker *w = c->worker;
    struct filter_chain *chain = c->chain;
    for (size_t i = 0; i < chain->nfilters; i++) {
        const struct net_filter *nf = &chain->filters[i];
        if (!nf->ops->session_new)
            continue;
        c->sessions[i] = nf->ops->session_new(nf->conf, nf->wstate[w->index], c);
        if (!c->sessions[i]) {
            log_debug("conn", "C%llu refused by %s", (unsigned long long)c->id, nf->plugin->desc->name);
            herald_conn_close(c, HERALD_CLOSE_RESET);
            return;
        }
    }
    log_trace("conn", "C%llu accepted from %s on %s", (unsigned long long)c->id, herald_conn_remote_str(c),
              herald_conn_local_str(c));
    run_new_connection(c);
    /* A drain that began before the filters had sessions (a TLS handshake,
     * listener filters) missed them: they hear of it now. */
    if (w->draining && !c->closing)
        raise_event(c, HERALD_EV_DRAIN);
    if (!c->closing && !paused(c))
        read_on(c);
}

void conn_close_all(struct worker *w)
{
    for (struct herald_conn *c = w->conns; c; c = c->link.next)
        if (!c->closing || c->flush_close)
            finalize(c, false);
}

unsigned conn_count(struct worker *w) { return w->active_conns; }

void conn_raise_all(struct worker *w, enum herald_conn_event ev)
{
    for (struct herald_conn *c = w->conns; c; c = c->link.next)
        if (!c->closing)
            raise_event(c, ev);
}

void conn_drain_all(struct worker *w)
{
    for (struct herald_conn *c = w->conns; c; c = c->link.next)
        if (!c->closing)
            raise_event(c, HERALD_EV_DRAIN);
}

/* ---------------------------------------------------------------- the SDK */

uint64_t herald_conn_id(const struct herald_conn *c) { return c->id; }
unsigned herald_conn_worker(const struct herald_conn *c) { return c->worker->index; }

const struct sockaddr *herald_conn_remote_addr(const struct herald_conn *c, socklen_t *len)
{
    if (len)
        *len = c->remote_len;
    return (const struct sockaddr *)&c->remote;
}

const struct sockaddr *herald_conn_local_addr(const struct herald_conn *c, socklen_t *len)
{
    if (len)
        *len = c->local_len;
    return (const struct sockaddr *)&c->local;
}

/* Formatted on first use: an idle connection does not pay for the strings. */
static const char *addr_str(char **slot, const union inet_addr *a)
{
    if (!*slot) {
        char buf[ADDR_STRLEN];
        addr_format(&a->sa, buf, sizeof(buf));
        *slot = xstrdup(buf);
    }
    return *slot;
}

const char *herald_conn_remote_str(const struct herald_conn *c)
{
    struct herald_conn *m = (struct herald_conn *)c; /* the cache is not part of its value */
    return addr_str(&m->remote_str, &c->remote);
}

const char *herald_conn_local_str(const struct herald_conn *c)
{
    struct herald_conn *m = (struct herald_conn *)c;
    return addr_str(&m->local_str, &c->local);
}

const struct sockaddr *herald_conn_direct_remote_addr(const struct herald_conn *c, socklen_t *len)
{
    if (!c->direct_remote)
        return herald_conn_remote_addr(c, len);
    if (len)
        *len = c->direct_remote_len;
    return &c->direct_remote->sa;
}

const struct sockaddr *herald_conn_direct_local_addr(const struct herald_conn *c, socklen_t *len)
{
    if (!c->direct_local)
        return herald_conn_local_addr(c, len);
    if (len)
        *len = c->direct_local_len;
    return &c->direct_local->sa;
}

const char *herald_conn_direct_remote_str(const struct herald_conn *c)
{
    struct herald_conn *m = (struct herald_conn *)c;
    return c->direct_remote ? addr_str(&m->direct_remote_str, c->direct_remote) : herald_conn_remote_str(c);
}

const char *herald_conn_direct_local_str(const struct herald_conn *c)
{
    struct herald_conn *m = (struct herald_conn *)c;
    return c->direct_local ? addr_str(&m->direct_local_str, c->direct_local) : herald_conn_local_str(c);
}
const char *herald_conn_server_name(const struct herald_conn *c)
{
    if (c->server_name || !c->ssl)
        return c->server_name;
    return SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
}

const char *herald_conn_alpn(const struct herald_conn *c) { return c->alpn; }
bool herald_conn_is_tls(const struct herald_conn *c) { return c->ssl != NULL; }
const char *herald_conn_listener_name(const struct herald_conn *c) { return c->listener->name; }
const char *herald_conn_filter_chain_name(const struct herald_conn *c)
{
    const char *n = c->chain && c->chain->cfg ? c->chain->cfg->name : NULL;
    return n && *n ? n : NULL;
}
uint32_t herald_conn_buffer_limit(const struct herald_conn *c) { return c->buffer_limit; }
uint64_t herald_conn_start_ms(const struct herald_conn *c) { return c->start_wall_ms; }

int herald_conn_write(struct herald_conn *c, struct herald_buf *buf, bool end_stream)
{
    if (c->closing || c->shut_wr_pending) {
        herald_buf_drain(buf, herald_buf_len(buf));
        return -1;
    }
    for (size_t i = c->chain->nfilters; i-- > 0;) {
        const struct herald_network_filter_ops *ops = c->chain->filters[i].ops;
        if (!ops->on_write)
            continue;
        enum herald_status st = ops->on_write(c->sessions[i], buf, end_stream);
        if (st == HERALD_CLOSE) {
            herald_conn_close(c, HERALD_CLOSE_RESET);
            return -1;
        }
        if (st == HERALD_STOP)
            break;
        if (c->closing)
            return -1;
    }
    struct evbuffer *out = bufferevent_get_output(c->bev);
    c->tx_bytes += evbuffer_get_length(buf_ev(buf));
    evbuffer_add_buffer(out, buf_ev(buf));
    size_t queued = evbuffer_get_length(out);
    if (queued >= WRITE_NOW_BYTES)
        write_now(c);
    if (queued > 0)
        defer(c, DEFER_FLUSH);   /* also after write_now(): flush_output() tells who waits for the drain */
    size_t len = output_len(c);
    if (end_stream) {
        c->shut_wr_pending = true;
        if (len == 0) {
            shut_wr(c);
            check_done(c);
            return 0;
        }
    }
    if (!c->above_high && len > c->buffer_limit) {
        c->above_high = true;
        raise_event(c, HERALD_EV_ABOVE_WRITE_HIGH);
    }
    return 0;
}

size_t herald_conn_output_len(const struct herald_conn *c)
{
    return output_len(c);
}

void herald_conn_close(struct herald_conn *c, enum herald_close_mode mode)
{
    if (c->closing) {
        if (mode == HERALD_CLOSE_RESET && c->flush_close)
            finalize(c, true);
        return;
    }
    c->closing = true;
    read_off(c);
    if (mode == HERALD_CLOSE_FLUSH && evbuffer_get_length(bufferevent_get_output(c->bev)) > 0) {
        c->flush_close = true; /* on_writable finishes it */
        defer(c, DEFER_FLUSH);
        return;
    }
    finalize(c, mode == HERALD_CLOSE_RESET);
}

void herald_conn_pause_reading(struct herald_conn *c, unsigned reason)
{
    c->pause_mask |= reason;
    read_off(c);
}

void herald_conn_resume_reading(struct herald_conn *c, unsigned reason)
{
    c->pause_mask &= ~reason;
    if (c->pause_mask || c->closing)
        return;
    if (!c->read_eof)
        read_on(c);
    /* Bytes (or an EOF) that arrived while paused get dispatched now. */
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0 || (c->read_eof && !c->eof_delivered))
        defer(c, DEFER_READ);
}

void herald_conn_continue_reading(struct herald_conn *c)
{
    if (c->closing)
        return;
    size_t from = c->stopped_at == SIZE_MAX ? 0 : c->stopped_at + 1;
    c->stopped_at = SIZE_MAX;
    if (c->new_conn_done < c->chain->nfilters) {
        run_new_connection(c);
        if (c->stopped_at != SIZE_MAX || c->closing)
            return;
    }
    if (!paused(c))
        dispatch_read(c, from);
}

void herald_conn_bytes(const struct herald_conn *c, uint64_t *received, uint64_t *sent)
{
    if (received)
        *received = c->rx_bytes;
    if (sent)
        *sent = c->tx_bytes;
}

int herald_conn_metadata_set(struct herald_conn *c, const char *ns, const char *key, const char *value)
{
    return metadata_set(&c->meta, ns, key, value);
}

const char *herald_conn_metadata_get(const struct herald_conn *c, const char *ns, const char *key)
{
    return metadata_get(&c->meta, ns, key);
}
