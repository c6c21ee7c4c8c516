/* Extraction of the checked bootstrap tree into typed structs, plus the
 * semantic checks a schema cannot express (duplicate names, IP literals,
 * Envoy's cross-field rules). */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config/bootstrap.h"
#include "config/schema.h"

static const struct herald_cfg *get(const struct herald_cfg *n, const char *key)
{
    return herald_cfg_get(n, key);
}

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

/* A uint32 field with a range check (the schema only knows "non-negative"). */
static uint32_t get_u32(const struct herald_cfg *obj, const char *key, uint32_t def, uint32_t min,
                        uint32_t max, struct cfg_diag *d)
{
    const struct herald_cfg *n = get(obj, key);
    if (!n || n->type == HERALD_CFG_NULL)
        return def;
    int64_t v = herald_cfg_int(n, def);
    if (v < (int64_t)min || v > (int64_t)max) {
        diag_error(d, n, "%" PRId64 " is out of range (%" PRIu32 " to %" PRIu32 ")", v, min, max);
        return def;
    }
    return (uint32_t)v;
}

static uint64_t get_ms(const struct herald_cfg *obj, const char *key, uint64_t def)
{
    return herald_cfg_duration_ms(get(obj, key), def);
}

static bool is_ip(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static void extract_address(const struct herald_cfg *n, struct address_cfg *a)
{
    a->node = n;
    const struct herald_cfg *sa = get(n, "socket_address");
    const struct herald_cfg *pipe = get(n, "pipe");
    if (sa) {
        a->host = xstrdup(herald_cfg_str(get(sa, "address"), ""));
        a->port = (uint16_t)herald_cfg_int(get(sa, "port_value"), 0);
    } else if (pipe) {
        a->pipe = xstrdup(herald_cfg_str(get(pipe, "path"), ""));
    }
}

static void free_address(struct address_cfg *a)
{
    free(a->host);
    free(a->pipe);
}

static void extract_filter(const struct herald_cfg *n, struct filter_cfg *f)
{
    f->node = n;
    f->name = xstrdup(herald_cfg_str(get(n, "name"), ""));
    f->typed_config = get(n, "typed_config");
    if (f->typed_config && f->typed_config->type == HERALD_CFG_NULL)
        f->typed_config = NULL;
    const char *url = herald_cfg_str(get(f->typed_config, "@type"), NULL);
    if (url) {
        const char *slash = strrchr(url, '/');
        f->type_url = xstrdup(slash ? slash + 1 : url);
    }
}

static void free_filter(struct filter_cfg *f)
{
    free(f->name);
    free(f->type_url);
}

static char **str_list(const struct herald_cfg *n, size_t *count)
{
    size_t len = herald_cfg_len(n);
    *count = 0;
    if (!len || n->type != HERALD_CFG_ARRAY)
        return NULL;
    char **out = xcalloc(len, sizeof(*out));
    for (size_t i = 0; i < len; i++)
        out[(*count)++] = xstrdup(herald_cfg_str(herald_cfg_at(n, i), ""));
    return out;
}

static void free_str_list(char **l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

static struct cidr_cfg *cidr_list(const struct herald_cfg *n, size_t *count, struct cfg_diag *d)
{
    size_t len = herald_cfg_len(n);
    *count = 0;
    if (!len || n->type != HERALD_CFG_ARRAY)
        return NULL;
    struct cidr_cfg *out = xcalloc(len, sizeof(*out));
    for (size_t i = 0; i < len; i++) {
        const struct herald_cfg *c = herald_cfg_at(n, i);
        const struct herald_cfg *pfx = get(c, "address_prefix");
        const char *p = herald_cfg_str(pfx, "");
        unsigned char buf[sizeof(struct in6_addr)];
        uint32_t max = 32;
        if (inet_pton(AF_INET6, p, buf) == 1)
            max = 128;
        else if (inet_pton(AF_INET, p, buf) != 1)
            diag_error(d, pfx ? pfx : c,
                       "'%s' is not an IP address prefix (write e.g. 10.0.0.0 with prefix_len 8)", p);
        out[*count].prefix = xstrdup(p);
        out[*count].len = get_u32(c, "prefix_len", 0, 0, max, d);
        (*count)++;
    }
    return out;
}

static void extract_match(const struct herald_cfg *n, struct filter_chain_match_cfg *m, struct cfg_diag *d)
{
    if (!n || n->type != HERALD_CFG_OBJECT)
        return;
    m->destination_port = get_u32(n, "destination_port", 0, 0, 65535, d);
    m->server_names = str_list(get(n, "server_names"), &m->nserver_names);
    m->transport_protocol = dup_or_null(herald_cfg_str(get(n, "transport_protocol"), NULL));
    m->application_protocols = str_list(get(n, "application_protocols"), &m->napplication_protocols);
    m->prefix_ranges = cidr_list(get(n, "prefix_ranges"), &m->nprefix_ranges, d);
    m->source_prefix_ranges = cidr_list(get(n, "source_prefix_ranges"), &m->nsource_prefix_ranges, d);
    m->direct_source_prefix_ranges =
        cidr_list(get(n, "direct_source_prefix_ranges"), &m->ndirect_source_prefix_ranges, d);
    const struct herald_cfg *sp = get(n, "source_ports");
    size_t len = herald_cfg_len(sp);
    if (len && sp->type == HERALD_CFG_ARRAY) {
        m->source_ports = xcalloc(len, sizeof(*m->source_ports));
        for (size_t i = 0; i < len; i++) {
            const struct herald_cfg *p = herald_cfg_at(sp, i);
            int64_t v = herald_cfg_int(p, 0);
            if (v < 1 || v > 65535)
                diag_error(d, p, "port %" PRId64 " is out of range (1 to 65535)", v);
            m->source_ports[m->nsource_ports++] = (uint32_t)v;
        }
    }
}

static void free_match(struct filter_chain_match_cfg *m)
{
    free_str_list(m->server_names, m->nserver_names);
    free(m->transport_protocol);
    free_str_list(m->application_protocols, m->napplication_protocols);
    for (size_t i = 0; i < m->nprefix_ranges; i++)
        free(m->prefix_ranges[i].prefix);
    free(m->prefix_ranges);
    for (size_t i = 0; i < m->nsource_prefix_ranges; i++)
        free(m->source_prefix_ranges[i].prefix);
    free(m->source_prefix_ranges);
    for (size_t i = 0; i < m->ndirect_source_prefix_ranges; i++)
        free(m->direct_source_prefix_ranges[i].prefix);
    free(m->direct_source_prefix_ranges);
    free(m->source_ports);
}

static void extract_chain(const struct herald_cfg *n, struct filter_chain_cfg *c, struct cfg_diag *d)
{
    c->node = n;
    c->name = dup_or_null(herald_cfg_str(get(n, "name"), NULL));
    extract_match(get(n, "filter_chain_match"), &c->match, d);
    const struct herald_cfg *ts = get(n, "transport_socket");
    c->transport_socket = ts && ts->type == HERALD_CFG_OBJECT ? ts : NULL;
    const struct herald_cfg *fl = get(n, "filters");
    size_t len = herald_cfg_len(fl);
    if (!len) {
        diag_error(d, fl ? fl : n, "a filter chain needs at least one network filter (e.g. "
                   "envoy.filters.network.tcp_proxy or envoy.filters.network.http_connection_manager)");
        return;
    }
    c->filters = xcalloc(len, sizeof(*c->filters));
    for (size_t i = 0; i < len; i++)
        extract_filter(herald_cfg_at(fl, i), &c->filters[c->nfilters++]);
}

static void free_chain(struct filter_chain_cfg *c)
{
    free(c->name);
    free_match(&c->match);
    for (size_t i = 0; i < c->nfilters; i++)
        free_filter(&c->filters[i]);
    free(c->filters);
}

static void extract_listener(const struct herald_cfg *n, struct listener_cfg *l, struct cfg_diag *d)
{
    l->node = n;
    extract_address(get(n, "address"), &l->address);
    const char *name = herald_cfg_str(get(n, "name"), NULL);
    if (name)
        l->name = xstrdup(name);
    else if (l->address.pipe)
        l->name = xstrdup(l->address.pipe);
    else
        l->name = xasprintf("%s:%u", l->address.host ? l->address.host : "", l->address.port);
    l->stat_prefix = dup_or_null(herald_cfg_str(get(n, "stat_prefix"), NULL));
    l->listener_filters_timeout_ms = get_ms(n, "listener_filters_timeout", 15000);
    l->continue_on_listener_filters_timeout = herald_cfg_bool(get(n, "continue_on_listener_filters_timeout"),
                                                              false);
    l->buffer_limit = get_u32(n, "per_connection_buffer_limit_bytes", DEFAULT_BUFFER_LIMIT, 0, UINT32_MAX, d);
    const struct herald_cfg *rp = get(n, "enable_reuse_port");
    l->reuse_port = herald_cfg_bool(rp ? rp : get(n, "reuse_port"), true);
    l->backlog = get_u32(n, "tcp_backlog_size", 1024, 1, INT32_MAX, d);

    const struct herald_cfg *chains = get(n, "filter_chains");
    const struct herald_cfg *def = get(n, "default_filter_chain");
    if (def && def->type != HERALD_CFG_OBJECT)
        def = NULL;
    size_t len = herald_cfg_len(chains);
    if (!len && !def)
        diag_error(d, n, "listener '%s' has no filter_chains (and no default_filter_chain): it could not "
                   "handle a connection", l->name);
    if (len) {
        l->chains = xcalloc(len, sizeof(*l->chains));
        for (size_t i = 0; i < len; i++)
            extract_chain(herald_cfg_at(chains, i), &l->chains[l->nchains++], d);
    }
    if (def) {
        l->default_chain = xcalloc(1, sizeof(*l->default_chain));
        extract_chain(def, l->default_chain, d);
    }
    const struct herald_cfg *lf = get(n, "listener_filters");
    len = herald_cfg_len(lf);
    if (len) {
        l->listener_filters = xcalloc(len, sizeof(*l->listener_filters));
        for (size_t i = 0; i < len; i++)
            extract_filter(herald_cfg_at(lf, i), &l->listener_filters[l->nlistener_filters++]);
    }
}

static void free_listener(struct listener_cfg *l)
{
    free(l->name);
    free(l->stat_prefix);
    free_address(&l->address);
    for (size_t i = 0; i < l->nchains; i++)
        free_chain(&l->chains[i]);
    free(l->chains);
    if (l->default_chain) {
        free_chain(l->default_chain);
        free(l->default_chain);
    }
    for (size_t i = 0; i < l->nlistener_filters; i++)
        free_filter(&l->listener_filters[i]);
    free(l->listener_filters);
}

static int enum_index(const char *v, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (v && strcmp(v, names[i]) == 0)
            return (int)i;
    return 0;
}

static void extract_endpoints(const struct herald_cfg *la, struct cluster_cfg *c, struct cfg_diag *d)
{
    const struct herald_cfg *eps = get(la, "endpoints");
    size_t len = herald_cfg_len(eps);
    if (!len || eps->type != HERALD_CFG_ARRAY)
        return;
    c->localities = xcalloc(len, sizeof(*c->localities));
    for (size_t i = 0; i < len; i++) {
        const struct herald_cfg *lle = herald_cfg_at(eps, i);
        struct locality_cfg *loc = &c->localities[c->nlocalities++];
        loc->priority = get_u32(lle, "priority", 0, 0, 127, d);
        loc->weight = get_u32(lle, "load_balancing_weight", 0, 0, UINT32_MAX, d);
        const struct herald_cfg *lbs = get(lle, "lb_endpoints");
        size_t n = herald_cfg_len(lbs);
        if (!n || lbs->type != HERALD_CFG_ARRAY)
            continue;
        loc->endpoints = xcalloc(n, sizeof(*loc->endpoints));
        for (size_t j = 0; j < n; j++) {
            const struct herald_cfg *lb = herald_cfg_at(lbs, j);
            const struct herald_cfg *ep = get(lb, "endpoint");
            struct endpoint_cfg *e = &loc->endpoints[loc->nendpoints++];
            e->node = lb;
            e->weight = get_u32(lb, "load_balancing_weight", 1, 1, UINT32_MAX, d);
            e->hostname = dup_or_null(herald_cfg_str(get(ep, "hostname"), NULL));
            e->hc_port = (uint16_t)get_u32(get(ep, "health_check_config"), "port_value", 0, 0, 65535, d);
            const struct herald_cfg *hca = get(get(ep, "health_check_config"), "address");
            if (hca) {
                extract_address(hca, &e->hc_address);
                if (!e->hc_address.host || !is_ip(e->hc_address.host))
                    diag_error(d, hca, "health_check_config.address must be an IP address and port");
            }
            const struct herald_cfg *addr = get(ep, "address");
            if (!addr || addr->type != HERALD_CFG_OBJECT) {
                diag_error(d, ep ? ep : lb, "an endpoint needs an address (socket_address: {address, "
                           "port_value})");
                continue;
            }
            extract_address(addr, &e->address);
            if (c->subset) {
                const struct herald_cfg *md = get(get(get(lb, "metadata"), "filter_metadata"), "envoy.lb");
                if (lbmd_kvs_from_struct(md, &e->lb_meta) < 0)
                    diag_error(d, md, "metadata.filter_metadata[\"envoy.lb\"] must be a mapping of keys to "
                               "values");
            }
            const struct herald_cfg *sa = get(addr, "socket_address");
            if (!sa)
                continue;
            const struct herald_cfg *host = get(sa, "address");
            if (c->type == CLUSTER_STATIC && !is_ip(e->address.host))
                diag_error(d, host, "'%s' is not an IP address: a STATIC cluster needs IP addresses "
                           "(for a DNS name use type: STRICT_DNS or LOGICAL_DNS)", e->address.host);
            if (!get(sa, "port_value"))
                diag_error(d, sa, "an upstream endpoint needs a port_value");
        }
    }
}

static char **sorted_keys(const struct herald_cfg *list, size_t *n)
{
    size_t len = herald_cfg_len(list);
    char **v = xcalloc(len ? len : 1, sizeof(*v));
    *n = 0;
    for (size_t i = 0; i < len; i++) {
        const char *k = herald_cfg_str(herald_cfg_at(list, i), "");
        size_t at = 0;
        while (at < *n && strcmp(v[at], k) < 0)
            at++;
        if (at < *n && strcmp(v[at], k) == 0)
            continue;                  /* a set, as Envoy's */
        memmove(v + at + 1, v + at, (*n - at) * sizeof(*v));
        v[at] = xstrdup(k);
        (*n)++;
    }
    return v;
}

/* lb_subset_config (its schema checked the selectors' KEYS_SUBSET rules). */
static void extract_subset(const struct herald_cfg *n, struct cluster_cfg *c, struct cfg_diag *d)
{
    static const char *const fallbacks[] = { "NO_FALLBACK", "ANY_ENDPOINT", "DEFAULT_SUBSET" };
    static const char *const sel_fallbacks[] = { "NOT_DEFINED", "NO_FALLBACK", "ANY_ENDPOINT", "DEFAULT_SUBSET",
                                                 "KEYS_SUBSET" };
    const struct herald_cfg *lsc = get(n, "lb_subset_config");
    const struct herald_cfg *sels = get(lsc, "subset_selectors");
    if (!lsc)
        return;
    if (!herald_cfg_len(sels)) {
        /* as Envoy: without selectors there is no subset load balancing */
        diag_warn(d, lsc, "lb_subset_config has no subset_selectors: it has no effect");
        return;
    }
    struct subset_cfg *s = xcalloc(1, sizeof(*s));
    c->subset = s;
    s->fallback = (enum subset_fallback)enum_index(herald_cfg_str(get(lsc, "fallback_policy"), "NO_FALLBACK"),
                                                   fallbacks, ARRAY_SIZE(fallbacks));
    const struct herald_cfg *ds = get(lsc, "default_subset");
    if (lbmd_kvs_from_struct(ds, &s->default_subset) < 0)
        diag_error(d, ds, "default_subset must be a mapping of metadata keys to values");
    s->locality_weight_aware = herald_cfg_bool(get(lsc, "locality_weight_aware"), false);
    s->scale_locality_weight = herald_cfg_bool(get(lsc, "scale_locality_weight"), false);
    s->panic_mode_any = herald_cfg_bool(get(lsc, "panic_mode_any"), false);
    s->list_as_any = herald_cfg_bool(get(lsc, "list_as_any"), false);
    if (s->scale_locality_weight && !s->locality_weight_aware)
        diag_warn(d, get(lsc, "scale_locality_weight"), "scale_locality_weight has no effect without "
                  "locality_weight_aware");
    if (s->locality_weight_aware && !c->locality_weighted)
        diag_warn(d, get(lsc, "locality_weight_aware"), "locality_weight_aware has no effect: the cluster has "
                  "no common_lb_config.locality_weighted_lb_config");
    if (ds && s->fallback != SUBSET_DEFAULT_SUBSET) {
        bool used = false;
        for (size_t i = 0; i < herald_cfg_len(sels); i++)
            used |= strcmp(herald_cfg_str(get(herald_cfg_at(sels, i), "fallback_policy"), ""), "DEFAULT_SUBSET") == 0;
        if (!used)
            diag_warn(d, ds, "default_subset has no effect: neither fallback_policy nor a selector's is "
                      "DEFAULT_SUBSET");
    }
    s->selectors = xcalloc(herald_cfg_len(sels), sizeof(*s->selectors));
    for (size_t i = 0; i < herald_cfg_len(sels); i++) {
        const struct herald_cfg *sn = herald_cfg_at(sels, i);
        struct subset_selector_cfg *sel = &s->selectors[s->nselectors];
        if (!herald_cfg_len(get(sn, "keys"))) {
            diag_warn(d, sn, "a subset selector without keys is ignored (as Envoy ignores it)");
            continue;
        }
        sel->keys = sorted_keys(get(sn, "keys"), &sel->nkeys);
        sel->fallback = (enum selector_fallback)enum_index(herald_cfg_str(get(sn, "fallback_policy"),
                                                                          "NOT_DEFINED"),
                                                           sel_fallbacks, ARRAY_SIZE(sel_fallbacks));
        const struct herald_cfg *fk = get(sn, "fallback_keys_subset");
        if (sel->fallback == SELECTOR_KEYS_SUBSET)
            sel->fallback_keys = sorted_keys(fk, &sel->nfallback_keys);
        else if (herald_cfg_len(fk))
            diag_warn(d, fk, "fallback_keys_subset has no effect: fallback_policy is not KEYS_SUBSET");
        s->nselectors++;
    }
}

static void free_subset(struct subset_cfg *s)
{
    if (!s)
        return;
    lbmd_kvs_free(&s->default_subset);
    for (size_t i = 0; i < s->nselectors; i++) {
        for (size_t k = 0; k < s->selectors[i].nkeys; k++)
            free(s->selectors[i].keys[k]);
        free(s->selectors[i].keys);
        for (size_t k = 0; k < s->selectors[i].nfallback_keys; k++)
            free(s->selectors[i].fallback_keys[k]);
        free(s->selectors[i].fallback_keys);
    }
    free(s->selectors);
    free(s);
}

/* explicit_http_config / auto_config of HttpProtocolOptions, and whether TLS brings its own ALPN. */
static void extract_http_protocol(const struct herald_cfg *n, struct cluster_cfg *c, struct cfg_diag *d)
{
    const struct herald_cfg *opts = get(get(n, "typed_extension_protocol_options"),
                                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
    const struct herald_cfg *h2 = get(get(opts, "explicit_http_config"), "http2_protocol_options");
    if (!opts)
        h2 = get(n, "http2_protocol_options"); /* the deprecated place; cluster_check() keeps them apart */
    const struct herald_cfg *ac = get(opts, "auto_config");
    c->http_protocol = UPSTREAM_HTTP1;
    if (h2) {
        c->http_protocol = UPSTREAM_HTTP2;
    } else if (ac) {
        c->http_protocol = UPSTREAM_HTTP_AUTO;
        h2 = get(ac, "http2_protocol_options");
    }
    const uint32_t wmax = 2147483647u;
    c->http2.hpack_table_size = get_u32(h2, "hpack_table_size", 4096, 0, UINT32_MAX, d);
    c->http2.max_concurrent_streams = get_u32(h2, "max_concurrent_streams", wmax, 1, wmax, d);
    c->http2.initial_stream_window_size = get_u32(h2, "initial_stream_window_size", 268435456u, 65535, wmax,
                                                  d);
    c->http2.initial_connection_window_size = get_u32(h2, "initial_connection_window_size", 268435456u,
                                                      65535, wmax, d);
    h2_keepalive_cfg_read(get(h2, "connection_keepalive"), &c->http2.keepalive);
    const struct herald_cfg *alpn = get(get(get(get(n, "transport_socket"), "typed_config"),
                                            "common_tls_context"), "alpn_protocols");
    c->tls_alpn_set = herald_cfg_len(alpn) > 0;
}

/* ---- active health checking (health_checks, common_lb_config.healthy_panic_threshold) ---- */

static int hex_val(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Payload {text (hex) | binary (base64)} */
static void extract_payload(const struct herald_cfg *n, struct hc_payload *p, struct cfg_diag *d)
{
    const struct herald_cfg *t = get(n, "text"), *b = get(n, "binary");
    const char *s = herald_cfg_str(t ? t : b, "");
    size_t len = strlen(s);

    p->data = xmalloc(len + 1);
    p->len = 0;
    if (t) {
        if (len % 2) {
            diag_error(d, t, "hex payload '%s' has an odd number of digits", s);
            return;
        }
        for (size_t i = 0; i < len; i += 2) {
            int hi = hex_val(s[i]), lo = hex_val(s[i + 1]);
            if (hi < 0 || lo < 0) {
                diag_error(d, t, "'%s' is not hex (expected digits 0-9 and a-f, e.g. \"50494E47\")", s);
                p->len = 0;
                return;
            }
            p->data[p->len++] = (unsigned char)(hi << 4 | lo);
        }
    } else if (b) {
        size_t blen;
        char *bytes = base64_decode(s, len, &blen, true);
        if (!bytes) {
            diag_error(d, b, "'%s' is not base64", s);
            return;
        }
        memcpy(p->data, bytes, blen);   /* blen <= len: p->data has len + 1 bytes */
        p->len = blen;
        free(bytes);
    }
}

static struct hc_range *extract_ranges(const struct herald_cfg *l, size_t *n, struct cfg_diag *d)
{
    size_t len = herald_cfg_len(l);
    struct hc_range *r = xcalloc(len ? len : 1, sizeof(*r));

    *n = 0;
    for (size_t i = 0; i < len; i++) {
        const struct herald_cfg *e = herald_cfg_at(l, i);
        int64_t start = herald_cfg_int(get(e, "start"), 0), end = herald_cfg_int(get(e, "end"), 0);
        if (start < 100 || end > 600 || start >= end) {
            diag_error(d, e, "status range [%" PRId64 ", %" PRId64 ") must lie within [100, 600) and not "
                       "be empty", start, end);
            continue;
        }
        r[(*n)++] = (struct hc_range){ (uint32_t)start, (uint32_t)end };
    }
    return r;
}

static void extract_health_check(const struct herald_cfg *n, struct health_check_cfg *h, struct cfg_diag *d)
{
    h->node = n;
    h->timeout_ms = get_ms(n, "timeout", 1000);
    h->interval_ms = get_ms(n, "interval", 1000);
    h->initial_jitter_ms = get_ms(n, "initial_jitter", 0);
    h->interval_jitter_ms = get_ms(n, "interval_jitter", 0);
    h->interval_jitter_percent = get_u32(n, "interval_jitter_percent", 0, 0, UINT32_MAX, d);
    h->unhealthy_threshold = get_u32(n, "unhealthy_threshold", 1, 0, UINT32_MAX, d);
    h->healthy_threshold = get_u32(n, "healthy_threshold", 1, 0, UINT32_MAX, d);
    /* Envoy treats 0 as 1 (the first result decides) */
    if (!h->unhealthy_threshold)
        h->unhealthy_threshold = 1;
    if (!h->healthy_threshold)
        h->healthy_threshold = 1;
    h->reuse_connection = herald_cfg_bool(get(n, "reuse_connection"), true);
    h->no_traffic_interval_ms = get_ms(n, "no_traffic_interval", 60000);
    h->no_traffic_healthy_interval_ms = get_ms(n, "no_traffic_healthy_interval", h->no_traffic_interval_ms);
    h->unhealthy_interval_ms = get_ms(n, "unhealthy_interval", h->interval_ms);
    h->unhealthy_edge_interval_ms = get_ms(n, "unhealthy_edge_interval", h->unhealthy_interval_ms);
    h->healthy_edge_interval_ms = get_ms(n, "healthy_edge_interval", h->interval_ms);
    h->always_log_failures = herald_cfg_bool(get(n, "always_log_health_check_failures"), false);

    const struct herald_cfg *http = get(n, "http_health_check"), *tcp = get(n, "tcp_health_check");
    if (http) {
        h->kind = HC_HTTP;
        const char *host = herald_cfg_str(get(http, "host"), "");
        h->host = *host ? xstrdup(host) : NULL;
        h->path = xstrdup(herald_cfg_str(get(http, "path"), "/"));
        const char *m = herald_cfg_str(get(http, "method"), "GET");
        h->method = xstrdup(strcmp(m, "METHOD_UNSPECIFIED") == 0 ? "GET" : m);
        h->http2 = strcmp(herald_cfg_str(get(http, "codec_client_type"), "HTTP1"), "HTTP2") == 0;
        const struct herald_cfg *es = get(http, "expected_statuses");
        if (herald_cfg_len(es)) {
            h->expected = extract_ranges(es, &h->nexpected, d);
        } else {
            h->expected = xcalloc(1, sizeof(*h->expected));
            h->expected[h->nexpected++] = (struct hc_range){ 200, 201 };
        }
        h->retriable = extract_ranges(get(http, "retriable_statuses"), &h->nretriable, d);
        const struct herald_cfg *add = get(http, "request_headers_to_add");
        h->headers_add = add;
        const struct herald_cfg *rm = get(http, "request_headers_to_remove");
        h->headers_remove = xcalloc(herald_cfg_len(rm) + 1, sizeof(char *));
        for (size_t i = 0; i < herald_cfg_len(rm); i++)
            h->headers_remove[h->nheaders_remove++] = xstrdup(herald_cfg_str(herald_cfg_at(rm, i), ""));
    } else if (tcp) {
        h->kind = HC_TCP;
        if (get(tcp, "send"))
            extract_payload(get(tcp, "send"), &h->send, d);
        const struct herald_cfg *rcv = get(tcp, "receive");
        h->receive = xcalloc(herald_cfg_len(rcv) + 1, sizeof(*h->receive));
        for (size_t i = 0; i < herald_cfg_len(rcv); i++)
            extract_payload(herald_cfg_at(rcv, i), &h->receive[h->nreceive++], d);
    }
}

static void extract_health_checks(const struct herald_cfg *n, struct cluster_cfg *c, struct cfg_diag *d)
{
    const struct herald_cfg *hcs = get(n, "health_checks");
    size_t len = herald_cfg_len(hcs);

    c->healthy_panic_threshold = 50;
    const struct herald_cfg *pt = get(get(get(n, "common_lb_config"), "healthy_panic_threshold"), "value");
    if (pt) {
        c->healthy_panic_threshold = herald_cfg_real(pt, 50);
        if (c->healthy_panic_threshold < 0 || c->healthy_panic_threshold > 100)
            diag_error(d, pt, "healthy_panic_threshold must be between 0 and 100");
    }
    if (!len)
        return;
    if (len > 1)
        diag_error(d, hcs, "Multiple health checks not supported (a cluster takes one, as in Envoy)");
    c->health_checks = xcalloc(len, sizeof(*c->health_checks));
    for (size_t i = 0; i < len; i++)
        extract_health_check(herald_cfg_at(hcs, i), &c->health_checks[c->nhealth_checks++], d);
}

static void free_health_checks(struct cluster_cfg *c)
{
    for (size_t i = 0; i < c->nhealth_checks; i++) {
        struct health_check_cfg *h = &c->health_checks[i];
        free(h->host);
        free(h->path);
        free(h->method);
        free(h->expected);
        free(h->retriable);
        free_str_list(h->headers_remove, h->nheaders_remove);
        free(h->send.data);
        for (size_t j = 0; j < h->nreceive; j++)
            free(h->receive[j].data);
        free(h->receive);
    }
    free(c->health_checks);
}

/* ---- outlier_detection (outlier.c): Envoy's defaults ---- */
static void extract_outlier(const struct herald_cfg *n, struct outlier_cfg *o, struct cfg_diag *d)
{
    o->enabled = n && n->type == HERALD_CFG_OBJECT;
    o->consecutive_5xx = get_u32(n, "consecutive_5xx", 5, 0, UINT32_MAX, d);
    o->consecutive_gateway_failure = get_u32(n, "consecutive_gateway_failure", 5, 0, UINT32_MAX, d);
    o->consecutive_local_origin_failure = get_u32(n, "consecutive_local_origin_failure", 5, 0, UINT32_MAX, d);
    o->split_external_local_origin_errors =
        herald_cfg_bool(get(n, "split_external_local_origin_errors"), false);
    o->interval_ms = get_ms(n, "interval", 10000);
    o->base_ejection_time_ms = get_ms(n, "base_ejection_time", 30000);
    o->max_ejection_time_ms = get_ms(n, "max_ejection_time", 300000);
    o->max_ejection_time_jitter_ms = get_ms(n, "max_ejection_time_jitter", 0);
    if (get(n, "interval") && o->interval_ms == 0)
        diag_error(d, get(n, "interval"), "interval must be more than 0s");
    if (get(n, "base_ejection_time") && o->base_ejection_time_ms == 0)
        diag_error(d, get(n, "base_ejection_time"), "base_ejection_time must be more than 0s");
    /* Envoy: max_ejection_time defaults to the larger of 300s and base_ejection_time,
     * but an explicit one below base_ejection_time is an error */
    if (get(n, "max_ejection_time") && o->max_ejection_time_ms < o->base_ejection_time_ms)
        diag_error(d, get(n, "max_ejection_time"), "max_ejection_time must not be less than "
                   "base_ejection_time");
    else if (o->max_ejection_time_ms < o->base_ejection_time_ms)
        o->max_ejection_time_ms = o->base_ejection_time_ms;
    o->max_ejection_percent = get_u32(n, "max_ejection_percent", 10, 0, 100, d);
    o->enforcing_consecutive_5xx = get_u32(n, "enforcing_consecutive_5xx", 100, 0, 100, d);
    o->enforcing_consecutive_gateway_failure =
        get_u32(n, "enforcing_consecutive_gateway_failure", 0, 0, 100, d);
    o->enforcing_consecutive_local_origin_failure =
        get_u32(n, "enforcing_consecutive_local_origin_failure", 100, 0, 100, d);
    o->enforcing_success_rate = get_u32(n, "enforcing_success_rate", 100, 0, 100, d);
    o->success_rate_minimum_hosts = get_u32(n, "success_rate_minimum_hosts", 5, 0, UINT32_MAX, d);
    o->success_rate_request_volume = get_u32(n, "success_rate_request_volume", 100, 0, UINT32_MAX, d);
    o->success_rate_stdev_factor = get_u32(n, "success_rate_stdev_factor", 1900, 0, UINT32_MAX, d);
    o->failure_percentage_threshold = get_u32(n, "failure_percentage_threshold", 85, 0, 100, d);
    o->enforcing_failure_percentage = get_u32(n, "enforcing_failure_percentage", 0, 0, 100, d);
    o->failure_percentage_minimum_hosts = get_u32(n, "failure_percentage_minimum_hosts", 5, 0, UINT32_MAX, d);
    o->failure_percentage_request_volume =
        get_u32(n, "failure_percentage_request_volume", 50, 0, UINT32_MAX, d);
    o->always_eject_one_host = herald_cfg_bool(get(n, "always_eject_one_host"), false);
}

/* RING_HASH / MAGLEV settings (ranges and the prime table size are checked by the schema). */
static void extract_hash_lb(const struct herald_cfg *n, struct cluster_cfg *c, struct cfg_diag *d)
{
    const struct herald_cfg *rh = get(n, "ring_hash_lb_config"), *mg = get(n, "maglev_lb_config");
    c->ring_min_size = (uint64_t)herald_cfg_int(get(rh, "minimum_ring_size"), 1024);
    c->ring_max_size = (uint64_t)herald_cfg_int(get(rh, "maximum_ring_size"), 8388608);
    c->ring_murmur2 = strcmp(herald_cfg_str(get(rh, "hash_function"), "XX_HASH"), "MURMUR_HASH_2") == 0;
    c->maglev_table_size = (uint64_t)herald_cfg_int(get(mg, "table_size"), 65537);
    const struct herald_cfg *chc = get(get(n, "common_lb_config"), "consistent_hashing_lb_config");
    c->hash_use_hostname = herald_cfg_bool(get(chc, "use_hostname_for_hashing"), false);
    const struct herald_cfg *lw = get(get(n, "common_lb_config"), "locality_weighted_lb_config");
    c->locality_weighted = lw != NULL;
    if (lw && (c->lb_policy == LB_RING_HASH || c->lb_policy == LB_MAGLEV))
        diag_error(d, lw, "not supported: locality_weighted_lb_config with %s (herald weighs localities for "
                   "ROUND_ROBIN, LEAST_REQUEST and RANDOM)", c->lb_policy == LB_RING_HASH ? "RING_HASH" : "MAGLEV");
    if (rh && c->lb_policy != LB_RING_HASH)
        diag_warn(d, rh, "ring_hash_lb_config has no effect: lb_policy is not RING_HASH");
    if (mg && c->lb_policy != LB_MAGLEV)
        diag_warn(d, mg, "maglev_lb_config has no effect: lb_policy is not MAGLEV");
}

/* load_balancing_policy: the first of its policies herald has decides the
 * lb_policy and its settings (Envoy skips the ones it does not have). */
static void extract_lb_policy_ext(const struct herald_cfg *lbp, struct cluster_cfg *c, struct cfg_diag *d)
{
    static const char *const policies[] = { "ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV" };
    const struct herald_cfg *ps = get(lbp, "policies");
    for (size_t i = 0; i < herald_cfg_len(ps); i++) {
        const struct herald_cfg *tec = get(herald_cfg_at(ps, i), "typed_extension_config");
        const struct lb_policy_ext *ext = schema_lb_policy_find(tec);
        if (!ext)
            continue;
        struct herald_cfg *tc = (struct herald_cfg *)get(tec, "typed_config");
        if (tc && schema_check(tc, ext->msg, d) < 0)
            return;
        c->lb_policy = (enum lb_policy)enum_index(ext->lb_policy, policies, ARRAY_SIZE(policies));
        c->least_request_choice_count = get_u32(tc, "choice_count", 2, 2, 1000, d);
        c->ring_min_size = (uint64_t)herald_cfg_int(get(tc, "minimum_ring_size"), 1024);
        c->ring_max_size = (uint64_t)herald_cfg_int(get(tc, "maximum_ring_size"), 8388608);
        c->ring_murmur2 = strcmp(herald_cfg_str(get(tc, "hash_function"), "XX_HASH"), "MURMUR_HASH_2") == 0;
        c->maglev_table_size = (uint64_t)herald_cfg_int(get(tc, "table_size"), 65537);
        const struct herald_cfg *chc = get(tc, "consistent_hashing_lb_config");
        c->hash_use_hostname = herald_cfg_bool(get(chc, "use_hostname_for_hashing"),
                                               herald_cfg_bool(get(tc, "use_hostname_for_hashing"), false));
        return;
    }
}

static void extract_cluster(const struct herald_cfg *n, struct cluster_cfg *c, struct cfg_diag *d)
{
    static const char *const types[] = { "STATIC", "STRICT_DNS", "LOGICAL_DNS" };
    static const char *const policies[] = { "ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV" };
    static const char *const families[] = { "AUTO", "V4_ONLY", "V6_ONLY", "V4_PREFERRED", "ALL" };

    c->node = n;
    c->name = xstrdup(herald_cfg_str(get(n, "name"), ""));
    const struct herald_cfg *ts = get(n, "transport_socket");
    c->transport_socket = ts && ts->type == HERALD_CFG_OBJECT ? ts : NULL;
    c->type = (enum cluster_type)enum_index(herald_cfg_str(get(n, "type"), "STATIC"), types,
                                            ARRAY_SIZE(types));
    c->lb_policy = (enum lb_policy)enum_index(herald_cfg_str(get(n, "lb_policy"), "ROUND_ROBIN"), policies,
                                              ARRAY_SIZE(policies));
    c->connect_timeout_ms = get_ms(n, "connect_timeout", 5000);
    c->buffer_limit = get_u32(n, "per_connection_buffer_limit_bytes", DEFAULT_BUFFER_LIMIT, 0, UINT32_MAX, d);
    c->dns_refresh_rate_ms = get_ms(n, "dns_refresh_rate", 5000);
    const struct herald_cfg *drr = get(n, "dns_refresh_rate");
    if (drr && c->dns_refresh_rate_ms == 0)
        diag_error(d, drr, "dns_refresh_rate must be more than 0s");
    c->respect_dns_ttl = herald_cfg_bool(get(n, "respect_dns_ttl"), false);
    c->dns_lookup_family = (enum dns_family)enum_index(herald_cfg_str(get(n, "dns_lookup_family"), "AUTO"),
                                                       families, ARRAY_SIZE(families));
    for (int p = 0; p < 2; p++)
        c->thresholds[p] = (struct thresholds_cfg){ 1024, 1024, 1024, 3 };
    const struct herald_cfg *th = get(get(n, "circuit_breakers"), "thresholds");
    for (size_t i = 0; i < herald_cfg_len(th); i++) {
        const struct herald_cfg *t = herald_cfg_at(th, i);
        int p = strcmp(herald_cfg_str(get(t, "priority"), "DEFAULT"), "HIGH") == 0;
        struct thresholds_cfg *tc = &c->thresholds[p];
        tc->max_connections = get_u32(t, "max_connections", 1024, 0, UINT32_MAX, d);
        tc->max_pending_requests = get_u32(t, "max_pending_requests", 1024, 0, UINT32_MAX, d);
        tc->max_requests = get_u32(t, "max_requests", 1024, 0, UINT32_MAX, d);
        tc->max_retries = get_u32(t, "max_retries", 3, 0, UINT32_MAX, d);
        c->track_remaining[p] = herald_cfg_bool(get(t, "track_remaining"), false);
    }
    extract_outlier(get(n, "outlier_detection"), &c->outlier, d);
    c->least_request_choice_count = get_u32(get(n, "least_request_lb_config"), "choice_count", 2, 2, 1000, d);
    extract_hash_lb(n, c, d);
    if (get(n, "load_balancing_policy")) {
        /* it wins over lb_policy, as in Envoy; ROUND_ROBIN is proto3's unset */
        const char *pol = herald_cfg_str(get(n, "lb_policy"), "ROUND_ROBIN");
        if (strcmp(pol, "ROUND_ROBIN") != 0 && strcmp(pol, "LOAD_BALANCING_POLICY_CONFIG") != 0)
            diag_warn(d, get(n, "lb_policy"), "lb_policy %s is ignored: load_balancing_policy decides", pol);
        extract_lb_policy_ext(get(n, "load_balancing_policy"), c, d);
    }
    const struct herald_cfg *opts = get(get(n, "typed_extension_protocol_options"),
                                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
    const struct herald_cfg *hpo = get(opts ? opts : n, "common_http_protocol_options");
    c->http_idle_timeout_ms = get_ms(hpo, "idle_timeout", 3600 * 1000);
    uint32_t mrpc = get_u32(n, "max_requests_per_connection", 0, 0, UINT32_MAX, d); /* deprecated place */
    c->max_requests_per_connection = get_u32(hpo, "max_requests_per_connection", mrpc, 0, UINT32_MAX, d);
    c->max_headers_count = get_u32(hpo, "max_headers_count", 100, 1, UINT32_MAX, d);
    extract_http_protocol(n, c, d);

    extract_health_checks(n, c, d);
    extract_subset(n, c, d);   /* before the endpoints: they read their metadata only for subsets */
    const struct herald_cfg *la = get(n, "load_assignment");
    extract_endpoints(la, c, d);
    if (c->type == CLUSTER_LOGICAL_DNS) {
        size_t total = 0;
        for (size_t i = 0; i < c->nlocalities; i++)
            total += c->localities[i].nendpoints;
        if (c->nlocalities > 1 || total > 1)
            diag_error(d, get(la, "endpoints"), "a LOGICAL_DNS cluster must have exactly one endpoint "
                       "(it has %zu); use STRICT_DNS for several", total);
    }
}

static void free_cluster(struct cluster_cfg *c)
{
    free(c->name);
    free_health_checks(c);
    for (size_t i = 0; i < c->nlocalities; i++) {
        struct locality_cfg *l = &c->localities[i];
        for (size_t j = 0; j < l->nendpoints; j++) {
            free_address(&l->endpoints[j].address);
            free(l->endpoints[j].hostname);
            free_address(&l->endpoints[j].hc_address);
            lbmd_kvs_free(&l->endpoints[j].lb_meta);
        }
        free(l->endpoints);
    }
    free(c->localities);
    free_subset(c->subset);
}

static bool same_address(const struct address_cfg *a, const struct address_cfg *b)
{
    if (a->pipe || b->pipe)
        return a->pipe && b->pipe && strcmp(a->pipe, b->pipe) == 0;
    return a->host && b->host && a->port && a->port == b->port && strcmp(a->host, b->host) == 0;
}

struct bootstrap *bootstrap_load(struct cfg_doc *doc, struct cfg_diag *d)
{
    struct bootstrap *b = xcalloc(1, sizeof(*b));
    b->doc = doc;
    size_t errors_before = d->nerrors;
    const struct herald_cfg *root = doc ? doc->root : NULL;

    if (!root || schema_check(doc->root, &schema_bootstrap, d) < 0)
        goto fail;

    const struct herald_cfg *node = get(root, "node");
    b->node_id = dup_or_null(herald_cfg_str(get(node, "id"), NULL));
    b->node_cluster = dup_or_null(herald_cfg_str(get(node, "cluster"), NULL));
    b->stats_flush_interval_ms = get_ms(root, "stats_flush_interval", 5000);

    const struct herald_cfg *admin = get(root, "admin");
    if (admin && admin->type == HERALD_CFG_OBJECT) {
        /* as in Envoy, an admin without an address serves nothing */
        const struct herald_cfg *addr = get(admin, "address");
        if (addr && addr->type == HERALD_CFG_OBJECT) {
            b->admin.present = true;
            extract_address(addr, &b->admin.address);
        }
        b->admin.access_log_path = dup_or_null(herald_cfg_str(get(admin, "access_log_path"), NULL));
    }

    const struct herald_cfg *sr = get(root, "static_resources");
    const struct herald_cfg *ls = get(sr, "listeners");
    size_t len = herald_cfg_len(ls);
    if (len) {
        b->listeners = xcalloc(len, sizeof(*b->listeners));
        for (size_t i = 0; i < len; i++) {
            struct listener_cfg *l = &b->listeners[b->nlisteners++];
            extract_listener(herald_cfg_at(ls, i), l, d);
            for (size_t j = 0; j + 1 < b->nlisteners; j++) {
                const struct listener_cfg *o = &b->listeners[j];
                const struct herald_cfg *nm = get(l->node, "name");
                if (strcmp(o->name, l->name) == 0)
                    diag_error(d, nm ? nm : l->node, "duplicate listener name '%s' (first at line %d)",
                               l->name, o->node->line);
                else if (same_address(&o->address, &l->address))
                    diag_error(d, l->address.node, "listener '%s' uses the same address as listener '%s' "
                               "(line %d)", l->name, o->name, o->node->line);
            }
        }
    }
    const struct herald_cfg *cs = get(sr, "clusters");
    len = herald_cfg_len(cs);
    if (len) {
        b->clusters = xcalloc(len, sizeof(*b->clusters));
        for (size_t i = 0; i < len; i++) {
            struct cluster_cfg *c = &b->clusters[b->nclusters++];
            extract_cluster(herald_cfg_at(cs, i), c, d);
            for (size_t j = 0; j + 1 < b->nclusters; j++)
                if (strcmp(b->clusters[j].name, c->name) == 0) {
                    diag_error(d, get(c->node, "name"), "duplicate cluster name '%s' (first at line %d)",
                               c->name, b->clusters[j].node->line);
                    break;
                }
        }
    }
    if (d->nerrors != errors_before)
        goto fail;
    return b;
fail:
    if (d->nerrors == errors_before)
        diag_error(d, NULL, "the config is empty or invalid");
    bootstrap_free(b);
    return NULL;
}

void bootstrap_free(struct bootstrap *b)
{
    if (!b)
        return;
    free(b->node_id);
    free(b->node_cluster);
    for (size_t i = 0; i < b->nlisteners; i++)
        free_listener(&b->listeners[i]);
    free(b->listeners);
    for (size_t i = 0; i < b->nclusters; i++)
        free_cluster(&b->clusters[i]);
    free(b->clusters);
    free_address(&b->admin.address);
    free(b->admin.access_log_path);
    cfg_doc_free(b->doc);
    free(b);
}

const struct cluster_cfg *bootstrap_find_cluster(const struct bootstrap *b, const char *name)
{
    for (size_t i = 0; b && name && i < b->nclusters; i++)
        if (strcmp(b->clusters[i].name, name) == 0)
            return &b->clusters[i];
    return NULL;
}
