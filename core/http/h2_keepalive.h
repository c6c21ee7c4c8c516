/* HTTP/2 PING keepalive: http2_protocol_options.connection_keepalive (Envoy's
 * KeepaliveSettings), for client connections (conn_manager.c) and upstream
 * ones (h2_client.c) alike. Every interval (plus up to interval_jitter percent
 * of it) a PING goes out; the connection is dead when neither its ACK nor any
 * other frame came within timeout (a frame behind a large DATA backlog counts:
 * the peer is alive, only slow). The codec counts frames and PING ACKs; this
 * only reads the counts from its timer, so nothing is added per frame. */
#ifndef HERALD_CORE_HTTP_H2_KEEPALIVE_H
#define HERALD_CORE_HTTP_H2_KEEPALIVE_H

#include <stdbool.h>
#include <stdint.h>

#include "herald/config.h"

struct h2_keepalive_cfg {
    uint64_t interval_ms;            /* 0: no keepalive */
    uint64_t timeout_ms;
    uint32_t jitter_permille;        /* interval_jitter, 150 (15%) by default */
};

/* envoy.config.core.v3.KeepaliveSettings */
extern const struct herald_message schema_h2_keepalive;
/* Reads connection_keepalive (n may be NULL: off). */
void h2_keepalive_cfg_read(const struct herald_cfg *n, struct h2_keepalive_cfg *out);

/* What the codec counts for it, one increment per frame received. */
struct h2_frame_counts {
    uint64_t frames, ping_acks;
};

struct h2_keepalive_ops {
    /* Queue a PING and write it out. false: nothing was done (the connection
     * cannot send now); true: sent, and the write may have ended the
     * connection and stopped the keepalive. */
    bool (*ping)(void *arg);
    /* No answer within timeout: close the connection (it may free us). */
    void (*timed_out)(void *arg);
};

struct h2_keepalive;
/* Starts the clock on the calling worker, reading counts (the codec's, which
 * outlive it); NULL when cfg is off. */
struct h2_keepalive *h2_keepalive_start(const struct h2_keepalive_cfg *cfg, const struct h2_frame_counts *counts,
                                        const struct h2_keepalive_ops *ops, void *arg);
void h2_keepalive_stop(struct h2_keepalive *k);

#endif
