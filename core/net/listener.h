/* Listeners. The main thread binds one SO_REUSEPORT socket per worker per
 * listener (so the kernel spreads accepts), then hands each worker its
 * socket. A worker accepts, runs the listener filters (peeking; a filter may
 * drain what it read, as the PROXY protocol's does), picks the filter chain
 * by filter_chain_match and makes the connection, which lives on that worker
 * to the end. */
#ifndef HERALD_CORE_NET_LISTENER_H
#define HERALD_CORE_NET_LISTENER_H

#include <event2/buffer.h>
#include <event2/listener.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "config/bootstrap.h"
#include "config/diag.h"
#include "filters.h"
#include "net/address.h"

struct worker;
struct tls_ctx;

struct listener_stats {
    struct herald_stat *downstream_cx_total, *downstream_cx_destroy, *downstream_cx_active,
        *downstream_cx_length_ms, *no_filter_chain_match, *downstream_pre_cx_active,
        *downstream_pre_cx_timeout, *downstream_cx_overflow, *downstream_cx_transport_socket_connect_timeout,
        *downstream_global_cx_overflow, *downstream_cx_overload_reject;
    struct herald_stat **worker_cx_total, **worker_cx_active; /* [nworkers] */
};

struct chain_match {          /* filter_chain_match, parsed */
    struct cidr *prefix_ranges; size_t nprefix;
    struct cidr *source_ranges; size_t nsource;
    struct cidr *direct_source_ranges; size_t ndirect_source;
};

struct listener {
    const struct listener_cfg *cfg;
    char *name;
    char *stat_prefix;                 /* "listener.127.0.0.1_10000" */
    struct filter_chain *chains; size_t nchains;
    struct chain_match *matches;       /* [nchains] */
    struct filter_chain *default_chain;
    struct tls_ctx **chain_tls;        /* [nchains]: the chain's DownstreamTlsContext or NULL (net/tls.h) */
    struct tls_ctx *default_tls;
    struct listener_filter *lfilters; size_t nlfilters;
    struct listener_stats stats;
    int *fds; unsigned nfds;           /* one per worker (or one shared) */
    char bound[ADDR_STRLEN];           /* the address actually bound */
    struct sockaddr_storage bound_sa;  /* the same, as a sockaddr */
    socklen_t bound_len;
    bool bound_wildcard;               /* 0.0.0.0 or [::]: each connection's local address is asked for */
    unsigned nworkers;
    atomic_uint_least64_t cx_open;     /* sockets accepted and not closed, all workers (overload.c) */
    bool ignore_global_conn_limit;
    bool bypass_overload_manager;      /* overload actions leave this listener alone */
    bool outbound;                     /* traffic_direction OUTBOUND (drain_listeners?inboundonly) */
    bool drained;                      /* stopped by POST /drain_listeners: set on the main thread
                                        * before the workers are told */
};

/* Main thread: builds every listener's filters (validate_only: no sockets). */
int listeners_build(const struct bootstrap *b, unsigned nworkers, bool validate_only, struct cfg_diag *d);
/* Main thread: binds the sockets. 0, or -1 with *err. */
int listeners_bind(char **err);
/* Posts each listener's socket to its worker; workers start accepting. */
void listeners_start(struct worker *workers, unsigned nworkers);
/* Posted to a worker: stop accepting (sockets closed); only_drained: only
 * the listeners listeners_forget_for_drain marked. */
void listeners_worker_stop(struct worker *w, bool only_drained);
/* POST /drain_listeners, main thread: marks the listeners it stops (all, or
 * all but the OUTBOUND ones) and takes their sockets out of what a reload
 * hands over; then each worker runs listeners_worker_stop(w, true), which
 * closes them (new connections are refused; open ones go on). */
void listeners_forget_for_drain(bool inbound_only);
/* On the worker, at the very end (after its connections are gone). */
void listeners_worker_teardown(struct worker *w);
void listeners_destroy(void);
size_t listeners_count(void);
struct listener *listeners_get(size_t i);

/* Called by connection.c when a downstream connection ends. */
void listener_conn_closed(struct listener *l, struct worker *w, uint64_t start_mono_ms);

#endif
