/* The TLS transport socket over OpenSSL 3 (see tls.h).
 *
 * Hardened by default, on purpose stricter than Envoy where Envoy keeps old
 * defaults for compatibility: TLS 1.2 minimum on both sides, TLS 1.3 maximum
 * on both sides, and for TLS 1.2 only ECDHE key exchange with AEAD ciphers
 * (TLS 1.3's suites are all forward-secret AEAD). Compression and
 * renegotiation are off. Older versions need tls_minimum_protocol_version
 * and cipher_suites that allow them (and usually "@SECLEVEL=0").
 *
 * Session resumption: stateful (a per-SSL_CTX cache) and stateless (tickets).
 * Ticket keys are the configured session_ticket_keys, else random keys made
 * by herald and rotated every hour (the two previous keys still decrypt), so
 * a stolen key does not decrypt tickets forever; all workers share them, and
 * they survive certificate reloads. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "common.h"
#include "config/schema.h"
#include "config/tree.h"
#include "herald/stats.h"
#include "log.h"
#include "net/proxy_header.h"
#include "net/tls.h"
#include "net/tls_certs.h"
#include "net/tls_ocsp.h"

#define TICKET_ROTATE_MS (3600u * 1000u)
#define NTICKET_KEYS 3 /* the current key and two older ones that still decrypt */
#define DEFAULT_CIPHERS "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
/* TLS 1.3 in BoringSSL's (so Envoy's) order on AES hardware: AES-128-GCM
 * first. OpenSSL's own default puts AES-256-GCM-SHA384 first, whose
 * SHA-384 key schedule costs ~3% of a full handshake for no grade gained. */
#define DEFAULT_TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define DEFAULT_GROUPS "X25519:P-256:P-384"

enum verify_reason { R_NONE = 0, R_NO_CERT, R_VERIFY_ERROR, R_SAN, R_HASH };
enum match_op { M_EXACT, M_PREFIX, M_SUFFIX, M_CONTAINS };

struct datasrc {
    char *filename;                    /* or: */
    char *data; size_t len;            /* inline_string / inline_bytes / environment_variable */
};

struct san_matcher {
    int type;                          /* GEN_DNS, GEN_URI, GEN_EMAIL, GEN_IPADD; -1: any of them */
    enum match_op op;
    char *value;
    bool icase;
};

struct ticket_key { unsigned char name[16], hmac[32], aes[32]; };

struct named_stat { char *name; struct herald_stat *s; };

struct tls_stats {
    struct herald_stat *handshake, *connection_error, *session_reused, *no_certificate, *fail_verify_no_cert,
        *fail_verify_error, *fail_verify_san, *fail_verify_cert_hash, *context_update, *context_update_error;
    struct named_stat *ciphers; size_t nciphers;
    struct named_stat versions[4], curves[5];
    struct ocsp_stats ocsp;
};

struct cert_src { struct datasrc chain, key, password, ocsp; bool has_password, has_ocsp; };

struct watched { char *path; struct timespec mtime; off_t size; ino_t ino; };

struct tls_ctx {
    bool server;
    char *label;                       /* for logs */
    /* the config, parsed */
    int min_ver, max_ver;
    char *cipher_list, *ciphersuites, *groups, *sigalgs;
    struct cert_src *certs; size_t ncerts;
    struct datasrc ca; bool has_ca, system_roots;
    struct san_matcher *sans; size_t nsans;
    unsigned char (*hashes)[32]; size_t nhashes;
    unsigned char (*spkis)[32]; size_t nspkis;
    bool allow_expired, accept_untrusted;
    uint32_t max_depth;
    unsigned char *alpn; size_t alpn_len; /* wire format */
    bool require_client_cert, require_sni, no_tickets, no_stateful, prefer_client;
    enum ocsp_policy ocsp_policy;
    bool any_ocsp;                     /* a certificate has an ocsp_staple */
    uint64_t session_timeout_s;
    uint64_t handshake_timeout_ms;
    char *sni;
    bool sni_san, allow_reneg;
    uint32_t max_session_keys;
    /* stateless resumption */
    pthread_mutex_t key_lock;
    struct ticket_key keys[NTICKET_KEYS]; size_t nkeys;
    bool rotate_keys;
    uint64_t keys_born_ms;
    unsigned char sid_ctx[SSL_MAX_SID_CTX_LENGTH];
    /* live state */
    pthread_mutex_t lock;              /* ctx (swapped by reloads) and session */
    SSL_CTX *ctx;
    SSL_SESSION *session;              /* client: the last session, for resumption */
    struct watched *files; size_t nfiles;
    struct tls_stats st; bool have_stats;
    struct tls_ctx *next;              /* every context, for the file watch (main thread) */
};

static struct tls_ctx *all_ctxs;
static struct event *watch_ev;
static int reason_idx = -1;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init_once(void) { reason_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL); }

static void set_reason(SSL *ssl, enum verify_reason r)
{
    if (!SSL_get_ex_data(ssl, reason_idx))
        SSL_set_ex_data(ssl, reason_idx, (void *)(intptr_t)r);
}

static enum verify_reason get_reason(SSL *ssl) { return (enum verify_reason)(intptr_t)SSL_get_ex_data(ssl, reason_idx); }

/* OpenSSL's error queue as one line. */
static char *ssl_errors(char *what)
{
    char buf[256] = "";
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    char *out = xasprintf("%s%s%s", what, *buf ? ": " : "", buf);
    free(what);
    return out;
}

/* ------------------------------------------------------------ data sources */

static int ds_parse(const struct herald_cfg *n, struct datasrc *ds, const char *what, struct cfg_diag *d)
{
    const char *s;
    if ((s = herald_cfg_str(herald_cfg_get(n, "filename"), NULL))) {
        ds->filename = xstrdup(s);
    } else if ((s = herald_cfg_str(herald_cfg_get(n, "inline_string"), NULL))) {
        ds->data = xstrdup(s);
        ds->len = strlen(s);
    } else if ((s = herald_cfg_str(herald_cfg_get(n, "inline_bytes"), NULL))) {
        size_t sl = strlen(s);
        ds->data = xmalloc(sl / 4 * 3 + 4);
        int k = EVP_DecodeBlock((unsigned char *)ds->data, (const unsigned char *)s, (int)sl);
        if (k < 0 || sl % 4) {
            diag_error(d, herald_cfg_get(n, "inline_bytes"), "%s: inline_bytes is not valid base64", what);
            return -1;
        }
        /* EVP_DecodeBlock counts the '=' padding as zero bytes */
        while (sl && s[sl - 1] == '=') {
            sl--;
            k--;
        }
        ds->len = (size_t)k;
    } else if ((s = herald_cfg_str(herald_cfg_get(n, "environment_variable"), NULL))) {
        const char *v = getenv(s);
        if (!v) {
            diag_error(d, herald_cfg_get(n, "environment_variable"), "%s: environment variable '%s' is not set",
                       what, s);
            return -1;
        }
        ds->data = xstrdup(v);
        ds->len = strlen(v);
    } else {
        diag_error(d, n, "%s: give one of filename, inline_string, inline_bytes, environment_variable", what);
        return -1;
    }
    return 0;
}

static void ds_free(struct datasrc *ds)
{
    free(ds->filename);
    if (ds->data)
        OPENSSL_cleanse(ds->data, ds->len);
    free(ds->data);
}

/* The bytes of a data source (files are read now). malloc'd, NUL-terminated. */
static char *ds_load(const struct datasrc *ds, size_t *len, char **err)
{
    if (!ds->filename) {
        char *p = xmalloc(ds->len + 1);
        memcpy(p, ds->data, ds->len);
        p[ds->len] = 0;
        *len = ds->len;
        return p;
    }
    FILE *f = fopen(ds->filename, "rb");
    if (!f) {
        *err = xasprintf("cannot read '%s': %s", ds->filename, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *p = xmalloc(cap + 1);
    size_t k;
    while ((k = fread(p + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            if (cap >= (64u << 20)) {
                fclose(f);
                free(p);
                *err = xasprintf("'%s' is larger than 64 MiB", ds->filename);
                return NULL;
            }
            cap *= 2;
            p = xrealloc(p, cap + 1);
        }
    }
    fclose(f);
    p[n] = 0;
    *len = n;
    return p;
}

static const char *ds_name(const struct datasrc *ds) { return ds->filename ? ds->filename : "(inline)"; }

static BIO *ds_bio(const struct datasrc *ds, char **buf, char **err)
{
    size_t len;
    *buf = ds_load(ds, &len, err);
    return *buf ? BIO_new_mem_buf(*buf, (int)len) : NULL;
}

/* ------------------------------------------------------------ verification */

static bool str_match(const struct san_matcher *m, const char *s, size_t len)
{
    size_t vl = strlen(m->value);
    int (*cmp)(const char *, const char *, size_t) = m->icase ? strncasecmp : strncmp;
    switch (m->op) {
    case M_EXACT: return len == vl && cmp(s, m->value, vl) == 0;
    case M_PREFIX: return len >= vl && cmp(s, m->value, vl) == 0;
    case M_SUFFIX: return len >= vl && cmp(s + len - vl, m->value, vl) == 0;
    default:
        for (size_t i = 0; i + vl <= len; i++)
            if (cmp(s + i, m->value, vl) == 0)
                return true;
        return false;
    }
}

/* A DNS SAN "*.example.com" matches an exact matcher for "a.example.com"
 * (one label), as in Envoy. */
static bool dns_wildcard_match(const struct san_matcher *m, const char *san, size_t len)
{
    if (m->op != M_EXACT || len < 3 || san[0] != '*' || san[1] != '.')
        return false;
    const char *dot = strchr(m->value, '.');
    if (!dot || dot == m->value)
        return false;
    return strlen(dot) == len - 1 && strncasecmp(dot, san + 1, len - 1) == 0;
}

const char *tls_san_text(const GENERAL_NAME *g, char ip[INET6_ADDRSTRLEN], size_t *len)
{
    if (g->type == GEN_DNS || g->type == GEN_URI || g->type == GEN_EMAIL) {
        *len = (size_t)ASN1_STRING_length(g->d.ia5);
        return (const char *)ASN1_STRING_get0_data(g->d.ia5);
    }
    if (g->type == GEN_IPADD) {
        int l = ASN1_STRING_length(g->d.ip);
        if ((l == 4 || l == 16) &&
            inet_ntop(l == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(g->d.ip), ip, INET6_ADDRSTRLEN)) {
            *len = strlen(ip);
            return ip;
        }
    }
    return NULL;
}

static bool san_ok(const struct tls_ctx *t, X509 *x)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    bool ok = false;
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names) && !ok; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        char ip[INET6_ADDRSTRLEN];
        size_t len = 0;
        const char *s = tls_san_text(g, ip, &len);
        if (!s)
            continue;
        for (size_t k = 0; k < t->nsans && !ok; k++) {
            const struct san_matcher *m = &t->sans[k];
            if (m->type != -1 && m->type != g->type)
                continue;
            ok = str_match(m, s, len) || (g->type == GEN_DNS && dns_wildcard_match(m, s, len));
        }
    }
    GENERAL_NAMES_free(names);
    return ok;
}

static bool pins_ok(const struct tls_ctx *t, X509 *x)
{
    if (!t->nhashes && !t->nspkis)
        return true;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen;
    if (t->nhashes && X509_digest(x, EVP_sha256(), md, &mdlen))
        for (size_t i = 0; i < t->nhashes; i++)
            if (memcmp(md, t->hashes[i], 32) == 0)
                return true;
    if (t->nspkis && X509_pubkey_digest(x, EVP_sha256(), md, &mdlen))
        for (size_t i = 0; i < t->nspkis; i++)
            if (memcmp(md, t->spkis[i], 32) == 0)
                return true;
    return false;
}

static int verify_cb(int ok, X509_STORE_CTX *xs)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    const struct tls_ctx *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    if (!ok) {
        int err = X509_STORE_CTX_get_error(xs);
        bool pinned_only = !t->has_ca && !t->system_roots; /* pins and SANs without a CA */
        if (t->accept_untrusted || pinned_only ||
            (t->allow_expired && (err == X509_V_ERR_CERT_HAS_EXPIRED || err == X509_V_ERR_CRL_HAS_EXPIRED))) {
            ok = 1;
        } else {
            set_reason(ssl, R_VERIFY_ERROR);
            return 0;
        }
    }
    if (X509_STORE_CTX_get_error_depth(xs) == 0) {
        X509 *x = X509_STORE_CTX_get_current_cert(xs);
        if (t->nsans && !san_ok(t, x)) {
            set_reason(ssl, R_SAN);
            X509_STORE_CTX_set_error(xs, X509_V_ERR_HOSTNAME_MISMATCH);
            return 0;
        }
        if (!pins_ok(t, x)) {
            set_reason(ssl, R_HASH);
            X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
            return 0;
        }
    }
    return ok;
}

/* ------------------------------------------------------------ callbacks */

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
    const struct tls_ctx *t = arg;
    unsigned char *o;
    if (SSL_select_next_proto(&o, outlen, t->alpn, (unsigned)t->alpn_len, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* no overlap: go on without ALPN, as Envoy does */
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

static int servername_cb(SSL *ssl, int *alert, void *arg)
{
    const struct tls_ctx *t = arg;
    if (t->require_sni && !SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) {
        *alert = SSL_AD_UNRECOGNIZED_NAME;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

static void new_ticket_key(struct ticket_key *k)
{
    RAND_bytes(k->name, sizeof(k->name));
    RAND_bytes(k->hmac, sizeof(k->hmac));
    RAND_bytes(k->aes, sizeof(k->aes));
}

/* Called on ticket use, not on a timer: a quiet listener may come here
 * hours late, and then every hour it slept is a rotation, so that no key
 * outlives NTICKET_KEYS hours however few handshakes there were. */
static void rotate_keys(struct tls_ctx *t)
{
    uint64_t now = mono_ms();
    uint64_t due = (now - t->keys_born_ms) / TICKET_ROTATE_MS;
    if (!due)
        return;
    for (uint64_t i = 0; i < due && i < NTICKET_KEYS; i++) {
        memmove(&t->keys[1], &t->keys[0], sizeof(t->keys[0]) * (NTICKET_KEYS - 1));
        new_ticket_key(&t->keys[0]);
        if (t->nkeys < NTICKET_KEYS)
            t->nkeys++;
    }
    t->keys_born_ms += due * TICKET_ROTATE_MS;
}

/* Fetched once: EVP_aes_256_cbc() makes OpenSSL 3 look the cipher up in
 * its provider tables on every use (locks and a name lookup per ticket). */
static EVP_CIPHER *ticket_cipher_fetched;
static pthread_once_t ticket_cipher_once = PTHREAD_ONCE_INIT;

static void ticket_cipher_fetch(void) { ticket_cipher_fetched = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL); }

static const EVP_CIPHER *ticket_cipher(void)
{
    pthread_once(&ticket_cipher_once, ticket_cipher_fetch);
    return ticket_cipher_fetched ? ticket_cipher_fetched : EVP_aes_256_cbc();
}

/* Envoy's ticket format: 16 bytes of key name, AES-256-CBC, HMAC-SHA256. */
static int ticket_cb(SSL *ssl, unsigned char *name, unsigned char *iv, EVP_CIPHER_CTX *ectx, EVP_MAC_CTX *hctx,
                     int enc)
{
    struct tls_ctx *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    struct ticket_key k;
    int rc = 1;
    pthread_mutex_lock(&t->key_lock);
    if (t->rotate_keys)
        rotate_keys(t);
    if (enc) {
        k = t->keys[0];
    } else {
        size_t i = 0;
        while (i < t->nkeys && memcmp(name, t->keys[i].name, 16) != 0)
            i++;
        if (i == t->nkeys) {
            pthread_mutex_unlock(&t->key_lock);
            return 0; /* unknown key: a full handshake */
        }
        k = t->keys[i];
        /* 2: issue a new ticket. Under an old key, so the client moves to the
         * current one; and after every TLS 1.3 resumption, because TLS 1.3
         * clients use a ticket once (RFC 8446 C.4: OpenSSL's will not offer
         * it again) and would otherwise make every other connection a full
         * handshake. OpenSSL's own ticket keys and BoringSSL do the same. */
        rc = i == 0 && SSL_version(ssl) < TLS1_3_VERSION ? 1 : 2;
    }
    pthread_mutex_unlock(&t->key_lock);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof(k.hmac)),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (enc) {
        memcpy(name, k.name, 16);
        if (RAND_bytes(iv, 16) <= 0 || !EVP_EncryptInit_ex(ectx, ticket_cipher(), NULL, k.aes, iv))
            rc = -1;
    } else if (!EVP_DecryptInit_ex(ectx, ticket_cipher(), NULL, k.aes, iv)) {
        rc = -1;
    }
    if (rc > 0 && !EVP_MAC_CTX_set_params(hctx, params))
        rc = -1;
    OPENSSL_cleanse(&k, sizeof(k));
    return rc;
}

static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_ctx *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    pthread_mutex_lock(&t->lock);
    if (t->session)
        SSL_SESSION_free(t->session);
    t->session = sess;
    pthread_mutex_unlock(&t->lock);
    return 1; /* we keep the reference */
}

/* ------------------------------------------------------------ SSL_CTX */

static int load_cert(SSL_CTX *ctx, const struct cert_src *c, int *key_types, X509 **leaf_out, char **err)
{
    char *cbuf = NULL, *kbuf = NULL, *pbuf = NULL;
    BIO *cb = NULL, *kb = NULL;
    X509 *leaf = NULL;
    EVP_PKEY *key = NULL;
    int rc = -1;
    size_t plen;
    if (!(cb = ds_bio(&c->chain, &cbuf, err)) || !(kb = ds_bio(&c->key, &kbuf, err)))
        goto out;
    if (c->has_password && !(pbuf = ds_load(&c->password, &plen, err)))
        goto out;
    if (pbuf)
        while (plen && (pbuf[plen - 1] == '\n' || pbuf[plen - 1] == '\r'))
            pbuf[--plen] = 0;
    leaf = PEM_read_bio_X509_AUX(cb, NULL, NULL, NULL);
    if (!leaf) {
        *err = ssl_errors(xasprintf("certificate_chain %s: no PEM certificate", ds_name(&c->chain)));
        goto out;
    }
    key = PEM_read_bio_PrivateKey(kb, NULL, NULL, pbuf ? pbuf : (char *)"");
    if (!key) {
        *err = ssl_errors(xasprintf("private_key %s: no PEM private key (or a wrong password)", ds_name(&c->key)));
        goto out;
    }
    int type = EVP_PKEY_get_base_id(key);
    for (int i = 0; key_types[i]; i++)
        if (key_types[i] == type) {
            *err = xasprintf("certificate_chain %s: a second certificate with a %s key; give at most one "
                             "certificate per key type (RSA, ECDSA, ...)", ds_name(&c->chain), OBJ_nid2sn(type));
            goto out;
        }
    for (int i = 0; i < 7; i++)
        if (!key_types[i]) {
            key_types[i] = type;
            break;
        }
    /* use_certificate selects the slot of this key type; the chain and key that follow go with it */
    if (!SSL_CTX_use_certificate(ctx, leaf)) {
        *err = ssl_errors(xasprintf("certificate_chain %s", ds_name(&c->chain)));
        goto out;
    }
    X509 *ca;
    while ((ca = PEM_read_bio_X509(cb, NULL, NULL, NULL)))
        if (!SSL_CTX_add0_chain_cert(ctx, ca)) {
            X509_free(ca);
            *err = ssl_errors(xasprintf("certificate_chain %s", ds_name(&c->chain)));
            goto out;
        }
    ERR_clear_error(); /* the end of the PEM data */
    if (!SSL_CTX_use_PrivateKey(ctx, key) || !SSL_CTX_check_private_key(ctx)) {
        *err = ssl_errors(xasprintf("private_key %s does not match certificate_chain %s", ds_name(&c->key),
                                    ds_name(&c->chain)));
        goto out;
    }
    X509_up_ref(leaf);
    *leaf_out = leaf;
    rc = 0;
out:
    X509_free(leaf);
    EVP_PKEY_free(key);
    BIO_free(cb);
    BIO_free(kb);
    if (kbuf)
        OPENSSL_cleanse(kbuf, strlen(kbuf));
    free(cbuf);
    free(kbuf);
    free(pbuf);
    return rc;
}

static int load_ca(SSL_CTX *ctx, const struct tls_ctx *t, struct ctx_certs *cc, char **err)
{
    char *buf;
    BIO *b = ds_bio(&t->ca, &buf, err);
    if (!b)
        return -1;
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    int n = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
        X509_STORE_add_cert(store, x);
        ctx_certs_add_ca(cc, x, ds_name(&t->ca));
        if (t->server)
            SSL_CTX_add_client_CA(ctx, x); /* tells clients which certificates we take */
        X509_free(x);
        n++;
    }
    ERR_clear_error();
    BIO_free(b);
    free(buf);
    if (!n) {
        *err = xasprintf("trusted_ca %s: no PEM certificate in it", ds_name(&t->ca));
        return -1;
    }
    return 0;
}

/* Records the watched files' state before reading them, so that a write
 * during the build shows as a change on the next tick. */
static void snapshot_files(struct tls_ctx *t)
{
    for (size_t i = 0; i < t->nfiles; i++) {
        struct stat st;
        struct watched *w = &t->files[i];
        if (stat(w->path, &st) == 0) {
            w->mtime = st.st_mtim;
            w->size = st.st_size;
            w->ino = st.st_ino;
        } else {
            memset(&w->mtime, 0, sizeof(w->mtime));
            w->size = -1;
        }
    }
}

static SSL_CTX *build_ctx(struct tls_ctx *t, char **err)
{
    SSL_CTX *ctx = SSL_CTX_new(t->server ? TLS_server_method() : TLS_client_method());
    if (!ctx) {
        *err = ssl_errors(xstrdup("SSL_CTX_new"));
        return NULL;
    }
    SSL_CTX_set_app_data(ctx, t);
    struct ctx_certs *cc = ctx_certs_attach_new(ctx);   /* for GET /certs; freed with ctx */
    SSL_CTX_set_min_proto_version(ctx, t->min_ver);
    SSL_CTX_set_max_proto_version(ctx, t->max_ver);
    uint64_t opts = SSL_OP_NO_COMPRESSION;
    if (!t->allow_reneg)
        opts |= SSL_OP_NO_RENEGOTIATION;
    if (t->server && !t->prefer_client)
        opts |= SSL_OP_CIPHER_SERVER_PREFERENCE;
    if (t->no_tickets)
        opts |= SSL_OP_NO_TICKET;
    SSL_CTX_set_options(ctx, opts);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS); /* idle connections hold no record buffers */
    if (!SSL_CTX_set_cipher_list(ctx, t->cipher_list)) {
        *err = ssl_errors(xasprintf("tls_params.cipher_suites: no usable cipher in '%s'", t->cipher_list));
        goto fail;
    }
    if (!SSL_CTX_set_ciphersuites(ctx, t->ciphersuites ? t->ciphersuites : DEFAULT_TLS13_SUITES)) {
        *err = ssl_errors(xasprintf("tls_params.cipher_suites: bad TLS 1.3 suites '%s'", t->ciphersuites));
        goto fail;
    }
    if (!SSL_CTX_set1_groups_list(ctx, t->groups)) {
        *err = ssl_errors(xasprintf("tls_params.ecdh_curves: unknown curve in '%s'", t->groups));
        goto fail;
    }
    if (t->sigalgs && !SSL_CTX_set1_sigalgs_list(ctx, t->sigalgs)) {
        *err = ssl_errors(xasprintf("tls_params.signature_algorithms: unknown algorithm in '%s'", t->sigalgs));
        goto fail;
    }
    int key_types[8] = {0};
    for (size_t i = 0; i < t->ncerts; i++) {
        X509 *leaf = NULL;
        if (load_cert(ctx, &t->certs[i], key_types, &leaf, err) < 0)
            goto fail;
        ctx_certs_add_leaf(cc, leaf, ds_name(&t->certs[i].chain));
        if (t->server && t->certs[i].has_ocsp) {
            size_t len;
            char *der = ds_load(&t->certs[i].ocsp, &len, err);
            int rc = der ? tls_ocsp_add(ctx, leaf, (unsigned char *)der, len, ds_name(&t->certs[i].ocsp), err) : -1;
            free(der);
            if (rc < 0) {
                X509_free(leaf);
                goto fail;
            }
        }
        X509_free(leaf);
    }
    if (t->server && t->any_ocsp)
        tls_ocsp_enable(ctx, t->ocsp_policy, &t->st.ocsp);
    if (t->has_ca && load_ca(ctx, t, cc, err) < 0)
        goto fail;
    if (t->system_roots && !SSL_CTX_set_default_verify_paths(ctx)) {
        *err = ssl_errors(xstrdup("system_root_certs"));
        goto fail;
    }
    bool verify = t->has_ca || t->system_roots || t->nsans || t->nhashes || t->nspkis;
    int mode = verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE;
    if (t->server && t->require_client_cert)
        mode |= SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx, mode, verify ? verify_cb : NULL);
    if (t->max_depth)
        SSL_CTX_set_verify_depth(ctx, (int)t->max_depth);
    if (t->server) {
        if (t->alpn_len)
            SSL_CTX_set_alpn_select_cb(ctx, alpn_select, t);
        if (t->require_sni)
            SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb), SSL_CTX_set_tlsext_servername_arg(ctx, t);
        SSL_CTX_set_session_id_context(ctx, t->sid_ctx, sizeof(t->sid_ctx));
        SSL_CTX_set_session_cache_mode(ctx, t->no_stateful ? SSL_SESS_CACHE_OFF : SSL_SESS_CACHE_SERVER);
        if (t->session_timeout_s)
            SSL_CTX_set_timeout(ctx, (long)t->session_timeout_s);
        if (!t->no_tickets)
            SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
    } else {
        if (t->alpn_len && SSL_CTX_set_alpn_protos(ctx, t->alpn, (unsigned)t->alpn_len) != 0) {
            *err = ssl_errors(xstrdup("alpn_protocols"));
            goto fail;
        }
        if (t->max_session_keys) {
            SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
            SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
        } else {
            SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        }
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

json_t *tls_certs_dump(void)
{
    json_t *arr = json_array();
    for (struct tls_ctx *t = all_ctxs; t; t = t->next) {
        pthread_mutex_lock(&t->lock);
        SSL_CTX *ctx = t->ctx;
        if (ctx)
            SSL_CTX_up_ref(ctx);
        pthread_mutex_unlock(&t->lock);
        if (!ctx)
            continue;
        json_array_append_new(arr, ctx_certs_json(ctx));
        SSL_CTX_free(ctx);
    }
    return json_pack("{s:o}", "certificates", arr);
}

/* ------------------------------------------------------------ config */

static int tls_version(const struct herald_cfg *n, int def)
{
    const char *s = herald_cfg_str(n, "TLS_AUTO");
    if (strcmp(s, "TLSv1_0") == 0)
        return TLS1_VERSION;
    if (strcmp(s, "TLSv1_1") == 0)
        return TLS1_1_VERSION;
    if (strcmp(s, "TLSv1_2") == 0)
        return TLS1_2_VERSION;
    if (strcmp(s, "TLSv1_3") == 0)
        return TLS1_3_VERSION;
    return def;
}

static void add_watch(struct tls_ctx *t, const struct datasrc *ds)
{
    if (!ds->filename)
        return;
    for (size_t i = 0; i < t->nfiles; i++)
        if (strcmp(t->files[i].path, ds->filename) == 0)
            return;
    t->files = xrealloc(t->files, (t->nfiles + 1) * sizeof(*t->files));
    memset(&t->files[t->nfiles], 0, sizeof(t->files[0]));
    t->files[t->nfiles++].path = xstrdup(ds->filename);
}

static char *join(const struct herald_cfg *list, const char *sep)
{
    size_t n = herald_cfg_len(list);
    if (!n)
        return NULL;
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(herald_cfg_str(herald_cfg_at(list, i), "")) + strlen(sep);
    char *out = xcalloc(1, len);
    for (size_t i = 0; i < n; i++) {
        if (i)
            strcat(out, sep);
        strcat(out, herald_cfg_str(herald_cfg_at(list, i), ""));
    }
    return out;
}

/* cipher_suites: Envoy's "[a|b]" groups are flattened (OpenSSL has no equal
 * preference); TLS_* names are TLS 1.3 suites, the rest the TLS <= 1.2 list. */
static void parse_ciphers(struct tls_ctx *t, const struct herald_cfg *list)
{
    size_t n = herald_cfg_len(list);
    if (!n) {
        t->cipher_list = xstrdup(DEFAULT_CIPHERS);
        return;
    }
    char *c12 = xstrdup(""), *c13 = NULL;
    for (size_t i = 0; i < n; i++) {
        char *item = xstrdup(herald_cfg_str(herald_cfg_at(list, i), ""));
        char *save = NULL;
        for (char *tok = strtok_r(item, "[]|:", &save); tok; tok = strtok_r(NULL, "[]|:", &save)) {
            char **dst = strncmp(tok, "TLS_", 4) == 0 ? &c13 : &c12;
            char *old = *dst;
            *dst = old && *old ? xasprintf("%s:%s", old, tok) : xstrdup(tok);
            free(old);
        }
        free(item);
    }
    t->cipher_list = *c12 ? c12 : (free(c12), xstrdup(DEFAULT_CIPHERS));
    t->ciphersuites = c13;
}

static int hex_val(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch |= 0x20;
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

static int parse_pins(struct tls_ctx *t, const struct herald_cfg *vc, struct cfg_diag *d)
{
    const struct herald_cfg *l = herald_cfg_get(vc, "verify_certificate_hash");
    size_t n = herald_cfg_len(l);
    t->hashes = n ? xcalloc(n, 32) : NULL;
    for (size_t i = 0; i < n; i++) {
        const char *s = herald_cfg_str(herald_cfg_at(l, i), "");
        size_t k = 0;
        for (const char *p = s; *p && k < 64; p++) {
            if (*p == ':')
                continue;
            int v = hex_val((unsigned char)*p);
            if (v < 0)
                break;
            t->hashes[i][k / 2] = (unsigned char)(t->hashes[i][k / 2] << 4 | v);
            k++;
        }
        if (k != 64 || strlen(s) < 64) {
            diag_error(d, herald_cfg_at(l, i), "verify_certificate_hash: expected a hex SHA-256 (64 digits, "
                       "colons allowed)");
            return -1;
        }
        t->nhashes++;
    }
    l = herald_cfg_get(vc, "verify_certificate_spki");
    n = herald_cfg_len(l);
    t->spkis = n ? xcalloc(n, 32) : NULL;
    for (size_t i = 0; i < n; i++) {
        const char *s = herald_cfg_str(herald_cfg_at(l, i), "");
        unsigned char out[64];
        if (strlen(s) != 44 || EVP_DecodeBlock(out, (const unsigned char *)s, 44) != 33) {
            diag_error(d, herald_cfg_at(l, i), "verify_certificate_spki: expected a base64 SHA-256 (44 characters)");
            return -1;
        }
        memcpy(t->spkis[t->nspkis++], out, 32);
    }
    return 0;
}

static void add_san(struct tls_ctx *t, int type, const struct herald_cfg *m)
{
    static const char *const ops[] = {"exact", "prefix", "suffix", "contains"};
    for (int op = 0; op < 4; op++) {
        const char *v = herald_cfg_str(herald_cfg_get(m, ops[op]), NULL);
        if (!v)
            continue;
        t->sans = xrealloc(t->sans, (t->nsans + 1) * sizeof(*t->sans));
        t->sans[t->nsans++] = (struct san_matcher){
            .type = type, .op = (enum match_op)op, .value = xstrdup(v),
            .icase = herald_cfg_bool(herald_cfg_get(m, "ignore_case"), false),
        };
        return;
    }
}

static int parse_validation(struct tls_ctx *t, const struct herald_cfg *vc, struct cfg_diag *d)
{
    if (!vc)
        return 0;
    const struct herald_cfg *ca = herald_cfg_get(vc, "trusted_ca");
    if (ca) {
        if (ds_parse(ca, &t->ca, "trusted_ca", d) < 0)
            return -1;
        t->has_ca = true;
        add_watch(t, &t->ca);
    }
    t->system_roots = herald_cfg_get(vc, "system_root_certs") != NULL;
    if (parse_pins(t, vc, d) < 0)
        return -1;
    const struct herald_cfg *l = herald_cfg_get(vc, "match_typed_subject_alt_names");
    for (size_t i = 0; i < herald_cfg_len(l); i++) {
        const struct herald_cfg *m = herald_cfg_at(l, i);
        const char *ty = herald_cfg_str(herald_cfg_get(m, "san_type"), "");
        int type = strcmp(ty, "DNS") == 0 ? GEN_DNS : strcmp(ty, "URI") == 0 ? GEN_URI
                 : strcmp(ty, "EMAIL") == 0 ? GEN_EMAIL : strcmp(ty, "IP_ADDRESS") == 0 ? GEN_IPADD : 0;
        if (!type) {
            diag_error(d, herald_cfg_get(m, "san_type"), "not supported: san_type %s (use DNS, URI, EMAIL or "
                       "IP_ADDRESS)", ty);
            return -1;
        }
        add_san(t, type, herald_cfg_get(m, "matcher"));
    }
    l = herald_cfg_get(vc, "match_subject_alt_names");
    for (size_t i = 0; i < herald_cfg_len(l); i++)
        add_san(t, -1, herald_cfg_at(l, i));
    t->allow_expired = herald_cfg_bool(herald_cfg_get(vc, "allow_expired_certificate"), false);
    t->accept_untrusted = strcmp(herald_cfg_str(herald_cfg_get(vc, "trust_chain_verification"), ""),
                                 "ACCEPT_UNTRUSTED") == 0;
    t->max_depth = (uint32_t)herald_cfg_int(herald_cfg_get(vc, "max_verify_depth"), 0);
    return 0;
}

static int parse_common(struct tls_ctx *t, const struct herald_cfg *cc, struct cfg_diag *d)
{
    const struct herald_cfg *tp = herald_cfg_get(cc, "tls_params");
    t->min_ver = tls_version(herald_cfg_get(tp, "tls_minimum_protocol_version"), TLS1_2_VERSION);
    t->max_ver = tls_version(herald_cfg_get(tp, "tls_maximum_protocol_version"), TLS1_3_VERSION);
    if (t->min_ver > t->max_ver) {
        diag_error(d, tp, "tls_minimum_protocol_version is above tls_maximum_protocol_version");
        return -1;
    }
    parse_ciphers(t, herald_cfg_get(tp, "cipher_suites"));
    t->groups = join(herald_cfg_get(tp, "ecdh_curves"), ":");
    if (!t->groups)
        t->groups = xstrdup(DEFAULT_GROUPS);
    t->sigalgs = join(herald_cfg_get(tp, "signature_algorithms"), ":");

    const struct herald_cfg *certs = herald_cfg_get(cc, "tls_certificates");
    t->ncerts = herald_cfg_len(certs);
    t->certs = t->ncerts ? xcalloc(t->ncerts, sizeof(*t->certs)) : NULL;
    for (size_t i = 0; i < t->ncerts; i++) {
        const struct herald_cfg *c = herald_cfg_at(certs, i);
        struct cert_src *cs = &t->certs[i];
        if (ds_parse(herald_cfg_get(c, "certificate_chain"), &cs->chain, "certificate_chain", d) < 0 ||
            ds_parse(herald_cfg_get(c, "private_key"), &cs->key, "private_key", d) < 0)
            return -1;
        const struct herald_cfg *pw = herald_cfg_get(c, "password");
        if (pw) {
            if (ds_parse(pw, &cs->password, "password", d) < 0)
                return -1;
            cs->has_password = true;
            add_watch(t, &cs->password);
        }
        const struct herald_cfg *oc = herald_cfg_get(c, "ocsp_staple");
        if (oc && !t->server) {
            diag_warn(d, oc, "ocsp_staple is ignored on a cluster: servers staple OCSP responses, clients do not");
        } else if (oc) {
            if (ds_parse(oc, &cs->ocsp, "ocsp_staple", d) < 0)
                return -1;
            cs->has_ocsp = true;
            t->any_ocsp = true;
            add_watch(t, &cs->ocsp);
        }
        add_watch(t, &cs->chain);
        add_watch(t, &cs->key);
    }
    const struct herald_cfg *alpn = herald_cfg_get(cc, "alpn_protocols");
    for (size_t i = 0; i < herald_cfg_len(alpn); i++) {
        const char *p = herald_cfg_str(herald_cfg_at(alpn, i), "");
        size_t l = strlen(p);
        if (l == 0 || l > 255) {
            diag_error(d, herald_cfg_at(alpn, i), "an ALPN protocol name has 1 to 255 bytes");
            return -1;
        }
        t->alpn = xrealloc(t->alpn, t->alpn_len + 1 + l);
        t->alpn[t->alpn_len] = (unsigned char)l;
        memcpy(t->alpn + t->alpn_len + 1, p, l);
        t->alpn_len += 1 + l;
    }
    return parse_validation(t, herald_cfg_get(cc, "validation_context"), d);
}

static int parse_ticket_keys(struct tls_ctx *t, const struct herald_cfg *stk, struct cfg_diag *d)
{
    const struct herald_cfg *keys = herald_cfg_get(stk, "keys");
    size_t n = herald_cfg_len(keys);
    if (n > NTICKET_KEYS) {
        diag_error(d, keys, "at most %d session ticket keys", NTICKET_KEYS);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        struct datasrc ds = {0};
        char *err = NULL, *buf;
        size_t len = 0;
        if (ds_parse(herald_cfg_at(keys, i), &ds, "session_ticket_keys", d) < 0)
            return -1;
        buf = ds_load(&ds, &len, &err);
        ds_free(&ds);
        if (!buf || len != 80) {
            diag_error(d, herald_cfg_at(keys, i), "session ticket key: %s", buf ? "expected exactly 80 bytes" : err);
            free(err);
            if (buf)
                OPENSSL_cleanse(buf, len);
            free(buf);
            return -1;
        }
        memcpy(t->keys[i].name, buf, 16);
        memcpy(t->keys[i].hmac, buf + 16, 32);
        memcpy(t->keys[i].aes, buf + 48, 32);
        OPENSSL_cleanse(buf, len);
        free(buf);
    }
    t->nkeys = n;
    return 0;
}

static void make_named(struct named_stat *ns, const char *prefix, const char *kind, const char *name,
                       bool validate_only)
{
    ns->name = xstrdup(name);
    if (!validate_only) {
        char *full = xasprintf("ssl.%s.%s", kind, name);
        ns->s = herald_counter(prefix, full);
        free(full);
    }
}

static void make_stats(struct tls_ctx *t, const char *prefix, bool validate_only)
{
    struct tls_stats *s = &t->st;
    static const char *const versions[] = {"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"};
    static const char *const curves[] = {"X25519", "P-256", "P-384", "P-521", "X448"};
    for (int i = 0; i < 4; i++)
        make_named(&s->versions[i], prefix, "versions", versions[i], validate_only);
    for (int i = 0; i < 5; i++)
        make_named(&s->curves[i], prefix, "curves", curves[i], validate_only);
    STACK_OF(SSL_CIPHER) *cs = SSL_CTX_get_ciphers(t->ctx);
    s->nciphers = (size_t)sk_SSL_CIPHER_num(cs);
    s->ciphers = xcalloc(s->nciphers ? s->nciphers : 1, sizeof(*s->ciphers));
    for (size_t i = 0; i < s->nciphers; i++)
        make_named(&s->ciphers[i], prefix, "cipher", SSL_CIPHER_get_name(sk_SSL_CIPHER_value(cs, (int)i)),
                   validate_only);
    if (validate_only)
        return;
    t->have_stats = true;
    s->handshake = herald_counter(prefix, "ssl.handshake");
    s->connection_error = herald_counter(prefix, "ssl.connection_error");
    s->session_reused = herald_counter(prefix, "ssl.session_reused");
    s->no_certificate = herald_counter(prefix, "ssl.no_certificate");
    s->fail_verify_no_cert = herald_counter(prefix, "ssl.fail_verify_no_cert");
    s->fail_verify_error = herald_counter(prefix, "ssl.fail_verify_error");
    s->fail_verify_san = herald_counter(prefix, "ssl.fail_verify_san");
    s->fail_verify_cert_hash = herald_counter(prefix, "ssl.fail_verify_cert_hash");
    /* Envoy counts SDS updates as <x>_ssl_socket_factory.ssl_context_update_by_sds; herald's
     * updates come from watched files */
    const char *fac = t->server ? "server_ssl_socket_factory" : "client_ssl_socket_factory";
    char *n1 = xasprintf("%s.ssl_context_update_by_file", fac), *n2 = xasprintf("%s.ssl_context_update_error", fac);
    s->context_update = herald_counter(prefix, n1);
    s->context_update_error = herald_counter(prefix, n2);
    if (t->any_ocsp) {
        s->ocsp.requests = herald_counter(prefix, "ssl.ocsp_staple_requests");
        s->ocsp.responses = herald_counter(prefix, "ssl.ocsp_staple_responses");
        s->ocsp.omitted = herald_counter(prefix, "ssl.ocsp_staple_omitted");
        s->ocsp.failed = herald_counter(prefix, "ssl.ocsp_staple_failed");
    }
    free(n1);
    free(n2);
}

/* Checks the {name, typed_config} wrapper; returns the context's typed_config,
 * or NULL (raw_buffer: *raw; an error: in d). */
static struct herald_cfg *unwrap(const struct herald_cfg *ts, bool server, bool *raw, struct cfg_diag *d)
{
    static const char *const down[] = {"envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                                       "envoy.api.v2.auth.DownstreamTlsContext", NULL};
    static const char *const up[] = {"envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                                     "envoy.api.v2.auth.UpstreamTlsContext", NULL};
    *raw = false;
    if (schema_check((struct herald_cfg *)ts, &tls_transport_socket_msg, d) < 0)
        return NULL;
    const char *name = herald_cfg_str(herald_cfg_get(ts, "name"), "");
    struct herald_cfg *tc = (struct herald_cfg *)herald_cfg_get(ts, "typed_config");
    const char *url = herald_cfg_str(herald_cfg_get(tc, "@type"), NULL);
    if (url && strrchr(url, '/'))
        url = strrchr(url, '/') + 1;
    bool is_raw = url ? strstr(url, "transport_sockets.raw_buffer.") != NULL
                      : strcmp(name, "envoy.transport_sockets.raw_buffer") == 0 || strcmp(name, "raw_buffer") == 0;
    if (is_raw) {
        *raw = true;
        return NULL;
    }
    const char *const *want = server ? down : up, *const *other = server ? up : down;
    if (url) {
        bool ok = false;
        for (int i = 0; want[i]; i++)
            ok |= strcmp(url, want[i]) == 0;
        if (!ok) {
            bool wrong_side = false;
            for (int i = 0; other[i]; i++)
                wrong_side |= strcmp(url, other[i]) == 0;
            if (wrong_side)
                diag_error(d, herald_cfg_get(tc, "@type"), "%s here: a %s takes %s", url,
                           server ? "listener filter chain" : "cluster", want[0]);
            else
                diag_error(d, herald_cfg_get(tc, "@type"), "not supported: transport socket type %s (a %s takes "
                           "envoy.transport_sockets.raw_buffer or %s)", url,
                           server ? "listener filter chain" : "cluster", want[0]);
            return NULL;
        }
    } else if (strcmp(name, "envoy.transport_sockets.tls") != 0 && strcmp(name, "tls") != 0) {
        diag_error(d, ts, "not supported: transport socket '%s' (use envoy.transport_sockets.tls with a typed_config "
                   "\"@type\": type.googleapis.com/%s)", name, want[0]);
        return NULL;
    }
    if (!tc) {
        diag_error(d, ts, "envoy.transport_sockets.tls needs a typed_config (%s)", want[0]);
        return NULL;
    }
    if (schema_check(tc, server ? &tls_downstream_msg : &tls_upstream_msg, d) < 0)
        return NULL;
    return tc;
}

static struct tls_ctx *ctx_alloc(bool server, const char *label)
{
    pthread_once(&once, init_once);
    struct tls_ctx *t = xcalloc(1, sizeof(*t));
    t->server = server;
    t->label = xstrdup(label);
    pthread_mutex_init(&t->lock, NULL);
    pthread_mutex_init(&t->key_lock, NULL);
    return t;
}

static struct tls_ctx *finish(struct tls_ctx *t, const struct herald_cfg *at, const char *prefix, bool validate_only,
                              struct cfg_diag *d)
{
    char *err = NULL;
    snapshot_files(t);
    t->ctx = build_ctx(t, &err);
    if (!t->ctx) {
        diag_error(d, at, "%s", err);
        free(err);
        tls_ctx_free(t);
        return NULL;
    }
    if (t->min_ver < TLS1_2_VERSION)
        diag_warn(d, at, "%s allows TLS versions older than 1.2 (tls_minimum_protocol_version)", t->label);
    make_stats(t, prefix, validate_only);
    t->next = all_ctxs;
    all_ctxs = t;
    return t;
}

static void digest_node(EVP_MD_CTX *md, const struct herald_cfg *n)
{
    json_t *j = n ? cfg_to_json(n) : NULL;
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
    EVP_DigestUpdate(md, text ? text : "", text ? strlen(text) + 1 : 1);   /* the NUL keeps fields apart */
    free(text);
    json_decref(j);
}

/* OpenSSL resumes a session only under the session id context it was made
 * in. Derived from what decides who may resume (the certificate chains, the
 * client validation, require_client_certificate, as the config writes them;
 * no private key), so heralds with the same config, a fleet or one process
 * after a restart, resume each other's tickets under shared
 * session_ticket_keys, as Envoy's do; a context that checks clients
 * differently does not take the others' sessions. */
static void derive_sid_ctx(struct tls_ctx *t, const struct herald_cfg *tc)
{
    const struct herald_cfg *cc = herald_cfg_get(tc, "common_tls_context");
    const struct herald_cfg *chains = herald_cfg_get(cc, "tls_certificates");
    unsigned char md_out[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL))
        abort();
    EVP_DigestUpdate(md, "herald sid_ctx 1", 17);
    for (size_t i = 0; i < herald_cfg_len(chains); i++)
        digest_node(md, herald_cfg_get(herald_cfg_at(chains, i), "certificate_chain"));
    digest_node(md, herald_cfg_get(cc, "validation_context"));
    digest_node(md, herald_cfg_get(tc, "require_client_certificate"));
    if (!EVP_DigestFinal_ex(md, md_out, &len))
        abort();
    EVP_MD_CTX_free(md);
    memcpy(t->sid_ctx, md_out, len < sizeof(t->sid_ctx) ? len : sizeof(t->sid_ctx));
}

struct tls_ctx *tls_server_new(const struct herald_cfg *ts, const struct herald_cfg *chain_node,
                               const char *stat_prefix, bool validate_only, struct cfg_diag *d)
{
    bool raw;
    const struct herald_cfg *tc = unwrap(ts, true, &raw, d);
    if (!tc)
        return NULL;
    char label[256];
    snprintf(label, sizeof(label), "%s TLS context", stat_prefix);
    struct tls_ctx *t = ctx_alloc(true, label);
    if (parse_common(t, herald_cfg_get(tc, "common_tls_context"), d) < 0)
        goto fail;
    if (!t->ncerts) {
        diag_error(d, tc, "a DownstreamTlsContext needs common_tls_context.tls_certificates (SDS is not supported)");
        goto fail;
    }
    t->require_client_cert = herald_cfg_bool(herald_cfg_get(tc, "require_client_certificate"), false);
    if (t->require_client_cert && !t->has_ca && !t->system_roots && !t->nhashes && !t->nspkis) {
        diag_error(d, herald_cfg_get(tc, "require_client_certificate"), "require_client_certificate needs "
                   "common_tls_context.validation_context with trusted_ca (or certificate pins)");
        goto fail;
    }
    t->require_sni = herald_cfg_bool(herald_cfg_get(tc, "require_sni"), false);
    t->no_tickets = herald_cfg_bool(herald_cfg_get(tc, "disable_stateless_session_resumption"), false);
    t->no_stateful = herald_cfg_bool(herald_cfg_get(tc, "disable_stateful_session_resumption"), false);
    t->prefer_client = herald_cfg_bool(herald_cfg_get(tc, "prefer_client_ciphers"), false);
    const struct herald_cfg *op = herald_cfg_get(tc, "ocsp_staple_policy");
    const char *pol = herald_cfg_str(op, "LENIENT_STAPLING");
    t->ocsp_policy = !strcmp(pol, "MUST_STAPLE") ? OCSP_MUST : !strcmp(pol, "STRICT_STAPLING") ? OCSP_STRICT : OCSP_LENIENT;
    if (t->ocsp_policy == OCSP_MUST)
        for (size_t i = 0; i < t->ncerts; i++)
            if (!t->certs[i].has_ocsp) {
                diag_error(d, op, "MUST_STAPLE: tls_certificates[%zu] has no ocsp_staple (every certificate needs "
                           "one)", i);
                goto fail;
            }
    t->session_timeout_s = (herald_cfg_duration_ms(herald_cfg_get(tc, "session_timeout"), 0) + 999) / 1000;
    const struct herald_cfg *stk = herald_cfg_get(tc, "session_ticket_keys");
    if (stk) {
        if (parse_ticket_keys(t, stk, d) < 0)
            goto fail;
    } else {
        new_ticket_key(&t->keys[0]);
        t->nkeys = 1;
        t->rotate_keys = true;
        t->keys_born_ms = mono_ms();
    }
    derive_sid_ctx(t, tc);
    t->handshake_timeout_ms =
        herald_cfg_duration_ms(herald_cfg_get(chain_node, "transport_socket_connect_timeout"), 0);
    return finish(t, ts, stat_prefix, validate_only, d);
fail:
    tls_ctx_free(t);
    return NULL;
}

struct tls_ctx *tls_client_new(const struct herald_cfg *ts, const char *cluster_name, bool validate_only,
                               struct cfg_diag *d)
{
    bool raw;
    const struct herald_cfg *tc = unwrap(ts, false, &raw, d);
    if (!tc)
        return NULL;
    char label[256];
    snprintf(label, sizeof(label), "cluster '%s' TLS context", cluster_name);
    struct tls_ctx *t = ctx_alloc(false, label);
    if (parse_common(t, herald_cfg_get(tc, "common_tls_context"), d) < 0)
        goto fail;
    const char *sni = herald_cfg_str(herald_cfg_get(tc, "sni"), NULL);
    if (sni && strlen(sni) > 255) {
        diag_error(d, herald_cfg_get(tc, "sni"), "sni is longer than 255 bytes");
        goto fail;
    }
    t->sni = sni && *sni ? xstrdup(sni) : NULL;
    t->sni_san = herald_cfg_bool(herald_cfg_get(tc, "auto_sni_san_validation"), false);
    if (t->sni_san && !t->sni) {
        diag_error(d, herald_cfg_get(tc, "auto_sni_san_validation"), "auto_sni_san_validation needs sni");
        goto fail;
    }
    t->allow_reneg = herald_cfg_bool(herald_cfg_get(tc, "allow_renegotiation"), false);
    t->max_session_keys = (uint32_t)herald_cfg_int(herald_cfg_get(tc, "max_session_keys"), 1);
    if (!t->has_ca && !t->system_roots && !t->accept_untrusted)
        diag_warn(d, ts, "cluster '%s': the upstream's certificate is not verified (no "
                  "validation_context.trusted_ca)", cluster_name);
    char *prefix = xasprintf("cluster.%s", cluster_name);
    struct tls_ctx *r = finish(t, ts, prefix, validate_only, d);
    free(prefix);
    return r;
fail:
    tls_ctx_free(t);
    return NULL;
}

void tls_ctx_free(struct tls_ctx *t)
{
    if (!t)
        return;
    for (struct tls_ctx **p = &all_ctxs; *p; p = &(*p)->next)
        if (*p == t) {
            *p = t->next;
            break;
        }
    SSL_CTX_free(t->ctx);
    if (t->session)
        SSL_SESSION_free(t->session);
    free(t->label);
    free(t->cipher_list);
    free(t->ciphersuites);
    free(t->groups);
    free(t->sigalgs);
    for (size_t i = 0; i < t->ncerts; i++) {
        ds_free(&t->certs[i].chain);
        ds_free(&t->certs[i].key);
        ds_free(&t->certs[i].password);
        ds_free(&t->certs[i].ocsp);
    }
    free(t->certs);
    ds_free(&t->ca);
    for (size_t i = 0; i < t->nsans; i++)
        free(t->sans[i].value);
    free(t->sans);
    free(t->hashes);
    free(t->spkis);
    free(t->alpn);
    free(t->sni);
    for (size_t i = 0; i < t->nfiles; i++)
        free(t->files[i].path);
    free(t->files);
    for (int i = 0; i < 4; i++)
        free(t->st.versions[i].name);
    for (int i = 0; i < 5; i++)
        free(t->st.curves[i].name);
    for (size_t i = 0; i < t->st.nciphers; i++)
        free(t->st.ciphers[i].name);
    free(t->st.ciphers);
    OPENSSL_cleanse(t->keys, sizeof(t->keys));
    pthread_mutex_destroy(&t->lock);
    pthread_mutex_destroy(&t->key_lock);
    free(t);
}

int tls_clusters_build(struct bootstrap *b, bool validate_only, struct cfg_diag *d)
{
    int rc = 0;
    for (size_t i = 0; i < b->nclusters; i++) {
        struct cluster_cfg *c = &b->clusters[i];
        if (pp_cluster_parse(c, d) < 0)   /* a PROXY protocol wrapper: its inner socket is what follows */
            rc = -1;
        if (!c->transport_socket)
            continue;
        size_t before = d->nerrors;
        c->tls = tls_client_new(c->transport_socket, c->name, validate_only, d);
        if (!c->tls && d->nerrors > before)
            rc = -1;
    }
    return rc;
}

void tls_clusters_destroy(struct bootstrap *b)
{
    for (size_t i = 0; b && i < b->nclusters; i++) {
        tls_ctx_free(b->clusters[i].tls);
        b->clusters[i].tls = NULL;
        pp_cluster_free(&b->clusters[i]);
    }
}

/* ------------------------------------------------------------ reload */

static bool files_changed(const struct tls_ctx *t)
{
    for (size_t i = 0; i < t->nfiles; i++) {
        struct stat st;
        const struct watched *w = &t->files[i];
        if (stat(w->path, &st) < 0) {
            if (w->size != -1)
                return true;
            continue;
        }
        if (st.st_mtim.tv_sec != w->mtime.tv_sec || st.st_mtim.tv_nsec != w->mtime.tv_nsec ||
            st.st_size != w->size || st.st_ino != w->ino)
            return true;
    }
    return false;
}

static void reload(struct tls_ctx *t)
{
    char *err = NULL;
    snapshot_files(t);
    SSL_CTX *ctx = build_ctx(t, &err);
    if (!ctx) {
        /* often half of a cert/key pair written: the other half's change retries */
        log_warn("tls", "%s: certificate files changed but cannot be used (keeping the old ones): %s", t->label, err);
        free(err);
        if (t->have_stats)
            herald_stat_inc(t->st.context_update_error);
        return;
    }
    pthread_mutex_lock(&t->lock);
    SSL_CTX *old = t->ctx;
    t->ctx = ctx;
    if (t->session) { /* a session of the old context may name the old certificate */
        SSL_SESSION_free(t->session);
        t->session = NULL;
    }
    pthread_mutex_unlock(&t->lock);
    SSL_CTX_free(old); /* live connections hold their own references */
    log_info("tls", "%s: certificate files changed; new connections use the new ones", t->label);
    if (t->have_stats)
        herald_stat_inc(t->st.context_update);
}

static void on_watch(evutil_socket_t fd, short what, void *arg)
{
    for (struct tls_ctx *t = all_ctxs; t; t = t->next)
        if (t->nfiles && files_changed(t))
            reload(t);
}

void tls_watch_start(struct event_base *base)
{
    if (watch_ev || !all_ctxs)
        return;
    watch_ev = event_new(base, -1, EV_PERSIST, on_watch, NULL);
    struct timeval tv = {1, 0};
    event_add(watch_ev, &tv);
}

void tls_watch_stop(void)
{
    if (watch_ev)
        event_free(watch_ev);
    watch_ev = NULL;
}

/* ------------------------------------------------------------ connections */

SSL *tls_ssl_new(struct tls_ctx *t)
{
    pthread_mutex_lock(&t->lock);
    SSL *ssl = SSL_new(t->ctx); /* takes its own reference to the SSL_CTX */
    if (ssl && !t->server && t->session)
        SSL_set_session(ssl, t->session);
    pthread_mutex_unlock(&t->lock);
    if (!ssl)
        return NULL;
    if (!t->server && t->sni) {
        SSL_set_tlsext_host_name(ssl, t->sni);
        if (t->sni_san)
            SSL_set1_host(ssl, t->sni);
    }
    return ssl;
}

uint64_t tls_handshake_timeout_ms(const struct tls_ctx *t) { return t->handshake_timeout_ms; }

static void inc_named(struct named_stat *ns, size_t n, const char *name)
{
    for (size_t i = 0; name && i < n; i++)
        if (strcmp(ns[i].name, name) == 0) {
            herald_stat_inc(ns[i].s);
            return;
        }
}

static const char *curve_name(int nid)
{
    switch (nid) {
    case NID_X25519: return "X25519";
    case NID_X9_62_prime256v1: return "P-256";
    case NID_secp384r1: return "P-384";
    case NID_secp521r1: return "P-521";
    case NID_X448: return "X448";
    default: return NULL;
    }
}

int tls_handshake_done(struct tls_ctx *t, SSL *ssl)
{
    if (!t->have_stats)
        return 0;
    struct tls_stats *s = &t->st;
    herald_stat_inc(s->handshake);
    if (SSL_session_reused(ssl))
        herald_stat_inc(s->session_reused);
    if (t->server && !SSL_get0_peer_certificate(ssl))
        herald_stat_inc(s->no_certificate);
    inc_named(s->versions, 4, SSL_get_version(ssl));
    inc_named(s->ciphers, s->nciphers, SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)));
    inc_named(s->curves, 5, curve_name(SSL_get_negotiated_group(ssl)));
    return 0;
}

void tls_handshake_failed(struct tls_ctx *t, SSL *ssl, unsigned long err, char *buf, size_t size)
{
    enum verify_reason r = get_reason(ssl);
    unsigned long e = err;
    if (!r && e && ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
        r = R_NO_CERT;
    if (e) {
        char tmp[200];
        ERR_error_string_n(e, tmp, sizeof(tmp));
        long vr = SSL_get_verify_result(ssl);
        if (r == R_VERIFY_ERROR || r == R_SAN || r == R_HASH)
            snprintf(buf, size, "%s (%s)", tmp, r == R_SAN ? "no subject alt name matches"
                     : r == R_HASH ? "certificate hash/SPKI not pinned" : X509_verify_cert_error_string(vr));
        else
            snprintf(buf, size, "%s", tmp);
    } else {
        snprintf(buf, size, "connection closed during the TLS handshake");
    }
    if (!t->have_stats)
        return;
    struct tls_stats *s = &t->st;
    herald_stat_inc(s->connection_error);
    switch (r) {
    case R_NO_CERT: herald_stat_inc(s->fail_verify_no_cert); break;
    case R_VERIFY_ERROR: herald_stat_inc(s->fail_verify_error); break;
    case R_SAN: herald_stat_inc(s->fail_verify_san); break;
    case R_HASH: herald_stat_inc(s->fail_verify_cert_hash); break;
    default: break;
    }
}

void tls_shutdown(SSL *ssl)
{
    if (!(SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN) && SSL_is_init_finished(ssl))
        SSL_shutdown(ssl);
    ERR_clear_error();
}
