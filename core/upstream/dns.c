/* Cluster name lookups over evdns_getaddrinfo; see dns.h for the family rules. */
#include <arpa/inet.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <string.h>

#include "common.h"
#include "upstream/dns.h"

struct dns_query {
    dns_done_cb cb;              /* NULL once cancelled */
    void *arg;
    enum dns_family family;
    uint16_t port;
    bool starting;               /* inside evdns_getaddrinfo() */
    bool answered_at_once;
    struct evdns_getaddrinfo_request *req;
};

/* Main thread only, like every caller. */
static size_t in_flight;

static bool same_addr(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return false;
    if (a->sa_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)a)->sin_addr, &((const struct sockaddr_in *)b)->sin_addr,
                      sizeof(struct in_addr)) == 0;
    return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, &((const struct sockaddr_in6 *)b)->sin6_addr,
                  sizeof(struct in6_addr)) == 0 &&
           ((const struct sockaddr_in6 *)a)->sin6_scope_id == ((const struct sockaddr_in6 *)b)->sin6_scope_id;
}

/* Which family the answer keeps, given what came back. AF_UNSPEC: both. */
static int keep_family(enum dns_family family, bool have4, bool have6)
{
    switch (family) {
    case DNS_V4_ONLY: return AF_INET;
    case DNS_V6_ONLY: return AF_INET6;
    case DNS_AUTO: return have6 ? AF_INET6 : AF_INET;
    case DNS_V4_PREFERRED: return have4 ? AF_INET : AF_INET6;
    case DNS_ALL: break;
    }
    return AF_UNSPEC;
}

static void deliver(struct dns_query *q, int err, struct evutil_addrinfo *res)
{
    bool have4 = false, have6 = false;
    size_t n = 0, cap = 0;
    struct dns_addr *out = NULL;

    if (err == 0) {
        for (struct evutil_addrinfo *ai = res; ai; ai = ai->ai_next) {
            have4 |= ai->ai_family == AF_INET;
            have6 |= ai->ai_family == AF_INET6;
        }
        int fam = keep_family(q->family, have4, have6);
        for (struct evutil_addrinfo *ai = res; ai; ai = ai->ai_next) {
            if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
                (fam != AF_UNSPEC && ai->ai_family != fam) ||
                ai->ai_addrlen > sizeof(struct sockaddr_storage))
                continue;
            bool dup = false;
            for (size_t i = 0; i < n && !dup; i++)
                dup = same_addr((struct sockaddr *)&out[i].ss, ai->ai_addr);
            if (dup)
                continue;
            struct dns_addr *a = VEC_PUSH(out, n, cap);
            memset(a, 0, sizeof(*a));
            memcpy(&a->ss, ai->ai_addr, ai->ai_addrlen);
            a->len = (socklen_t)ai->ai_addrlen;
            if (ai->ai_family == AF_INET)
                ((struct sockaddr_in *)&a->ss)->sin_port = htons(q->port);
            else
                ((struct sockaddr_in6 *)&a->ss)->sin6_port = htons(q->port);
        }
        if (n == 0)
            err = EVUTIL_EAI_NODATA;
    }
    q->cb(q->arg, err, out, n);
    free(out);
}

static void on_getaddrinfo(int err, struct evutil_addrinfo *res, void *arg)
{
    struct dns_query *q = arg;

    if (q->cb && err != EVUTIL_EAI_CANCEL)
        deliver(q, err, res);
    if (res)
        evutil_freeaddrinfo(res);
    if (q->starting) {
        q->answered_at_once = true;   /* dns_resolve frees it */
        return;
    }
    in_flight--;
    free(q);
}

struct dns_query *dns_resolve(struct evdns_base *dns, const char *name, uint16_t port,
                              enum dns_family family, dns_done_cb cb, void *arg)
{
    struct dns_query *q = xcalloc(1, sizeof(*q));
    struct evutil_addrinfo hints;

    q->cb = cb;
    q->arg = arg;
    q->family = family;
    q->port = port;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = family == DNS_V4_ONLY ? AF_INET : family == DNS_V6_ONLY ? AF_INET6 : AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    q->starting = true;
    q->req = evdns_getaddrinfo(dns, name, NULL, &hints, on_getaddrinfo, q);
    q->starting = false;
    if (q->answered_at_once) {
        free(q);
        return NULL;
    }
    if (!q->req) {
        /* libevent promises a callback in this case; do not leave the caller waiting if it did not */
        deliver(q, EVUTIL_EAI_FAIL, NULL);
        free(q);
        return NULL;
    }
    in_flight++;
    return q;
}

void dns_cancel(struct dns_query *q)
{
    if (!q)
        return;
    q->cb = NULL;
    evdns_getaddrinfo_cancel(q->req);
}

size_t dns_in_flight(void)
{
    return in_flight;
}

const char *dns_strerror(int err)
{
    return evutil_gai_strerror(err);
}
