/* The downstream peer certificate's names, one at a time, for plugins that
 * authorize by them (rbac's Principal.authenticated): each SAN whole and
 * separate (the access log's *_SAN strings join them with ',', which a SAN
 * may itself contain) and the subject without a length limit. Nothing is
 * decoded until a plugin asks, so connections whose filters never ask pay
 * nothing. */
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common.h"
#include "net/connection.h"
#include "net/tls.h"

static int san_type(enum herald_cert_name which)
{
    switch (which) {
    case HERALD_CERT_URI_SAN: return GEN_URI;
    case HERALD_CERT_DNS_SAN: return GEN_DNS;
    case HERALD_CERT_IP_SAN: return GEN_IPADD;
    case HERALD_CERT_EMAIL_SAN: return GEN_EMAIL;
    default: return -1;
    }
}

static bool visit_sans(X509 *cert, int type, herald_cert_name_fn fn, void *arg)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    bool hit = false;
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names) && !hit; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        char ip[INET6_ADDRSTRLEN];
        size_t len = 0;
        const char *v = g->type == type ? tls_san_text(g, ip, &len) : NULL;
        if (v)
            hit = fn(arg, v, len); /* IA5 strings and ip[] both end in a NUL */
    }
    GENERAL_NAMES_free(names);
    return hit;
}

/* RFC 2253, as %DOWNSTREAM_PEER_SUBJECT% and Envoy's subjectPeerCertificate(). */
static bool visit_subject(X509 *cert, herald_cert_name_fn fn, void *arg)
{
    BIO *b = BIO_new(BIO_s_mem());
    bool hit = false;
    char *data;
    if (b && X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0 &&
        BIO_write(b, "", 1) == 1) {
        long n = BIO_get_mem_data(b, &data);
        if (n > 0)
            hit = fn(arg, data, (size_t)n - 1);
    }
    BIO_free(b);
    return hit;
}

bool herald_conn_peer_cert_names(const struct herald_conn *c, enum herald_cert_name which, herald_cert_name_fn fn,
                                 void *arg)
{
    if (!c || !c->ssl || c->handshaking || !fn)
        return false;
    X509 *peer = SSL_get1_peer_certificate(c->ssl);
    if (!peer)
        return false;
    bool hit = which == HERALD_CERT_SUBJECT ? visit_subject(peer, fn, arg)
               : san_type(which) >= 0      ? visit_sans(peer, san_type(which), fn, arg)
                                           : false;
    X509_free(peer);
    return hit;
}
