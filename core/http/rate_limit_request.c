/* Rate limit descriptors, the request side: what each action says about
 * one request (see rate_limit.h). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config/bootstrap.h"
#include "http/rate_limit.h"
#include "server.h"

/* "10.1.2.0/24" for the client's address masked to len bits, or NULL. */
static char *masked(const char *ip, unsigned v4, unsigned v6)
{
    unsigned char a[16];
    char buf[INET6_ADDRSTRLEN];
    int fam = inet_pton(AF_INET, ip, a) == 1 ? AF_INET : inet_pton(AF_INET6, ip, a) == 1 ? AF_INET6 : 0;
    if (!fam)
        return NULL;
    unsigned bits = fam == AF_INET ? v4 : v6, bytes = fam == AF_INET ? 4 : 16;
    for (unsigned i = 0; i < bytes; i++) {
        unsigned keep = bits >= (i + 1) * 8 ? 8 : bits > i * 8 ? bits - i * 8 : 0;
        a[i] &= (unsigned char)(keep ? 0xffu << (8 - keep) : 0);
    }
    if (!inet_ntop(fam, a, buf, sizeof(buf)))
        return NULL;
    return xasprintf("%s/%u", buf, bits);
}

/* The entry's value (malloc'd); NULL: no entry. *skip: leave the entry out
 * but keep the descriptor. */
static char *action_value(const struct rl_action *a, struct herald_http_stream *s, const struct herald_headers *req,
                          bool *skip)
{
    *skip = false;
    switch (a->kind) {
    case RL_SOURCE_CLUSTER: {
        const char *c = the_server && the_server->boot ? the_server->boot->node_cluster : NULL;
        return xstrdup(c ? c : "");
    }
    case RL_DESTINATION_CLUSTER: {
        const struct herald_route *r = herald_http_stream_route(s);
        const char *c = r ? herald_route_cluster(r, req, 0) : NULL;
        return c ? xstrdup(c) : NULL;
    }
    case RL_REQUEST_HEADER: {
        char *v = herald_headers_get_all(req, a->name);
        *skip = !v && a->skip_if_absent;
        return v;
    }
    case RL_QUERY_PARAMETER: {
        char *v = herald_http_query_param(herald_headers_get(req, ":path"), a->name);
        *skip = !v && a->skip_if_absent;
        return v;
    }
    case RL_REMOTE_ADDRESS: {
        const char *ip = herald_http_stream_downstream_address(s);
        return ip && *ip ? xstrdup(ip) : NULL;
    }
    case RL_MASKED_REMOTE_ADDRESS: {
        const char *ip = herald_http_stream_downstream_address(s);
        return ip ? masked(ip, a->v4_mask, a->v6_mask) : NULL;
    }
    case RL_GENERIC_KEY:
        return xstrdup(a->value);
    case RL_HEADER_VALUE_MATCH: {
        bool all = true;
        for (size_t i = 0; i < a->nhm && all; i++)
            all = herald_header_matcher_match(a->hm[i], req);
        return all == a->expect_match ? xstrdup(a->value) : NULL;
    }
    }
    return NULL;
}

void herald_rate_limits_populate(const struct herald_rate_limits *rl, uint32_t stage, struct herald_http_stream *s,
                                 const struct herald_headers *req, struct herald_rl_descriptors *out)
{
    if (!rl || !out)
        return;
    for (size_t i = 0; i < rl->n; i++) {
        const struct rl_rate_limit *r = &rl->e[i];
        if (r->stage != stage)
            continue;
        if (r->disable_key && !herald_runtime_feature_enabled(r->disable_key, 100, 100))
            continue;
        struct herald_rl_entry *entries = xcalloc(r->nactions ? r->nactions : 1, sizeof(*entries));
        size_t n = 0;
        bool dropped = false;
        for (size_t j = 0; j < r->nactions && !dropped; j++) {
            bool skip;
            char *v = action_value(&r->actions[j], s, req, &skip);
            if (v) {
                entries[n].key = xstrdup(r->actions[j].key);
                entries[n++].value = v;
            } else if (!skip) {
                dropped = true;
            }
        }
        if (dropped || n == 0) {
            for (size_t j = 0; j < n; j++) {
                free((char *)entries[j].key);
                free((char *)entries[j].value);
            }
            free(entries);
            continue;
        }
        if (out->n == out->cap) {
            out->cap = out->cap ? out->cap * 2 : 4;
            out->d = realloc(out->d, out->cap * sizeof(*out->d));
            if (!out->d)
                abort();
        }
        out->d[out->n++] = (struct herald_rl_descriptor){.entries = entries, .n = n};
    }
}
