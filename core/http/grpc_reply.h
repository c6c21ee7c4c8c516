/* Local replies to gRPC requests, as Envoy's Utility::sendLocalReply: not
 * an HTTP error but a trailers-only gRPC answer (:status 200,
 * content-type application/grpc, grpc-status, grpc-message), so that gRPC
 * clients see the reason and a gRPC status instead of a bare HTTP code. */
#ifndef HERALD_HTTP_GRPC_REPLY_H
#define HERALD_HTTP_GRPC_REPLY_H

#include <stddef.h>

#include "herald/http.h"

/* The gRPC status for an HTTP status (the gRPC project's mapping, as
 * Envoy's Grpc::Utility::httpToGrpcStatus): 400 INTERNAL, 401
 * UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504
 * UNAVAILABLE, anything else UNKNOWN. */
int grpc_status_for_http(int http_status);

/* Fills h (empty) with the trailers-only answer: grpc_status, and body as
 * grpc-message (percent-encoded, as the gRPC spec and Envoy's
 * PercentEncoding::encode; none when len is 0). */
void grpc_reply_headers(struct herald_headers *h, int grpc_status, const char *body, size_t len);

#endif
