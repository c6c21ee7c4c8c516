/* OCSP stapling (DownstreamTlsContext: tls_certificates[].ocsp_staple and
 * ocsp_staple_policy). Each certificate may carry a DER OCSP response, read
 * with the certificate (so a renewed staple file reloads it as a renewed
 * certificate does); a client that asks for the certificate's status
 * (status_request) gets it in the handshake unless it has expired. */
#ifndef HERALD_CORE_NET_TLS_OCSP_H
#define HERALD_CORE_NET_TLS_OCSP_H

#include <openssl/ssl.h>
#include <stddef.h>

#include "herald/stats.h"

enum ocsp_policy { OCSP_LENIENT = 0, OCSP_STRICT, OCSP_MUST };

/* ssl.ocsp_staple_{requests,responses,omitted,failed}, as Envoy counts them */
struct ocsp_stats { struct herald_stat *requests, *responses, *omitted, *failed; };

/* der (a DER OCSPResponse) as leaf's staple in ctx: it must be a successful
 * response that has a status for leaf's serial number. 0, or -1 with *err. */
int tls_ocsp_add(SSL_CTX *ctx, X509 *leaf, const unsigned char *der, size_t len, const char *name, char **err);
/* Staples on ctx from now on, by policy, counting in *st (filled later is fine). */
void tls_ocsp_enable(SSL_CTX *ctx, enum ocsp_policy policy, const struct ocsp_stats *st);

#endif
