/* The access log's %CLUSTER_METADATA(NS:KEY...)% and
 * %UPSTREAM_METADATA(NS:KEY...)%: a value from a cluster's or an endpoint's
 * metadata.filter_metadata, read from the config tree (which outlives every
 * host), for the HTTP connection manager and the filters (tcp_proxy) through
 * the SDK. */
#include "config.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "config/tree.h"
#include "server.h"
#include "upstream/cluster.h"

/* metadata.filter_metadata[ns][k1][k2]... for path "ns:k1:k2" (Envoy's
 * operator syntax), as text: a string as it is, a number or bool as written,
 * a struct or list as compact JSON. NULL: absent. */
static const char *lookup(const struct herald_cfg *metadata, const char *path, char *out, size_t len)
{
    const struct herald_cfg *n = herald_cfg_get(metadata, "filter_metadata");
    char part[256];

    if (!n || !path || !*path || !len)
        return NULL;
    for (const char *p = path; n && p;) {
        const char *colon = strchr(p, ':');
        size_t l = colon ? (size_t)(colon - p) : strlen(p);
        if (l >= sizeof(part))
            return NULL;
        memcpy(part, p, l);
        part[l] = '\0';
        n = herald_cfg_type(n) == HERALD_CFG_OBJECT ? herald_cfg_get(n, part) : NULL;
        p = colon ? colon + 1 : NULL;
    }
    switch (herald_cfg_type(n)) {
    case HERALD_CFG_NULL:
        return n ? "null" : NULL;
    case HERALD_CFG_STRING:
        return herald_cfg_str(n, NULL);
    case HERALD_CFG_BOOL:
        return herald_cfg_bool(n, false) ? "true" : "false";
    case HERALD_CFG_INT:
        snprintf(out, len, "%lld", (long long)herald_cfg_int(n, 0));
        return out;
    case HERALD_CFG_REAL:
        snprintf(out, len, "%.17g", herald_cfg_real(n, 0));
        return out;
    case HERALD_CFG_ARRAY:
    case HERALD_CFG_OBJECT: {
        json_t *j = cfg_to_json(n);
        char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        json_decref(j);
        if (!s)
            return NULL;
        snprintf(out, len, "%s", s);
        free(s);
        return out;
    }
    }
    return NULL;
}

const char *herald_cluster_metadata(const char *cluster, const char *path, char *out, size_t len)
{
    const struct cluster_cfg *c = the_server && the_server->boot && cluster
                                      ? bootstrap_find_cluster(the_server->boot, cluster) : NULL;
    return c ? lookup(herald_cfg_get(c->node, "metadata"), path, out, len) : NULL;
}

const char *herald_upstream_metadata(const char *cluster, const char *host, const char *path, char *out,
                                     size_t len)
{
    struct herald_cluster *c = herald_cluster_get(cluster);
    if (!c || !c->hosts || !host)
        return NULL;
    /* the worker's current hosts: a DNS cluster's endpoint is found by the address it resolved to */
    for (size_t i = 0; i < c->hosts->nhosts; i++) {
        const struct herald_host *h = c->hosts->hosts[i];
        if (h->ep && !strcmp(h->addr_str, host))
            return lookup(herald_cfg_get(h->ep->node, "metadata"), path, out, len);
    }
    return NULL;
}
