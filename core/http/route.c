/* The route table (Envoy's RouteMatcher/RouteEntryImpl, simplified): built
 * once from a checked RouteConfiguration, then only read, so workers share it
 * without locks. PCRE2 stands in for RE2; patterns are compiled at load and
 * matched against the whole value (anchored at both ends). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <errno.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <xxhash.h>

#include "common.h"
#include "config/data_source.h"
#include "config/lb_metadata.h"
#include "config/tree.h"
#include "http/header_option.h"
#include "http/headers.h"
#include "http/route.h"
#include "runtime.h"

/* ------------------------------------------------------------ types */

struct hdr_ops {
    struct herald_header_options *add;   /* http/header_option.c */
    char **remove; size_t nremove, capremove;
};

/* One level's header mutations (route config, vhost, route, weighted cluster). */
struct mutations { struct hdr_ops req, resp; };

enum sm_kind { SM_EXACT = 0, SM_PREFIX, SM_SUFFIX, SM_CONTAINS, SM_REGEX };

struct str_matcher { enum sm_kind kind; char *s; bool icase; pcre2_code *re; };

enum hm_kind { HM_STRING = 0, HM_PRESENT };

struct hdr_matcher {
    char *name;
    enum hm_kind kind;
    bool present;           /* HM_PRESENT */
    bool any_value;         /* a bare {name}: matches any value (Envoy's empty exact value) */
    struct str_matcher sm;  /* HM_STRING */
    bool invert, missing_as_empty;
};

/* the SDK's HeaderMatcher handle (herald/http.h) is one of these */
struct herald_header_matcher {
    struct hdr_matcher hm;
};

struct query_matcher { char *name; bool by_presence, present; struct str_matcher sm; };

enum path_kind { PM_PREFIX = 0, PM_PATH, PM_REGEX, PM_SEP_PREFIX, PM_CONNECT };

/* RouteAction.hash_policy entries (herald_route_hash). */
enum hp_kind { HP_HEADER = 0, HP_COOKIE, HP_SOURCE_IP, HP_QUERY };

struct hash_policy {
    enum hp_kind kind;
    char *name;                        /* header (lower-case), cookie or query parameter */
    pcre2_code *rx; char *rx_subst;    /* header regex_rewrite */
    bool has_ttl; uint64_t ttl_s;      /* cookie: generate one when absent */
    char *path;                        /* cookie Path */
    bool source_ip;                    /* connection_properties.source_ip */
    bool terminal;
};

struct vhost;

struct mirror {                        /* a RequestMirrorPolicy */
    char *cluster, *cluster_header;
    bool has_fraction;
    uint32_t num, den;
    char *key;                         /* runtime_fraction's runtime_key, NULL: none */
    bool host_suffix;                  /* not disable_shadow_host_suffix_append */
};

struct mirrors {                       /* request_mirror_policies of a route, vhost or route config */
    struct mirror *e; size_t n;
};

struct filter_configs {                /* typed_per_filter_config */
    struct route_filter_config *e;
    size_t n;
};

struct herald_route {
    const struct herald_route *parent; /* set on a weighted cluster's entry: the route it belongs to */
    struct vhost *vh;
    char *name;                        /* NULL when unnamed */
    char *desc;                        /* "route 'name'" or "route with prefix \"/x\"", for messages */
    int line;
    enum herald_route_kind kind;

    /* match */
    enum path_kind pk;
    char *pstr; size_t plen;
    pcre2_code *pre;
    bool case_sensitive;
    bool grpc;                         /* match.grpc: only gRPC requests */
    bool has_fraction;                 /* runtime_fraction */
    uint32_t fraction_num, fraction_den;
    char *fraction_key;                /* NULL: the default_value only */
    struct hdr_matcher *hm; size_t nhm;
    struct query_matcher *qm; size_t nqm;

    /* FORWARD */
    const struct herald_cfg *node;        /* the RouteAction, for messages */
    char *cluster, *cluster_header;
    struct herald_route **wc; size_t nwc; /* weighted clusters' entries */
    uint32_t weight;                      /* on a weighted cluster's entry */
    char *weight_key;                     /* runtime_key_prefix + "." + cluster: the weight's runtime key */
    uint64_t total_weight;
    int not_found_code;
    char *host_literal, *host_header;
    bool auto_host, append_xfh;
    uint64_t timeout_ms, idle_ms;
    enum herald_priority priority;        /* circuit-breaker thresholds (DEFAULT, HIGH) */
    struct herald_retry_policy *retry; uint32_t *retry_codes;
    char **up_types; bool *up_enabled; size_t nup;
    bool connect_terminate;               /* upgrade_configs CONNECT has connect_config */
    struct hash_policy *hp; size_t nhp;
    struct mirrors mirrors;
    struct herald_rate_limits *rate_limits;  /* RouteAction.rate_limits; NULL: none */
    bool include_vh_rate_limits;
    /* metadata_match's envoy.lb (a weighted cluster's entry: merged over its
     * route's); has_mm false: none (an entry then has its route's) */
    struct lb_kvs mm; bool has_mm;

    /* FORWARD and REDIRECT path rewrites */
    char *prefix_rewrite;
    pcre2_code *rx_rewrite; char *rx_subst;

    /* REDIRECT */
    char *scheme_redirect, *host_redirect;
    unsigned port_redirect;
    char *path_redirect;
    int redirect_code;
    bool strip_query;

    /* DIRECT_RESPONSE */
    int direct_status;
    char *body; size_t body_len;

    struct mutations mut;
    struct filter_configs fcs;
};

/* A VirtualHost's virtual_clusters entry: a class of requests with its
 * own stats (the router counts them) and %VIRTUAL_CLUSTER_NAME%. */
struct vcluster {
    char *name;
    char *stat_prefix;                 /* "vhost.<virtual host>.vcluster.<name>" */
    struct hdr_matcher *hm; size_t nhm;
};

struct vhost {
    char *name;
    int line;
    struct route_table *table;
    struct herald_route **routes; size_t nroutes, caproutes;
    struct mutations mut;
    struct herald_retry_policy *retry; uint32_t *retry_codes;
    struct filter_configs fcs;
    struct mirrors mirrors;
    const struct herald_cfg *mirrors_node;   /* for messages */
    struct herald_rate_limits *rate_limits;  /* VirtualHost.rate_limits; NULL: none */
    struct vcluster *vcs; size_t nvcs;       /* virtual_clusters */
    struct vcluster other;                   /* Envoy's catch-all, when there are any */
};

struct domain { char *s; size_t len; struct vhost *vh; const struct herald_cfg *node; };

struct route_table {
    char *name;
    struct vhost **vhosts; size_t nvhosts, capvhosts;
    struct domain *exact; size_t nexact, capexact;
    struct domain *suffix; size_t nsuffix, capsuffix; /* "*.foo.com": s = ".foo.com", longest first */
    struct domain *prefix; size_t nprefix, capprefix; /* "foo.*": s = "foo.", longest first */
    struct vhost *any;
    const struct herald_cfg *any_node;
    bool strip_port;
    bool most_specific_wins;
    struct mutations mut;
    struct filter_configs fcs;
    bool any_fcs;                      /* some level has typed_per_filter_config */
    struct mirrors mirrors;
    const struct herald_cfg *mirrors_node;   /* for messages */
};

/* ------------------------------------------------------------ freeing */

static void mirrors_free(struct mirrors *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->e[i].cluster);
        free(m->e[i].cluster_header);
        free(m->e[i].key);
    }
    free(m->e);
}

static void hdr_ops_free(struct hdr_ops *o)
{
    herald_header_options_free(o->add);
    for (size_t i = 0; i < o->nremove; i++)
        free(o->remove[i]);
    free(o->remove);
}

static void filter_configs_free(struct filter_configs *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->e[i].name);
    free(f->e);
}

static void mutations_free(struct mutations *m)
{
    hdr_ops_free(&m->req);
    hdr_ops_free(&m->resp);
}

static void sm_free(struct str_matcher *sm)
{
    free(sm->s);
    if (sm->re)
        pcre2_code_free(sm->re);
}

static void hdr_matchers_free(struct hdr_matcher *hm, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(hm[i].name);
        sm_free(&hm[i].sm);
    }
    free(hm);
}

static void route_free(struct herald_route *r)
{
    if (!r)
        return;
    free(r->name);
    free(r->desc);
    free(r->pstr);
    free(r->fraction_key);
    free(r->weight_key);
    if (r->pre)
        pcre2_code_free(r->pre);
    hdr_matchers_free(r->hm, r->nhm);
    filter_configs_free(&r->fcs);
    mirrors_free(&r->mirrors);
    for (size_t i = 0; i < r->nqm; i++) {
        free(r->qm[i].name);
        sm_free(&r->qm[i].sm);
    }
    free(r->qm);
    free(r->cluster);
    free(r->cluster_header);
    lbmd_kvs_free(&r->mm);
    for (size_t i = 0; i < r->nwc; i++)
        route_free(r->wc[i]);
    free(r->wc);
    free(r->host_literal);
    free(r->host_header);
    free(r->retry);
    free(r->retry_codes);
    for (size_t i = 0; i < r->nup; i++)
        free(r->up_types[i]);
    free(r->up_types);
    free(r->up_enabled);
    for (size_t i = 0; i < r->nhp; i++) {
        free(r->hp[i].name);
        if (r->hp[i].rx)
            pcre2_code_free(r->hp[i].rx);
        free(r->hp[i].rx_subst);
        free(r->hp[i].path);
    }
    free(r->hp);
    herald_rate_limits_free(r->rate_limits);
    free(r->prefix_rewrite);
    if (r->rx_rewrite)
        pcre2_code_free(r->rx_rewrite);
    free(r->rx_subst);
    free(r->scheme_redirect);
    free(r->host_redirect);
    free(r->path_redirect);
    free(r->body);
    mutations_free(&r->mut);
    free(r);
}

static int parse_header_matchers(const struct herald_cfg *list, struct hdr_matcher **hm, size_t *n,
                                 struct cfg_diag *d);

static void vcluster_fini(struct vcluster *vc)
{
    free(vc->name);
    free(vc->stat_prefix);
    hdr_matchers_free(vc->hm, vc->nhm);
}

static void vclusters_free(struct vhost *vh)
{
    for (size_t i = 0; i < vh->nvcs; i++)
        vcluster_fini(&vh->vcs[i]);
    free(vh->vcs);
    if (vh->nvcs)
        vcluster_fini(&vh->other);
}

static void vcluster_init(struct vcluster *vc, const struct vhost *vh, const char *name)
{
    vc->name = xstrdup(name);
    vc->stat_prefix = xasprintf("vhost.%s.vcluster.%s", vh->name, name);
}

static int parse_vclusters(const struct herald_cfg *list, struct vhost *vh, struct cfg_diag *d)
{
    int rc = 0;
    vh->nvcs = herald_cfg_len(list);
    if (!vh->nvcs)
        return 0;
    vh->vcs = xcalloc(vh->nvcs, sizeof(*vh->vcs));
    for (size_t i = 0; i < vh->nvcs; i++) {
        const struct herald_cfg *n = herald_cfg_at(list, i);
        struct vcluster *vc = &vh->vcs[i];
        const char *name = herald_cfg_str(herald_cfg_get(n, "name"), "");
        vcluster_init(vc, vh, name);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(vh->vcs[j].name, name))
                diag_warn(d, herald_cfg_get(n, "name"), "virtual cluster '%s' is named twice in virtual host "
                          "'%s': the second never matches what the first does, and their stats mix", name,
                          vh->name);
        if (!strcmp(name, "other"))
            diag_warn(d, herald_cfg_get(n, "name"), "virtual cluster 'other' shares its stats with the "
                      "requests no virtual cluster matches");
        if (parse_header_matchers(herald_cfg_get(n, "headers"), &vc->hm, &vc->nhm, d) < 0)
            rc = -1;
    }
    vcluster_init(&vh->other, vh, "other");
    return rc;
}

void route_table_free(struct route_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nvhosts; i++) {
        struct vhost *vh = t->vhosts[i];
        for (size_t j = 0; j < vh->nroutes; j++)
            route_free(vh->routes[j]);
        free(vh->routes);
        mutations_free(&vh->mut);
        filter_configs_free(&vh->fcs);
        mirrors_free(&vh->mirrors);
        herald_rate_limits_free(vh->rate_limits);
        vclusters_free(vh);
        free(vh->retry);
        free(vh->retry_codes);
        free(vh->name);
        free(vh);
    }
    free(t->vhosts);
    for (size_t i = 0; i < t->nexact; i++)
        free(t->exact[i].s);
    for (size_t i = 0; i < t->nsuffix; i++)
        free(t->suffix[i].s);
    for (size_t i = 0; i < t->nprefix; i++)
        free(t->prefix[i].s);
    free(t->exact);
    free(t->suffix);
    free(t->prefix);
    mutations_free(&t->mut);
    filter_configs_free(&t->fcs);
    mirrors_free(&t->mirrors);
    free(t->name);
    free(t);
}

/* ------------------------------------------------------------ building */

static char *lower_dup(const char *s)
{
    char *o = xstrdup(s);
    for (char *p = o; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return o;
}

static pcre2_code *compile_regex(const struct herald_cfg *re_node, struct cfg_diag *d)
{
    const char *re = herald_cfg_str(re_node, "");
    int code;
    PCRE2_SIZE off;
    pcre2_code *c = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &code, &off, NULL);
    if (!c) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof(msg));
        diag_error(d, re_node, "invalid regex '%s': %s at offset %zu", re, (const char *)msg, (size_t)off);
    }
    return c;
}

/* Whole-value match, as RE2's FullMatch. */
static bool regex_full_match(const pcre2_code *re, const char *s, size_t len)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    int rc = pcre2_match(re, (PCRE2_SPTR)s, len, 0, PCRE2_ANCHORED | PCRE2_ENDANCHORED, md, NULL);
    pcre2_match_data_free(md);
    return rc >= 0;
}

static bool is_unmodifiable(const char *key)
{
    return key[0] == ':' || strcasecmp(key, "host") == 0;
}

static int parse_hdr_ops(const struct herald_cfg *owner, const char *add_key, const char *remove_key,
                         struct hdr_ops *o, bool request, struct cfg_diag *d)
{
    int rc = 0;
    const struct herald_cfg *adds = herald_cfg_get(owner, add_key);
    char *err = NULL;
    if (herald_header_options_new(adds, &o->add, &err) < 0) {
        diag_error_take(d, err);
        rc = -1;
    }
    const struct herald_cfg *rems = herald_cfg_get(owner, remove_key);
    for (size_t i = 0; i < herald_cfg_len(rems); i++) {
        const struct herald_cfg *n = herald_cfg_at(rems, i);
        const char *key = herald_cfg_str(n, "");
        if (!*key || (request && is_unmodifiable(key)) || (!request && key[0] == ':')) {
            diag_error(d, n, "%s may not be removed%s", *key ? key : "an empty header name",
                       *key ? " (':'-prefixed and host headers are not modifiable)" : "");
            rc = -1;
            continue;
        }
        *VEC_PUSH(o->remove, o->nremove, o->capremove) = lower_dup(key);
    }
    return rc;
}

static int parse_mutations(const struct herald_cfg *owner, struct mutations *m, struct cfg_diag *d)
{
    int a = parse_hdr_ops(owner, "request_headers_to_add", "request_headers_to_remove", &m->req, true, d);
    int b = parse_hdr_ops(owner, "response_headers_to_add", "response_headers_to_remove", &m->resp, false, d);
    return a < 0 || b < 0 ? -1 : 0;
}

static int parse_string_matcher(const struct herald_cfg *n, struct str_matcher *sm, struct cfg_diag *d)
{
    static const struct { const char *key; enum sm_kind kind; } kinds[] = {
        { "exact", SM_EXACT }, { "prefix", SM_PREFIX }, { "suffix", SM_SUFFIX }, { "contains", SM_CONTAINS },
    };
    sm->icase = herald_cfg_bool(herald_cfg_get(n, "ignore_case"), false);
    for (size_t i = 0; i < ARRAY_SIZE(kinds); i++) {
        const struct herald_cfg *v = herald_cfg_get(n, kinds[i].key);
        if (v) {
            sm->kind = kinds[i].kind;
            sm->s = xstrdup(herald_cfg_str(v, ""));
            return 0;
        }
    }
    sm->kind = SM_REGEX;
    sm->re = compile_regex(herald_cfg_get(herald_cfg_get(n, "safe_regex"), "regex"), d);
    return sm->re ? 0 : -1;
}

static bool sm_match(const struct str_matcher *sm, const char *v, size_t vlen)
{
    size_t slen = sm->s ? strlen(sm->s) : 0;
    int (*ncmp)(const char *, const char *, size_t) = sm->icase ? strncasecmp : strncmp;
    switch (sm->kind) {
    case SM_EXACT:
        return vlen == slen && ncmp(v, sm->s, slen) == 0;
    case SM_PREFIX:
        return vlen >= slen && ncmp(v, sm->s, slen) == 0;
    case SM_SUFFIX:
        return vlen >= slen && ncmp(v + vlen - slen, sm->s, slen) == 0;
    case SM_CONTAINS:
        for (size_t i = 0; i + slen <= vlen; i++)
            if (ncmp(v + i, sm->s, slen) == 0)
                return true;
        return false;
    case SM_REGEX:
        return regex_full_match(sm->re, v, vlen);
    }
    return false;
}

static int parse_header_matcher(const struct herald_cfg *n, struct hdr_matcher *hm, struct cfg_diag *d)
{
    static const struct { const char *key; enum sm_kind kind; } legacy[] = {
        { "exact_match", SM_EXACT }, { "prefix_match", SM_PREFIX }, { "suffix_match", SM_SUFFIX },
        { "contains_match", SM_CONTAINS },
    };
    hm->name = lower_dup(herald_cfg_str(herald_cfg_get(n, "name"), ""));
    hm->invert = herald_cfg_bool(herald_cfg_get(n, "invert_match"), false);
    hm->missing_as_empty = herald_cfg_bool(herald_cfg_get(n, "treat_missing_header_as_empty"), false);
    hm->kind = HM_STRING;
    const struct herald_cfg *v;
    if ((v = herald_cfg_get(n, "present_match"))) {
        hm->kind = HM_PRESENT;
        hm->present = herald_cfg_bool(v, true);
        return 0;
    }
    if ((v = herald_cfg_get(n, "string_match")))
        return parse_string_matcher(v, &hm->sm, d);
    if ((v = herald_cfg_get(n, "safe_regex_match"))) {
        hm->sm.kind = SM_REGEX;
        hm->sm.re = compile_regex(herald_cfg_get(v, "regex"), d);
        return hm->sm.re ? 0 : -1;
    }
    for (size_t i = 0; i < ARRAY_SIZE(legacy); i++)
        if ((v = herald_cfg_get(n, legacy[i].key))) {
            hm->sm.kind = legacy[i].kind;
            hm->sm.s = xstrdup(herald_cfg_str(v, ""));
            /* Envoy: an empty exact_match matches any value */
            hm->any_value = legacy[i].kind == SM_EXACT && !*hm->sm.s;
            return 0;
        }
    hm->any_value = true;
    return 0;
}

/* A list of HeaderMatcher: *n of them in *hm (NULL when none); -1 when one
 * is bad (said in d). */
static int parse_header_matchers(const struct herald_cfg *list, struct hdr_matcher **hm, size_t *n,
                                 struct cfg_diag *d)
{
    int rc = 0;
    *n = herald_cfg_len(list);
    *hm = *n ? xcalloc(*n, sizeof(**hm)) : NULL;
    for (size_t i = 0; i < *n; i++)
        if (parse_header_matcher(herald_cfg_at(list, i), &(*hm)[i], d) < 0)
            rc = -1;
    return rc;
}

static int parse_retry(const struct herald_cfg *n, struct herald_retry_policy **out, uint32_t **codes_out,
                       struct cfg_diag *d)
{
    if (!n)
        return 0;
    struct herald_retry_policy *p = xcalloc(1, sizeof(*p));
    char *err = NULL;
    if (route_parse_retry_on(herald_cfg_get(n, "retry_on"), &p->on, &err) < 0) {
        diag_error_take(d, err);
        free(p);
        return -1;
    }
    p->num_retries = (uint32_t)herald_cfg_int(herald_cfg_get(n, "num_retries"), 1);
    /* the schema lets only previous_hosts through */
    p->other_hosts = herald_cfg_len(herald_cfg_get(n, "retry_host_predicate")) > 0;
    p->host_selection_max_attempts = (uint32_t)herald_cfg_int(herald_cfg_get(n, "host_selection_retry_max_attempts"),
                                                              1);
    p->per_try_timeout_ms = herald_cfg_duration_ms(herald_cfg_get(n, "per_try_timeout"), 0);
    const struct herald_cfg *bo = herald_cfg_get(n, "retry_back_off");
    p->backoff_base_ms = herald_cfg_duration_ms(herald_cfg_get(bo, "base_interval"), 25);
    p->backoff_max_ms = herald_cfg_duration_ms(herald_cfg_get(bo, "max_interval"), p->backoff_base_ms * 10);
    const struct herald_cfg *codes = herald_cfg_get(n, "retriable_status_codes");
    size_t nc = herald_cfg_len(codes);
    uint32_t *c = nc ? xcalloc(nc, sizeof(*c)) : NULL;
    for (size_t i = 0; i < nc; i++)
        c[i] = (uint32_t)herald_cfg_int(herald_cfg_at(codes, i), 0);
    p->retriable_status_codes = c;
    p->nretriable_status_codes = nc;
    *out = p;
    *codes_out = c;
    return 0;
}

static int parse_body(const struct herald_cfg *ds, struct herald_route *r, uint64_t max, struct cfg_diag *d)
{
    char *err = NULL;
    if (!herald_cfg_len(ds))
        return 0;   /* body: {} */
    if (!(r->body = data_source_read(ds, (size_t)max, &r->body_len, &err))) {
        diag_error_take(d, err);
        return -1;
    }
    if (r->body_len > max) {
        bool from_file = herald_cfg_get(ds, "filename") != NULL;
        diag_error(d, herald_cfg_at(ds, 0), "the direct response body is %s%zu bytes; the maximum is %llu (raise "
                   "the route config's max_direct_response_body_size_bytes)", from_file ? "over " : "",
                   from_file ? (size_t)max : r->body_len, (unsigned long long)max);
        return -1;
    }
    return 0;
}

static char *describe_match(const struct herald_route *r)
{
    static const char *const kinds[] = { "prefix", "path", "safe_regex", "path_separated_prefix" };
    if (r->name)
        return xasprintf("route '%s'", r->name);
    if (r->pk == PM_CONNECT)
        return xstrdup("route with connect_matcher");
    return xasprintf("route with %s \"%s\"", kinds[r->pk], r->pstr);
}

static int parse_redirect(const struct herald_cfg *n, struct herald_route *r, struct cfg_diag *d)
{
    static const struct { const char *name; int code; } codes[] = {
        { "MOVED_PERMANENTLY", 301 }, { "FOUND", 302 }, { "SEE_OTHER", 303 },
        { "TEMPORARY_REDIRECT", 307 }, { "PERMANENT_REDIRECT", 308 },
    };
    r->kind = HERALD_ROUTE_REDIRECT;
    const struct herald_cfg *v;
    if ((v = herald_cfg_get(n, "scheme_redirect")))
        r->scheme_redirect = lower_dup(herald_cfg_str(v, "http"));
    else if (herald_cfg_bool(herald_cfg_get(n, "https_redirect"), false))
        r->scheme_redirect = xstrdup("https");
    if ((v = herald_cfg_get(n, "host_redirect")))
        r->host_redirect = xstrdup(herald_cfg_str(v, ""));
    r->port_redirect = (unsigned)herald_cfg_int(herald_cfg_get(n, "port_redirect"), 0);
    if ((v = herald_cfg_get(n, "path_redirect")))
        r->path_redirect = xstrdup(herald_cfg_str(v, "/"));
    if ((v = herald_cfg_get(n, "prefix_rewrite")))
        r->prefix_rewrite = xstrdup(herald_cfg_str(v, ""));
    if ((v = herald_cfg_get(n, "regex_rewrite"))) {
        r->rx_rewrite = compile_regex(herald_cfg_get(herald_cfg_get(v, "pattern"), "regex"), d);
        r->rx_subst = xstrdup(herald_cfg_str(herald_cfg_get(v, "substitution"), ""));
        if (!r->rx_rewrite)
            return -1;
    }
    r->strip_query = herald_cfg_bool(herald_cfg_get(n, "strip_query"), false);
    r->redirect_code = 301;
    const char *code = herald_cfg_str(herald_cfg_get(n, "response_code"), "MOVED_PERMANENTLY");
    for (size_t i = 0; i < ARRAY_SIZE(codes); i++)
        if (strcmp(codes[i].name, code) == 0)
            r->redirect_code = codes[i].code;
    return 0;
}

static int parse_hash_policies(const struct herald_cfg *list, struct herald_route *r, struct cfg_diag *d)
{
    int rc = 0;
    r->nhp = herald_cfg_len(list);
    r->hp = r->nhp ? xcalloc(r->nhp, sizeof(*r->hp)) : NULL;
    for (size_t i = 0; i < r->nhp; i++) {
        const struct herald_cfg *n = herald_cfg_at(list, i), *v;
        struct hash_policy *hp = &r->hp[i];
        hp->terminal = herald_cfg_bool(herald_cfg_get(n, "terminal"), false);
        if ((v = herald_cfg_get(n, "header"))) {
            hp->kind = HP_HEADER;
            hp->name = lower_dup(herald_cfg_str(herald_cfg_get(v, "header_name"), ""));
            if (strcmp(hp->name, "host") == 0) {
                /* Host is :authority by now (Envoy maps the name the same way) */
                free(hp->name);
                hp->name = xstrdup(":authority");
            }
            const struct herald_cfg *rw = herald_cfg_get(v, "regex_rewrite");
            if (rw) {
                hp->rx = compile_regex(herald_cfg_get(herald_cfg_get(rw, "pattern"), "regex"), d);
                hp->rx_subst = xstrdup(herald_cfg_str(herald_cfg_get(rw, "substitution"), ""));
                if (!hp->rx)
                    rc = -1;
            }
        } else if ((v = herald_cfg_get(n, "cookie"))) {
            hp->kind = HP_COOKIE;
            hp->name = xstrdup(herald_cfg_str(herald_cfg_get(v, "name"), ""));
            const struct herald_cfg *ttl = herald_cfg_get(v, "ttl");
            hp->has_ttl = ttl != NULL;
            hp->ttl_s = herald_cfg_duration_ms(ttl, 0) / 1000;
            if ((ttl = herald_cfg_get(v, "path")))
                hp->path = xstrdup(herald_cfg_str(ttl, ""));
        } else if ((v = herald_cfg_get(n, "query_parameter"))) {
            hp->kind = HP_QUERY;
            hp->name = xstrdup(herald_cfg_str(herald_cfg_get(v, "name"), ""));
        } else {
            /* connection_properties; without source_ip: true it never hashes anything */
            hp->kind = HP_SOURCE_IP;
            hp->source_ip = herald_cfg_bool(herald_cfg_get(herald_cfg_get(n, "connection_properties"),
                                                           "source_ip"), false);
            if (!hp->source_ip)
                diag_warn(d, n, "this hash policy hashes nothing (connection_properties without source_ip: "
                          "true)");
        }
    }
    return rc;
}

/* A RuntimeFractionalPercent (match.runtime_fraction, a mirror policy's):
 * false when n is absent. key: NULL when it names none. */
static bool parse_runtime_fraction(const struct herald_cfg *n, uint32_t *num, uint32_t *den, char **key)
{
    if (!n)
        return false;
    const struct herald_cfg *dv = herald_cfg_get(n, "default_value");
    const char *d = herald_cfg_str(herald_cfg_get(dv, "denominator"), "HUNDRED");
    *num = (uint32_t)herald_cfg_int(herald_cfg_get(dv, "numerator"), 0);
    *den = strcmp(d, "MILLION") == 0 ? 1000000 : strcmp(d, "TEN_THOUSAND") == 0 ? 10000 : 100;
    const char *k = herald_cfg_str(herald_cfg_get(n, "runtime_key"), "");
    *key = *k ? xstrdup(k) : NULL;
    return true;
}

/* request_mirror_policies of n (a RouteAction, VirtualHost or RouteConfiguration) */
static void parse_mirrors(const struct herald_cfg *n, struct mirrors *out)
{
    const struct herald_cfg *mps = herald_cfg_get(n, "request_mirror_policies"), *v;
    out->n = herald_cfg_len(mps);
    out->e = out->n ? xcalloc(out->n, sizeof(*out->e)) : NULL;
    for (size_t i = 0; i < out->n; i++) {
        const struct herald_cfg *mp = herald_cfg_at(mps, i), *rf = herald_cfg_get(mp, "runtime_fraction");
        struct mirror *m = &out->e[i];
        if ((v = herald_cfg_get(mp, "cluster")))
            m->cluster = xstrdup(herald_cfg_str(v, ""));
        if ((v = herald_cfg_get(mp, "cluster_header")))
            m->cluster_header = lower_dup(herald_cfg_str(v, ""));
        m->host_suffix = !herald_cfg_bool(herald_cfg_get(mp, "disable_shadow_host_suffix_append"), false);
        m->has_fraction = parse_runtime_fraction(rf, &m->num, &m->den, &m->key);
    }
}

/* rate_limits of a RouteAction or VirtualHost (herald_route_rate_limits). */
static int parse_rate_limits(const struct herald_cfg *n, struct herald_rate_limits **out, struct cfg_diag *d)
{
    char *err = NULL;
    if (!herald_cfg_len(n))
        return 0;
    if (!(*out = herald_rate_limits_new(n, &err))) {
        diag_error_take(d, err);
        return -1;
    }
    return 0;
}

/* metadata_match.filter_metadata["envoy.lb"] (the schema checked it is a mapping). */
static int parse_metadata_match(const struct herald_cfg *mm, struct lb_kvs *out, bool *has, struct cfg_diag *d)
{
    const struct herald_cfg *lb = herald_cfg_get(herald_cfg_get(mm, "filter_metadata"), "envoy.lb");
    *out = (struct lb_kvs){ 0 };
    *has = false;
    if (!lb)
        return 0;
    if (lbmd_kvs_from_struct(lb, out) < 0) {
        diag_error(d, lb, "metadata_match.filter_metadata[\"envoy.lb\"] must be a mapping");
        return -1;
    }
    *has = true;
    return 0;
}

static int parse_forward(const struct herald_cfg *n, struct herald_route *r, struct cfg_diag *d)
{
    r->node = n;
    int rc = 0;
    const struct herald_cfg *v;
    r->kind = HERALD_ROUTE_FORWARD;
    parse_mirrors(n, &r->mirrors);
    if (parse_metadata_match(herald_cfg_get(n, "metadata_match"), &r->mm, &r->has_mm, d) < 0)
        rc = -1;
    if ((v = herald_cfg_get(n, "cluster")))
        r->cluster = xstrdup(herald_cfg_str(v, ""));
    if ((v = herald_cfg_get(n, "cluster_header")))
        r->cluster_header = lower_dup(herald_cfg_str(v, ""));
    if ((v = herald_cfg_get(n, "weighted_clusters"))) {
        const struct herald_cfg *cl = herald_cfg_get(v, "clusters");
        const char *wprefix = herald_cfg_str(herald_cfg_get(v, "runtime_key_prefix"), "");
        r->nwc = herald_cfg_len(cl);
        r->wc = xcalloc(r->nwc, sizeof(*r->wc));
        for (size_t i = 0; i < r->nwc; i++) {
            const struct herald_cfg *c = herald_cfg_at(cl, i);
            struct herald_route *w = xcalloc(1, sizeof(*w));
            r->wc[i] = w;
            w->parent = r;
            w->vh = r->vh;
            w->kind = HERALD_ROUTE_FORWARD;
            w->cluster = xstrdup(herald_cfg_str(herald_cfg_get(c, "name"), ""));
            w->weight = (uint32_t)herald_cfg_int(herald_cfg_get(c, "weight"), 0);
            r->total_weight += w->weight;
            if (*wprefix)
                w->weight_key = xasprintf("%s.%s", wprefix, w->cluster);
            if ((v = herald_cfg_get(c, "host_rewrite_literal")))
                w->host_literal = xstrdup(herald_cfg_str(v, ""));
            struct lb_kvs own;
            bool has_own = false;
            if (parse_metadata_match(herald_cfg_get(c, "metadata_match"), &own, &has_own, d) < 0)
                rc = -1;
            if (has_own) {   /* the entry's keys over the route's, as Envoy's mergeMatchCriteria */
                lbmd_kvs_merge(&w->mm, &r->mm, &own);
                w->has_mm = true;
                lbmd_kvs_free(&own);
            }
            if (parse_mutations(c, &w->mut, d) < 0)
                rc = -1;
        }
    }
    r->not_found_code = 503;
    const char *nf = herald_cfg_str(herald_cfg_get(n, "cluster_not_found_response_code"), "");
    if (strcmp(nf, "NOT_FOUND") == 0)
        r->not_found_code = 404;
    else if (strcmp(nf, "INTERNAL_SERVER_ERROR") == 0)
        r->not_found_code = 500;
    if ((v = herald_cfg_get(n, "prefix_rewrite")))
        r->prefix_rewrite = xstrdup(herald_cfg_str(v, ""));
    if ((v = herald_cfg_get(n, "regex_rewrite"))) {
        r->rx_rewrite = compile_regex(herald_cfg_get(herald_cfg_get(v, "pattern"), "regex"), d);
        r->rx_subst = xstrdup(herald_cfg_str(herald_cfg_get(v, "substitution"), ""));
        if (!r->rx_rewrite)
            rc = -1;
    }
    if ((v = herald_cfg_get(n, "host_rewrite_literal")))
        r->host_literal = xstrdup(herald_cfg_str(v, ""));
    if ((v = herald_cfg_get(n, "host_rewrite_header")))
        r->host_header = lower_dup(herald_cfg_str(v, ""));
    r->auto_host = herald_cfg_bool(herald_cfg_get(n, "auto_host_rewrite"), false);
    r->append_xfh = herald_cfg_bool(herald_cfg_get(n, "append_x_forwarded_host"), false);
    r->timeout_ms = herald_cfg_duration_ms(herald_cfg_get(n, "timeout"), 15000);
    r->idle_ms = herald_cfg_duration_ms(herald_cfg_get(n, "idle_timeout"), 0);
    r->priority = strcasecmp(herald_cfg_str(herald_cfg_get(n, "priority"), "DEFAULT"), "HIGH") == 0
                  ? HERALD_PRIORITY_HIGH : HERALD_PRIORITY_DEFAULT;
    if (parse_retry(herald_cfg_get(n, "retry_policy"), &r->retry, &r->retry_codes, d) < 0)
        rc = -1;
    if (parse_hash_policies(herald_cfg_get(n, "hash_policy"), r, d) < 0)
        rc = -1;
    if (parse_rate_limits(herald_cfg_get(n, "rate_limits"), &r->rate_limits, d) < 0)
        rc = -1;
    r->include_vh_rate_limits = herald_cfg_bool(herald_cfg_get(n, "include_vh_rate_limits"), false);
    const struct herald_cfg *ups = herald_cfg_get(n, "upgrade_configs");
    r->nup = herald_cfg_len(ups);
    if (r->nup) {
        r->up_types = xcalloc(r->nup, sizeof(*r->up_types));
        r->up_enabled = xcalloc(r->nup, sizeof(*r->up_enabled));
    }
    for (size_t i = 0; i < r->nup; i++) {
        const struct herald_cfg *u = herald_cfg_at(ups, i);
        r->up_types[i] = lower_dup(herald_cfg_str(herald_cfg_get(u, "upgrade_type"), ""));
        r->up_enabled[i] = herald_cfg_bool(herald_cfg_get(u, "enabled"), true);
        if (herald_cfg_get(u, "connect_config"))
            r->connect_terminate = true;
        for (size_t j = 0; j < i; j++)
            if (strcmp(r->up_types[j], r->up_types[i]) == 0) {
                diag_error(d, u, "upgrade type '%s' is given twice", r->up_types[i]);
                rc = -1;
            }
    }
    return rc;
}

/* Only kept here: the connection manager knows the filters the keys name. */
static void parse_filter_configs(const struct herald_cfg *n, struct filter_configs *f, bool *any)
{
    const struct herald_cfg *m = herald_cfg_get(n, "typed_per_filter_config");
    f->n = herald_cfg_type(m) == HERALD_CFG_OBJECT ? herald_cfg_len(m) : 0;
    if (!f->n)
        return;
    *any = true;
    f->e = xcalloc(f->n, sizeof(*f->e));
    for (size_t i = 0; i < f->n; i++) {
        f->e[i].name = xstrdup(herald_cfg_key_at(m, i));
        f->e[i].node = herald_cfg_at(m, i);
        f->e[i].filter = SIZE_MAX;     /* until the connection manager resolves it */
    }
}

static struct herald_route *parse_route(const struct herald_cfg *n, struct vhost *vh, uint64_t max_body,
                                        struct cfg_diag *d)
{
    struct herald_route *r = xcalloc(1, sizeof(*r));
    int rc = 0;
    r->vh = vh;
    r->line = herald_cfg_line(n);
    const struct herald_cfg *v, *m = herald_cfg_get(n, "match");
    if ((v = herald_cfg_get(n, "name")))
        r->name = xstrdup(herald_cfg_str(v, ""));
    r->case_sensitive = herald_cfg_bool(herald_cfg_get(m, "case_sensitive"), true);
    r->grpc = herald_cfg_get(m, "grpc") != NULL;
    r->has_fraction = parse_runtime_fraction(herald_cfg_get(m, "runtime_fraction"), &r->fraction_num,
                                             &r->fraction_den, &r->fraction_key);
    if ((v = herald_cfg_get(m, "prefix"))) {
        r->pk = PM_PREFIX;
    } else if ((v = herald_cfg_get(m, "path"))) {
        r->pk = PM_PATH;
    } else if ((v = herald_cfg_get(m, "path_separated_prefix"))) {
        r->pk = PM_SEP_PREFIX;
    } else if (herald_cfg_get(m, "connect_matcher")) {
        r->pk = PM_CONNECT;
        v = NULL;
    } else {
        r->pk = PM_REGEX;
        v = herald_cfg_get(herald_cfg_get(m, "safe_regex"), "regex");
        if (!(r->pre = compile_regex(v, d)))
            rc = -1;
    }
    r->pstr = xstrdup(herald_cfg_str(v, ""));
    r->plen = strlen(r->pstr);
    r->desc = describe_match(r);

    if (parse_header_matchers(herald_cfg_get(m, "headers"), &r->hm, &r->nhm, d) < 0)
        rc = -1;
    const struct herald_cfg *qs = herald_cfg_get(m, "query_parameters");
    r->nqm = herald_cfg_len(qs);
    r->qm = r->nqm ? xcalloc(r->nqm, sizeof(*r->qm)) : NULL;
    for (size_t i = 0; i < r->nqm; i++) {
        const struct herald_cfg *q = herald_cfg_at(qs, i);
        struct query_matcher *qm = &r->qm[i];
        qm->name = xstrdup(herald_cfg_str(herald_cfg_get(q, "name"), ""));
        if ((v = herald_cfg_get(q, "string_match"))) {
            if (parse_string_matcher(v, &qm->sm, d) < 0)
                rc = -1;
        } else {
            qm->by_presence = true;
            qm->present = herald_cfg_bool(herald_cfg_get(q, "present_match"), true);
        }
    }

    if ((v = herald_cfg_get(n, "route"))) {
        if (parse_forward(v, r, d) < 0)
            rc = -1;
    } else if ((v = herald_cfg_get(n, "redirect"))) {
        if (parse_redirect(v, r, d) < 0)
            rc = -1;
    } else if ((v = herald_cfg_get(n, "direct_response"))) {
        r->kind = HERALD_ROUTE_DIRECT_RESPONSE;
        r->direct_status = (int)herald_cfg_int(herald_cfg_get(v, "status"), 200);
        if (parse_body(herald_cfg_get(v, "body"), r, max_body, d) < 0)
            rc = -1;
    }
    if (parse_mutations(n, &r->mut, d) < 0)
        rc = -1;
    parse_filter_configs(n, &r->fcs, &vh->table->any_fcs);
    if (rc < 0) {
        route_free(r);
        return NULL;
    }
    return r;
}

static bool has_alpha(const char *s)
{
    for (; *s; s++)
        if (isalpha((unsigned char)*s))
            return true;
    return false;
}

static bool regex_matches_all(const char *re)
{
    return strcmp(re, ".*") == 0 || strcmp(re, "^.*$") == 0 || strcmp(re, "/.*") == 0 ||
           strcmp(re, "^/.*$") == 0 || strcmp(re, "(.*)") == 0;
}

/* Whether every request route x matches is also matched by the earlier route
 * y. Conservative: only the path conditions are compared, and only when y has
 * no other condition (x's extra headers/query conditions narrow it further). */
static bool route_covers(const struct herald_route *y, const struct herald_route *x)
{
    if (y->nhm || y->nqm)
        return false;
    /* a CONNECT has no path: only "" prefixes and connect_matcher take it */
    if (x->pk == PM_CONNECT)
        return y->pk == PM_CONNECT || (y->pk == PM_PREFIX && y->plen == 0);
    if (y->pk == PM_CONNECT)
        return false;
    if (y->pk == PM_REGEX)
        return regex_matches_all(y->pstr);
    if (y->pk == PM_PREFIX && (y->plen == 0 || strcmp(y->pstr, "/") == 0) && !(x->pk == PM_PATH && !x->plen))
        return true; /* every path starts with '/' */
    if (x->pk == PM_REGEX)
        return false;
    /* a case-insensitive x matches paths in other cases than a case-sensitive y allows */
    if (y->case_sensitive && !x->case_sensitive && has_alpha(y->pstr))
        return false;
    int (*ncmp)(const char *, const char *, size_t) = y->case_sensitive ? strncmp : strncasecmp;
    bool starts = x->plen >= y->plen && ncmp(x->pstr, y->pstr, y->plen) == 0;
    switch (y->pk) {
    case PM_PREFIX:
        return starts;
    case PM_PATH:
        return x->pk == PM_PATH && x->plen == y->plen && starts;
    case PM_SEP_PREFIX:
        /* x's paths are y's prefix itself or below "y/" */
        if (!starts)
            return false;
        if (x->plen == y->plen)
            return x->pk != PM_PREFIX; /* prefix "/api" also matches "/apix" */
        return x->pstr[y->plen] == '/';
    case PM_REGEX:
    case PM_CONNECT:
        break;
    }
    return false;
}

static int cmp_len_desc(const void *a, const void *b)
{
    const struct domain *x = a, *y = b;
    return x->len < y->len ? 1 : x->len > y->len ? -1 : 0;
}

/* The ':' before a host's port ("h:80", "[::1]:80"), or NULL. */
static const char *port_colon(const char *h)
{
    const char *c;
    if (h[0] == '[') {
        const char *rb = strchr(h, ']');
        c = rb && rb[1] == ':' ? rb + 1 : NULL;
    } else {
        c = strchr(h, ':');
        if (c && c != strrchr(h, ':'))
            c = NULL; /* a bare IPv6 address */
    }
    if (c && strspn(c + 1, "0123456789") != strlen(c + 1))
        c = NULL;
    return c;
}

static int add_domain(struct route_table *t, struct vhost *vh, const struct herald_cfg *n, struct cfg_diag *d)
{
    const char *raw = herald_cfg_str(n, "");
    if (!*raw) {
        diag_error(d, n, "a domain is empty (use \"*\" to match every host)");
        return -1;
    }
    if (strcmp(raw, "*") == 0) {
        if (t->any) {
            diag_error(d, n, "only one virtual host may have the domain \"*\": virtual host '%s' (line %d) "
                       "has it already", t->any->name, herald_cfg_line(t->any_node));
            return -1;
        }
        t->any = vh;
        t->any_node = n;
        return 0;
    }
    char *low = lower_dup(raw);
    size_t len = strlen(low);
    /* duplicates, compared as Envoy does (lower-cased) */
    const struct domain *all[3] = { t->exact, t->suffix, t->prefix };
    size_t counts[3] = { t->nexact, t->nsuffix, t->nprefix };
    for (size_t k = 0; k < 3; k++)
        for (size_t i = 0; i < counts[k]; i++) {
            const struct domain *o = &all[k][i];
            const char *ostr = herald_cfg_str(o->node, "");
            if (strcasecmp(ostr, raw) == 0) {
                diag_error(d, n, "domain '%s' is already in virtual host '%s' (line %d): a domain must be "
                           "unique across the route config", raw, o->vh->name, herald_cfg_line(o->node));
                free(low);
                return -1;
            }
        }
    struct domain *dom;
    if (low[0] == '*') {
        dom = VEC_PUSH(t->suffix, t->nsuffix, t->capsuffix);
        dom->s = xstrdup(low + 1);
    } else if (low[len - 1] == '*') {
        dom = VEC_PUSH(t->prefix, t->nprefix, t->capprefix);
        dom->s = xstrndup(low, len - 1);
    } else {
        dom = VEC_PUSH(t->exact, t->nexact, t->capexact);
        dom->s = xstrdup(low);
    }
    dom->len = strlen(dom->s);
    dom->vh = vh;
    dom->node = n;
    if (strchr(dom->s, '*'))
        diag_warn(d, n, "domain '%s' has a '*' in the middle: only a leading \"*.\" or trailing \".*\" "
                  "wildcard works, so it matches nothing but itself", raw);
    free(low);
    return 0;
}

struct route_table *route_table_create(const struct herald_cfg *rc, struct cfg_diag *d)
{
    struct route_table *t = xcalloc(1, sizeof(*t));
    int err = 0;
    size_t errors_before = d->nerrors; /* earlier errors elsewhere in the config are not this table's */
    t->name = xstrdup(herald_cfg_str(herald_cfg_get(rc, "name"), ""));
    t->most_specific_wins = herald_cfg_bool(herald_cfg_get(rc, "most_specific_header_mutations_wins"), false);
    const struct herald_cfg *mb = herald_cfg_get(rc, "max_direct_response_body_size_bytes");
    uint64_t max_body = (uint64_t)herald_cfg_int(mb, 4096);
    if (parse_mutations(rc, &t->mut, d) < 0)
        err = -1;
    parse_filter_configs(rc, &t->fcs, &t->any_fcs);
    parse_mirrors(rc, &t->mirrors);
    t->mirrors_node = herald_cfg_get(rc, "request_mirror_policies");

    const struct herald_cfg *vhs = herald_cfg_get(rc, "virtual_hosts");
    bool any_port = false;
    for (size_t i = 0; i < herald_cfg_len(vhs); i++) {
        const struct herald_cfg *vn = herald_cfg_at(vhs, i);
        struct vhost *vh = xcalloc(1, sizeof(*vh));
        *VEC_PUSH(t->vhosts, t->nvhosts, t->capvhosts) = vh;
        vh->table = t;
        vh->line = herald_cfg_line(vn);
        vh->name = xstrdup(herald_cfg_str(herald_cfg_get(vn, "name"), ""));
        for (size_t j = 0; j < i; j++)
            if (strcmp(t->vhosts[j]->name, vh->name) == 0)
                diag_warn(d, herald_cfg_get(vn, "name"), "virtual host name '%s' is also used at line %d: "
                          "their stats would mix", vh->name, t->vhosts[j]->line);
        const struct herald_cfg *doms = herald_cfg_get(vn, "domains");
        for (size_t j = 0; j < herald_cfg_len(doms); j++) {
            const struct herald_cfg *dn = herald_cfg_at(doms, j);
            if (add_domain(t, vh, dn, d) < 0)
                err = -1;
            if (port_colon(herald_cfg_str(dn, "")))
                any_port = true;
        }
        if (parse_mutations(vn, &vh->mut, d) < 0)
            err = -1;
        parse_filter_configs(vn, &vh->fcs, &t->any_fcs);
        parse_mirrors(vn, &vh->mirrors);
        vh->mirrors_node = herald_cfg_get(vn, "request_mirror_policies");
        if (parse_rate_limits(herald_cfg_get(vn, "rate_limits"), &vh->rate_limits, d) < 0)
            err = -1;
        if (parse_vclusters(herald_cfg_get(vn, "virtual_clusters"), vh, d) < 0)
            err = -1;
        if (parse_retry(herald_cfg_get(vn, "retry_policy"), &vh->retry, &vh->retry_codes, d) < 0)
            err = -1;
        const struct herald_cfg *routes = herald_cfg_get(vn, "routes");
        if (herald_cfg_len(routes) == 0)
            diag_warn(d, vn, "virtual host '%s' has no routes: every request to it gets 404", vh->name);
        for (size_t j = 0; j < herald_cfg_len(routes); j++) {
            struct herald_route *r = parse_route(herald_cfg_at(routes, j), vh, max_body, d);
            if (!r) {
                err = -1;
                continue;
            }
            for (size_t k = 0; k < vh->nroutes; k++) {
                const struct herald_route *y = vh->routes[k];
                if (route_covers(y, r)) {
                    diag_warn(d, herald_cfg_at(routes, j), "%s (line %d) can never match: %s (line %d) "
                              "before it matches every path it would", r->desc, r->line, y->desc, y->line);
                    break;
                }
            }
            *VEC_PUSH(vh->routes, vh->nroutes, vh->caproutes) = r;
        }
    }
    t->strip_port = herald_cfg_bool(herald_cfg_get(rc, "ignore_port_in_host_matching"), false) || !any_port;
    if (t->nsuffix)
        qsort(t->suffix, t->nsuffix, sizeof(*t->suffix), cmp_len_desc);
    if (t->nprefix)
        qsort(t->prefix, t->nprefix, sizeof(*t->prefix), cmp_len_desc);
    if (err < 0 || d->nerrors > errors_before) {
        route_table_free(t);
        return NULL;
    }
    return t;
}

const char *route_table_name(const struct route_table *t)
{
    return t ? t->name : "";
}

/* ------------------------------------------------------------ matching */

static const struct vhost *find_vhost(const struct route_table *t, const struct herald_headers *req)
{
    const char *auth = HEADERS_GET(req, ":authority");
    if (!auth)
        auth = HEADERS_GET(req, "host");
    if (!auth)
        auth = "";
    size_t len = strlen(auth);
    char stackbuf[256];
    char *host = len < sizeof(stackbuf) ? stackbuf : xmalloc(len + 1);
    for (size_t i = 0; i <= len; i++)
        host[i] = (char)tolower((unsigned char)auth[i]);
    if (t->strip_port) {
        const char *colon = port_colon(host);
        if (colon) {
            len = (size_t)(colon - host);
            host[len] = '\0';
        }
    }
    const struct vhost *found = NULL;
    for (size_t i = 0; i < t->nexact && !found; i++)
        if (t->exact[i].len == len && memcmp(t->exact[i].s, host, len) == 0)
            found = t->exact[i].vh;
    for (size_t i = 0; i < t->nsuffix && !found; i++) /* longest first; "*" must stand for something */
        if (len > t->suffix[i].len &&
            memcmp(host + len - t->suffix[i].len, t->suffix[i].s, t->suffix[i].len) == 0)
            found = t->suffix[i].vh;
    for (size_t i = 0; i < t->nprefix && !found; i++)
        if (len > t->prefix[i].len && memcmp(host, t->prefix[i].s, t->prefix[i].len) == 0)
            found = t->prefix[i].vh;
    if (!found)
        found = t->any;
    if (host != stackbuf)
        free(host);
    return found;
}

bool route_table_vhost_found(const struct route_table *t, const struct herald_headers *req)
{
    return t && find_vhost(t, req) != NULL;
}

/* val: the header's value(s), NULL when absent */
static bool header_value_matches(const struct hdr_matcher *hm, const char *val)
{
    bool match;
    if (!val && !hm->missing_as_empty) {
        /* absent: only a present_match can say anything */
        if (hm->invert)
            return hm->kind == HM_PRESENT && hm->present;
        return hm->kind == HM_PRESENT && !hm->present;
    }
    const char *v = val ? val : "";
    if (hm->kind == HM_PRESENT)
        match = hm->present;
    else if (hm->any_value)
        match = true;
    else
        match = sm_match(&hm->sm, v, strlen(v));
    return match != hm->invert;
}

static bool header_matches(const struct hdr_matcher *hm, const struct herald_headers *req)
{
    char *val = herald_headers_get_all(req, hm->name);
    bool match = header_value_matches(hm, val);
    free(val);
    return match;
}

static bool headers_all_match(const struct hdr_matcher *hm, size_t n, const struct herald_headers *req)
{
    for (size_t i = 0; i < n; i++)
        if (!header_matches(&hm[i], req))
            return false;
    return true;
}

/* ---------------------------------------------------------------- a lone HeaderMatcher
 * (the access log's header_filter): the SDK's herald_header_matcher, asked
 * about one value the log already has. */

const char *route_header_matcher_name(const struct herald_header_matcher *m)
{
    return m->hm.name;
}

bool route_header_matcher_value_matches(const struct herald_header_matcher *m, const char *value)
{
    return header_value_matches(&m->hm, value);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes [s, s+n) into a malloc'd string ('+' stays '+', as Envoy). */
static char *url_decode(const char *s, size_t n)
{
    char *o = xmalloc(n + 1), *p = o;
    for (size_t i = 0; i < n; i++) {
        int a, b;
        if (s[i] == '%' && i + 2 < n && (a = hexval((unsigned char)s[i + 1])) >= 0 &&
            (b = hexval((unsigned char)s[i + 2])) >= 0) {
            *p++ = (char)(a * 16 + b);
            i += 2;
        } else {
            *p++ = s[i];
        }
    }
    *p = '\0';
    return o;
}

/* The first value of query parameter name in path (decoded), or NULL. */
char *herald_http_query_param(const char *path, const char *name)
{
    const char *q = path && name ? strchr(path, '?') : NULL;
    if (!q)
        return NULL;
    q++;
    const char *end = q + strcspn(q, "#");
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(pe - q));
        const char *ke = eq ? eq : pe;
        char *key = url_decode(q, (size_t)(ke - q));
        bool hit = strcmp(key, name) == 0;
        free(key);
        if (hit)
            return eq ? url_decode(eq + 1, (size_t)(pe - eq - 1)) : xstrdup("");
        q = amp ? amp + 1 : end;
    }
    return NULL;
}


static bool route_matches(const struct herald_route *r, const struct herald_headers *req, const char *path,
                          size_t plen)
{
    int (*ncmp)(const char *, const char *, size_t) = r->case_sensitive ? strncmp : strncasecmp;
    switch (r->pk) {
    case PM_PREFIX:
        if (plen < r->plen || ncmp(path, r->pstr, r->plen) != 0)
            return false;
        break;
    case PM_PATH:
        if (plen != r->plen || ncmp(path, r->pstr, r->plen) != 0)
            return false;
        break;
    case PM_SEP_PREFIX:
        if (plen < r->plen || ncmp(path, r->pstr, r->plen) != 0 || (plen > r->plen && path[r->plen] != '/'))
            return false;
        break;
    case PM_REGEX:
        if (!regex_full_match(r->pre, path, plen))
            return false;
        break;
    case PM_CONNECT: {
        const char *m = HEADERS_GET(req, ":method");
        if (!m || strcmp(m, "CONNECT") != 0)
            return false;
        break;
    }
    }
    if (r->grpc && !headers_is_grpc(req))
        return false;
    if (!headers_all_match(r->hm, r->nhm, req))
        return false;
    if (r->nqm) {
        const char *full = HEADERS_GET(req, ":path");
        for (size_t i = 0; i < r->nqm; i++) {
            const struct query_matcher *qm = &r->qm[i];
            char *v = herald_http_query_param(full ? full : "", qm->name);
            bool ok = qm->by_presence ? (v != NULL) == qm->present : v && sm_match(&qm->sm, v, strlen(v));
            free(v);
            if (!ok)
                return false;
        }
    }
    return true;
}

/* runtime_key_prefix: each weight may come from the runtime (Envoy's clusterWeight()) */
static uint64_t wc_weight(const struct herald_route *w, bool rt)
{
    return rt ? runtime_get_uint(w->weight_key, w->weight) : w->weight;
}

static const struct herald_route *weighted_pick(const struct herald_route *r, uint64_t random)
{
    bool rt = r->wc[0]->weight_key != NULL;
    uint64_t total = r->total_weight;
    if (rt) {
        total = 0;
        for (size_t i = 0; i < r->nwc; i++)
            total += wc_weight(r->wc[i], true);
        if (total == 0) {          /* runtime weights all 0: the configured ones */
            rt = false;
            total = r->total_weight;
        }
    }
    uint64_t x = random % total;
    for (size_t i = 0; i < r->nwc; i++) {
        uint64_t wt = wc_weight(r->wc[i], rt);
        if (x < wt)
            return r->wc[i];
        x -= wt;
    }
    return r->wc[r->nwc - 1];
}

const struct herald_route *route_table_match(const struct route_table *t, const struct herald_headers *req,
                                             uint64_t random)
{
    if (!t)
        return NULL;
    const struct vhost *vh = find_vhost(t, req);
    if (!vh)
        return NULL;
    const char *path = HEADERS_GET(req, ":path");
    if (!path)
        path = "";
    size_t plen = strcspn(path, "?#");
    for (size_t i = 0; i < vh->nroutes; i++) {
        const struct herald_route *r = vh->routes[i];
        /* runtime_fraction: Envoy's featureEnabled with the request's random */
        if (route_matches(r, req, path, plen) &&
            (!r->has_fraction ||
             runtime_fraction_enabled(r->fraction_key, r->fraction_num, r->fraction_den, random)))
            return r->nwc ? weighted_pick(r, random) : r;
    }
    return NULL;
}

/* ------------------------------------------------------------ typed_per_filter_config */

static void each_fc(struct filter_configs *f, void (*cb)(struct route_filter_config *, void *), void *arg)
{
    for (size_t i = 0; i < f->n; i++)
        cb(&f->e[i], arg);
}

void route_table_foreach_filter_config(struct route_table *t,
                                       void (*cb)(struct route_filter_config *fc, void *arg), void *arg)
{
    each_fc(&t->fcs, cb, arg);
    for (size_t i = 0; i < t->nvhosts; i++) {
        struct vhost *vh = t->vhosts[i];
        each_fc(&vh->fcs, cb, arg);
        for (size_t j = 0; j < vh->nroutes; j++)
            each_fc(&vh->routes[j]->fcs, cb, arg);
    }
}

bool route_table_has_filter_configs(const struct route_table *t)
{
    return t && t->any_fcs;
}

static const struct route_filter_config *fc_find(const struct filter_configs *f, size_t filter)
{
    for (size_t i = 0; i < f->n; i++)
        if (f->e[i].filter == filter)
            return &f->e[i];
    return NULL;
}

size_t route_filter_config_chain(const struct herald_route *r, size_t filter, const struct route_filter_config **out,
                                 size_t max)
{
    size_t n = 0;
    if (!r)
        return 0;
    if (r->parent)
        r = r->parent;
    const struct filter_configs *levels[] = {&r->fcs, &r->vh->fcs, &r->vh->table->fcs};
    for (size_t i = 0; i < 3 && n < max; i++) {
        const struct route_filter_config *fc = fc_find(levels[i], filter);
        if (fc)
            out[n++] = fc;
    }
    return n;
}

/* ------------------------------------------------------------ SDK string matchers */

struct herald_string_matcher {
    struct str_matcher sm;
};

struct herald_string_matcher *herald_string_matcher_new(const struct herald_cfg *n, char **err)
{
    struct cfg_diag d = {0};
    struct herald_string_matcher *m = xcalloc(1, sizeof(*m));
    if (parse_string_matcher(n, &m->sm, &d) < 0) {
        if (err)
            *err = xstrdup(d.nerrors ? d.errors[0] : "bad string matcher");
        diag_free(&d);
        herald_string_matcher_free(m);
        return NULL;
    }
    diag_free(&d);
    return m;
}

bool herald_string_matcher_match(const struct herald_string_matcher *m, const char *s)
{
    return sm_match(&m->sm, s, strlen(s));
}

void herald_string_matcher_free(struct herald_string_matcher *m)
{
    if (!m)
        return;
    sm_free(&m->sm);
    free(m);
}

/* ------------------------------------------------------------ SDK header matchers */

/* The node's keys are checked here too: a filter's config may hold a
 * HeaderMatcher no schema has seen (the access log's filters). */
struct herald_header_matcher *herald_header_matcher_new(const struct herald_cfg *n, char **err)
{
    static const char *const keys[] = {"name", "exact_match", "safe_regex_match", "present_match",
                                       "prefix_match", "suffix_match", "contains_match", "string_match",
                                       "invert_match", "treat_missing_header_as_empty", NULL};
    if (herald_cfg_type(n) != HERALD_CFG_OBJECT) {
        herald_cfg_errorf(n, err, "must be a HeaderMatcher mapping");
        return NULL;
    }
    for (size_t i = 0; i < herald_cfg_len(n); i++) {
        const char *k = herald_cfg_key_at(n, i);
        bool known = false;
        for (size_t j = 0; keys[j] && !known; j++)
            known = !strcmp(k, keys[j]);
        if (!known) {
            herald_cfg_errorf(herald_cfg_at(n, i), err, !strcmp(k, "range_match")
                                                            ? "not supported by herald: range_match"
                                                            : "unknown field '%s' in envoy.config.route.v3.HeaderMatcher", k);
            return NULL;
        }
    }
    if (!*herald_cfg_str(herald_cfg_get(n, "name"), "")) {
        herald_cfg_errorf(n, err, "a HeaderMatcher needs a name");
        return NULL;
    }
    struct cfg_diag d = {0};
    struct herald_header_matcher *m = xcalloc(1, sizeof(*m));
    if (parse_header_matcher(n, &m->hm, &d) < 0 || d.nerrors) {
        if (err)
            *err = xstrdup(d.nerrors ? d.errors[0] : "bad header matcher");
        diag_free(&d);
        herald_header_matcher_free(m);
        return NULL;
    }
    diag_free(&d);
    return m;
}

bool herald_header_matcher_match(const struct herald_header_matcher *m, const struct herald_headers *h)
{
    return header_matches(&m->hm, h);
}

void herald_header_matcher_free(struct herald_header_matcher *m)
{
    if (!m)
        return;
    free(m->hm.name);
    sm_free(&m->hm.sm);
    free(m);
}

/* ------------------------------------------------------------ SDK accessors */

/* the route itself (a weighted cluster's entry shares its route's settings) */
#define ROUTE(r) ((r)->parent ? (r)->parent : (r))

const struct lb_kvs *route_metadata_match(const struct herald_route *r)
{
    if (!r)
        return NULL;
    if (r->has_mm)
        return &r->mm;
    return r->parent && r->parent->has_mm ? &r->parent->mm : NULL;
}

enum herald_route_kind herald_route_kind(const struct herald_route *r)
{
    return ROUTE(r)->kind;
}

const char *herald_route_name(const struct herald_route *r)
{
    return ROUTE(r)->name ? ROUTE(r)->name : "";
}

const char *herald_route_vhost_name(const struct herald_route *r)
{
    return ROUTE(r)->vh->name;
}

const char *herald_route_cluster(const struct herald_route *r, const struct herald_headers *req,
                                 uint64_t random)
{
    if (r->parent)
        return r->cluster;
    if (r->kind != HERALD_ROUTE_FORWARD)
        return NULL;
    if (r->cluster_header) {
        const char *v = herald_headers_get(req, r->cluster_header);
        return v && *v ? v : NULL;
    }
    if (r->nwc)
        return weighted_pick(r, random)->cluster;
    return r->cluster;
}

int herald_route_cluster_not_found_code(const struct herald_route *r)
{
    return ROUTE(r)->not_found_code ? ROUTE(r)->not_found_code : 503;
}

uint64_t herald_route_timeout_ms(const struct herald_route *r)
{
    return ROUTE(r)->kind == HERALD_ROUTE_FORWARD ? ROUTE(r)->timeout_ms : 15000;
}

enum herald_priority herald_route_priority(const struct herald_route *r)
{
    return ROUTE(r)->priority;
}

uint64_t herald_route_idle_timeout_ms(const struct herald_route *r)
{
    return ROUTE(r)->idle_ms;
}

const struct herald_retry_policy *herald_route_retry_policy(const struct herald_route *r)
{
    return ROUTE(r)->retry ? ROUTE(r)->retry : ROUTE(r)->vh->retry;
}

int route_upgrade_override(const struct herald_route *r, const char *upgrade_type)
{
    r = ROUTE(r);
    for (size_t i = 0; i < r->nup; i++)
        if (strcasecmp(r->up_types[i], upgrade_type) == 0)
            return r->up_enabled[i];
    return -1;
}

bool herald_route_upgrade_allowed(const struct herald_route *r, const char *upgrade_type)
{
    return route_upgrade_override(r, upgrade_type) != 0;
}

bool herald_route_connect_terminates(const struct herald_route *r)
{
    return ROUTE(r)->connect_terminate;
}

int herald_route_redirect_code(const struct herald_route *r)
{
    return ROUTE(r)->redirect_code ? ROUTE(r)->redirect_code : 301;
}

int herald_route_direct_status(const struct herald_route *r)
{
    return ROUTE(r)->direct_status;
}

const char *herald_route_direct_body(const struct herald_route *r, size_t *len)
{
    if (len)
        *len = ROUTE(r)->body_len;
    return ROUTE(r)->body;
}

/* ------------------------------------------------------------ rewriting */

/* Every match of re in [s, s+n) replaced by subst (\0-\9 = groups, \\ = '\'), as RE2::GlobalReplace. */
static void regex_replace_all(struct sbuf *out, const pcre2_code *re, const char *subst, const char *s,
                              size_t n)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    size_t pos = 0;
    while (pos <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, 0, md, NULL);
        if (rc < 0)
            break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        sb_add(out, s + pos, ov[0] - pos);
        for (const char *p = subst; *p; p++) {
            if (*p == '\\' && isdigit((unsigned char)p[1])) {
                int g = p[1] - '0';
                if (g < rc && ov[2 * g] != PCRE2_UNSET)
                    sb_add(out, s + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
                p++;
            } else if (*p == '\\' && p[1] == '\\') {
                sb_add(out, "\\", 1);
                p++;
            } else {
                sb_add(out, p, 1);
            }
        }
        if (ov[1] == ov[0]) { /* an empty match: step over one character */
            if (ov[1] < n)
                sb_add(out, s + ov[1], 1);
            pos = ov[1] + 1;
        } else {
            pos = ov[1];
        }
    }
    if (pos < n)
        sb_add(out, s + pos, n - pos);
    pcre2_match_data_free(md);
}

/* The path after the route's prefix_rewrite / regex_rewrite (malloc'd), or NULL when it has none. */
static char *rewrite_path(const struct herald_route *r, const char *path)
{
    if (!r->prefix_rewrite && !r->rx_rewrite)
        return NULL;
    size_t plen = strcspn(path, "?#");
    struct sbuf b = { 0 };
    sb_add(&b, "", 0);
    if (r->prefix_rewrite) {
        /* the part the route matched: its prefix, or the whole path for path/regex matches */
        size_t matched = r->pk == PM_PREFIX || r->pk == PM_SEP_PREFIX ? r->plen : plen;
        if (matched > plen)
            matched = plen;
        sb_str(&b, r->prefix_rewrite);
        sb_add(&b, path + matched, plen - matched);
    } else {
        regex_replace_all(&b, r->rx_rewrite, r->rx_subst, path, plen);
    }
    sb_str(&b, path + plen);
    return b.s;
}

/* ------------------------------------------------------------ hash policy */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Envoy's header hash: every value of the header (each after regex_rewrite),
 * sorted so that their order does not count, hashed as one string. */
static bool hash_header(const struct hash_policy *hp, const struct herald_headers *req, uint64_t *out)
{
    size_t n = herald_headers_count(req), nv = 0;
    char **vals = NULL;
    for (size_t i = 0; i < n; i++) {
        const char *k, *v;
        if (!herald_headers_at(req, i, &k, &v) || strcasecmp(k, hp->name) != 0)
            continue;
        vals = xrealloc(vals, (nv + 1) * sizeof(*vals));
        if (hp->rx) {
            struct sbuf b = { 0 };
            sb_add(&b, "", 0);
            regex_replace_all(&b, hp->rx, hp->rx_subst, v, strlen(v));
            vals[nv++] = b.s;
        } else {
            vals[nv++] = xstrdup(v);
        }
    }
    if (!nv)
        return false;
    qsort(vals, nv, sizeof(*vals), cmp_str);
    struct sbuf all = { 0 };
    sb_add(&all, "", 0);
    for (size_t i = 0; i < nv; i++) {
        sb_str(&all, vals[i]);
        free(vals[i]);
    }
    free(vals);
    *out = XXH64(all.s, all.n, 0);
    free(all.s);
    return true;
}

/* The value of cookie `name` in the request's Cookie headers, without
 * surrounding double quotes (malloc'd); NULL when absent or empty. */
static char *cookie_value(const struct herald_headers *req, const char *name)
{
    size_t n = herald_headers_count(req), nlen = strlen(name);
    for (size_t i = 0; i < n; i++) {
        const char *k, *v;
        if (!herald_headers_at(req, i, &k, &v) || strcasecmp(k, "cookie") != 0)
            continue;
        for (const char *p = v; *p;) {
            p += strspn(p, " \t;");
            const char *end = p + strcspn(p, ";");
            const char *eq = memchr(p, '=', (size_t)(end - p));
            if (eq && (size_t)(eq - p) == nlen && memcmp(p, name, nlen) == 0) {
                const char *vs = eq + 1, *ve = end;
                while (ve > vs && (ve[-1] == ' ' || ve[-1] == '\t'))
                    ve--;
                if (ve - vs >= 2 && *vs == '"' && ve[-1] == '"') {
                    vs++;
                    ve--;
                }
                return ve > vs ? strndup(vs, (size_t)(ve - vs)) : NULL;
            }
            p = end;
        }
    }
    return NULL;
}

/* Envoy's generated cookie: the hex of a hash of the connection's addresses,
 * sent back as name="value"; Max-Age=ttl; Path=path; HttpOnly. */
static char *generate_cookie(const struct hash_policy *hp, const char *seed, char **set_cookie)
{
    char *value = xasprintf("%016llx", (unsigned long long)XXH64(seed, strlen(seed), 0));
    struct sbuf b = { 0 };
    sb_add(&b, "", 0);
    sb_str(&b, hp->name);
    sb_str(&b, "=\"");
    sb_str(&b, value);
    sb_str(&b, "\"");
    if (hp->ttl_s) {
        char age[32];
        snprintf(age, sizeof(age), "; Max-Age=%llu", (unsigned long long)hp->ttl_s);
        sb_str(&b, age);
    }
    if (hp->path && *hp->path) {
        sb_str(&b, "; Path=");
        sb_str(&b, hp->path);
    }
    sb_str(&b, "; HttpOnly");
    *set_cookie = b.s;
    return value;
}

size_t herald_route_hash_policy_count(const struct herald_route *r)
{
    return r ? ROUTE(r)->nhp : 0;
}

bool herald_route_hash(const struct herald_route *r, const struct herald_headers *req, const char *client_ip,
                       const char *cookie_seed, uint64_t *hash, char **set_cookie)
{
    uint64_t h = 0;
    bool have = false;

    r = ROUTE(r);
    if (set_cookie)
        *set_cookie = NULL;
    for (size_t i = 0; i < r->nhp; i++) {
        const struct hash_policy *hp = &r->hp[i];
        uint64_t v = 0;
        bool got = false;
        char *s = NULL;
        switch (hp->kind) {
        case HP_HEADER:
            got = hash_header(hp, req, &v);
            break;
        case HP_COOKIE:
            s = cookie_value(req, hp->name);
            /* one generated cookie per response: a second ttl policy gives no hash */
            if (!s && hp->has_ttl && set_cookie && !*set_cookie)
                s = generate_cookie(hp, cookie_seed ? cookie_seed : client_ip ? client_ip : "", set_cookie);
            break;
        case HP_SOURCE_IP:
            if (hp->source_ip && client_ip && *client_ip) {
                v = XXH64(client_ip, strlen(client_ip), 0);
                got = true;
            }
            break;
        case HP_QUERY: {
            const char *path = HEADERS_GET(req, ":path");
            s = path ? herald_http_query_param(path, hp->name) : NULL;
            break;
        }
        }
        if (s) {
            v = XXH64(s, strlen(s), 0);
            got = true;
            free(s);
        }
        if (got) {
            /* rotating keeps two equal policies from cancelling out */
            h = (have ? (h << 1) | (h >> 63) : 0) ^ v;
            have = true;
        }
        if (hp->terminal && have)
            break;
    }
    if (have && hash)
        *hash = h;
    return have;
}

/* The operators of header values: %REQ()% (%RESP()% for a response) read
 * the map being changed, so that a value added by an earlier entry is seen,
 * as in Envoy; the others are the stream's (none without one). */
struct value_source {
    const struct herald_headers *h;
    const char *own_op;                 /* "REQ" or "RESP" */
    herald_log_field_cb field;
    void *ctx;
};

static const char *value_field(void *arg, const char *op, const char *arg1, char *scratch, size_t len)
{
    struct value_source *vs = arg;
    if (!strcmp(op, vs->own_op)) {
        /* X?Y: the first present of the two, as access logs */
        char name[256];
        const char *alt = arg1 ? strchr(arg1, '?') : NULL;
        size_t n = alt ? (size_t)(alt - arg1) : arg1 ? strlen(arg1) : 0;
        if (!arg1 || n >= sizeof(name))
            return NULL;
        memcpy(name, arg1, n);
        name[n] = '\0';
        const char *v = herald_headers_get(vs->h, name);
        return v ? v : alt ? herald_headers_get(vs->h, alt + 1) : NULL;
    }
    return vs->field ? vs->field(vs->ctx, op, arg1, scratch, len) : NULL;
}

static void apply_ops(const struct hdr_ops *o, struct herald_headers *h, struct value_source *vs)
{
    for (size_t i = 0; i < o->nremove; i++)
        herald_headers_remove(h, o->remove[i]);
    header_options_apply_with(o->add, h, value_field, vs);
}

/* Envoy's order: weighted cluster, route, vhost, route config, so the more
 * general level wins; most_specific_header_mutations_wins reverses it. */
static void apply_levels(const struct herald_route *r, struct herald_headers *h, bool request,
                         herald_log_field_cb field, void *ctx)
{
    struct value_source vs = {.h = h, .own_op = request ? "REQ" : "RESP", .field = field, .ctx = ctx};
    const struct herald_route *route = ROUTE(r);
    const struct mutations *levels[4];
    size_t n = 0;
    if (r->parent)
        levels[n++] = &r->mut;
    levels[n++] = &route->mut;
    levels[n++] = &route->vh->mut;
    levels[n++] = &route->vh->table->mut;
    bool reverse = route->vh->table->most_specific_wins;
    for (size_t i = 0; i < n; i++) {
        const struct mutations *m = levels[reverse ? n - 1 - i : i];
        apply_ops(request ? &m->req : &m->resp, h, &vs);
    }
}

void herald_route_apply_request(const struct herald_route *r, struct herald_headers *req,
                                const char *upstream_hostname)
{
    route_apply_request(r, req, upstream_hostname, NULL, NULL);
}

void route_apply_request(const struct herald_route *r, struct herald_headers *req, const char *upstream_hostname,
                         herald_log_field_cb field, void *ctx)
{
    const struct herald_route *route = ROUTE(r);
    const char *path = HEADERS_GET(req, ":path");
    char *np = path ? rewrite_path(route, path) : NULL;
    if (np) {
        herald_headers_set(req, ":path", np);
        free(np);
    }
    const char *new_host = NULL;
    if (r->host_literal)
        new_host = r->host_literal;
    else if (route->host_literal)
        new_host = route->host_literal;
    else if (route->auto_host && upstream_hostname && *upstream_hostname)
        new_host = upstream_hostname;
    else if (route->host_header)
        new_host = herald_headers_get(req, route->host_header);
    if (new_host && *new_host) {
        char *nh = xstrdup(new_host); /* may point into req */
        const char *old = HEADERS_GET(req, ":authority");
        if (route->append_xfh && old)
            herald_headers_add(req, "x-forwarded-host", old);
        herald_headers_set(req, ":authority", nh);
        free(nh);
    }
    apply_levels(r, req, true, field, ctx);
}

void herald_route_apply_response(const struct herald_route *r, struct herald_headers *resp)
{
    route_apply_response(r, resp, NULL, NULL);
}

void route_apply_response(const struct herald_route *r, struct herald_headers *resp, herald_log_field_cb field,
                          void *ctx)
{
    apply_levels(r, resp, false, field, ctx);
}

/* Envoy's processRequestHost: the request's host, without its port when a
 * new port is given or the scheme changes away from its default port. */
static void redirect_host(struct sbuf *b, const char *host, const char *new_scheme, const char *req_scheme,
                          bool new_port)
{
    const char *colon = NULL;
    if (host[0] == '[') {
        const char *rb = strstr(host, "]:");
        if (rb)
            colon = rb + 1;
    } else {
        colon = strrchr(host, ':');
    }
    if (colon) {
        bool remove = new_port;
        if (strcmp(new_scheme, req_scheme) != 0) {
            remove |= strcmp(req_scheme, "https") == 0 && strcmp(colon, ":443") == 0;
            remove |= strcmp(req_scheme, "http") == 0 && strcmp(colon, ":80") == 0;
        }
        if (remove) {
            sb_add(b, host, (size_t)(colon - host));
            return;
        }
    }
    sb_str(b, host);
}

char *herald_route_redirect_location(const struct herald_route *r, const struct herald_headers *req,
                                     const char *scheme)
{
    r = ROUTE(r);
    const char *req_scheme = scheme && *scheme ? scheme : HEADERS_GET(req, ":scheme");
    if (!req_scheme || !*req_scheme)
        req_scheme = "http";
    const char *final_scheme = r->scheme_redirect ? r->scheme_redirect : req_scheme;
    struct sbuf b = { 0 };
    sb_str(&b, final_scheme);
    sb_str(&b, "://");
    if (r->host_redirect) {
        sb_str(&b, r->host_redirect);
    } else {
        const char *host = HEADERS_GET(req, ":authority");
        redirect_host(&b, host ? host : "", final_scheme, req_scheme, r->port_redirect != 0);
    }
    if (r->port_redirect) {
        char port[16];
        snprintf(port, sizeof(port), ":%u", r->port_redirect);
        sb_str(&b, port);
    }
    const char *path = HEADERS_GET(req, ":path");
    if (!path || !*path)
        path = "/";
    char *rewritten = rewrite_path(r, path);
    const char *final_path = rewritten ? rewritten : path;
    bool redirect_has_query = r->path_redirect && strchr(r->path_redirect, '?');
    size_t pstart = b.n;
    if (r->path_redirect) {
        sb_str(&b, r->path_redirect);
        /* without its own query, the request's query is kept */
        const char *q = strchr(final_path, '?');
        if (!redirect_has_query && q)
            sb_str(&b, q);
    } else {
        sb_str(&b, final_path);
    }
    if (!redirect_has_query && r->strip_query) {
        char *q = strchr(b.s + pstart, '?');
        if (q) {
            *q = '\0';
            b.n = (size_t)(q - b.s);
        }
    }
    free(rewritten);
    return b.s;
}

static void mirror_clusters(const struct mirrors *ms, const struct herald_cfg *at,
                            void (*cb)(const char *cluster, const struct herald_cfg *at, void *arg), void *arg)
{
    for (size_t m = 0; m < ms->n; m++) {
        if (ms->e[m].cluster && *ms->e[m].cluster)
            cb(ms->e[m].cluster, at, arg);
        if (ms->e[m].cluster_header)
            cb(NULL, at, arg);
    }
}

void route_table_foreach_cluster(const struct route_table *t,
                                 void (*cb)(const char *cluster, const struct herald_cfg *at, void *arg), void *arg)
{
    mirror_clusters(&t->mirrors, t->mirrors_node, cb, arg);
    for (size_t v = 0; v < t->nvhosts; v++)
        mirror_clusters(&t->vhosts[v]->mirrors, t->vhosts[v]->mirrors_node, cb, arg);
    for (size_t v = 0; v < t->nvhosts; v++)
        for (size_t i = 0; i < t->vhosts[v]->nroutes; i++) {
            const struct herald_route *r = t->vhosts[v]->routes[i];
            if (r->kind != HERALD_ROUTE_FORWARD)
                continue;
            if (r->cluster && *r->cluster)
                cb(r->cluster, r->node, arg);
            if (r->cluster_header)
                cb(NULL, r->node, arg);
            mirror_clusters(&r->mirrors, r->node, cb, arg);
            for (size_t w = 0; w < r->nwc; w++) {
                if (r->wc[w]->cluster && *r->wc[w]->cluster)
                    cb(r->wc[w]->cluster, r->node, arg);
                if (r->wc[w]->cluster_header)
                    cb(NULL, r->node, arg);
            }
        }
}

/* ------------------------------------------------------------ request_mirror_policies (SDK 1.6) */

/* As Envoy: the most specific level that has any wins whole (route,
 * virtual host, route configuration); lists are not merged. */
static const struct mirrors *mirrors_of(const struct herald_route *r)
{
    r = ROUTE(r);
    if (r->mirrors.n)
        return &r->mirrors;
    return r->vh->mirrors.n ? &r->vh->mirrors : &r->vh->table->mirrors;
}

size_t herald_route_mirror_count(const struct herald_route *r)
{
    return mirrors_of(r)->n;
}

const char *herald_route_mirror_cluster(const struct herald_route *r, size_t i, const struct herald_headers *req,
                                        uint64_t random)
{
    const struct mirrors *ms = mirrors_of(r);
    if (i >= ms->n)
        return NULL;
    const struct mirror *m = &ms->e[i];
    if (m->has_fraction && !runtime_fraction_enabled(m->key, m->num, m->den, random))
        return NULL;
    if (m->cluster)
        return m->cluster;
    const char *v = req && m->cluster_header ? herald_headers_get(req, m->cluster_header) : NULL;
    return v && *v ? v : NULL;
}

bool herald_route_mirror_host_suffix(const struct herald_route *r, size_t i)
{
    const struct mirrors *ms = mirrors_of(r);
    return i < ms->n && ms->e[i].host_suffix;
}

/* ---------------------------------------------------------------- rate limits */

static const struct herald_route *entry_of(const struct herald_route *r)
{
    return r && r->parent ? r->parent : r;   /* a weighted cluster's entry: its route's */
}

const struct herald_rate_limits *herald_route_rate_limits(const struct herald_route *r)
{
    r = entry_of(r);
    return r ? r->rate_limits : NULL;
}

const struct herald_rate_limits *herald_route_vhost_rate_limits(const struct herald_route *r)
{
    r = entry_of(r);
    return r && r->vh ? r->vh->rate_limits : NULL;
}

/* Envoy's VirtualHostImpl::virtualCluster: the first whose headers all
 * match, else the catch-all "other"; NULL when the virtual host has none. */
const char *route_virtual_cluster(const struct herald_route *r, const struct herald_headers *req,
                                  const char **stat_prefix)
{
    r = entry_of(r);
    const struct vhost *vh = r ? r->vh : NULL;
    if (!vh || !vh->nvcs || !req)
        return NULL;
    const struct vcluster *vc = &vh->other;
    for (size_t i = 0; i < vh->nvcs; i++)
        if (headers_all_match(vh->vcs[i].hm, vh->vcs[i].nhm, req)) {
            vc = &vh->vcs[i];
            break;
        }
    *stat_prefix = vc->stat_prefix;
    return vc->name;
}

bool herald_route_include_vh_rate_limits(const struct herald_route *r)
{
    r = entry_of(r);
    return r && r->include_vh_rate_limits;
}

/* ------------------------------------------------------------ SDK regex substitution, cookies */

struct herald_regex_subst { pcre2_code *re; char *subst; };

struct herald_regex_subst *herald_regex_subst_new(const struct herald_cfg *n, char **err)
{
    struct cfg_diag d = {0};
    pcre2_code *re = compile_regex(herald_cfg_get(herald_cfg_get(n, "pattern"), "regex"), &d);
    if (!re) {
        if (err)
            *err = xstrdup(d.nerrors ? d.errors[0] : "bad regex");
        diag_free(&d);
        return NULL;
    }
    diag_free(&d);
    struct herald_regex_subst *r = xcalloc(1, sizeof(*r));
    r->re = re;
    r->subst = xstrdup(herald_cfg_str(herald_cfg_get(n, "substitution"), ""));
    return r;
}

char *herald_regex_subst_apply(const struct herald_regex_subst *r, const char *s)
{
    struct sbuf b = { 0 };
    sb_add(&b, "", 0);
    regex_replace_all(&b, r->re, r->subst, s, strlen(s));
    return b.s;
}

void herald_regex_subst_free(struct herald_regex_subst *r)
{
    if (!r)
        return;
    pcre2_code_free(r->re);
    free(r->subst);
    free(r);
}

char *herald_headers_cookie(const struct herald_headers *h, const char *name)
{
    return h && name ? cookie_value(h, name) : NULL;
}
