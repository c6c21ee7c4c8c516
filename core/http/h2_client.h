/* HTTP/2 to upstreams (nghttp2 client sessions): the HTTP/2 connections of
 * an http_pool and the SDK's upstream requests as streams on them. A pool
 * binds requests to a connection up to the peer's SETTINGS_MAX_CONCURRENT_STREAMS
 * (and the cluster's max_concurrent_streams), and opens another beyond that.
 * Request headers are converted from the map (pseudo-headers first, the
 * hop-by-hop headers dropped), the body goes through a data provider that
 * defers while the owner has nothing, the response comes back as on_headers,
 * on_data (the receive window is given back only as the owner takes the data:
 * herald_http_upstream_pause_reading holds it) and on_trailers. RST_STREAM,
 * GOAWAY (streams past last_stream_id: refused, nothing received) and a lost
 * connection reset the affected streams with HERALD_UPSTREAM_RESET_REMOTE.
 * Runs on the pool's worker. */
#ifndef HERALD_CORE_HTTP_H2_CLIENT_H
#define HERALD_CORE_HTTP_H2_CLIENT_H

#include "http/pool.h"

/* h2_client.c: HTTP/2 connections of a pool and the requests as streams on them */
/* Binds r as a stream of a connection with room; false when none has. */
bool h2_pool_bind(struct http_pool *p, struct herald_http_upstream *r);
/* hc's TCP connection, NULL once it is gone. */
struct herald_upstream *h2_conn_upstream(const struct h2_conn *hc);
/* Like pool_grow, for HTTP/2 (and undecided auto_config) pools. */
int h2_pool_grow(struct http_pool *p, enum herald_upstream_reset *why);
int h2_encode_headers(struct herald_http_upstream *r, struct herald_headers *h, bool end);
int h2_encode_data(struct herald_http_upstream *r, struct evbuffer *data, bool end);
int h2_encode_trailers(struct herald_http_upstream *r, struct herald_headers *t);
/* r leaves its stream: the owner freed it (or its response is over). reset:
 * RST_STREAM it unless both directions ended. */
void h2_stream_detach(struct herald_http_upstream *r, bool reset);
/* From r's deferred event: delivers a response held while reading was paused. */
void h2_deliver_held(struct herald_http_upstream *r);
void h2_pool_drain(struct http_pool *p);
void h2_pool_close_all(struct http_pool *p);


#endif
