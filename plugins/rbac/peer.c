/* rbac: the peer certificate's names for the authenticated principal, from
 * the core (SDK 1.6) to matcher.c, which knows nothing of the core. */
#include "herald/herald.h"
#include "matcher.h"

bool rbac_peer_names(void *conn, int which, bool (*fn)(void *arg, const char *v, size_t len), void *arg)
{
    enum herald_cert_name kind;
    switch (which) {
    case RBAC_CERT_URI_SAN: kind = HERALD_CERT_URI_SAN; break;
    case RBAC_CERT_DNS_SAN: kind = HERALD_CERT_DNS_SAN; break;
    case RBAC_CERT_SUBJECT: kind = HERALD_CERT_SUBJECT; break;
    default: return false;
    }
    return herald_conn_peer_cert_names(conn, kind, fn, arg);
}
