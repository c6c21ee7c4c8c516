/* rbac: building and evaluating policies (pure: libc and PCRE2 only). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cel.h"
#include "xalloc.h"
#include "matcher.h"
#include "xmatcher.h"

static void push(void ***arr, size_t *n, void *item)
{
    void **a = realloc(*arr, (*n + 1) * sizeof(*a));
    if (!a)
        abort();
    a[(*n)++] = item;
    *arr = a;
}

/* ---------------------------------------------------------------- strings */

int rbac_str_init(struct rbac_str_matcher *m, enum rbac_str_kind kind, const char *value, bool ignore_case,
                  char **err)
{
    memset(m, 0, sizeof(*m));
    m->kind = kind;
    m->value = xstrdup(value ? value : "");
    m->ignore_case = ignore_case;
    if (kind != RBAC_STR_REGEX)
        return 0;
    int code;
    PCRE2_SIZE off;
    /* safe_regex is a full match (RE2::FullMatch) */
    uint32_t opts = PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_UTF | PCRE2_MATCH_INVALID_UTF |
                    (ignore_case ? PCRE2_CASELESS : 0);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)m->value, PCRE2_ZERO_TERMINATED, opts, &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof(msg));
        if (err && asprintf(err, "invalid regex '%s' at offset %zu: %s", m->value, (size_t)off,
                            (char *)msg) < 0)
            *err = NULL;
        free(m->value);
        m->value = NULL;
        return -1;
    }
    m->re = re;
    return 0;
}

void rbac_str_fini(struct rbac_str_matcher *m)
{
    if (m->re)
        pcre2_code_free(m->re);
    free(m->value);
    m->re = NULL;
    m->value = NULL;
}

/* ASCII case folding, as Envoy's ignore_case (absl::EqualsIgnoreCase). */
static bool bytes_equal(const char *a, const char *b, size_t n, bool icase)
{
    if (!icase)
        return memcmp(a, b, n) == 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z')
            x += 'a' - 'A';
        if (y >= 'A' && y <= 'Z')
            y += 'a' - 'A';
        if (x != y)
            return false;
    }
    return true;
}

bool rbac_str_match_n(const struct rbac_str_matcher *m, const char *s, size_t len)
{
    if (!s || !m->value)
        return false;
    size_t vl = strlen(m->value);
    switch (m->kind) {
    case RBAC_STR_EXACT:
        return len == vl && bytes_equal(s, m->value, vl, m->ignore_case);
    case RBAC_STR_PREFIX:
        return len >= vl && bytes_equal(s, m->value, vl, m->ignore_case);
    case RBAC_STR_SUFFIX:
        return len >= vl && bytes_equal(s + len - vl, m->value, vl, m->ignore_case);
    case RBAC_STR_CONTAINS:
        for (size_t i = 0; i + vl <= len; i++)
            if (bytes_equal(s + i, m->value, vl, m->ignore_case))
                return true;
        return false;
    case RBAC_STR_REGEX: {
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(m->re, NULL);
        if (!md)
            return false;
        int rc = pcre2_match(m->re, (PCRE2_SPTR)s, len, 0, 0, md, NULL);
        pcre2_match_data_free(md);
        return rc >= 0;
    }
    }
    return false;
}

bool rbac_str_match(const struct rbac_str_matcher *m, const char *s)
{
    return s && rbac_str_match_n(m, s, strlen(s));
}

/* ---------------------------------------------------------------- addresses */

int rbac_ip_parse(struct rbac_ip *ip, const char *s)
{
    memset(ip, 0, sizeof(*ip));
    if (!s)
        return -1;
    if (inet_pton(AF_INET, s, ip->addr) == 1) {
        ip->family = AF_INET;
        return 0;
    }
    /* "[::1]" as some callers print it */
    char buf[64];
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']' && n - 2 < sizeof(buf)) {
        memcpy(buf, s + 1, n - 2);
        buf[n - 2] = '\0';
        s = buf;
    }
    if (inet_pton(AF_INET6, s, ip->addr) == 1) {
        ip->family = AF_INET6;
        return 0;
    }
    return -1;
}

int rbac_ip_from_sockaddr(struct rbac_ip *ip, const struct sockaddr *sa)
{
    memset(ip, 0, sizeof(*ip));
    if (!sa)
        return -1;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        ip->family = AF_INET;
        memcpy(ip->addr, &in->sin_addr, 4);
        ip->port = ntohs(in->sin_port);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        ip->port = ntohs(in6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            ip->family = AF_INET;
            memcpy(ip->addr, (const uint8_t *)&in6->sin6_addr + 12, 4);
        } else {
            ip->family = AF_INET6;
            memcpy(ip->addr, &in6->sin6_addr, 16);
        }
        return 0;
    }
    return -1;
}

int rbac_cidr_init(struct rbac_cidr *c, const char *address_prefix, int64_t prefix_len, char **err)
{
    struct rbac_ip ip;

    memset(c, 0, sizeof(*c));
    if (rbac_ip_parse(&ip, address_prefix) < 0) {
        if (err && asprintf(err, "'%s' is not an IP address", address_prefix ? address_prefix : "") < 0)
            *err = NULL;
        return -1;
    }
    unsigned max = ip.family == AF_INET ? 32 : 128;
    if (prefix_len > (int64_t)max) {
        if (err && asprintf(err, "prefix_len %lld is longer than the address (%u bits)",
                            (long long)prefix_len, max) < 0)
            *err = NULL;
        return -1;
    }
    c->family = ip.family;
    memcpy(c->addr, ip.addr, sizeof(c->addr));
    c->prefix_len = prefix_len < 0 ? max : (unsigned)prefix_len;
    return 0;
}

bool rbac_cidr_match(const struct rbac_cidr *c, const struct rbac_ip *ip)
{
    if (!ip || ip->family != c->family)
        return false;
    unsigned full = c->prefix_len / 8, rest = c->prefix_len % 8;
    if (memcmp(c->addr, ip->addr, full) != 0)
        return false;
    if (rest) {
        uint8_t mask = (uint8_t)(0xffu << (8 - rest));
        if ((c->addr[full] & mask) != (ip->addr[full] & mask))
            return false;
    }
    return true;
}

/* ---------------------------------------------------------------- rules */

struct rbac_rule *rbac_rule_new(enum rbac_rule_kind kind)
{
    struct rbac_rule *r = xcalloc(1, sizeof(*r));
    r->kind = kind;
    return r;
}

void rbac_rule_add(struct rbac_rule *r, struct rbac_rule *sub)
{
    push((void ***)&r->subs, &r->nsubs, sub);
}

void rbac_rule_free(struct rbac_rule *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nsubs; i++)
        rbac_rule_free(r->subs[i]);
    free(r->subs);
    free(r->hdr.name);
    free(r->md.filter);
    free(r->md.key);
    rbac_str_fini(&r->md.str);
    rbac_str_fini(&r->hdr.str);
    rbac_str_fini(&r->str);
    free(r);
}

static bool parse_int64(const char *s, int64_t *out)
{
    char *end;
    if (!*s)
        return false;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* Envoy's HeaderUtility::matchHeaders. */
static bool header_match(const struct rbac_header_matcher *h, const struct rbac_ctx *ctx)
{
    char *v = ctx->header ? ctx->header(ctx->arg, h->name) : NULL;

    if (!v && !h->missing_as_empty) {
        /* an absent header only satisfies present_match: false (or its inversion) */
        return h->kind == RBAC_HDR_PRESENT && h->present == h->invert;
    }
    const char *val = v ? v : "";
    bool m = false;
    switch (h->kind) {
    case RBAC_HDR_STRING:
        m = rbac_str_match(&h->str, val);
        break;
    case RBAC_HDR_PRESENT:
        m = h->present;
        break;
    case RBAC_HDR_RANGE: {
        int64_t n;
        m = parse_int64(val, &n) && n >= h->range_start && n < h->range_end;
        break;
    }
    }
    free(v);
    return m != h->invert;
}

static bool path_match(const struct rbac_str_matcher *m, const char *path)
{
    if (!path)
        return false;
    size_t n = strcspn(path, "?#");
    if (!path[n])
        return rbac_str_match(m, path);
    char *p = strndup(path, n);
    if (!p)
        abort();
    bool r = rbac_str_match(m, p);
    free(p);
    return r;
}

bool rbac_md_match(const struct rbac_md_matcher *m, const struct rbac_ctx *ctx)
{
    const char *v = ctx->metadata ? ctx->metadata(ctx->md_arg, m->filter, m->key) : NULL;
    bool hit = false;

    /* "" is how a publisher withdraws a key: absent */
    if (v && !*v)
        v = NULL;
    switch (m->kind) {
    case RBAC_MD_PRESENT:
        hit = (v != NULL) == m->present;
        break;
    case RBAC_MD_STRING:
        hit = v && rbac_str_match(&m->str, v);
        break;
    case RBAC_MD_LIST:
        for (const char *p = v; p && !hit;) {
            size_t n = strcspn(p, ",");
            char item[256];
            if (n < sizeof(item)) {
                memcpy(item, p, n);
                item[n] = 0;
                hit = rbac_str_match(&m->str, item);
            }
            p = p[n] ? p + n + 1 : NULL;
        }
        break;
    }
    return hit != m->invert;
}

struct name_visit {
    const struct rbac_str_matcher *m;
    bool seen;
};

static bool name_matches(void *arg, const char *v, size_t len)
{
    struct name_visit *nv = arg;
    nv->seen = true;
    return rbac_str_match_n(nv->m, v, len);
}

/* Envoy's AuthenticatedMatcher: any TLS connection is "authenticated" (a
 * client certificate is not required); with principal_name, any URI SAN,
 * else any DNS SAN, else the subject must match, and a connection without a
 * peer certificate has the subject "". */
static bool authenticated_match(const struct rbac_rule *r, const struct rbac_ctx *ctx)
{
    if (!ctx->tls)
        return false;
    if (!r->has_name)
        return true;
    if (!ctx->peer_names)
        return rbac_str_match_n(&r->str, "", 0);
    struct name_visit nv = {.m = &r->str};
    if (ctx->peer_names(ctx->peer_arg, RBAC_CERT_URI_SAN, name_matches, &nv) ||
        ctx->peer_names(ctx->peer_arg, RBAC_CERT_DNS_SAN, name_matches, &nv))
        return true;
    nv.seen = false;
    if (ctx->peer_names(ctx->peer_arg, RBAC_CERT_SUBJECT, name_matches, &nv))
        return true;
    return !nv.seen && rbac_str_match_n(&r->str, "", 0);
}

bool rbac_rule_match(const struct rbac_rule *r, const struct rbac_ctx *ctx)
{
    switch (r->kind) {
    case RBAC_ANY:
        return true;
    case RBAC_AND:
        for (size_t i = 0; i < r->nsubs; i++)
            if (!rbac_rule_match(r->subs[i], ctx))
                return false;
        return true;
    case RBAC_OR:
        for (size_t i = 0; i < r->nsubs; i++)
            if (rbac_rule_match(r->subs[i], ctx))
                return true;
        return false;
    case RBAC_NOT:
        return r->nsubs == 1 && !rbac_rule_match(r->subs[0], ctx);
    case RBAC_HEADER:
        return header_match(&r->hdr, ctx);
    case RBAC_URL_PATH:
        return path_match(&r->str, ctx->path);
    case RBAC_DST_IP:
        return rbac_cidr_match(&r->cidr, ctx->local);
    case RBAC_DST_PORT:
        return ctx->local && ctx->local->family && ctx->local->port >= r->port_lo &&
               ctx->local->port <= r->port_hi;
    case RBAC_SNI:
        /* Envoy matches "" when there is no SNI */
        return rbac_str_match(&r->str, ctx->sni ? ctx->sni : "");
    case RBAC_REMOTE_IP:
        return rbac_cidr_match(&r->cidr, ctx->remote);
    case RBAC_DIRECT_REMOTE_IP:
        return rbac_cidr_match(&r->cidr, ctx->direct_remote);
    case RBAC_METADATA:
        return rbac_md_match(&r->md, ctx);
    case RBAC_AUTHENTICATED:
        return authenticated_match(r, ctx);
    }
    return false;
}

/* ---------------------------------------------------------------- engines */

struct rbac_engine *rbac_engine_new(enum rbac_action action)
{
    struct rbac_engine *e = xcalloc(1, sizeof(*e));
    e->action = action;
    return e;
}

struct rbac_policy *rbac_engine_add_policy(struct rbac_engine *e, const char *name)
{
    struct rbac_policy *p = realloc(e->policies, (e->npolicies + 1) * sizeof(*p));
    if (!p)
        abort();
    e->policies = p;
    p = &e->policies[e->npolicies++];
    memset(p, 0, sizeof(*p));
    p->name = xstrdup(name ? name : "");
    return p;
}

void rbac_policy_add_permission(struct rbac_policy *p, struct rbac_rule *r)
{
    push((void ***)&p->perms, &p->nperms, r);
}

void rbac_policy_add_principal(struct rbac_policy *p, struct rbac_rule *r)
{
    push((void ***)&p->ids, &p->nids, r);
}

static int policy_cmp(const void *a, const void *b)
{
    return strcmp(((const struct rbac_policy *)a)->name, ((const struct rbac_policy *)b)->name);
}

void rbac_engine_finish(struct rbac_engine *e)
{
    if (e->npolicies > 1)
        qsort(e->policies, e->npolicies, sizeof(*e->policies), policy_cmp);
}

struct rbac_engine *rbac_engine_new_tree(struct rbac_xmatcher *tree)
{
    struct rbac_engine *e = xcalloc(1, sizeof(*e));
    e->tree = tree;
    e->tree_logs = rbac_xmatcher_has_log(tree);
    return e;
}

void rbac_engine_free(struct rbac_engine *e)
{
    if (!e)
        return;
    rbac_xmatcher_free(e->tree);
    for (size_t i = 0; i < e->npolicies; i++) {
        struct rbac_policy *p = &e->policies[i];
        for (size_t j = 0; j < p->nperms; j++)
            rbac_rule_free(p->perms[j]);
        for (size_t j = 0; j < p->nids; j++)
            rbac_rule_free(p->ids[j]);
        free(p->perms);
        free(p->ids);
        free(p->name);
        cel_expr_free(p->condition);
    }
    free(e->policies);
    free(e);
}

static bool any_match(struct rbac_rule *const *rules, size_t n, const struct rbac_ctx *ctx)
{
    for (size_t i = 0; i < n; i++)
        if (rbac_rule_match(rules[i], ctx))
            return true;
    return false;
}

const struct rbac_policy *rbac_engine_match(const struct rbac_engine *e, const struct rbac_ctx *ctx)
{
    for (size_t i = 0; i < e->npolicies; i++) {
        const struct rbac_policy *p = &e->policies[i];
        if (any_match(p->perms, p->nperms, ctx) && any_match(p->ids, p->nids, ctx) &&
            (!p->condition || cel_true(p->condition, ctx)))
            return p;
    }
    return NULL;
}

void rbac_engine_decide(const struct rbac_engine *e, const struct rbac_ctx *ctx, struct rbac_verdict *v)
{
    v->log_hint = -1;
    if (e->tree) {
        const struct rbac_on_match *om = rbac_xmatch(e->tree, ctx);
        v->policy = om ? om->action_name : NULL;
        v->allowed = om && om->action != RBAC_DENY;
        if (e->tree_logs)
            v->log_hint = om && om->action == RBAC_LOG;
        return;
    }
    const struct rbac_policy *p = rbac_engine_match(e, ctx);
    v->policy = p ? p->name : NULL;
    switch (e->action) {
    case RBAC_ALLOW:
        v->allowed = p != NULL;
        break;
    case RBAC_DENY:
        v->allowed = p == NULL;
        break;
    case RBAC_LOG:
        v->allowed = true;
        v->log_hint = p != NULL;
        break;
    }
}

bool rbac_engine_allowed(const struct rbac_engine *e, const struct rbac_ctx *ctx, const char **policy)
{
    struct rbac_verdict v;
    rbac_engine_decide(e, ctx, &v);
    if (policy)
        *policy = v.policy;
    return v.allowed;
}

const char *rbac_action_name(enum rbac_action a)
{
    return a == RBAC_ALLOW ? "ALLOW" : a == RBAC_DENY ? "DENY" : "LOG";
}
