/* herald SDK: listener filters. They run on a freshly accepted socket before
 * a filter chain is chosen, may peek at the first bytes (consuming only what
 * they drain: a PROXY protocol header), and set what filter_chain_match
 * selects on: server name, transport protocol, application protocols, and
 * (restored) addresses.
 *
 * on_accept returns CONTINUE (done), STOP (send me data) or CLOSE. While
 * stopped, on_data is called with every byte peeked so far (at most
 * max_read_bytes) each time more arrive; it returns CONTINUE when it has what
 * it needs, STOP for more, CLOSE to drop the connection. The listener's
 * listener_filters_timeout bounds the wait. */
#ifndef HERALD_LISTENER_FILTER_H
#define HERALD_LISTENER_FILTER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "herald/config.h"
#include "herald/network_filter.h"
#include "herald/version.h"

#ifdef __cplusplus
extern "C" {
#endif

struct herald_socket; /* an accepted socket, before its filter chain */

HERALD_EXPORT const struct sockaddr *herald_socket_remote_addr(const struct herald_socket *s, socklen_t *len);
HERALD_EXPORT const struct sockaddr *herald_socket_local_addr(const struct herald_socket *s, socklen_t *len);
HERALD_EXPORT void herald_socket_set_server_name(struct herald_socket *s, const char *name);
HERALD_EXPORT void herald_socket_set_transport_protocol(struct herald_socket *s, const char *proto);
HERALD_EXPORT void herald_socket_add_application_protocol(struct herald_socket *s, const char *proto);
/* (1.8) Consumes the first n bytes of what on_data was shown (a PROXY
 * protocol header, say) once the filter returns CONTINUE: the filters after
 * it and the connection see only what follows. At most what was shown. */
HERALD_EXPORT void herald_socket_drain(struct herald_socket *s, size_t n);
/* (1.8) The addresses the connection presents from now on (the PROXY
 * protocol's source and destination; NULL keeps one): filter_chain_match,
 * herald_conn_remote_addr / _local_addr, x-forwarded-for, rbac remote_ip and
 * the access logs' DOWNSTREAM_REMOTE_* / DOWNSTREAM_LOCAL_* see them, while
 * herald_conn_direct_*, direct_remote_ip and DOWNSTREAM_DIRECT_* keep the
 * socket's own. IPv4 and IPv6 only; -1 otherwise. */
HERALD_EXPORT int herald_socket_restore_addresses(struct herald_socket *s, const struct sockaddr *remote,
                                                  socklen_t rlen, const struct sockaddr *local, socklen_t llen);
/* (1.8) Dynamic metadata of the connection to be (herald_conn_metadata_get). */
HERALD_EXPORT int herald_socket_metadata_set(struct herald_socket *s, const char *ns, const char *key,
                                             const char *value);
/* (1.8) A PROXY protocol v2 TLV the connection carries, for clusters whose
 * upstream_proxy_protocol transport passes TLVs through. */
HERALD_EXPORT int herald_socket_add_proxy_tlv(struct herald_socket *s, uint8_t type, const uint8_t *value,
                                              size_t len);

struct herald_listener_filter_ops {
    size_t size;
    int (*config_create)(const struct herald_cfg *typed_config, const struct herald_filter_env *env,
                         void **conf, char **err);
    void (*config_destroy)(void *conf);
    size_t (*max_read_bytes)(void *conf); /* 0: never reads */
    void *(*session_new)(void *conf, struct herald_socket *s);
    void (*session_destroy)(void *session);
    enum herald_status (*on_accept)(void *session);
    enum herald_status (*on_data)(void *session, const uint8_t *data, size_t len);
};

#ifdef __cplusplus
}
#endif
#endif
