/* herald SDK: clusters, host selection and upstream TCP connections, on the
 * calling worker. Cluster membership comes from the main thread as snapshots;
 * a herald_cluster pointer is good until the current callback returns. */
#ifndef HERALD_UPSTREAM_H
#define HERALD_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "herald/buffer.h"
#include "herald/network_filter.h"
#include "herald/version.h"

#ifdef __cplusplus
extern "C" {
#endif

struct herald_cluster;
struct herald_host;
struct herald_upstream; /* one upstream TCP connection */

/* NULL when no cluster has that name. */
HERALD_EXPORT struct herald_cluster *herald_cluster_get(const char *name);
HERALD_EXPORT const char *herald_cluster_name(const struct herald_cluster *c);
/* (1.9) A value of a cluster's metadata (CLUSTER_METADATA) or of the
 * endpoint of one of its hosts ("ip:port", UPSTREAM_METADATA), by the access
 * log operators' path "NAMESPACE:KEY[:KEY...]" into filter_metadata: a string
 * as it is, a number or bool as written, a struct or list as compact JSON
 * (in out, len bytes, or static). NULL: absent. A worker's call (the host
 * is looked up among the worker's current hosts). */
HERALD_EXPORT const char *herald_cluster_metadata(const char *cluster, const char *path, char *out, size_t len);
HERALD_EXPORT const char *herald_upstream_metadata(const char *cluster, const char *host, const char *path,
                                                   char *out, size_t len);

/* (1.9) libstdc++'s 64-bit MurmurHash2 (std::_Hash_bytes): what Envoy's
 * RING_HASH uses with hash_function MURMUR_HASH_2, and, with the seed
 * 0xc70f6907, std::hash of a string (redis_proxy's key hash). */
HERALD_EXPORT uint64_t herald_murmur2_64(const void *data, size_t len, uint64_t seed);

/* Picks a host by the cluster's lb_policy (hash used by hashing policies;
 * 0 when there is none). NULL: no healthy host (counted as upstream_cx_none_healthy). */
HERALD_EXPORT struct herald_host *herald_cluster_choose_host(struct herald_cluster *c, uint64_t hash);
/* (1.7) The attempt-th re-pick (attempt >= 1) after a retry host predicate
 * refused the earlier picks: RING_HASH steps along its ring and MAGLEV
 * rehashes, so that they too can land elsewhere; other policies pick as
 * herald_cluster_choose_host does. */
HERALD_EXPORT struct herald_host *herald_cluster_choose_host_attempt(struct herald_cluster *c, uint64_t hash,
                                                                     uint32_t attempt);
HERALD_EXPORT const char *herald_host_address(const struct herald_host *h); /* "ip:port" */
/* (1.1) The endpoint's hostname (endpoint.hostname, or the DNS name it was
 * resolved from), or NULL: what auto_host_rewrite puts in Host. */
HERALD_EXPORT const char *herald_host_hostname(const struct herald_host *h);

enum herald_upstream_error {
    HERALD_UPSTREAM_OK = 0,
    HERALD_UPSTREAM_OVERFLOW,  /* circuit_breakers max_connections (upstream_cx_overflow) */
    HERALD_UPSTREAM_FAILED,    /* could not even start connecting */
};

struct herald_upstream_cbs {
    size_t size; /* sizeof(struct herald_upstream_cbs) */
    void (*on_data)(void *arg, struct herald_buf *data, bool end_stream);
    /* CONNECTED, CONNECT_FAILED, CONNECT_TIMEOUT, REMOTE_CLOSE, ABOVE_WRITE_HIGH,
     * BELOW_WRITE_LOW. After a close or failure event the upstream is gone. */
    void (*on_event)(void *arg, enum herald_conn_event ev);
};

/* Starts connecting to h with the cluster's connect_timeout; the outcome
 * arrives as an event. Counted in cluster.<name>.upstream_cx_*. */
HERALD_EXPORT struct herald_upstream *herald_upstream_connect(struct herald_cluster *c, struct herald_host *h,
                                                             const struct herald_upstream_cbs *cbs, void *arg,
                                                             enum herald_upstream_error *why);
/* (1.8) herald_upstream_connect on behalf of downstream connection d: a
 * cluster whose transport sends a PROXY protocol header sends d's addresses
 * (herald_upstream_connect: none, the LOCAL / UNKNOWN header). */
HERALD_EXPORT struct herald_upstream *herald_upstream_connect_from(struct herald_cluster *c, struct herald_host *h,
                                                                  const struct herald_upstream_cbs *cbs, void *arg,
                                                                  enum herald_upstream_error *why,
                                                                  const struct herald_conn *d);
HERALD_EXPORT int herald_upstream_write(struct herald_upstream *u, struct herald_buf *buf, bool end_stream);
HERALD_EXPORT size_t herald_upstream_output_len(const struct herald_upstream *u);
/* Frees u; no event follows. */
HERALD_EXPORT void herald_upstream_close(struct herald_upstream *u, enum herald_close_mode mode);
HERALD_EXPORT void herald_upstream_pause_reading(struct herald_upstream *u, unsigned reason);
HERALD_EXPORT void herald_upstream_resume_reading(struct herald_upstream *u, unsigned reason);
HERALD_EXPORT const struct herald_host *herald_upstream_host(const struct herald_upstream *u);

/* Zero-copy forwarding. A terminal filter that only moves bytes between c and
 * a connected upstream u can hand both directions to the core, which then
 * moves them in the kernel with splice(2) (no copy into user space),
 * half-closes each direction as its side finishes and closes both at the end.
 * Possible only when no other filter of the chain reads or writes bytes, both
 * sides are plain TCP, and nothing is buffered yet; returns -1 otherwise (go
 * on copying). On success u belongs to the core (do not use it again); bytes
 * are counted in herald_conn_bytes(), and the end arrives as the downstream's
 * close event (REMOTE_CLOSE when a peer reset or both finished). */
HERALD_EXPORT int herald_conn_splice(struct herald_conn *c, struct herald_upstream *u);
HERALD_EXPORT const char *herald_upstream_local_str(const struct herald_upstream *u);
/* (1.4) The connection's id, from the sequence that numbers the worker's
 * downstream connections (herald_conn_id), so one number never names two
 * connections: Envoy's %UPSTREAM_CONNECTION_ID%. */
HERALD_EXPORT uint64_t herald_upstream_id(const struct herald_upstream *u);

#ifdef __cplusplus
}
#endif
#endif
