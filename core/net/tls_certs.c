/* GET /certs: see tls_certs.h. */
#include "config.h"

#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "net/tls.h"
#include "net/tls_certs.h"
#include "net/tls_log.h"

struct cert_entry {
    X509 *x;
    char *path;
};

struct ctx_certs {
    struct cert_entry *leaf; size_t nleaf, capleaf;
    struct cert_entry *ca; size_t nca, capca;
};

static int ex_index = -1;
static pthread_once_t ex_once = PTHREAD_ONCE_INIT;

static void entries_free(struct cert_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        X509_free(e[i].x);
        free(e[i].path);
    }
    free(e);
}

static void ctx_certs_free(struct ctx_certs *cc)
{
    if (!cc)
        return;
    entries_free(cc->leaf, cc->nleaf);
    entries_free(cc->ca, cc->nca);
    free(cc);
}

static void on_ctx_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    ctx_certs_free(ptr);
}

static void ex_init(void) { ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, on_ctx_free); }

struct ctx_certs *ctx_certs_attach_new(SSL_CTX *ctx)
{
    pthread_once(&ex_once, ex_init);
    struct ctx_certs *cc = xcalloc(1, sizeof(*cc));
    if (ex_index < 0 || !SSL_CTX_set_ex_data(ctx, ex_index, cc)) {
        ctx_certs_free(cc);
        return NULL;
    }
    return cc;
}

static void add(struct cert_entry **v, size_t *n, size_t *cap, X509 *x, const char *path)
{
    X509_up_ref(x);
    struct cert_entry *e = VEC_PUSH(*v, *n, *cap);
    e->x = x;
    e->path = xstrdup(path);
}

void ctx_certs_add_leaf(struct ctx_certs *cc, X509 *x, const char *path)
{
    if (cc)
        add(&cc->leaf, &cc->nleaf, &cc->capleaf, x, path);
}

void ctx_certs_add_ca(struct ctx_certs *cc, X509 *x, const char *path)
{
    if (cc)
        add(&cc->ca, &cc->nca, &cc->capca, x, path);
}

/* RFC 3339 in UTC, as Envoy prints valid_from and expiration_time. */
static json_t *time_json(const ASN1_TIME *t)
{
    char buf[32];
    const char *v = tls_cert_time(t, "%Y-%m-%dT%H:%M:%SZ", buf, sizeof(buf));
    return v ? json_string(v) : json_null();
}

static json_t *sans_json(X509 *x)
{
    json_t *arr = json_array();
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        const char *kind = g->type == GEN_DNS ? "dns" : g->type == GEN_URI ? "uri" : g->type == GEN_IPADD ? "ip_address"
                                                                                                        : NULL;
        char ip[INET6_ADDRSTRLEN];
        size_t len = 0;
        const char *s = kind ? tls_san_text(g, ip, &len) : NULL;
        if (s)
            json_array_append_new(arr, json_pack("{s:s%}", kind, s, len));
    }
    GENERAL_NAMES_free(names);
    return arr;
}

static json_t *cert_json(const struct cert_entry *e)
{
    int days = 0, secs = 0;
    const ASN1_TIME *not_after = X509_get0_notAfter(e->x);
    if (!ASN1_TIME_diff(&days, &secs, NULL, not_after) || days < 0)
        days = 0;   /* expired: 0, as Envoy */
    char d[16];
    snprintf(d, sizeof(d), "%d", days);
    char serial[128];
    const char *sn = tls_cert_serial(e->x, serial, sizeof(serial));
    return json_pack("{s:s, s:s, s:o, s:s, s:o, s:o}", "path", e->path, "serial_number", sn ? sn : "",
                     "subject_alt_names", sans_json(e->x), "days_until_expiration", d, "valid_from",
                     time_json(X509_get0_notBefore(e->x)), "expiration_time", time_json(not_after));
}

json_t *ctx_certs_json(SSL_CTX *ctx)
{
    pthread_once(&ex_once, ex_init);
    const struct ctx_certs *cc = ex_index >= 0 ? SSL_CTX_get_ex_data(ctx, ex_index) : NULL;
    json_t *ca = json_array(), *chain = json_array();
    for (size_t i = 0; cc && i < cc->nca; i++)
        json_array_append_new(ca, cert_json(&cc->ca[i]));
    for (size_t i = 0; cc && i < cc->nleaf; i++)
        json_array_append_new(chain, cert_json(&cc->leaf[i]));
    return json_pack("{s:o, s:o}", "ca_cert", ca, "cert_chain", chain);
}
