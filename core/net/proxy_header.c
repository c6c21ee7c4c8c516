/* The upstream PROXY protocol header (see proxy_header.h). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config/schema.h"
#include "net/proxy_header.h"

#define PER_HOST_NS "envoy.transport_sockets.proxy_protocol"
#define UPSTREAM_TYPE "envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport"

static const uint8_t v2_signature[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

/* ------------------------------------------------------------ config */

static const char *type_url(const struct herald_cfg *typed)
{
    const char *url = herald_cfg_str(herald_cfg_get(typed, "@type"), NULL);
    const char *slash = url ? strrchr(url, '/') : NULL;
    return slash ? slash + 1 : url;
}

static void tlvs_free(struct pp_tlvs *t)
{
    for (size_t i = 0; t && i < t->n; i++)
        free(t->v[i].value);
    if (t)
        free(t->v);
}

/* added_tlvs: [{type, value (base64)}] */
static int parse_tlvs(const struct herald_cfg *list, struct pp_tlvs *out, struct cfg_diag *d)
{
    size_t n = herald_cfg_len(list);
    out->v = xcalloc(n ? n : 1, sizeof(*out->v));
    out->n = 0;
    for (size_t i = 0; i < n; i++) {
        const struct herald_cfg *e = herald_cfg_at(list, i), *tn = herald_cfg_get(e, "type");
        int64_t type = herald_cfg_int(tn, -1);
        if (type < 0 || type > 255) {
            diag_error(d, tn ? tn : e, "a TLV type is a byte: 0 to 255");
            return -1;
        }
        const struct herald_cfg *vn = herald_cfg_get(e, "value");
        const char *b64 = herald_cfg_str(vn, "");
        size_t blen = strlen(b64);
        uint8_t *val = xmalloc(blen / 4 * 3 + 4);
        int k = blen ? EVP_DecodeBlock(val, (const unsigned char *)b64, (int)blen) : 0;
        while (k > 0 && blen && b64[blen - 1] == '=') {   /* EVP_DecodeBlock counts padding as bytes */
            blen--;
            k--;
        }
        if (k <= 0 || strlen(b64) % 4) {
            free(val);
            diag_error(d, vn ? vn : e, "value: expected base64 bytes, at least one (e.g. %s for \"default\")",
                       "ZGVmYXVsdA==");
            return -1;
        }
        out->v[out->n++] = (struct proxy_tlv){.type = (uint8_t)type, .len = (uint16_t)k, .value = val};
    }
    return 0;
}

static int parse_pass_through(const struct herald_cfg *n, struct pp_upstream *pp, struct cfg_diag *d)
{
    if (!n)
        return 0;   /* unset: nothing passes */
    const char *match = herald_cfg_str(herald_cfg_get(n, "match_type"), "INCLUDE_ALL");
    if (strcmp(match, "INCLUDE_ALL") == 0) {
        pp->pass_all = true;
        return 0;
    }
    const struct herald_cfg *types = herald_cfg_get(n, "tlv_type");
    for (size_t i = 0; i < herald_cfg_len(types); i++) {
        int64_t t = herald_cfg_int(herald_cfg_at(types, i), -1);
        if (t < 0 || t > 255) {
            diag_error(d, herald_cfg_at(types, i), "a TLV type is a byte: 0 to 255");
            return -1;
        }
        pp->pass[t / 8] |= (uint8_t)(1u << (t % 8));
    }
    return 0;
}

/* lb_endpoints[].metadata.typed_filter_metadata["envoy.transport_sockets.proxy_protocol"] */
static int parse_per_host(struct cluster_cfg *c, struct cfg_diag *d)
{
    int rc = 0;
    for (size_t i = 0; i < c->nlocalities; i++)
        for (size_t j = 0; j < c->localities[i].nendpoints; j++) {
            struct endpoint_cfg *ep = &c->localities[i].endpoints[j];
            const struct herald_cfg *phc = herald_cfg_get(
                herald_cfg_get(herald_cfg_get(ep->node, "metadata"), "typed_filter_metadata"), PER_HOST_NS);
            if (!phc)
                continue;
            const char *url = type_url(phc);
            if (url && strcmp(url, "envoy.config.core.v3.PerHostConfig") != 0) {
                diag_error(d, herald_cfg_get(phc, "@type"), "expected envoy.config.core.v3.PerHostConfig here");
                rc = -1;
                continue;
            }
            if (schema_check((struct herald_cfg *)phc, &pp_per_host_msg, d) < 0) {
                rc = -1;
                continue;
            }
            ep->pp_tlvs = xcalloc(1, sizeof(*ep->pp_tlvs));
            if (parse_tlvs(herald_cfg_get(phc, "added_tlvs"), ep->pp_tlvs, d) < 0)
                rc = -1;
        }
    return rc;
}

int pp_cluster_parse(struct cluster_cfg *c, struct cfg_diag *d)
{
    const struct herald_cfg *ts = c->transport_socket;
    const struct herald_cfg *tc = herald_cfg_get(ts, "typed_config");
    const char *url = type_url(tc), *name = herald_cfg_str(herald_cfg_get(ts, "name"), "");
    bool is_pp = url ? strcmp(url, UPSTREAM_TYPE) == 0
                     : strcmp(name, "envoy.transport_sockets.upstream_proxy_protocol") == 0;
    if (!ts || !is_pp)
        return 0;
    if (!tc) {
        diag_error(d, ts, "envoy.transport_sockets.upstream_proxy_protocol needs a typed_config "
                   "(\"@type\": type.googleapis.com/%s)", UPSTREAM_TYPE);
        c->transport_socket = NULL;
        return -1;
    }
    /* on an error the wrapper is reported whole: its inner socket is not checked as the cluster's */
    if (schema_check((struct herald_cfg *)tc, &pp_upstream_msg, d) < 0) {
        c->transport_socket = NULL;
        return -1;
    }
    struct pp_upstream *pp = xcalloc(1, sizeof(*pp));
    const struct herald_cfg *cfg = herald_cfg_get(tc, "config");
    pp->version = strcmp(herald_cfg_str(herald_cfg_get(cfg, "version"), "V1"), "V2") == 0 ? 2 : 1;
    c->proxy_protocol = pp;
    int rc = 0;
    if (parse_pass_through(herald_cfg_get(cfg, "pass_through_tlvs"), pp, d) < 0 ||
        parse_tlvs(herald_cfg_get(cfg, "added_tlvs"), &pp->added, d) < 0 || parse_per_host(c, d) < 0)
        rc = -1;
    /* the inner socket: raw_buffer is none; anything else is tls_client_new's to check */
    const struct herald_cfg *inner = herald_cfg_get(tc, "transport_socket");
    const char *iurl = type_url(herald_cfg_get(inner, "typed_config"));
    const char *iname = herald_cfg_str(herald_cfg_get(inner, "name"), "");
    bool raw = iurl ? strstr(iurl, "transport_sockets.raw_buffer.") != NULL
                    : strcmp(iname, "envoy.transport_sockets.raw_buffer") == 0 || strcmp(iname, "raw_buffer") == 0;
    c->transport_socket = raw ? NULL : inner;
    return rc;
}

void pp_cluster_free(struct cluster_cfg *c)
{
    if (c->proxy_protocol) {
        tlvs_free(&c->proxy_protocol->added);
        free(c->proxy_protocol);
        c->proxy_protocol = NULL;
    }
    for (size_t i = 0; i < c->nlocalities; i++)
        for (size_t j = 0; j < c->localities[i].nendpoints; j++) {
            struct endpoint_cfg *ep = &c->localities[i].endpoints[j];
            tlvs_free(ep->pp_tlvs);
            free(ep->pp_tlvs);
            ep->pp_tlvs = NULL;
        }
}

/* ------------------------------------------------------------ the header */

static bool has_type(const struct pp_tlvs *t, uint8_t type)
{
    for (size_t i = 0; t && i < t->n; i++)
        if (t->v[i].type == type)
            return true;
    return false;
}

static size_t put_tlv(uint8_t *p, const struct proxy_tlv *t)
{
    p[0] = t->type;
    p[1] = (uint8_t)(t->len >> 8);
    p[2] = (uint8_t)t->len;
    memcpy(p + 3, t->value, t->len);
    return 3u + t->len;
}

/* Both addresses of one IP family, or false (then the header says UNKNOWN / UNSPEC). */
static bool addresses_of(const struct herald_conn *d, const struct sockaddr **src, const struct sockaddr **dst)
{
    if (!d)
        return false;
    socklen_t len;
    *src = herald_conn_remote_addr(d, &len);
    *dst = herald_conn_local_addr(d, &len);
    return (*src)->sa_family == (*dst)->sa_family &&
           ((*src)->sa_family == AF_INET || (*src)->sa_family == AF_INET6);
}

static uint8_t *v1_header(const struct herald_conn *d, size_t *len)
{
    const struct sockaddr *src, *dst;
    char *out = xmalloc(108);   /* the longest v1 line is 107 bytes with its CRLF */
    if (!addresses_of(d, &src, &dst)) {
        *len = (size_t)snprintf(out, 108, "PROXY UNKNOWN\r\n");
        return (uint8_t *)out;
    }
    char s[INET6_ADDRSTRLEN], t[INET6_ADDRSTRLEN];
    unsigned sp, dp;
    if (src->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)src)->sin_addr, s, sizeof(s));
        inet_ntop(AF_INET, &((const struct sockaddr_in *)dst)->sin_addr, t, sizeof(t));
        sp = ntohs(((const struct sockaddr_in *)src)->sin_port);
        dp = ntohs(((const struct sockaddr_in *)dst)->sin_port);
    } else {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)src)->sin6_addr, s, sizeof(s));
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)dst)->sin6_addr, t, sizeof(t));
        sp = ntohs(((const struct sockaddr_in6 *)src)->sin6_port);
        dp = ntohs(((const struct sockaddr_in6 *)dst)->sin6_port);
    }
    *len = (size_t)snprintf(out, 108, "PROXY %s %s %s %u %u\r\n", src->sa_family == AF_INET ? "TCP4" : "TCP6", s,
                            t, sp, dp);
    return (uint8_t *)out;
}

static bool passes(const struct pp_upstream *pp, uint8_t type)
{
    return pp->pass_all || (pp->pass[type / 8] & (1u << (type % 8)));
}

static uint8_t *v2_header(const struct pp_upstream *pp, const struct pp_tlvs *host, const struct herald_conn *d,
                          size_t *len)
{
    const struct sockaddr *src, *dst;
    bool proxy = addresses_of(d, &src, &dst);
    size_t cap = 16 + 36;
    /* d's TLVs the config passes, unless an added one of the same type replaces them */
    for (size_t i = 0; d && i < d->ntlvs; i++)
        cap += 3u + d->tlvs[i].len;
    for (size_t i = 0; i < pp->added.n; i++)
        cap += 3u + pp->added.v[i].len;
    for (size_t i = 0; host && i < host->n; i++)
        cap += 3u + host->v[i].len;
    uint8_t *out = xmalloc(cap), *p = out + 16;
    memcpy(out, v2_signature, 12);
    out[12] = d ? 0x21 : 0x20;   /* version 2; PROXY, or LOCAL for a connection of our own */
    if (proxy && src->sa_family == AF_INET) {
        out[13] = 0x11;          /* TCP over IPv4 */
        memcpy(p, &((const struct sockaddr_in *)src)->sin_addr, 4);
        memcpy(p + 4, &((const struct sockaddr_in *)dst)->sin_addr, 4);
        memcpy(p + 8, &((const struct sockaddr_in *)src)->sin_port, 2);
        memcpy(p + 10, &((const struct sockaddr_in *)dst)->sin_port, 2);
        p += 12;
    } else if (proxy) {
        out[13] = 0x21;          /* TCP over IPv6 */
        memcpy(p, &((const struct sockaddr_in6 *)src)->sin6_addr, 16);
        memcpy(p + 16, &((const struct sockaddr_in6 *)dst)->sin6_addr, 16);
        memcpy(p + 32, &((const struct sockaddr_in6 *)src)->sin6_port, 2);
        memcpy(p + 34, &((const struct sockaddr_in6 *)dst)->sin6_port, 2);
        p += 36;
    } else {
        out[13] = 0x00;          /* UNSPEC: the receiver keeps the connection's own addresses */
    }
    if (d) {
        for (size_t i = 0; i < d->ntlvs; i++) {
            const struct proxy_tlv *t = &d->tlvs[i];
            if (passes(pp, t->type) && !has_type(&pp->added, t->type) && !has_type(host, t->type) &&
                (size_t)(p - out - 16) + 3u + t->len <= UINT16_MAX)
                p += put_tlv(p, t);
        }
        for (size_t i = 0; i < pp->added.n; i++)
            if (!has_type(host, pp->added.v[i].type) && (size_t)(p - out - 16) + 3u + pp->added.v[i].len <= UINT16_MAX)
                p += put_tlv(p, &pp->added.v[i]);
        for (size_t i = 0; host && i < host->n; i++)
            if ((size_t)(p - out - 16) + 3u + host->v[i].len <= UINT16_MAX)
                p += put_tlv(p, &host->v[i]);
    }
    size_t body = (size_t)(p - out) - 16;
    out[14] = (uint8_t)(body >> 8);
    out[15] = (uint8_t)body;
    *len = (size_t)(p - out);
    return out;
}

uint8_t *pp_header_new(const struct pp_upstream *pp, const struct pp_tlvs *host_tlvs, const struct herald_conn *d,
                       size_t *len)
{
    return pp->version == 2 ? v2_header(pp, host_tlvs, d, len) : v1_header(d, len);
}
