/* A PROXY protocol header (HAProxy's proxy-protocol.txt, v1 and v2) read from
 * the first bytes of a connection. Pure: no herald calls, so the unit test
 * links it alone. */
#ifndef HERALD_PLUGIN_PP_PARSE_H
#define HERALD_PLUGIN_PP_PARSE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PP_V1_MAX 107            /* the longest v1 line, CRLF included */
/* The most of a v2 header herald reads: the spec allows 16 + 65535 bytes, but
 * real ones (addresses and a few TLVs: AWS, GCP, HAProxy) are a few hundred,
 * and this much is peeked for every connection that has not finished its
 * header. Longer ones are refused (PP_ERROR), as HAProxy refuses one larger
 * than its buffer. */
#define PP_V2_MAX 16384

enum pp_result {
    PP_MORE = 0,     /* a prefix of a header: read more */
    PP_DONE,         /* a whole header: *hdr filled */
    PP_NOT_PROXY,    /* the bytes are not a PROXY header (no signature) */
    PP_ERROR,        /* a PROXY signature, then something malformed or not supported */
};

struct pp_tlv_ref { uint8_t type; uint16_t len; const uint8_t *value; /* into the parsed bytes */ };

struct pp_header {
    int version;                 /* 1 or 2 (set as soon as the signature is seen, errors included) */
    size_t len;                  /* bytes the header takes */
    bool has_addresses;          /* false: LOCAL, UNKNOWN or UNSPEC: the connection's own stand */
    struct sockaddr_storage src, dst;
    socklen_t src_len, dst_len;
    struct pp_tlv_ref tlvs[64];  /* v2 TLVs, in order; more than this is an error */
    size_t ntlvs;
    const char *error;           /* PP_ERROR: what was wrong */
};

/* Looks at the first len bytes of a connection. which_versions: bit 1 for v1,
 * bit 2 for v2; a signature of another version is PP_NOT_PROXY. */
enum pp_result pp_parse(const uint8_t *data, size_t len, unsigned which_versions, struct pp_header *hdr);

#endif
