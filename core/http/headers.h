/* Core helpers on top of the SDK header map (sdk/include/herald/http.h). */
#ifndef HERALD_CORE_HTTP_HEADERS_H
#define HERALD_CORE_HTTP_HEADERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>

#include "herald/http.h"

/* An entry of a map: the name lower-case; both strings NUL-terminated. */
struct header_field {
    const char *name, *value;
    uint32_t nlen;
    uint32_t vlen : 31;        /* header size limits keep values far below 2 GiB */
    uint32_t received : 1;     /* headers_add_received: valid for the wire as it stands */
};
/* The entries in order, *n of them; valid until the map changes. For the
 * encoders' loops over every field. */
const struct header_field *headers_fields(const struct herald_headers *h, size_t *n);

/* Sum of name and value lengths (what max_request_headers_kb counts). */
size_t headers_byte_size(const struct herald_headers *h);
/* Adds name (already lower-case) and value, both copied; checked again
 * when written (unlike headers_add_received). */
void headers_add_n(struct herald_headers *h, const char *name, size_t nlen, const char *value, size_t vlen);
/* A field a codec received and validated (the name a token, lower-cased as
 * it is copied when lowercase; the value free of CR, LF and NUL): marked, so
 * that the HTTP/1 encoder writes it without checking it again. */
void headers_add_received(struct herald_headers *h, const char *name, size_t nlen, const char *value, size_t vlen,
                          bool lowercase);
/* As headers_add_n, at position pos (entries from pos on move back). */
void headers_insert_n(struct herald_headers *h, size_t pos, const char *name, size_t nlen, const char *value,
                      size_t vlen);
/* Removes entry i (order kept); false past the end. */
bool headers_remove_at(struct herald_headers *h, size_t i);
/* The hop-by-hop headers named in mask, in one pass over the map. */
enum {
    HOP_CONNECTION = 1u << 0,
    HOP_KEEP_ALIVE = 1u << 1,
    HOP_PROXY_CONNECTION = 1u << 2,
    HOP_TRANSFER_ENCODING = 1u << 3,
    HOP_UPGRADE = 1u << 4,
};
void headers_remove_hop_by_hop(struct herald_headers *h, unsigned mask);
/* Which HOP_* a lower-case name is, or 0 (HTTP/2 forbids all five). */
unsigned headers_hop_of(const char *name, size_t len);
/* herald_headers_get for a name already in lower case, with its length:
 * HEADERS_GET(h, "content-length") for the core's many literal lookups
 * (no strlen, no case folding). */
const char *headers_get_lc(const struct herald_headers *h, const char *lc, size_t len);
#define HEADERS_GET(h, lit) headers_get_lc((h), "" lit "", sizeof(lit) - 1)
/* Number of entries named name. */
size_t headers_count_name(const struct herald_headers *h, const char *name);
/* True when the value of name, split at commas, has token tok (case-insensitive),
 * e.g. headers_has_token(h, "connection", "close"). */
bool headers_has_token(const struct herald_headers *h, const char *name, const char *tok);
/* A gRPC request or response, as Envoy's Grpc::Common::hasGrpcContentType()
 * and gRPC's spec: content-type exactly application/grpc, or it followed by
 * '+' and a codec (+proto, +json); not application/grpc-web. */
bool headers_is_grpc(const struct herald_headers *h);
/* An Upgrade header and "upgrade" in Connection (RFC 9110 7.8). */
bool headers_upgrade_requested(const struct herald_headers *h);

/* A :status value as a number, 0 when absent: the usual three digits
 * without atoi's locale-aware strtol (several calls per response). */
static inline int status_code(const char *s)
{
    if (s && s[0] >= '0' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9' && s[2] >= '0' && s[2] <= '9' && !s[3])
        return (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    return s ? atoi(s) : 0;
}

#endif
