/* The HTTP connection manager (Envoy's conn_manager_impl): runs a server
 * codec on a downstream connection, makes one stream per request, fixes up
 * the request headers (x-forwarded-for, x-request-id, hop-by-hop, path
 * normalisation), runs the HTTP filter chain (decoders in order, ending with
 * the terminal router; encoders in reverse), applies the route's response
 * header mutations and the Server header, encodes the response, answers
 * local replies, enforces the timeouts and limits, counts
 * http.<stat_prefix>.* and writes the access logs.
 *
 * The SDK side is herald/http.h: herald_http_cm_* (for the
 * http_connection_manager plugin) and herald_http_stream_* (for HTTP
 * filters). The stream is protocol-neutral: the HTTP/1 codec is reached only
 * through the small codec seam in conn_manager.c, so HTTP/2 can add its own.
 *
 * Where things happen (and why):
 * - route response_headers_to_add/remove: here, as the first thing in
 *   herald_http_stream_encode_headers (before the encoder filters), on
 *   every response of a stream that matched a route; the router does not.
 * - Server, Via, x-request-id (always_set_request_id_in_response),
 *   connection/keep-alive: after the encoder filters, just before the codec.
 * - Upgrades (WebSocket): the request keeps its Upgrade/Connection headers
 *   when the HCM or the route allows the type; once the terminal filter
 *   encodes a 101, both directions are raw bytes: decode_data delivers what
 *   the client sends, encode_data writes bytes unframed; end_stream from
 *   either side half-closes, and the stream ends when both have ended. A
 *   non-101 answer cancels the upgrade and closes the connection after it. */
#ifndef HERALD_CORE_HTTP_CONN_MANAGER_H
#define HERALD_CORE_HTTP_CONN_MANAGER_H

#include "herald/config.h"
#include "herald/http.h"

/* The HttpConnectionManager schema (hcm_schema.c); the plugin names it as
 * its config_schema. herald_-prefixed so that the version script exports it. */
extern const struct herald_message herald_http_cm_schema;

/* For the access log of a stream an upstream request serves
 * (herald_http_upstream_set_stream): a new attempt begins, to that host; it
 * got a connection (its local address and id; h2: an HTTP/2 one; ssl: its
 * TLS, or NULL) after ready_ms; the end of the request went to that
 * connection. */
struct ssl_st;
struct herald_host;
void cm_stream_upstream_attempt(struct herald_http_stream *s, const struct herald_host *host);
void cm_stream_upstream_request_sent(struct herald_http_stream *s);
/* Bytes of the attempt's exchange on the wire (headers: part of its heads or
 * HEADERS frames), for %UPSTREAM_WIRE_BYTES_*% / %UPSTREAM_HEADER_BYTES_*%. */
void cm_stream_upstream_bytes(struct herald_http_stream *s, bool sent, uint64_t bytes, bool headers);
bool cm_stream_counts_upstream_bytes(const struct herald_http_stream *s);   /* a log wants them */
/* Whether any connection manager made so far has such a log: until one has,
 * the HTTP/2 client does not look up each frame's stream to count it. */
bool cm_any_counts_upstream_bytes(void);
void cm_stream_upstream_bound(struct herald_http_stream *s, const char *local, uint64_t conn_id, uint64_t ready_ms,
                              bool h2, struct ssl_st *ssl);

#endif
