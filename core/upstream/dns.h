/* Asynchronous name lookups for cluster discovery (main thread), over
 * evdns_getaddrinfo, so /etc/hosts is honoured and IP literals answer at
 * once. The address family follows the cluster's dns_lookup_family:
 *   V4_ONLY / V6_ONLY   query A / AAAA only;
 *   AUTO                one AF_UNSPEC query (A and AAAA in parallel), keeping
 *                       the IPv6 answers if there are any, else the IPv4 ones:
 *                       Envoy's "v6 first, then v4" without a second round trip;
 *   V4_PREFERRED        the same with IPv4 first;
 *   ALL                 both.
 * Record TTLs are not available through evdns_getaddrinfo, so callers
 * refresh at their configured rate (see cluster.c). */
#ifndef HERALD_CORE_UPSTREAM_DNS_H
#define HERALD_CORE_UPSTREAM_DNS_H

#include <event2/dns.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/bootstrap.h"

struct dns_addr {
    struct sockaddr_storage ss;   /* port already set */
    socklen_t len;
};

/* err: 0, or an EVUTIL_EAI_* code (dns_strerror). On success naddrs >= 1,
 * de-duplicated, in the resolver's order. */
typedef void (*dns_done_cb)(void *arg, int err, const struct dns_addr *addrs, size_t naddrs);

struct dns_query;

/* cb runs exactly once unless dns_cancel() comes first. When the answer is
 * immediate (IP literal, hosts file) cb runs before this returns and the
 * result is NULL; otherwise it is the handle for dns_cancel. */
struct dns_query *dns_resolve(struct evdns_base *dns, const char *name, uint16_t port,
                              enum dns_family family, dns_done_cb cb, void *arg);
/* cb will not run; the query is freed when libevent reports the cancellation
 * (on a later turn of the loop). */
void dns_cancel(struct dns_query *q);
/* Queries started and not yet handed back by libevent (cancelled ones too). */
size_t dns_in_flight(void);
const char *dns_strerror(int err);

#endif
