/* rbac: evaluating the unified matcher tree (see xmatcher.h). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"
#include "xmatcher.h"

/* ---------------------------------------------------------------- inputs */

bool rbac_input_is_http(enum rbac_input_kind kind)
{
    return kind == RBAC_IN_REQUEST_HEADER || kind == RBAC_IN_QUERY_PARAM;
}

static char *ip_string(const struct rbac_ip *ip)
{
    char buf[INET6_ADDRSTRLEN];
    if (!ip || !ip->family || !inet_ntop(ip->family, ip->addr, buf, sizeof(buf)))
        return NULL;
    return xstrdup(buf);
}

static char *port_string(const struct rbac_ip *ip)
{
    char buf[8];
    if (!ip || !ip->family)
        return NULL;
    snprintf(buf, sizeof(buf), "%u", (unsigned)ip->port);
    return xstrdup(buf);
}

struct joined {
    char *s;
    size_t len;
};

/* Collects each name of one kind into a ","-joined string (never stops early). */
static bool join_name(void *arg, const char *v, size_t len)
{
    struct joined *j = arg;
    char *s = realloc(j->s, j->len + len + 2);
    if (!s)
        abort();
    if (j->len)
        s[j->len++] = ',';
    memcpy(s + j->len, v, len);
    j->len += len;
    s[j->len] = '\0';
    j->s = s;
    return false;
}

static char *cert_names(const struct rbac_ctx *ctx, int which)
{
    struct joined j = {0};
    if (!ctx->tls || !ctx->peer_names)
        return NULL;
    ctx->peer_names(ctx->peer_arg, which, join_name, &j);
    if (j.s && !*j.s) {
        free(j.s);
        return NULL;
    }
    return j.s;
}

static bool is_local_source(const struct rbac_ctx *ctx)
{
    const struct rbac_ip *r = ctx->remote;
    static const uint8_t v6_loopback[16] = {[15] = 1};

    if (!r || !r->family)
        return false;
    if (r->family == AF_INET && r->addr[0] == 127)
        return true;
    if (r->family == AF_INET6 && !memcmp(r->addr, v6_loopback, 16))
        return true;
    return ctx->local && ctx->local->family == r->family &&
           !memcmp(ctx->local->addr, r->addr, r->family == AF_INET ? 4 : 16);
}

char *rbac_input_value(const struct rbac_input *in, const struct rbac_ctx *ctx)
{
    switch (in->kind) {
    case RBAC_IN_REQUEST_HEADER:
        return ctx->header ? ctx->header(ctx->arg, in->arg) : NULL;
    case RBAC_IN_QUERY_PARAM:
        return ctx->query && ctx->path ? ctx->query(ctx->path, in->arg) : NULL;
    case RBAC_IN_DESTINATION_IP:
        return ip_string(ctx->local);
    case RBAC_IN_DESTINATION_PORT:
        return port_string(ctx->local);
    case RBAC_IN_SOURCE_IP:
        return ip_string(ctx->remote);
    case RBAC_IN_SOURCE_PORT:
        return port_string(ctx->remote);
    case RBAC_IN_DIRECT_SOURCE_IP:
        return ip_string(ctx->direct_remote);
    case RBAC_IN_SOURCE_TYPE:
        return is_local_source(ctx) ? xstrdup("local") : NULL;
    case RBAC_IN_SERVER_NAME:
        return ctx->sni && *ctx->sni ? xstrdup(ctx->sni) : NULL;
    case RBAC_IN_TRANSPORT_PROTOCOL:
        return xstrdup(ctx->tls ? "tls" : "raw_buffer");
    case RBAC_IN_URI_SAN:
        return cert_names(ctx, RBAC_CERT_URI_SAN);
    case RBAC_IN_DNS_SAN:
        return cert_names(ctx, RBAC_CERT_DNS_SAN);
    case RBAC_IN_SUBJECT:
        return cert_names(ctx, RBAC_CERT_SUBJECT);
    }
    return NULL;
}

/* ---------------------------------------------------------------- predicates */

struct rbac_pred *rbac_pred_new(enum rbac_pred_kind kind)
{
    struct rbac_pred *p = xcalloc(1, sizeof(*p));
    p->kind = kind;
    return p;
}

void rbac_pred_add(struct rbac_pred *p, struct rbac_pred *sub)
{
    struct rbac_pred **s = realloc(p->subs, (p->nsubs + 1) * sizeof(*s));
    if (!s)
        abort();
    s[p->nsubs++] = sub;
    p->subs = s;
}

void rbac_pred_free(struct rbac_pred *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->nsubs; i++)
        rbac_pred_free(p->subs[i]);
    free(p->subs);
    free(p->in.arg);
    rbac_str_fini(&p->str);
    free(p->cidrs);
    free(p);
}

static bool single_match(const struct rbac_pred *p, const struct rbac_ctx *ctx)
{
    char *v = rbac_input_value(&p->in, ctx);
    bool hit = false;

    if (!v)
        return false;
    if (p->is_ip) {
        struct rbac_ip ip;
        if (rbac_ip_parse(&ip, v) == 0)
            for (size_t i = 0; i < p->ncidrs && !hit; i++)
                hit = rbac_cidr_match(&p->cidrs[i], &ip);
    } else {
        hit = rbac_str_match(&p->str, v);
    }
    free(v);
    return hit;
}

bool rbac_pred_match(const struct rbac_pred *p, const struct rbac_ctx *ctx)
{
    switch (p->kind) {
    case RBAC_PRED_SINGLE:
        return single_match(p, ctx);
    case RBAC_PRED_OR:
        for (size_t i = 0; i < p->nsubs; i++)
            if (rbac_pred_match(p->subs[i], ctx))
                return true;
        return false;
    case RBAC_PRED_AND:
        for (size_t i = 0; i < p->nsubs; i++)
            if (!rbac_pred_match(p->subs[i], ctx))
                return false;
        return true;
    case RBAC_PRED_NOT:
        return p->nsubs == 1 && !rbac_pred_match(p->subs[0], ctx);
    }
    return false;
}

/* ---------------------------------------------------------------- matchers */

struct rbac_xmatcher *rbac_xmatcher_new(enum rbac_xm_kind kind)
{
    struct rbac_xmatcher *m = xcalloc(1, sizeof(*m));
    m->kind = kind;
    return m;
}

struct rbac_xm_field *rbac_xmatcher_add_field(struct rbac_xmatcher *m)
{
    struct rbac_xm_field *f = realloc(m->fields, (m->nfields + 1) * sizeof(*f));
    if (!f)
        abort();
    m->fields = f;
    f = &m->fields[m->nfields++];
    memset(f, 0, sizeof(*f));
    return f;
}

struct rbac_xm_entry *rbac_xmatcher_add_entry(struct rbac_xmatcher *m, const char *key)
{
    struct rbac_xm_entry *e = realloc(m->entries, (m->nentries + 1) * sizeof(*e));
    if (!e)
        abort();
    m->entries = e;
    e = &m->entries[m->nentries++];
    memset(e, 0, sizeof(*e));
    e->key = xstrdup(key ? key : "");
    return e;
}

static int longest_first(const void *a, const void *b)
{
    size_t la = strlen(((const struct rbac_xm_entry *)a)->key), lb = strlen(((const struct rbac_xm_entry *)b)->key);
    return la < lb ? 1 : la > lb ? -1 : 0;
}

void rbac_xmatcher_finish(struct rbac_xmatcher *m)
{
    if (m->kind == RBAC_XM_PREFIX && m->nentries > 1)
        qsort(m->entries, m->nentries, sizeof(*m->entries), longest_first);
}

void rbac_on_match_fini(struct rbac_on_match *om)
{
    rbac_xmatcher_free(om->matcher);
    free(om->action_name);
    memset(om, 0, sizeof(*om));
}

void rbac_xmatcher_free(struct rbac_xmatcher *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nfields; i++) {
        rbac_pred_free(m->fields[i].pred);
        rbac_on_match_fini(&m->fields[i].on_match);
    }
    for (size_t i = 0; i < m->nentries; i++) {
        free(m->entries[i].key);
        rbac_on_match_fini(&m->entries[i].on_match);
    }
    free(m->fields);
    free(m->entries);
    free(m->in.arg);
    rbac_on_match_fini(&m->on_no_match);
    free(m);
}

static const struct rbac_on_match *on_match(const struct rbac_on_match *om, const struct rbac_ctx *ctx)
{
    if (!om->set || om->keep_matching)
        return NULL;
    if (om->matcher)
        return rbac_xmatch(om->matcher, ctx);
    return om;
}

const struct rbac_on_match *rbac_xmatch(const struct rbac_xmatcher *m, const struct rbac_ctx *ctx)
{
    const struct rbac_on_match *r = NULL;

    switch (m->kind) {
    case RBAC_XM_LIST:
        for (size_t i = 0; i < m->nfields && !r; i++)
            if (rbac_pred_match(m->fields[i].pred, ctx))
                r = on_match(&m->fields[i].on_match, ctx);
        break;
    case RBAC_XM_EXACT:
    case RBAC_XM_PREFIX: {
        char *v = rbac_input_value(&m->in, ctx);
        if (!v)
            break;
        size_t vlen = strlen(v);
        for (size_t i = 0; i < m->nentries && !r; i++) {
            const char *k = m->entries[i].key;
            size_t klen = strlen(k);
            bool hit = m->kind == RBAC_XM_EXACT ? klen == vlen && !memcmp(k, v, vlen)
                                                : klen <= vlen && !memcmp(k, v, klen);
            if (hit)
                r = on_match(&m->entries[i].on_match, ctx);
        }
        free(v);
        break;
    }
    case RBAC_XM_NONE:
        break;
    }
    return r ? r : on_match(&m->on_no_match, ctx);
}

static bool on_match_has_log(const struct rbac_on_match *om)
{
    if (!om->set)
        return false;
    return om->matcher ? rbac_xmatcher_has_log(om->matcher) : om->action == RBAC_LOG;
}

bool rbac_xmatcher_has_log(const struct rbac_xmatcher *m)
{
    for (size_t i = 0; i < m->nfields; i++)
        if (on_match_has_log(&m->fields[i].on_match))
            return true;
    for (size_t i = 0; i < m->nentries; i++)
        if (on_match_has_log(&m->entries[i].on_match))
            return true;
    return on_match_has_log(&m->on_no_match);
}
