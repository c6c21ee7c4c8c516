/* herald SDK: network (L4) filters and the downstream connection they see.
 *
 * Life cycle (all on the connection's worker except config_*):
 *   config_create(typed_config)      main thread, once per filter config
 *   worker_init(conf, worker index)  once per worker (optional)
 *   session_new(conf, wstate, conn)  once per accepted connection
 *   on_new_connection, on_read*, on_write*, on_event*
 *   session_destroy                  when the connection is gone
 *   worker_destroy, config_destroy   at shutdown / when the config is dropped
 *
 * Read filters run in config order; a filter that returns HERALD_STOP keeps
 * the later ones from seeing the data until it calls
 * herald_conn_continue_reading(). A filter that only looks (a sniffer) leaves
 * the buffer alone and returns HERALD_CONTINUE; a terminal filter (tcp_proxy)
 * drains it. Write filters run in reverse order on what is written to the
 * downstream peer. */
#ifndef HERALD_NETWORK_FILTER_H
#define HERALD_NETWORK_FILTER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "herald/buffer.h"
#include "herald/config.h"
#include "herald/version.h"

#ifdef __cplusplus
extern "C" {
#endif

enum herald_status {
    HERALD_CONTINUE = 0, /* go on with the next filter */
    HERALD_STOP = 1,     /* stop iterating; resume later through the SDK */
    HERALD_CLOSE = 2,    /* close the connection (the filter counted why) */
};

enum herald_conn_event {
    HERALD_EV_CONNECTED = 0,     /* upstream: connect (and handshake) finished */
    HERALD_EV_REMOTE_CLOSE,      /* the peer closed or reset */
    HERALD_EV_LOCAL_CLOSE,       /* we closed it */
    HERALD_EV_CONNECT_FAILED,    /* upstream: refused/unreachable (counted by the core) */
    HERALD_EV_CONNECT_TIMEOUT,   /* upstream: connect_timeout passed (counted by the core) */
    HERALD_EV_ABOVE_WRITE_HIGH,  /* output passed the high watermark: stop feeding it */
    HERALD_EV_BELOW_WRITE_LOW,   /* output drained below the low watermark: feed again */
    HERALD_EV_DRAIN,             /* (1.1) the server is draining: finish the work in hand, then close */
    HERALD_EV_TIMERS_RESCALED,   /* (1.10) the overload manager's reduce_timeouts scale moved: re-arm
                                    idle timers for their new length (herald_overload_scaled_ms) */
};

enum herald_close_mode {
    HERALD_CLOSE_FLUSH = 0,  /* write out what is buffered, then close */
    HERALD_CLOSE_RESET,      /* close now, dropping buffered output */
};

/* Why reading is paused; reading resumes only when no bit is left. */
#define HERALD_PAUSE_PEER   0x01u /* the other side's output is over its high watermark */
#define HERALD_PAUSE_FILTER 0x02u /* a filter is waiting for something */
#define HERALD_PAUSE_RATE   0x04u /* a rate limit */
#define HERALD_PAUSE_USER   0x100u /* first bit free for plugins */

struct herald_conn;        /* a downstream connection, on one worker */
struct herald_filter_env;  /* what a factory may ask about at config time */

/* ---- the connection, for the filters on it */
HERALD_EXPORT uint64_t herald_conn_id(const struct herald_conn *c);
HERALD_EXPORT unsigned herald_conn_worker(const struct herald_conn *c);
HERALD_EXPORT const struct sockaddr *herald_conn_remote_addr(const struct herald_conn *c, socklen_t *len);
HERALD_EXPORT const struct sockaddr *herald_conn_local_addr(const struct herald_conn *c, socklen_t *len);
HERALD_EXPORT const char *herald_conn_remote_str(const struct herald_conn *c); /* "ip:port" */
HERALD_EXPORT const char *herald_conn_local_str(const struct herald_conn *c);
/* (1.8) The socket's own addresses: the same as the above unless a listener
 * filter (PROXY protocol) restored others (Envoy's direct remote address). */
HERALD_EXPORT const struct sockaddr *herald_conn_direct_remote_addr(const struct herald_conn *c, socklen_t *len);
HERALD_EXPORT const struct sockaddr *herald_conn_direct_local_addr(const struct herald_conn *c, socklen_t *len);
HERALD_EXPORT const char *herald_conn_direct_remote_str(const struct herald_conn *c);
HERALD_EXPORT const char *herald_conn_direct_local_str(const struct herald_conn *c);
HERALD_EXPORT const char *herald_conn_server_name(const struct herald_conn *c); /* SNI or NULL */
/* TLS (transport_socket envoy.transport_sockets.tls on the filter chain): whether
 * the connection is TLS, and the ALPN protocol the handshake chose (or NULL). */
HERALD_EXPORT bool herald_conn_is_tls(const struct herald_conn *c);
HERALD_EXPORT const char *herald_conn_alpn(const struct herald_conn *c);
/* (1.4) The value of one of the access-log operators that describe the
 * connection's TLS: DOWNSTREAM_TLS_VERSION, _TLS_CIPHER, _TLS_SESSION_ID, and
 * DOWNSTREAM_PEER_ / DOWNSTREAM_LOCAL_ followed by SUBJECT, ISSUER, URI_SAN,
 * DNS_SAN, IP_SAN, SERIAL, FINGERPRINT_256, FINGERPRINT_1, CERT_V_START or
 * CERT_V_END (arg: their time format, as START_TIME's). NULL when the
 * connection is not TLS, there is no such certificate or value, or op is not
 * one of these. The result is in out (len bytes, 512 is plenty) or static. */
HERALD_EXPORT const char *herald_conn_tls_log_field(const struct herald_conn *c, const char *op, const char *arg,
                                                    char *out, size_t len);
/* (1.6) The names in the downstream peer's certificate, each handed over
 * separately and whole, for filters that authorize by them (unlike the
 * *_SAN log fields, which join several with ','). */
enum herald_cert_name {
    HERALD_CERT_SUBJECT = 0,   /* the subject in RFC 2253, as %DOWNSTREAM_PEER_SUBJECT% */
    HERALD_CERT_URI_SAN,
    HERALD_CERT_DNS_SAN,
    HERALD_CERT_IP_SAN,        /* as text: "10.0.0.1", "2001:db8::1" */
    HERALD_CERT_EMAIL_SAN,
};
/* value is len bytes followed by a NUL; a hostile certificate may put NUL
 * bytes inside a SAN, so compare len bytes, not up to the first NUL.
 * Return true to stop. */
typedef bool (*herald_cert_name_fn)(void *arg, const char *value, size_t len);
/* (1.6) Calls fn with each name of kind which in the peer certificate, in the
 * certificate's order, until fn returns true; returns whether it did. False
 * without calling fn when the connection is not TLS or the peer presented no
 * certificate. The certificate is decoded on each call: nothing is kept. */
HERALD_EXPORT bool herald_conn_peer_cert_names(const struct herald_conn *c, enum herald_cert_name which,
                                               herald_cert_name_fn fn, void *arg);
HERALD_EXPORT const char *herald_conn_listener_name(const struct herald_conn *c);
/* (1.5) The name of the filter chain the connection runs (filter_chains[].name),
 * or NULL when it has none: Envoy's %FILTER_CHAIN_NAME%. */
HERALD_EXPORT const char *herald_conn_filter_chain_name(const struct herald_conn *c);
HERALD_EXPORT uint32_t herald_conn_buffer_limit(const struct herald_conn *c); /* per_connection_buffer_limit_bytes */
HERALD_EXPORT uint64_t herald_conn_start_ms(const struct herald_conn *c); /* wall clock, ms since the epoch */
/* Bytes received from and sent to the peer so far, whichever path moved them
 * (filters, or the core's zero-copy forwarding). */
HERALD_EXPORT void herald_conn_bytes(const struct herald_conn *c, uint64_t *received, uint64_t *sent);

/* Writes buf (drained) to the peer through the write filters; end_stream
 * half-closes our side once it is flushed. */
HERALD_EXPORT int herald_conn_write(struct herald_conn *c, struct herald_buf *buf, bool end_stream);
HERALD_EXPORT size_t herald_conn_output_len(const struct herald_conn *c);
HERALD_EXPORT void herald_conn_close(struct herald_conn *c, enum herald_close_mode mode);
HERALD_EXPORT void herald_conn_pause_reading(struct herald_conn *c, unsigned reason);
HERALD_EXPORT void herald_conn_resume_reading(struct herald_conn *c, unsigned reason);
/* After a filter returned HERALD_STOP from on_new_connection/on_read: run the
 * filters after it with what the read buffer holds now. */
HERALD_EXPORT void herald_conn_continue_reading(struct herald_conn *c);

/* Dynamic metadata: string values under a namespace (by convention the
 * filter's name), read by later filters and access logs. */
HERALD_EXPORT int herald_conn_metadata_set(struct herald_conn *c, const char *ns, const char *key, const char *value);
HERALD_EXPORT const char *herald_conn_metadata_get(const struct herald_conn *c, const char *ns, const char *key);

/* ---- at config time */
HERALD_EXPORT const char *herald_env_filter_name(const struct herald_filter_env *e);
HERALD_EXPORT const char *herald_env_listener_name(const struct herald_filter_env *e);
/* true under --mode validate: check, but open no files and start nothing. */
HERALD_EXPORT bool herald_env_validate_only(const struct herald_filter_env *e);
HERALD_EXPORT bool herald_env_cluster_exists(const struct herald_filter_env *e, const char *cluster);
/* (1.9) The cluster's typed_extension_protocol_options entry for extension
 * name (e.g. "envoy.filters.network.redis_proxy"), already checked against
 * the schema the core has for it, or NULL (no such cluster or entry). Good
 * for the config_create call it is asked in. */
HERALD_EXPORT const struct herald_cfg *herald_env_cluster_protocol_options(const struct herald_filter_env *e,
                                                                          const char *cluster, const char *name);
/* (1.1) For HTTP filters: the connection manager's stat prefix, "http.<stat_prefix>",
 * under which Envoy keeps HTTP filter stats. NULL elsewhere. */
HERALD_EXPORT const char *herald_env_stat_prefix(const struct herald_filter_env *e);
/* Emits a config warning (shown by --mode validate and at start-up). */
HERALD_EXPORT void herald_env_warn(const struct herald_filter_env *e, const struct herald_cfg *at, const char *fmt, ...)
    HERALD_PRINTF(3, 4);

struct herald_network_filter_ops {
    size_t size; /* sizeof(struct herald_network_filter_ops) as the plugin was built */
    int (*config_create)(const struct herald_cfg *typed_config, const struct herald_filter_env *env,
                         void **conf, char **err);
    void (*config_destroy)(void *conf);
    void *(*worker_init)(void *conf, unsigned worker);
    void (*worker_destroy)(void *conf, void *wstate);
    /* NULL refuses the connection (it is closed). */
    void *(*session_new)(void *conf, void *wstate, struct herald_conn *c);
    void (*session_destroy)(void *session);
    enum herald_status (*on_new_connection)(void *session);
    enum herald_status (*on_read)(void *session, struct herald_buf *data, bool end_stream);
    enum herald_status (*on_write)(void *session, struct herald_buf *data, bool end_stream);
    void (*on_event)(void *session, enum herald_conn_event ev);
};

#ifdef __cplusplus
}
#endif
#endif
