/* header_to_metadata's value decoding, pure (no I/O, no SDK state): base64
 * as Envoy's Base64::decodeWithoutPadding, and a serialized
 * google.protobuf.Value (type PROTOBUF_VALUE) down to its scalar kinds. */
#ifndef HERALD_H2M_VALUE_H
#define HERALD_H2M_VALUE_H

#include <stddef.h>

/* Standard base64 (RFC 4648 section 4), '=' padding optional, through the
 * SDK's herald_base64_decode. The bytes go to a malloc'd *out
 * (NUL-terminated, *len without it). -1: not base64, or nothing decoded. */
int h2m_base64_decode(const char *in, size_t inlen, char **out, size_t *len);

enum h2m_kind { H2M_NONE = 0, H2M_NULL, H2M_NUMBER, H2M_STRING, H2M_BOOL, H2M_STRUCT, H2M_LIST };

/* A serialized protobuf Value: its kind (the last one set wins, as protobuf
 * parses a oneof) and, for STRING, the string's bytes within buf (*str,
 * *slen), for NUMBER *num, for BOOL *num 0 or 1. -1: not a valid message. */
int h2m_pb_value(const unsigned char *buf, size_t len, enum h2m_kind *kind, double *num, const char **str,
                 size_t *slen);

#endif
