/* HTTP upstream connection pools: per worker x cluster x host. HTTP/1.1:
 * one request at a time per connection (Envoy's HTTP/1 pool); HTTP/2: the
 * requests are streams multiplexed over (usually) one connection (h2_client.c).
 * pool.c keeps the HTTP/1 connections (connect, idle list, idle timeout,
 * max_requests_per_connection, the response codec); upstream_request.c is the
 * SDK's herald_http_upstream_* on top (circuit breakers, pending queue,
 * request encoding). A cluster with auto_config starts each pool undecided:
 * its first connection's TLS ALPN makes the pool HTTP/2 ("h2") or HTTP/1.1.
 * Everything runs on the owning worker, without locks. */
#ifndef HERALD_CORE_HTTP_POOL_H
#define HERALD_CORE_HTTP_POOL_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "herald/http.h"
#include "herald/timer.h"
#include "http/h1.h"

struct worker;
struct cluster;
struct worker_pools;
struct h2_conn;

/* cluster.<name>.http2.* (Envoy's HTTP/2 codec stats, client side) */
struct h2_stats {
    struct herald_stat *rx_reset, *tx_reset, *goaway_sent, *trailers, *stream_refused_errors;
    struct herald_stat *rx_messaging_error, *header_overflow, *keepalive_timeout;
    struct herald_stat *streams_active; /* gauge */
};

/* The request stats struct cluster_stats does not have (the circuit
 * breakers' counts are in cluster->cb). One per cluster, made on first use,
 * kept to the end of the process. */
struct pool_cluster {
    struct cluster *cluster;
    struct herald_stat *upstream_rq_rx_reset, *upstream_rq_tx_reset, *upstream_rq_cancelled;
    struct h2_stats h2;
    struct pool_cluster *next;
};

enum pconn_state { PCONN_CONNECTING = 0, PCONN_IDLE, PCONN_BUSY, PCONN_NSTATES };

struct http_pool;

struct pool_conn {
    struct http_pool *pool;
    struct herald_upstream *up;        /* NULL once the TCP layer dropped it */
    struct h1_codec *codec;
    enum pconn_state state;
    struct pool_conn *prev, *next;     /* in pool->conns[state] */
    struct herald_http_upstream *req;  /* bound request (BUSY) */
    struct evbuffer *wbuf;             /* scratch for encoding */
    struct event *idle_ev;
    uint32_t nrequests;                /* requests bound so far */
    unsigned dispatching;              /* inside h1_codec_dispatch: defer frees */
    bool dead;                         /* closed while dispatching: free after */
    bool last;                         /* the bound request is its last (connection: close) */
    bool resp_complete;                /* the codec finished a response during dispatch */
    bool resp_started;                 /* a response byte came for the bound request */
    bool req_sent_all;                 /* the bound request's end was written */
    bool eof;                          /* the server closed its side */
    /* Its request was cancelled after being sent whole: the response is read
     * to its end and dropped, so the connection can serve another request. */
    bool draining;
    size_t drained;                    /* bytes read while draining */
    bool above_high;
    /* The bound request asks for an Upgrade (or is a CONNECT): whatever the
     * answer, this connection never goes back to the idle list. */
    bool upgrade;
    /* The upstream accepted it (101, CONNECT 2xx): from then on the codec is
     * out of the way, the connection's bytes go raw to the owner's on_data,
     * herald_http_upstream_send_data writes raw bytes and its end_stream
     * half-closes; the upstream's end ends the exchange and the connection. */
    bool tunnel;
};

/* What a pool's connections speak. */
enum pool_proto { POOL_H1 = 0, POOL_H2, POOL_UNDECIDED /* auto_config before the first ALPN answer */ };

struct http_pool {
    struct worker_pools *wp;
    enum pool_proto proto;
    struct pool_cluster *pc;
    struct cluster *cluster;
    struct herald_cluster *view;       /* this worker's view, for herald_upstream_connect */
    struct herald_host *host;          /* ref held */
    struct pool_conn *conns[PCONN_NSTATES];
    unsigned nconns[PCONN_NSTATES];
    struct herald_http_upstream *pending_head, *pending_tail;
    unsigned npending;
    struct h2_conn *h2_conns;          /* HTTP/2 connections (and auto_config's first, undecided) */
    unsigned nh2, nh2_connecting;
    /* A cluster that sends PROXY protocol headers: the pool is one downstream
     * connection's (owner, its id), its connections start with pp, and it
     * goes once the owner closed and nothing refers to it any more. */
    uint64_t owner;
    uint8_t *pp; size_t pplen;
    bool owner_gone;
    unsigned refs;                     /* owned pools: live requests and connections */
    struct http_pool *next;
};

enum ureq_state {
    UREQ_PENDING = 0,   /* queued for a connection */
    UREQ_BOUND,         /* on a connection */
    UREQ_DONE,          /* response complete (or request detached after it) */
    UREQ_FAILED,        /* on_reset is due (deferred) or delivered */
    UREQ_ORPHAN,        /* its worker's pools were closed; only free is left */
};

struct herald_http_upstream {
    struct http_pool *pool;
    struct pool_conn *conn;
    struct herald_host *host;          /* ref held */
    const struct herald_http_upstream_cbs *cbs;
    void *arg;
    enum ureq_state state;
    struct herald_http_upstream *prev, *next; /* pending queue */
    struct herald_timer *kick;         /* deferred on_ready / on_reset: armed with 0 */
    enum herald_upstream_reset reset_why;
    bool ready_due, reset_due;
    bool wm_low_due, resume_due;       /* HTTP/2: deferred on_watermark(false) / held response delivery */
    /* what the caller sent before a connection was bound */
    struct herald_headers *q_headers, *q_trailers;
    struct evbuffer *q_body;
    bool q_end, q_above;
    struct h1_encoder enc;
    uint64_t rx_counted;               /* of the response's bytes, those told to the stream's log */
    bool count_wire;                   /* the stream's log wants the wire bytes (ureq_count_*) */
    bool headers_sent, req_done, resp_started, end_delivered, paused, active_counted, wm_above;
    bool in_cb;                        /* inside on_reset: the core frees it after */
    bool queued;                       /* in pool->pending_* */
    bool freed;                        /* the owner freed it while the core held it */
    unsigned holds;                    /* core frames that touch it after an owner callback */
    struct pool_cluster *pcl;
    int priority;                      /* circuit-breaker priority (0 DEFAULT, 1 HIGH) */
    struct herald_http_stream *stream; /* whose access log hears of its connection (set_stream) */
    uint64_t created_ms, bound_ms;     /* herald_now_ms() when made / when it got a connection */
    struct herald_http_upstream *wprev, *wnext; /* every live request of the worker */
    /* HTTP/2 (h2_client.c): the stream this request is */
    struct h2_conn *h2;                /* bound connection, NULL once off it */
    int32_t stream_id;                 /* 0 until the headers went to nghttp2 */
    struct herald_http_upstream *h2prev, *h2next; /* in the connection's streams */
    struct evbuffer *h2_out;           /* request body nghttp2 has not taken yet */
    struct herald_headers *h2_out_trailers;
    bool h2_out_end, h2_deferred;      /* the body's end is in h2_out; the data provider waits */
    struct herald_headers *h2_in_headers; /* the header block being received */
    struct evbuffer *h2_in;            /* response body not delivered yet (the owner paused) */
    struct herald_headers *h2_in_trailers;
    bool h2_in_end;                    /* the response ended behind what h2_in holds */
    bool h2_final;                     /* the final response head came (later HEADERS: trailers) */
    bool h2_rx_rst;                    /* the upstream reset the stream */
    bool h2_overflow;                  /* too many response headers */
};

/* pool.c */
struct pool_cluster *pool_cluster_get(struct cluster *cl);
/* The priority a new connection of p counts under: its first pending request's. */
int pool_grow_priority(const struct http_pool *p);
struct http_pool *pool_get(struct herald_cluster *view, struct herald_host *h);
/* pool_get for a request of downstream connection d (NULL: none). A cluster
 * that sends PROXY protocol headers gives each downstream connection pools of
 * its own: an upstream connection carries one client's addresses. */
struct http_pool *pool_get_for(struct herald_cluster *view, struct herald_host *h, const struct herald_conn *d);
/* An owned pool gained or lost a request or connection. */
void pool_ref(struct http_pool *p);
void pool_unref(struct http_pool *p);
/* Downstream connection id closed: its pools close their idle connections
 * and go when their last request and connection are done. */
void http_pools_owner_closed(uint64_t id);
/* A connection for the pool's pending requests: new ones while max_connections
 * allows. 0, or -1 with *why (OVERFLOW/CONNECT_FAILURE) when none can come. */
int pool_grow(struct http_pool *p, enum herald_upstream_reset *why);
/* Binds r to an idle connection now (on_ready follows from a zero-delay
 * event); false when there is none. */
bool pool_bind_idle(struct http_pool *p, struct herald_http_upstream *r);
/* The request owning conn goes away before its response ended: the
 * connection's state is unknown, so it closes (or, if nothing was written
 * yet, goes back to the pool). */
void pool_conn_cancel(struct pool_conn *pc, bool written);
/* A request was just bound to pc: counts it against max_requests_per_connection. */
void pool_conn_bound(struct pool_conn *pc);
/* Pulls the encoded request bytes in conn->wbuf out to the socket; end
 * (tunnels only) half-closes the connection's write side after them. */
void pool_conn_flush(struct pool_conn *pc, bool end);

/* pool.c, for h2_client.c */
bool pool_draining(void);
/* auto_config: the first connection did not pick h2; it becomes an HTTP/1.1
 * connection of p (now POOL_H1) and takes the pending requests. */
void pool_adopt_h1(struct http_pool *p, struct herald_upstream *up);

/* upstream_request.c, for pool.c and h2_client.c */
void ureq_bind(struct herald_http_upstream *r, struct pool_conn *pc);
/* h2_client.c linked r to a stream-to-be: bound, counted, on_ready due, what was queued sent. */
void ureq_bound_h2(struct herald_http_upstream *r);
/* on_reset from a zero-delay event (the caller is never re-entered); r is freed after it. */
void ureq_fail(struct herald_http_upstream *r, enum herald_upstream_reset why);
/* Fails every pending request of p (a connect failed: Envoy purges them all,
 * so that the caller decides, e.g. to retry on another host). HTTP/1 and h2 pools. */
void pool_purge_pending(struct http_pool *p, enum herald_upstream_reset why);
void ureq_pending_remove(struct herald_http_upstream *r);
/* The response ended and r is off its connection. */
void ureq_done(struct herald_http_upstream *r);
/* The end of the request went to the connection (req_done; the stream's log learns when). */
void ureq_mark_sent(struct herald_http_upstream *r);
/* Bytes of r's exchange written to / read from the wire, for the stream's log. */
void ureq_count_sent(struct herald_http_upstream *r, size_t bytes, bool headers);
void ureq_count_received(struct herald_http_upstream *r, size_t bytes, bool headers);
void ureq_watermark(struct herald_http_upstream *r, bool above);
/* Owner callbacks that may free r: hold it around them; unhold returns false when r is gone. */
void ureq_hold(struct herald_http_upstream *r);
bool ureq_unhold(struct herald_http_upstream *r);
/* Schedules r's deferred event (on_ready, on_reset, HTTP/2 deliveries). */
void ureq_kick(struct herald_http_upstream *r);
/* Detaches every live request of the worker from its pool and connection, for good. */
void ureq_orphan_all(struct worker *w);

/* The lead calls this on the worker (before upstream_close_all) when it
 * stops: closes every pooled connection and detaches the requests still
 * owned by callers (they may only be freed afterwards). */
void http_pools_worker_close_all(struct worker *w);
/* Shutdown has begun: idle connections close now, busy ones once their
 * exchange is over (they are not reused). */
void http_pools_worker_drain(struct worker *w);

#endif
