/* What GET /certs shows of a TLS context: the certificates an SSL_CTX was
 * built from, kept with it (SSL_CTX ex_data), so that the answer is what new
 * connections get, file reloads included, without reading the live
 * SSL_CTX's certificate slots (which workers use concurrently). */
#ifndef HERALD_CORE_NET_TLS_CERTS_H
#define HERALD_CORE_NET_TLS_CERTS_H

#include <jansson.h>
#include <openssl/ssl.h>

struct ctx_certs;

/* A new, empty record that ctx owns (freed with it); NULL when out of
 * memory, which the adders below take as "record nothing". */
struct ctx_certs *ctx_certs_attach_new(SSL_CTX *ctx);
/* x is up-referenced; path copied ("(inline)" for an inline certificate). */
void ctx_certs_add_leaf(struct ctx_certs *cc, X509 *x, const char *path);
void ctx_certs_add_ca(struct ctx_certs *cc, X509 *x, const char *path);
/* Envoy's /certs entry for one context: {"ca_cert": [...], "cert_chain": [...]},
 * each certificate with path, serial_number, subject_alt_names,
 * days_until_expiration, valid_from and expiration_time. */
json_t *ctx_certs_json(SSL_CTX *ctx);

#endif
