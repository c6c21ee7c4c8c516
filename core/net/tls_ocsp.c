/* OCSP stapling: see tls_ocsp.h. The staples hang off their SSL_CTX (ex
 * data), so a context rebuilt by a certificate reload brings its own and the
 * old ones go with the old context. */
#include <openssl/ocsp.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "net/tls_ocsp.h"

struct staple {
    X509 *leaf;                        /* its certificate (a reference) */
    unsigned char *der; size_t len;
    time_t next_update;                /* 0: the response gives none (it does not expire) */
};

struct staples {
    struct staple *v; size_t n;
    enum ocsp_policy policy;
    const struct ocsp_stats *st;
};

static int staples_idx = -1;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void staples_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    struct staples *s = ptr;
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        X509_free(s->v[i].leaf);
        free(s->v[i].der);
    }
    free(s->v);
    free(s);
}

static void init_once(void) { staples_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, staples_free); }

static struct staples *table(SSL_CTX *ctx, bool make)
{
    pthread_once(&once, init_once);
    struct staples *s = SSL_CTX_get_ex_data(ctx, staples_idx);
    if (!s && make) {
        s = xcalloc(1, sizeof(*s));
        SSL_CTX_set_ex_data(ctx, staples_idx, s);
    }
    return s;
}

static time_t asn1_time(const ASN1_GENERALIZEDTIME *t)
{
    struct tm tm;
    if (!t || !ASN1_TIME_to_tm(t, &tm))
        return 0;
    return timegm(&tm);
}

int tls_ocsp_add(SSL_CTX *ctx, X509 *leaf, const unsigned char *der, size_t len, const char *name, char **err)
{
    const unsigned char *p = der;
    OCSP_RESPONSE *resp = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
    OCSP_BASICRESP *basic = NULL;
    int rc = -1;
    if (!resp) {
        *err = xasprintf("ocsp_staple %s: not a DER OCSP response", name);
        goto out;
    }
    if (OCSP_response_status(resp) != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        *err = xasprintf("ocsp_staple %s: the responder's answer is '%s', not a successful response", name,
                         OCSP_response_status_str(OCSP_response_status(resp)));
        goto out;
    }
    if (!(basic = OCSP_response_get1_basic(resp))) {
        *err = xasprintf("ocsp_staple %s: not a basic OCSP response", name);
        goto out;
    }
    /* the status of our certificate: the single response with its serial number (as Envoy matches it) */
    const ASN1_INTEGER *serial = X509_get0_serialNumber(leaf);
    OCSP_SINGLERESP *mine = NULL;
    for (int i = 0; i < OCSP_resp_count(basic) && !mine; i++) {
        OCSP_SINGLERESP *one = OCSP_resp_get0(basic, i);
        ASN1_INTEGER *sn = NULL;
        if (OCSP_id_get0_info(NULL, NULL, NULL, &sn, (OCSP_CERTID *)OCSP_SINGLERESP_get0_id(one)) && sn &&
            ASN1_INTEGER_cmp(sn, serial) == 0)
            mine = one;
    }
    if (!mine) {
        *err = xasprintf("ocsp_staple %s does not match its certificate (no status for its serial number)", name);
        goto out;
    }
    int reason;
    ASN1_GENERALIZEDTIME *this_upd = NULL, *next_upd = NULL, *rev = NULL;
    int status = OCSP_single_get0_status(mine, &reason, &rev, &this_upd, &next_upd);
    if (status == V_OCSP_CERTSTATUS_REVOKED) {
        *err = xasprintf("ocsp_staple %s says its certificate is revoked", name);
        goto out;
    }
    struct staples *s = table(ctx, true);
    s->v = xrealloc(s->v, (s->n + 1) * sizeof(*s->v));
    struct staple *st = &s->v[s->n++];
    X509_up_ref(leaf);
    st->leaf = leaf;
    st->der = xmalloc(len);
    memcpy(st->der, der, len);
    st->len = len;
    st->next_update = next_upd ? asn1_time(next_upd) : 0;
    rc = 0;
out:
    OCSP_BASICRESP_free(basic);
    OCSP_RESPONSE_free(resp);
    return rc;
}

static void count(struct herald_stat *s)
{
    if (s)
        herald_stat_inc(s);
}

/* The client asked for the certificate's status: staple it, leave it out, or fail, by policy. */
static int status_cb(SSL *ssl, void *arg)
{
    struct staples *s = arg;
    count(s->st->requests);
    X509 *cert = SSL_get_certificate(ssl);
    const struct staple *st = NULL;
    for (size_t i = 0; cert && i < s->n && !st; i++)
        if (X509_cmp(s->v[i].leaf, cert) == 0)
            st = &s->v[i];
    bool expired = st && st->next_update && st->next_update < time(NULL);
    if (!st || expired) {
        /* MUST_STAPLE has a staple for every certificate (the config says so); expired fails it and STRICT */
        if (expired && s->policy != OCSP_LENIENT) {
            count(s->st->failed);
            return SSL_TLSEXT_ERR_ALERT_FATAL;
        }
        count(s->st->omitted);
        return SSL_TLSEXT_ERR_NOACK;
    }
    unsigned char *copy = OPENSSL_malloc(st->len);   /* OpenSSL frees it with the connection */
    if (!copy)
        return SSL_TLSEXT_ERR_NOACK;
    memcpy(copy, st->der, st->len);
    SSL_set_tlsext_status_ocsp_resp(ssl, copy, (long)st->len);
    count(s->st->responses);
    return SSL_TLSEXT_ERR_OK;
}

void tls_ocsp_enable(SSL_CTX *ctx, enum ocsp_policy policy, const struct ocsp_stats *st)
{
    struct staples *s = table(ctx, true);
    s->policy = policy;
    s->st = st;
    SSL_CTX_set_tlsext_status_cb(ctx, status_cb);
    SSL_CTX_set_tlsext_status_arg(ctx, s);
}
