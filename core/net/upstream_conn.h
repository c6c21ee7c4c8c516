/* Upstream TCP connections (the SDK's struct herald_upstream). */
#ifndef HERALD_CORE_NET_UPSTREAM_CONN_H
#define HERALD_CORE_NET_UPSTREAM_CONN_H

#include <event2/bufferevent.h>
#include <stdbool.h>
#include <stdint.h>

#include "herald/timer.h"
#include "herald/upstream.h"
#include "net/address.h"

struct worker;
struct cluster;
struct ssl_st;

struct sock_reader;

struct herald_upstream {
    struct worker *worker;
    struct cluster *cluster;
    struct herald_host *host;
    const struct herald_upstream_cbs *cbs;
    void *arg;
    struct bufferevent *bev;
    struct ssl_st *ssl;                /* TLS to the upstream (owned by bev), or NULL */
    struct event *timeout_ev;          /* while connecting only */
    struct herald_timer *deferred;     /* deferred free / re-read, armed with 0 (upstream_conn.c) */
    struct sock_reader *reader;        /* plain sockets, once connected (net/sock_reader.h) */
    bool read_stopped;                 /* spliced: never reads through the bufferevent again */
    unsigned work;
    uint32_t buffer_limit;
    unsigned pause_mask;
    bool connected, read_eof, eof_delivered, shut_wr_pending, shut_wr_done, above_high;
    bool closing, flush_close, gone;
    uint64_t start_mono_ms;
    int priority;                      /* circuit-breaker priority its max_connections slot is under */
    bool http;                         /* an HTTP pool's: its requests report to outlier detection */
    uint64_t rx_bytes, tx_bytes;       /* moved by the splice engine (counted at release) */
    char local_str[ADDR_STRLEN];
    uint64_t id;                       /* %UPSTREAM_CONNECTION_ID% */
    struct herald_upstream *prev, *next;
};

/* herald_upstream_connect with the circuit-breaker priority (0 DEFAULT, 1 HIGH)
 * whose max_connections it counts against; http: for an HTTP pool (outlier
 * detection then hears about its requests, not about this connect). */
struct herald_upstream *upstream_connect(struct herald_cluster *view, struct herald_host *h,
                                         const struct herald_upstream_cbs *cbs, void *arg,
                                         enum herald_upstream_error *why, int priority, bool http,
                                         const uint8_t *pp, size_t pplen);

/* The bufferevent of a new connection of cluster cfg to h, by its transport
 * socket: plain, TLS (*ssl set; CONNECTED comes after the handshake), and
 * a PROXY protocol header pp first when the cluster sends one (NULL: the
 * LOCAL / UNKNOWN header). Connect *connect_bev (bufferevent_socket_connect);
 * use the one returned. */
struct cluster_cfg;
struct bufferevent *upstream_bev_new(struct event_base *base, const struct cluster_cfg *cfg,
                                     const struct herald_host *h, const uint8_t *pp, size_t pplen,
                                     struct ssl_st **ssl, struct bufferevent **connect_bev);

/* The splice engine takes the socket over; counted as a local close. */
void upstream_release(struct herald_upstream *u, bool reset);

/* Stops reading the socket for good (splice.c takes the socket over). */
void upstream_read_stop(struct herald_upstream *u);

#endif
