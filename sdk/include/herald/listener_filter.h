/* herald SDK: listener filters. They run on a freshly accepted socket before
 * a filter chain is chosen, may peek at the first bytes (never consuming
 * them), and set what filter_chain_match selects on: server name,
 * transport protocol, application protocols.
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
