/* The TLS transport socket (OpenSSL 3): DownstreamTlsContext on listener
 * filter chains, UpstreamTlsContext on clusters.
 *
 * Each context owns the SSL_CTX that new connections use. The main thread
 * builds it from the config, watches the certificate, key and CA files once
 * a second and, when they change, builds a new SSL_CTX and swaps it in for
 * new connections; live connections keep theirs (OpenSSL refcounts it).
 * Workers take the current one under a mutex once per connection. */
#ifndef HERALD_CORE_NET_TLS_H
#define HERALD_CORE_NET_TLS_H

#include <event2/event.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdbool.h>

#include "config/bootstrap.h"
#include "config/diag.h"
#include "herald/config.h"

struct tls_ctx;

/* The transport_socket of a filter chain (chain_node: the FilterChain, for
 * transport_socket_connect_timeout). NULL with no error when the socket is
 * raw_buffer; NULL with an error in d when the config is wrong. In
 * validate_only mode the files are still read and the SSL_CTX built (that is
 * what validation is for) but no stats are made. */
struct tls_ctx *tls_server_new(const struct herald_cfg *transport_socket, const struct herald_cfg *chain_node,
                               const char *stat_prefix, bool validate_only, struct cfg_diag *d);
/* The transport_socket of a cluster; stats under cluster.<name>.ssl. */
struct tls_ctx *tls_client_new(const struct herald_cfg *transport_socket, const char *cluster_name,
                               bool validate_only, struct cfg_diag *d);
void tls_ctx_free(struct tls_ctx *t);

/* Builds every cluster's UpstreamTlsContext into cluster_cfg.tls (main thread). */
int tls_clusters_build(struct bootstrap *b, bool validate_only, struct cfg_diag *d);
void tls_clusters_destroy(struct bootstrap *b);

/* GET /certs (main thread): {"certificates": [one entry per context, as
 * ctx_certs_json]}, from the SSL_CTX each context uses now. */
json_t *tls_certs_dump(void);

/* Main thread: starts the once-a-second file watch of every context. */
void tls_watch_start(struct event_base *base);
void tls_watch_stop(void);

/* Worker: a new SSL for a connection (NULL when out of memory). */
SSL *tls_ssl_new(struct tls_ctx *t);
/* ms; 0: no handshake timeout (transport_socket_connect_timeout). */
uint64_t tls_handshake_timeout_ms(const struct tls_ctx *t);

/* The handshake finished: counts ssl.handshake, .versions., .cipher., ...
 * Returns 0, or -1 when the peer must be refused after all (a check OpenSSL
 * could not make during the handshake). */
int tls_handshake_done(struct tls_ctx *t, SSL *ssl);
/* The handshake failed (error, EOF or timeout; err: the first OpenSSL error,
 * or 0): counts ssl.connection_error and the fail_verify_* reason; writes a
 * short reason into buf for the logs. */
void tls_handshake_failed(struct tls_ctx *t, SSL *ssl, unsigned long err, char *buf, size_t size);

/* Sends close_notify (best effort: the socket is non-blocking). */
void tls_shutdown(SSL *ssl);

/* A DNS, URI or email subject alternative name as it stands, or an IP one
 * written into ip; *len its length. NULL for other types (or a bad IP). For
 * match_subject_alt_names and the access log's *_SAN operators alike. */
const char *tls_san_text(const GENERAL_NAME *g, char ip[INET6_ADDRSTRLEN], size_t *len);

/* The schema tables (tls_schema.c). */
extern const struct herald_message tls_downstream_msg, tls_upstream_msg, tls_transport_socket_msg;

#endif
