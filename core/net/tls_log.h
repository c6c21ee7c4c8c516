#ifndef HERALD_TLS_LOG_H
#define HERALD_TLS_LOG_H
#include <openssl/x509.h>
#include <stddef.h>

struct ssl_session_st;

/* A certificate's serial in lower-case hex (whole bytes, as Envoy's), or NULL. */
const char *tls_cert_serial(X509 *cert, char *out, size_t len);
/* t formatted as START_TIME's fmt (strftime, %f...) in UTC, or NULL. */
const char *tls_cert_time(const ASN1_TIME *t, const char *fmt, char *out, size_t len);

/* The UPSTREAM_TLS_VERSION / _CIPHER / _SESSION_ID and UPSTREAM_PEER_*
 * access-log operators, from the session an upstream connection negotiated
 * (NULL: "-"). The downstream ones are herald_conn_tls_log_field's (SDK). */
const char *tls_log_upstream_field(const struct ssl_session_st *sess, const char *op, const char *arg, char *out,
                                   size_t len);

#endif
