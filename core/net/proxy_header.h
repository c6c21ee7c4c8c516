/* The upstream side of the PROXY protocol (HAProxy's proxy-protocol.txt):
 * envoy.transport_sockets.upstream_proxy_protocol on a cluster starts each of
 * its connections with a header naming the downstream connection's source
 * and destination (v1 text, v2 binary with TLVs), so the backend sees the
 * client's address. The downstream side, reading such headers, is the
 * proxy_protocol listener filter plugin. */
#ifndef HERALD_CORE_NET_PROXY_HEADER_H
#define HERALD_CORE_NET_PROXY_HEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/bootstrap.h"
#include "config/diag.h"
#include "net/connection.h"

/* proxy_header_schema.c: ProxyProtocolUpstreamTransport, PerHostConfig */
extern const struct herald_message pp_upstream_msg, pp_per_host_msg;

struct pp_tlvs { struct proxy_tlv *v; size_t n; };

struct pp_upstream {
    int version;                       /* 1 or 2 */
    bool pass_all;                     /* pass_through_tlvs INCLUDE_ALL */
    uint8_t pass[32];                  /* INCLUDE: a bit per TLV type */
    struct pp_tlvs added;              /* added_tlvs */
};

/* tls_clusters_build's first step for each cluster: a transport socket that
 * is a ProxyProtocolUpstreamTransport becomes c->proxy_protocol, and
 * c->transport_socket its inner socket (NULL for raw_buffer); each
 * endpoint's PerHostConfig becomes its pp_tlvs. -1 on an error (in d). */
int pp_cluster_parse(struct cluster_cfg *c, struct cfg_diag *d);
void pp_cluster_free(struct cluster_cfg *c);

/* The header for a connection to an endpoint (its pp_tlvs, or NULL) on
 * behalf of downstream connection d: d's addresses and, in v2, the TLVs
 * (d's passed through, then the cluster's added_tlvs, then the host's, each
 * overriding the one before of the same type). d NULL (a health check, a
 * plugin's own connection): v1 "PROXY UNKNOWN", v2 the LOCAL command.
 * Returns malloc'd bytes, *len set. */
uint8_t *pp_header_new(const struct pp_upstream *pp, const struct pp_tlvs *host_tlvs, const struct herald_conn *d,
                       size_t *len);

#endif
