/* The access-log operators that describe a downstream TLS connection:
 * %DOWNSTREAM_TLS_VERSION%, %DOWNSTREAM_TLS_CIPHER%, %DOWNSTREAM_TLS_SESSION_ID%,
 * the peer's and our certificate's subject, issuer, SANs, serial, SHA-256 and
 * SHA-1 fingerprints and validity; and the same UPSTREAM_ ones of the session
 * an upstream connection negotiated. Values are made when a log line asks for
 * them (never on the request path), in Envoy's forms: names in RFC 2253, SANs
 * joined by ',', hex in lower case, times as START_TIME's. */
#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "net/connection.h"
#include "net/tls.h"
#include "net/tls_log.h"
#include <herald/access_log.h>

static const char *hex(const unsigned char *p, size_t n, char *out, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    if (!n || len < 2 * n + 1)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
    return out;
}

static const char *name_str(const X509_NAME *name, char *out, size_t len)
{
    if (!name)
        return NULL;
    BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return NULL;
    const char *r = NULL;
    if (X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253) >= 0) {
        int n = BIO_read(b, out, (int)len - 1);
        if (n > 0) {
            out[n] = '\0';
            r = out;
        }
    }
    BIO_free(b);
    return r;
}

/* The SANs of one type (GEN_URI, GEN_DNS, GEN_IPADD), joined by ','. */
static const char *sans(X509 *cert, int type, char *out, size_t len)
{
    GENERAL_NAMES *names = cert ? X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL) : NULL;
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        char ip[INET6_ADDRSTRLEN];
        size_t vlen = 0;
        const char *v = g->type == type ? tls_san_text(g, ip, &vlen) : NULL;
        if (!v)
            continue;
        if (o + vlen + 2 > len)
            break;
        if (o)
            out[o++] = ',';
        memcpy(out + o, v, vlen);
        o += vlen;
        out[o] = '\0';
    }
    GENERAL_NAMES_free(names);
    return o ? out : NULL;
}

const char *tls_cert_time(const ASN1_TIME *t, const char *fmt, char *out, size_t len)
{
    struct tm tm;
    if (!t || !ASN1_TIME_to_tm(t, &tm))
        return NULL;
    time_t secs = timegm(&tm);
    return herald_access_log_format_time((uint64_t)secs * 1000, fmt, out, len);
}

static const char *fingerprint(X509 *cert, const EVP_MD *md, char *out, size_t len)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (!cert || !X509_digest(cert, md, d, &n))
        return NULL;
    return hex(d, n, out, len);
}

const char *tls_cert_serial(X509 *cert, char *out, size_t len)
{
    BIGNUM *bn = cert ? ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL) : NULL;
    char *h = bn ? BN_bn2hex(bn) : NULL;   /* upper case */
    const char *r = NULL;
    size_t n = h ? strlen(h) : 0;
    if (h && n < len) {
        for (size_t i = 0; i <= n; i++)
            out[i] = (char)tolower((unsigned char)h[i]);
        r = out;
    }
    OPENSSL_free(h);
    BN_free(bn);
    return r;
}

/* One certificate operator: what follows "DOWNSTREAM_PEER_" or "DOWNSTREAM_LOCAL_". */
static const char *cert_field(X509 *cert, const char *what, const char *arg, char *out, size_t len)
{
    if (!cert)
        return NULL;
    if (!strcmp(what, "SUBJECT"))
        return name_str(X509_get_subject_name(cert), out, len);
    if (!strcmp(what, "ISSUER"))
        return name_str(X509_get_issuer_name(cert), out, len);
    if (!strcmp(what, "URI_SAN"))
        return sans(cert, GEN_URI, out, len);
    if (!strcmp(what, "DNS_SAN"))
        return sans(cert, GEN_DNS, out, len);
    if (!strcmp(what, "IP_SAN"))
        return sans(cert, GEN_IPADD, out, len);
    if (!strcmp(what, "SERIAL"))
        return tls_cert_serial(cert, out, len);
    if (!strcmp(what, "FINGERPRINT_256"))
        return fingerprint(cert, EVP_sha256(), out, len);
    if (!strcmp(what, "FINGERPRINT_1"))
        return fingerprint(cert, EVP_sha1(), out, len);
    if (!strcmp(what, "CERT_V_START"))
        return tls_cert_time(X509_get0_notBefore(cert), arg, out, len);
    if (!strcmp(what, "CERT_V_END"))
        return tls_cert_time(X509_get0_notAfter(cert), arg, out, len);
    return NULL;
}

static const char *session_id(const SSL_SESSION *sess, char *out, size_t len)
{
    unsigned n = 0;
    const unsigned char *id = sess ? SSL_SESSION_get_id(sess, &n) : NULL;
    return id ? hex(id, n, out, len) : NULL;
}

static const char *version_name(int v)
{
    switch (v) {
    case TLS1_3_VERSION: return "TLSv1.3";
    case TLS1_2_VERSION: return "TLSv1.2";
    case TLS1_1_VERSION: return "TLSv1.1";
    case TLS1_VERSION: return "TLSv1";
    default: return NULL;
    }
}

const char *tls_log_upstream_field(const SSL_SESSION *sess, const char *op, const char *arg, char *out, size_t len)
{
    if (!sess || !op || len < 2 || strncmp(op, "UPSTREAM_", 9))
        return NULL;
    op += 9;
    if (!strcmp(op, "TLS_VERSION"))
        return version_name(SSL_SESSION_get_protocol_version(sess));
    if (!strcmp(op, "TLS_CIPHER")) {
        const SSL_CIPHER *c = SSL_SESSION_get0_cipher(sess);
        return c ? SSL_CIPHER_get_name(c) : NULL;
    }
    if (!strcmp(op, "TLS_SESSION_ID"))
        return session_id(sess, out, len);
    if (!strncmp(op, "PEER_", 5))
        return cert_field(SSL_SESSION_get0_peer((SSL_SESSION *)sess), op + 5, arg, out, len);
    return NULL;   /* UPSTREAM_LOCAL_*: the session does not keep our certificate */
}

const char *herald_conn_tls_log_field(const struct herald_conn *c, const char *op, const char *arg, char *out,
                                      size_t len)
{
    if (!c || !c->ssl || c->handshaking || !op || len < 2 || strncmp(op, "DOWNSTREAM_", 11))
        return NULL;
    SSL *ssl = c->ssl;
    op += 11;
    if (!strcmp(op, "TLS_VERSION"))
        return SSL_get_version(ssl);
    if (!strcmp(op, "TLS_CIPHER"))
        return SSL_get_cipher_name(ssl);
    if (!strcmp(op, "TLS_SESSION_ID"))
        return session_id(SSL_get_session(ssl), out, len);
    if (!strncmp(op, "LOCAL_", 6))
        return cert_field(SSL_get_certificate(ssl), op + 6, arg, out, len);   /* ours: not a new reference */
    if (!strncmp(op, "PEER_", 5)) {
        X509 *peer = SSL_get1_peer_certificate(ssl);
        const char *r = cert_field(peer, op + 5, arg, out, len);
        X509_free(peer);
        return r;
    }
    return NULL;
}
