#include "config.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "herald/stats.h"
#include "log.h"
#include "net/connection.h"
#include "net/listener.h"
#include "net/tls.h"
#include "reload.h"
#include "overload.h"
#include "server.h"
#include "worker.h"

static struct listener *listeners;
static size_t nlisteners;

size_t listeners_count(void) { return nlisteners; }
struct listener *listeners_get(size_t i) { return i < nlisteners ? &listeners[i] : NULL; }

/* Envoy names listener stats by address with ':' turned into '_'. */
static char *stat_prefix_for(const struct listener_cfg *cfg)
{
    if (cfg->stat_prefix && *cfg->stat_prefix)
        return xasprintf("listener.%s", cfg->stat_prefix);
    char *p = xasprintf("listener.%s_%u", cfg->address.host ? cfg->address.host : "", cfg->address.port);
    for (char *q = p + strlen("listener."); *q; q++)
        if (*q == ':')
            *q = '_';
    return p;
}

static int parse_ranges(const struct cidr_cfg *in, size_t n, struct cidr **out, const struct herald_cfg *at,
                        struct cfg_diag *d)
{
    *out = n ? xcalloc(n, sizeof(**out)) : NULL;
    for (size_t i = 0; i < n; i++)
        if (cidr_from_parts(in[i].prefix, in[i].len, &(*out)[i]) < 0) {
            diag_error(d, at, "invalid CIDR range %s/%u", in[i].prefix, in[i].len);
            return -1;
        }
    return 0;
}

static void make_stats(struct listener *l, unsigned nworkers)
{
    struct listener_stats *s = &l->stats;
    const char *p = l->stat_prefix;
    s->downstream_cx_total = herald_counter(p, "downstream_cx_total");
    s->downstream_cx_destroy = herald_counter(p, "downstream_cx_destroy");
    s->downstream_cx_active = herald_gauge(p, "downstream_cx_active");
    s->downstream_cx_length_ms = herald_histogram(p, "downstream_cx_length_ms");
    s->no_filter_chain_match = herald_counter(p, "no_filter_chain_match");
    s->downstream_pre_cx_active = herald_gauge(p, "downstream_pre_cx_active");
    s->downstream_pre_cx_timeout = herald_counter(p, "downstream_pre_cx_timeout");
    s->downstream_cx_overflow = herald_counter(p, "downstream_cx_overflow");
    s->downstream_global_cx_overflow = herald_counter(p, "downstream_global_cx_overflow");
    const struct herald_cfg *igl = herald_cfg_get(l->cfg->node, "ignore_global_conn_limit");
    l->ignore_global_conn_limit = herald_cfg_bool(igl, false);
    s->downstream_cx_overload_reject = herald_counter(p, "downstream_cx_overload_reject");
    l->bypass_overload_manager = herald_cfg_bool(herald_cfg_get(l->cfg->node, "bypass_overload_manager"), false);
    const char *dir = herald_cfg_str(herald_cfg_get(l->cfg->node, "traffic_direction"), "UNSPECIFIED");
    l->outbound = !strcmp(dir, "OUTBOUND");
    s->downstream_cx_transport_socket_connect_timeout =
        herald_counter(p, "downstream_cx_transport_socket_connect_timeout");
    s->worker_cx_total = xcalloc(nworkers, sizeof(*s->worker_cx_total));
    s->worker_cx_active = xcalloc(nworkers, sizeof(*s->worker_cx_active));
    for (unsigned i = 0; i < nworkers; i++) {
        char name[64];
        snprintf(name, sizeof(name), "worker_%u.downstream_cx_total", i);
        s->worker_cx_total[i] = herald_counter(p, name);
        snprintf(name, sizeof(name), "worker_%u.downstream_cx_active", i);
        s->worker_cx_active[i] = herald_gauge(p, name);
    }
}

static int build_tls(const struct filter_chain_cfg *fcc, const struct listener *l, struct tls_ctx **out,
                     bool validate_only, struct cfg_diag *d)
{
    *out = NULL;
    if (!fcc->transport_socket)
        return 0;
    size_t before = d->nerrors;
    *out = tls_server_new(fcc->transport_socket, fcc->node, l->stat_prefix, validate_only, d);
    return d->nerrors > before ? -1 : 0;
}

int listeners_build(const struct bootstrap *b, unsigned nworkers, bool validate_only, struct cfg_diag *d)
{
    int rc = 0;
    listeners = xcalloc(b->nlisteners ? b->nlisteners : 1, sizeof(*listeners));
    nlisteners = b->nlisteners;
    for (size_t i = 0; i < b->nlisteners; i++) {
        const struct listener_cfg *cfg = &b->listeners[i];
        struct listener *l = &listeners[i];
        l->cfg = cfg;
        l->nworkers = nworkers;
        l->name = xstrdup(cfg->name && *cfg->name ? cfg->name : "");
        l->stat_prefix = stat_prefix_for(cfg);
        if (!*l->name) {
            free(l->name);
            l->name = xstrdup(l->stat_prefix + strlen("listener."));
        }
        if (cfg->address.pipe) {
            diag_error(d, cfg->address.node, "not supported: pipe (unix socket) listener addresses");
            rc = -1;
        } else {
            struct sockaddr_storage ss;
            socklen_t len;
            if (!cfg->address.host || addr_from_ip(cfg->address.host, cfg->address.port, &ss, &len) < 0) {
                diag_error(d, cfg->address.node, "listener address '%s' is not an IP address",
                           cfg->address.host ? cfg->address.host : "");
                rc = -1;
            }
        }
        l->chains = xcalloc(cfg->nchains ? cfg->nchains : 1, sizeof(*l->chains));
        l->matches = xcalloc(cfg->nchains ? cfg->nchains : 1, sizeof(*l->matches));
        l->nchains = cfg->nchains;
        l->chain_tls = xcalloc(cfg->nchains ? cfg->nchains : 1, sizeof(*l->chain_tls));
        for (size_t c = 0; c < cfg->nchains; c++) {
            const struct filter_chain_cfg *fcc = &cfg->chains[c];
            if (build_tls(fcc, l, &l->chain_tls[c], validate_only, d) < 0)
                rc = -1;
            if (filter_chain_build(&l->chains[c], fcc, l->name, b, validate_only, nworkers, d) < 0)
                rc = -1;
            if (parse_ranges(fcc->match.prefix_ranges, fcc->match.nprefix_ranges, &l->matches[c].prefix_ranges,
                             fcc->node, d) < 0 ||
                parse_ranges(fcc->match.source_prefix_ranges, fcc->match.nsource_prefix_ranges,
                             &l->matches[c].source_ranges, fcc->node, d) < 0 ||
                parse_ranges(fcc->match.direct_source_prefix_ranges, fcc->match.ndirect_source_prefix_ranges,
                             &l->matches[c].direct_source_ranges, fcc->node, d) < 0)
                rc = -1;
            l->matches[c].nprefix = fcc->match.nprefix_ranges;
            l->matches[c].nsource = fcc->match.nsource_prefix_ranges;
            l->matches[c].ndirect_source = fcc->match.ndirect_source_prefix_ranges;
        }
        if (cfg->default_chain) {
            l->default_chain = xcalloc(1, sizeof(*l->default_chain));
            if (build_tls(cfg->default_chain, l, &l->default_tls, validate_only, d) < 0)
                rc = -1;
            if (filter_chain_build(l->default_chain, cfg->default_chain, l->name, b, validate_only, nworkers, d) < 0)
                rc = -1;
        }
        l->lfilters = xcalloc(cfg->nlistener_filters ? cfg->nlistener_filters : 1, sizeof(*l->lfilters));
        for (size_t f = 0; f < cfg->nlistener_filters; f++) {
            if (listener_filter_build(&l->lfilters[l->nlfilters], &cfg->listener_filters[f], l->name, b,
                                      validate_only, d) < 0)
                rc = -1;
            else
                l->nlfilters++;
        }
        if (!validate_only)
            make_stats(l, nworkers);
    }
    return rc;
}

static int bind_one(const struct listener_cfg *cfg, uint16_t port, char **err)
{
    struct sockaddr_storage ss;
    socklen_t len;
    addr_from_ip(cfg->address.host, port, &ss, &len);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = xasprintf("socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (cfg->reuse_port)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, (int)(cfg->backlog ? cfg->backlog : 1024)) < 0) {
        *err = xasprintf("cannot listen on %s:%u: %s", cfg->address.host, port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int listeners_bind(char **err)
{
    for (size_t i = 0; i < nlisteners; i++) {
        struct listener *l = &listeners[i];
        l->nfds = l->nworkers;
        l->fds = xcalloc(l->nfds, sizeof(int));
        uint16_t port = l->cfg->address.port;
        /* After a reload, the old process's sockets for this address: their
         * accept queues carry over. Keyed by the configured address. */
        char *key = reload_key("tcp", l->cfg->address.host, l->cfg->address.port);
        unsigned adopted = 0;
        for (unsigned w = 0; w < l->nfds; w++) {
            char *e = NULL;
            int fd;
            if (w == 0 || l->cfg->reuse_port) {
                fd = reload_take_socket(key);
                if (fd >= 0) {
                    adopted++;
                    listen(fd, (int)(l->cfg->backlog ? l->cfg->backlog : 1024)); /* a changed backlog */
                } else {
                    fd = bind_one(l->cfg, port, &e);
                }
                if (fd >= 0)
                    reload_add_socket(key, fd);
            } else {
                fd = dup(l->fds[0]);
            }
            if (fd < 0) {
                *err = xasprintf("listener '%s': %s", l->name, e ? e : strerror(errno));
                free(e);
                free(key);
                return -1;
            }
            l->fds[w] = fd;
            if (w == 0) {
                /* Port 0: every worker's socket takes the port the first one got. */
                struct sockaddr_storage ss;
                socklen_t len = sizeof(ss);
                getsockname(fd, (struct sockaddr *)&ss, &len);
                port = addr_port((struct sockaddr *)&ss);
                addr_format((struct sockaddr *)&ss, l->bound, sizeof(l->bound));
                l->bound_sa = ss;
                l->bound_len = len;
                l->bound_wildcard = addr_is_wildcard((struct sockaddr *)&ss);
            }
        }
        free(key);
        log_info("listener", "'%s' listening on %s (%u socket%s, %u inherited)", l->name, l->bound, l->nfds,
                 l->nfds == 1 ? "" : "s", adopted);
    }
    return 0;
}

/* ------------------------------------------------------------ accept path */

/* An accepted socket while listener filters look at it. */
struct herald_socket {
    struct herald_socket *next, **pprev;   /* on w->pending while listener filters run */
    struct worker *w;
    struct listener *l;
    int fd;
    struct sockaddr_storage remote, local;   /* as the connection presents them (a PROXY header's) */
    socklen_t rlen, llen;
    struct sockaddr_storage direct_remote, direct_local; /* the socket's own */
    socklen_t drlen, dllen;
    size_t filter;                 /* the listener filter running */
    size_t shown, drain;           /* bytes the running filter saw / consumes when it continues */
    bool peeked;                   /* a filter peeked: the next one may find bytes already there */
    struct metadata meta;
    struct proxy_tlv *tlvs; size_t ntlvs, captlvs;
    void **sessions;
    struct event *read_ev, *timeout_ev;
    uint8_t *peek; size_t peek_cap;
    char *server_name, *transport_protocol;
    char **alpn; size_t nalpn, capalpn;
};

static int spec_port(uint32_t want, uint16_t port)
{
    return want == 0 ? 0 : (want == port ? 1 : -1);
}

static int spec_ranges(const struct cidr *r, size_t n, const struct sockaddr *sa)
{
    if (n == 0)
        return 0;
    int best = -1;
    for (size_t i = 0; i < n; i++)
        if (cidr_match(&r[i], sa) && (int)r[i].len + 1 > best)
            best = (int)r[i].len + 1;
    return best;
}

static int spec_server_name(char **names, size_t n, const char *sni)
{
    if (n == 0)
        return 0;
    if (!sni)
        return -1;
    int best = -1;
    size_t slen = strlen(sni);
    for (size_t i = 0; i < n; i++) {
        const char *p = names[i];
        if (strcasecmp(p, sni) == 0)
            return 100000;
        /* "*.example.com" (or ".example.com") matches any name ending in ".example.com" */
        const char *suffix = p[0] == '*' ? p + 1 : (p[0] == '.' ? p : NULL);
        size_t xl = suffix ? strlen(suffix) : 0;
        if (suffix && slen > xl && strcasecmp(sni + slen - xl, suffix) == 0 && (int)xl > best)
            best = (int)xl;
    }
    return best;
}

static int spec_string(const char *want, const char *have)
{
    if (!want || !*want)
        return 0;
    return have && strcmp(want, have) == 0 ? 1 : -1;
}

static int spec_alpn(char **want, size_t n, char **have, size_t nhave)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < nhave; j++)
            if (strcmp(want[i], have[j]) == 0)
                return 1;
    return -1;
}

static int spec_source_port(const uint32_t *ports, size_t n, uint16_t port)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (ports[i] == port)
            return 1;
    return -1;
}

/* Envoy's order: narrow by each criterion in turn, keeping only the most
 * specific matches at each step. */
static struct filter_chain *select_chain(struct listener *l, const struct herald_socket *s)
{
    size_t n = l->nchains;
    if (n == 0)
        return l->default_chain;
    size_t *cand = xmalloc(n * sizeof(*cand)), ncand = n;
    for (size_t i = 0; i < n; i++)
        cand[i] = i;
    const struct sockaddr *local = (const struct sockaddr *)&s->local;
    const struct sockaddr *remote = (const struct sockaddr *)&s->remote;
    const char *tp = s->transport_protocol ? s->transport_protocol : "raw_buffer";
    const struct sockaddr *direct = (const struct sockaddr *)&s->direct_remote;
    for (int step = 0; step < 8 && ncand > 0; step++) {
        int best = -1;
        int *spec = xmalloc(ncand * sizeof(*spec));
        for (size_t k = 0; k < ncand; k++) {
            const struct filter_chain_match_cfg *m = &l->cfg->chains[cand[k]].match;
            const struct chain_match *cm = &l->matches[cand[k]];
            switch (step) {
            case 0: spec[k] = spec_port(m->destination_port, addr_port(local)); break;
            case 1: spec[k] = spec_ranges(cm->prefix_ranges, cm->nprefix, local); break;
            case 2: spec[k] = spec_server_name(m->server_names, m->nserver_names, s->server_name); break;
            case 3: spec[k] = spec_string(m->transport_protocol, tp); break;
            case 4: spec[k] = spec_alpn(m->application_protocols, m->napplication_protocols, s->alpn, s->nalpn); break;
            case 5: spec[k] = spec_ranges(cm->direct_source_ranges, cm->ndirect_source, direct); break;
            case 6: spec[k] = spec_ranges(cm->source_ranges, cm->nsource, remote); break;
            default: spec[k] = spec_source_port(m->source_ports, m->nsource_ports, addr_port(remote)); break;
            }
            if (spec[k] > best)
                best = spec[k];
        }
        size_t kept = 0;
        for (size_t k = 0; k < ncand; k++)
            if (spec[k] == best && best >= 0)
                cand[kept++] = cand[k];
        ncand = kept;
        free(spec);
    }
    struct filter_chain *fc = ncand ? &l->chains[cand[0]] : l->default_chain;
    free(cand);
    return fc;
}

static void socket_free(struct herald_socket *s, bool close_fd)
{
    struct listener *l = s->l;
    if (s->pprev) {
        if (s->next)
            s->next->pprev = s->pprev;
        *s->pprev = s->next;
        __atomic_sub_fetch(&s->w->pending_sockets, 1, __ATOMIC_RELAXED);
    }
    for (size_t i = 0; i < l->nlfilters; i++)
        if (s->sessions && s->sessions[i] && l->lfilters[i].ops->session_destroy)
            l->lfilters[i].ops->session_destroy(s->sessions[i]);
    if (s->read_ev)
        event_free(s->read_ev);
    if (s->timeout_ev)
        event_free(s->timeout_ev);
    if (close_fd) {
        close(s->fd);
        overload_cx_release(&l->cx_open, l->ignore_global_conn_limit);
    }
    free(s->sessions);
    free(s->peek);
    metadata_free(&s->meta);
    for (size_t i = 0; i < s->ntlvs; i++)
        free(s->tlvs[i].value);
    free(s->tlvs);
    free(s->server_name);
    free(s->transport_protocol);
    for (size_t i = 0; i < s->nalpn; i++)
        free(s->alpn[i]);
    free(s->alpn);
    free(s);
}

static void count_accept(struct listener *l, struct worker *w)
{
    herald_stat_inc(l->stats.downstream_cx_total);
    herald_gauge_add(l->stats.downstream_cx_active, 1);
    herald_stat_inc(l->stats.worker_cx_total[w->index]);
    herald_gauge_add(l->stats.worker_cx_active[w->index], 1);
}

/* Listener filters are done: pick the chain and make the connection. */
static void socket_finish(struct herald_socket *s)
{
    struct listener *l = s->l;
    struct filter_chain *fc = select_chain(l, s);
    if (!fc) {
        herald_stat_inc(l->stats.no_filter_chain_match);
        log_debug("listener", "'%s': no filter chain matches a connection from %s", l->name, "peer");
        socket_free(s, true);
        return;
    }
    count_accept(l, s->w);
    struct tls_ctx *tls = fc == l->default_chain ? l->default_tls : l->chain_tls[fc - l->chains];
    struct conn_origin o = {
        .fd = s->fd, .server_name = s->server_name,
        .remote = (struct sockaddr *)&s->remote, .rlen = s->rlen,
        .local = (struct sockaddr *)&s->local, .llen = s->llen,
        .direct_remote = (struct sockaddr *)&s->direct_remote, .drlen = s->drlen,
        .direct_local = (struct sockaddr *)&s->direct_local, .dllen = s->dllen,
        .meta = s->meta, .tlvs = s->tlvs, .ntlvs = s->ntlvs,
    };
    conn_new(s->w, l, fc, tls, &o);
    s->meta = o.meta;   /* conn_new took them: empty */
    s->tlvs = o.tlvs;
    s->ntlvs = o.ntlvs;
    socket_free(s, false);
}

static void run_filters(struct herald_socket *s);

/* Reads away the bytes the filter that just finished consumed: they were
 * peeked, so they are in the socket's buffer and one recv takes them. */
static int consume(struct herald_socket *s)
{
    size_t left = s->drain;
    s->drain = 0;
    while (left > 0) {
        ssize_t r = recv(s->fd, s->peek, left, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        left -= (size_t)r;
    }
    return 0;
}

static void on_peekable(evutil_socket_t fd, short what, void *arg)
{
    struct herald_socket *s = arg;
    struct listener_filter *lf = &s->l->lfilters[s->filter];
    if (what & EV_TIMEOUT) {
        herald_stat_inc(s->l->stats.downstream_pre_cx_timeout);
        herald_gauge_add(s->l->stats.downstream_pre_cx_active, -1);
        if (s->l->cfg->continue_on_listener_filters_timeout) {
            event_del(s->read_ev);
            socket_finish(s);
        } else {
            socket_free(s, true);
        }
        return;
    }
    size_t want = lf->max_read_bytes ? lf->max_read_bytes : 1;
    if (s->peek_cap < want) {
        s->peek = xrealloc(s->peek, want);
        s->peek_cap = want;
    }
    ssize_t n = recv(fd, s->peek, want, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        herald_gauge_add(s->l->stats.downstream_pre_cx_active, -1);
        socket_free(s, true);
        return;
    }
    s->peeked = true;
    s->shown = (size_t)n;
    s->drain = 0;
    enum herald_status st = lf->ops->on_data(s->sessions[s->filter], s->peek, (size_t)n);
    if (st == HERALD_STOP && (size_t)n < want)
        return; /* edge-triggered: we hear again when more arrives */
    event_del(s->read_ev);
    if (st != HERALD_CLOSE && s->drain && consume(s) < 0)
        st = HERALD_CLOSE;
    if (st == HERALD_CLOSE) {
        herald_gauge_add(s->l->stats.downstream_pre_cx_active, -1);
        socket_free(s, true);
        return;
    }
    s->filter++;
    run_filters(s);
}

static void run_filters(struct herald_socket *s)
{
    struct listener *l = s->l;
    while (s->filter < l->nlfilters) {
        struct listener_filter *lf = &l->lfilters[s->filter];
        if (!s->sessions[s->filter] && lf->ops->session_new)
            s->sessions[s->filter] = lf->ops->session_new(lf->conf, s);
        enum herald_status st = lf->ops->on_accept ? lf->ops->on_accept(s->sessions[s->filter]) : HERALD_CONTINUE;
        if (st == HERALD_CLOSE) {
            herald_gauge_add(l->stats.downstream_pre_cx_active, -1);
            socket_free(s, true);
            return;
        }
        if (st == HERALD_STOP && lf->ops->on_data) {
            if (!s->read_ev) {
                s->read_ev = event_new(s->w->base, s->fd, EV_READ | EV_PERSIST | EV_ET, on_peekable, s);
                uint64_t ms = l->cfg->listener_filters_timeout_ms;
                if (ms) {
                    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
                    s->timeout_ev = evtimer_new(s->w->base, on_peekable, s);
                    evtimer_add(s->timeout_ev, &tv);
                }
            }
            event_add(s->read_ev, NULL);
            /* What an earlier filter left may be all there is: no new edge
             * would announce it, so look once now. */
            if (s->peeked)
                event_active(s->read_ev, EV_READ, 0);
            return;
        }
        s->filter++;
    }
    if (l->nlfilters)
        herald_gauge_add(l->stats.downstream_pre_cx_active, -1);
    socket_finish(s);
}

static void on_accept(struct evconnlistener *el, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct listener *l = arg;
    struct worker *w = worker_self();
    if (w->stopping) {
        close(fd);
        return;
    }
    /* The overload manager's reject_incoming_connections, then connection
     * limits (overload.h): refused sockets are closed at once, and counted. */
    if (!l->bypass_overload_manager && overload_action_on(OVERLOAD_REJECT_INCOMING_CONNECTIONS)) {
        herald_stat_inc(l->stats.downstream_cx_overload_reject);
        close(fd);
        return;
    }
    enum overload_cx ov = overload_cx_acquire(l->name, &l->cx_open, l->ignore_global_conn_limit);
    if (ov != OVERLOAD_CX_OK) {
        herald_stat_inc(ov == OVERLOAD_CX_GLOBAL ? l->stats.downstream_global_cx_overflow
                                                 : l->stats.downstream_cx_overflow);
        close(fd);
        return;
    }
    struct herald_socket *s = xcalloc(1, sizeof(*s));
    s->w = w;
    s->l = l;
    s->fd = fd;
    memcpy(&s->remote, sa, (size_t)salen);
    s->rlen = (socklen_t)salen;
    memcpy(&s->direct_remote, sa, (size_t)salen);
    s->drlen = (socklen_t)salen;
    /* A socket bound to one address accepts only connections to it: no
     * getsockname(2) per connection. evconnlistener made fd non-blocking. */
    if (l->bound_wildcard) {
        s->llen = sizeof(s->local);
        getsockname(fd, (struct sockaddr *)&s->local, &s->llen);
    } else {
        memcpy(&s->local, &l->bound_sa, l->bound_len);
        s->llen = l->bound_len;
    }
    memcpy(&s->direct_local, &s->local, s->llen);
    s->dllen = s->llen;
    if (l->nlfilters == 0) {
        socket_finish(s);
        return;
    }
    herald_gauge_add(l->stats.downstream_pre_cx_active, 1);
    /* Not a connection yet, but accepted: a drain waits for it too, and a
     * worker that exits closes it. */
    s->next = w->pending;
    if (s->next)
        s->next->pprev = &s->next;
    s->pprev = &w->pending;
    w->pending = s;
    __atomic_add_fetch(&w->pending_sockets, 1, __ATOMIC_RELAXED);
    s->sessions = xcalloc(l->nlfilters, sizeof(void *));
    run_filters(s);
}

static void reenable(evutil_socket_t fd, short what, void *arg)
{
    /* only if still ours: a drain or drain_listeners may have freed it meanwhile */
    struct worker *w = worker_self();
    for (size_t i = 0; w && w->listeners && i < nlisteners; i++)
        if (w->listeners[i] == arg) {
            evconnlistener_enable(arg);
            return;
        }
}

static void on_accept_error(struct evconnlistener *el, void *arg)
{
    struct listener *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    log_warn("listener", "'%s': accept: %s", l->name, evutil_socket_error_to_string(err));
    if (err == EMFILE || err == ENFILE) {
        /* Out of descriptors: pause a moment instead of spinning. */
        evconnlistener_disable(el);
        struct timeval tv = {1, 0};
        event_base_once(evconnlistener_get_base(el), -1, EV_TIMEOUT, reenable, el, &tv);
    }
}

static void start_on_worker(struct worker *w, void *arg)
{
    w->listeners = xcalloc(nlisteners ? nlisteners : 1, sizeof(*w->listeners));
    for (size_t i = 0; i < nlisteners; i++) {
        struct listener *l = &listeners[i];
        for (size_t c = 0; c < l->nchains; c++)
            filter_chain_worker_init(&l->chains[c], w->index);
        if (l->default_chain)
            filter_chain_worker_init(l->default_chain, w->index);
        w->listeners[i] = evconnlistener_new(w->base, on_accept, l, LEV_OPT_CLOSE_ON_FREE, 0, l->fds[w->index]);
        /* backlog 0: the socket already listens with tcp_backlog_size (-1 would re-listen with 128) */
        evconnlistener_set_error_cb(w->listeners[i], on_accept_error);
        l->fds[w->index] = -1; /* owned by the evconnlistener now */
    }
}

void listeners_start(struct worker *workers, unsigned nworkers)
{
    for (unsigned i = 0; i < nworkers; i++)
        worker_post(&workers[i], start_on_worker, NULL);
}

void listeners_worker_stop(struct worker *w, bool only_drained)
{
    if (!w->listeners)
        return;
    for (size_t i = 0; i < nlisteners; i++)
        if (w->listeners[i] && (!only_drained || listeners[i].drained)) {
            evconnlistener_free(w->listeners[i]);
            w->listeners[i] = NULL;
        }
}

void listeners_forget_for_drain(bool inbound_only)
{
    for (size_t i = 0; i < nlisteners; i++) {
        struct listener *l = &listeners[i];
        if (l->drained || (inbound_only && l->outbound))   /* Envoy's inboundonly spares only OUTBOUND */
            continue;
        l->drained = true;
        char *key = reload_key("tcp", l->cfg->address.host, l->cfg->address.port);
        reload_forget_sockets(key);
        free(key);
    }
}

void listeners_worker_teardown(struct worker *w)
{
    listeners_worker_stop(w, false);
    while (w->pending) {
        herald_gauge_add(w->pending->l->stats.downstream_pre_cx_active, -1);
        socket_free(w->pending, true);
    }
    for (size_t i = 0; i < nlisteners; i++) {
        struct listener *l = &listeners[i];
        for (size_t c = 0; c < l->nchains; c++)
            filter_chain_worker_destroy(&l->chains[c], w->index);
        if (l->default_chain)
            filter_chain_worker_destroy(l->default_chain, w->index);
    }
    free(w->listeners);
    w->listeners = NULL;
}

void listener_conn_closed(struct listener *l, struct worker *w, uint64_t start_mono_ms)
{
    overload_cx_release(&l->cx_open, l->ignore_global_conn_limit);
    herald_stat_inc(l->stats.downstream_cx_destroy);
    herald_gauge_add(l->stats.downstream_cx_active, -1);
    herald_gauge_add(l->stats.worker_cx_active[w->index], -1);
    herald_histogram_record(l->stats.downstream_cx_length_ms, mono_ms() - start_mono_ms);
}

void listeners_destroy(void)
{
    for (size_t i = 0; i < nlisteners; i++) {
        struct listener *l = &listeners[i];
        for (size_t c = 0; c < l->nchains; c++) {
            if (l->chain_tls)
                tls_ctx_free(l->chain_tls[c]);
            filter_chain_destroy(&l->chains[c], l->nworkers);
            free(l->matches[c].prefix_ranges);
            free(l->matches[c].source_ranges);
            free(l->matches[c].direct_source_ranges);
        }
        tls_ctx_free(l->default_tls);
        if (l->default_chain) {
            filter_chain_destroy(l->default_chain, l->nworkers);
            free(l->default_chain);
        }
        for (size_t f = 0; f < l->nlfilters; f++)
            listener_filter_destroy(&l->lfilters[f]);
        for (unsigned w = 0; l->fds && w < l->nfds; w++)
            if (l->fds[w] >= 0)
                close(l->fds[w]);
        free(l->fds);
        free(l->lfilters);
        free(l->chains);
        free(l->chain_tls);
        free(l->matches);
        free(l->stats.worker_cx_total);
        free(l->stats.worker_cx_active);
        free(l->name);
        free(l->stat_prefix);
    }
    free(listeners);
    listeners = NULL;
    nlisteners = 0;
}

void server_listeners_dump(struct evbuffer *out, bool json)
{
    if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < nlisteners; i++) {
            struct listener *l = &listeners[i];
            char ip[ADDR_STRLEN] = "";
            const char *colon = strrchr(l->bound, ':');
            if (colon)
                snprintf(ip, sizeof(ip), "%.*s", (int)(colon - l->bound), l->bound);
            json_array_append_new(
                arr, json_pack("{s:s, s:{s:{s:s, s:i}}}", "name", l->name, "local_address", "socket_address",
                               "address", ip, "port_value", colon ? atoi(colon + 1) : 0));
        }
        char *s = json_dumps(json_pack("{s:o}", "listener_statuses", arr), JSON_INDENT(1));
        evbuffer_add_printf(out, "%s\n", s);
        free(s);
        return;
    }
    for (size_t i = 0; i < nlisteners; i++)
        evbuffer_add_printf(out, "%s::%s\n", listeners[i].name, listeners[i].bound);
}

/* ---------------------------------------------------------------- the SDK */

const struct sockaddr *herald_socket_remote_addr(const struct herald_socket *s, socklen_t *len)
{
    if (len)
        *len = s->rlen;
    return (const struct sockaddr *)&s->remote;
}

const struct sockaddr *herald_socket_local_addr(const struct herald_socket *s, socklen_t *len)
{
    if (len)
        *len = s->llen;
    return (const struct sockaddr *)&s->local;
}

void herald_socket_set_server_name(struct herald_socket *s, const char *name)
{
    free(s->server_name);
    s->server_name = name ? xstrdup(name) : NULL;
}

void herald_socket_set_transport_protocol(struct herald_socket *s, const char *proto)
{
    free(s->transport_protocol);
    s->transport_protocol = proto ? xstrdup(proto) : NULL;
}

void herald_socket_add_application_protocol(struct herald_socket *s, const char *proto)
{
    *VEC_PUSH(s->alpn, s->nalpn, s->capalpn) = xstrdup(proto);
}

void herald_socket_drain(struct herald_socket *s, size_t n)
{
    s->drain = n < s->shown ? n : s->shown;
}

static bool inet_len_ok(const struct sockaddr *sa, socklen_t len)
{
    return (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) ||
           (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6));
}

int herald_socket_restore_addresses(struct herald_socket *s, const struct sockaddr *remote, socklen_t rlen,
                                    const struct sockaddr *local, socklen_t llen)
{
    if ((remote && !inet_len_ok(remote, rlen)) || (local && !inet_len_ok(local, llen)))
        return -1;
    if (remote) {
        s->rlen = remote->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
        memset(&s->remote, 0, sizeof(s->remote));
        memcpy(&s->remote, remote, s->rlen);
    }
    if (local) {
        s->llen = local->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
        memset(&s->local, 0, sizeof(s->local));
        memcpy(&s->local, local, s->llen);
    }
    return 0;
}

int herald_socket_metadata_set(struct herald_socket *s, const char *ns, const char *key, const char *value)
{
    return metadata_set(&s->meta, ns, key, value);
}

int herald_socket_add_proxy_tlv(struct herald_socket *s, uint8_t type, const uint8_t *value, size_t len)
{
    if (len > UINT16_MAX || (len && !value))
        return -1;
    struct proxy_tlv *t = VEC_PUSH(s->tlvs, s->ntlvs, s->captlvs);
    t->type = type;
    t->len = (uint16_t)len;
    t->value = xmalloc(len ? len : 1);
    if (len)
        memcpy(t->value, value, len);
    return 0;
}
