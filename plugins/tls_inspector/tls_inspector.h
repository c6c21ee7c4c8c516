/* The tls_inspector's ClientHello parser: pure, no I/O (t/unit/test_tls_inspector.c). */
#ifndef HERALD_PLUGIN_TLS_INSPECTOR_H
#define HERALD_PLUGIN_TLS_INSPECTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TLS_HELLO_MAX_ALPN 16
#define MAX_MAX_READ 65536u       /* the largest ClientHello parsed */

enum tls_parse {
    TLS_PARSE_DONE = 0,     /* a whole ClientHello: h is filled */
    TLS_PARSE_MORE,         /* a ClientHello so far: peek again */
    TLS_PARSE_NOT_TLS,      /* does not start like a TLS handshake record */
    TLS_PARSE_ERROR,        /* starts like TLS, then malformed */
    TLS_PARSE_TOO_LARGE,    /* a ClientHello larger than 64 KiB */
};

struct tls_hello {
    unsigned legacy_version;
    bool has_sni;
    char sni[256];
    char alpn[TLS_HELLO_MAX_ALPN][256];
    size_t nalpn;
};

/* data: every byte received so far (from the first). */
enum tls_parse tls_parse_client_hello(const uint8_t *data, size_t len, struct tls_hello *h);

#endif
