/* Downstream connections and the network filter chain running on them. The
 * bytes live in a bufferevent's buffers; sock_reader (plain sockets) or
 * tls_stream (TLS) moves them, so filters never see ciphertext. */
#ifndef HERALD_CORE_NET_CONNECTION_H
#define HERALD_CORE_NET_CONNECTION_H

#include <event2/bufferevent.h>
#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "filters.h"
#include "metadata.h"
#include "herald/network_filter.h"
#include "net/address.h"

struct listener;
struct worker;
struct tls_ctx;
struct ssl_st;

/* A PROXY protocol v2 TLV a connection carries (a listener filter kept it)
 * for upstream PROXY headers that pass TLVs through. */
struct proxy_tlv { uint8_t type; uint16_t len; uint8_t *value; };

/* What the listener filters made of an accepted socket: the addresses the
 * connection presents (restored from a PROXY protocol header) and its own,
 * and what it keeps; conn_new takes meta and tlvs over. */
struct conn_origin {
    int fd;
    const struct sockaddr *remote, *local, *direct_remote, *direct_local;
    socklen_t rlen, llen, drlen, dllen;
    const char *server_name;
    struct metadata meta;
    struct proxy_tlv *tlvs; size_t ntlvs;
};

struct herald_conn {
    uint64_t id;
    struct worker *worker;
    struct listener *listener;
    struct filter_chain *chain;
    struct bufferevent *bev;
    int fd;
    union inet_addr { struct sockaddr sa; struct sockaddr_in in; struct sockaddr_in6 in6; } remote, local;
    socklen_t remote_len, local_len;
    char *remote_str, *local_str;     /* formatted when first asked for */
    /* the socket's own addresses, when a PROXY protocol header restored others */
    union inet_addr *direct_remote, *direct_local;
    socklen_t direct_remote_len, direct_local_len;
    char *direct_remote_str, *direct_local_str;
    struct proxy_tlv *tlvs; size_t ntlvs;
    char *server_name;
    struct tls_ctx *tls;              /* the chain's DownstreamTlsContext, or NULL (plaintext) */
    struct ssl_st *ssl;               /* owned by the connection's tls_stream */
    char *alpn;                       /* negotiated, or NULL */
    bool handshaking;                 /* filters start once the TLS handshake is done */
    void **sessions;                  /* [chain->nfilters] */
    size_t new_conn_done;             /* filters whose on_new_connection ran */
    size_t stopped_at;                /* filter that returned STOP, or SIZE_MAX */
    unsigned pause_mask;
    uint32_t buffer_limit;
    bool read_eof, eof_delivered;     /* the peer half-closed; filters were told */
    bool shut_wr_pending, shut_wr_done;
    bool above_high;
    bool closing, flush_close;
    bool remote_closed;
    int depth;                        /* > 0 while filter callbacks are on the stack */
    bool destroy_pending;
    uint64_t start_wall_ms, start_mono_ms;
    uint64_t rx_bytes, tx_bytes;      /* from/to the peer, whichever path moved them */
    struct splice_pair *splice;       /* net/splice.c, while the core forwards by itself */
    struct metadata meta;
    struct conn_list_node { struct herald_conn *prev, *next; } link; /* the worker's live connections */
};

/* Takes the accepted fd (already non-blocking). With tls, the TLS handshake
 * runs first and the filters' sessions start when it is done (so they see
 * the negotiated SNI and ALPN); a failed handshake never reaches them. */
struct herald_conn *conn_new(struct worker *w, struct listener *l, struct filter_chain *chain, struct tls_ctx *tls,
                             struct conn_origin *o);
/* Closes every live connection on this worker (shutdown after the drain time). */
void conn_close_all(struct worker *w);
unsigned conn_count(struct worker *w);
/* Writes what out holds to fd (a bufferevent's output buffer, whose start
 * the bufferevent keeps frozen: this unfreezes it around the write). */
int write_out(struct evbuffer *out, int fd);
/* Stops reading the socket for good (splice.c takes the socket over). */
void conn_read_stop(struct herald_conn *c);
/* Shutdown: tells every connection's filters that the server drains. */
void conn_drain_all(struct worker *w);
/* Every open connection of w hears ev (HERALD_EV_TIMERS_RESCALED). */
void conn_raise_all(struct worker *w, enum herald_conn_event ev);
/* Shutdown: drops every upstream connection of this worker (upstream_conn.c). */
void upstream_close_all(struct worker *w);
/* splice.c: ends a splice early (shutdown). */
void splice_abort(struct splice_pair *sp);
/* splice.c: a worker that stops closes its pooled pipes. */
void splice_worker_cleanup(void);

#endif
