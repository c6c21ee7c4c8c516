/* rbac: evaluating CEL conditions (see cel.h). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cel.h"
#include "xalloc.h"

/* ---------------------------------------------------------------- names */

static const struct { const char *name; enum cel_fn fn; } fns[] = {
    {"_&&_", CEL_F_AND}, {"_||_", CEL_F_OR}, {"!_", CEL_F_NOT}, {"_?_:_", CEL_F_COND},
    {"_==_", CEL_F_EQ}, {"_!=_", CEL_F_NE}, {"_<_", CEL_F_LT}, {"_<=_", CEL_F_LE}, {"_>_", CEL_F_GT},
    {"_>=_", CEL_F_GE}, {"_+_", CEL_F_ADD}, {"_-_", CEL_F_SUB}, {"_*_", CEL_F_MUL}, {"_/_", CEL_F_DIV},
    {"_%_", CEL_F_MOD}, {"-_", CEL_F_NEG}, {"@in", CEL_F_IN}, {"_in_", CEL_F_IN}, {"_[_]", CEL_F_INDEX},
    {"size", CEL_F_SIZE}, {"startsWith", CEL_F_STARTS_WITH}, {"endsWith", CEL_F_ENDS_WITH},
    {"contains", CEL_F_CONTAINS}, {"matches", CEL_F_MATCHES}, {"int", CEL_F_INT}, {"uint", CEL_F_UINT},
    {"double", CEL_F_DOUBLE}, {"string", CEL_F_STRING},
};

int cel_fn_of(const char *name)
{
    for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++)
        if (!strcmp(fns[i].name, name))
            return (int)fns[i].fn;
    return -1;
}

static const struct { const char *top, *field; enum cel_attr attr; } attrs[] = {
    {"request", "path", CEL_A_REQUEST_PATH}, {"request", "url_path", CEL_A_REQUEST_URL_PATH},
    {"request", "host", CEL_A_REQUEST_HOST}, {"request", "scheme", CEL_A_REQUEST_SCHEME},
    {"request", "method", CEL_A_REQUEST_METHOD}, {"request", "headers", CEL_A_REQUEST_HEADERS},
    {"request", "referer", CEL_A_REQUEST_REFERER}, {"request", "useragent", CEL_A_REQUEST_USERAGENT},
    {"request", "id", CEL_A_REQUEST_ID}, {"request", "query", CEL_A_REQUEST_QUERY},
    {"source", "address", CEL_A_SOURCE_ADDRESS}, {"source", "port", CEL_A_SOURCE_PORT},
    {"destination", "address", CEL_A_DESTINATION_ADDRESS}, {"destination", "port", CEL_A_DESTINATION_PORT},
    {"connection", "mtls", CEL_A_CONNECTION_MTLS},
    {"connection", "requested_server_name", CEL_A_CONNECTION_SNI},
    {"connection", "uri_san_peer_certificate", CEL_A_CONNECTION_URI_SAN},
    {"connection", "dns_san_peer_certificate", CEL_A_CONNECTION_DNS_SAN},
    {"connection", "subject_peer_certificate", CEL_A_CONNECTION_SUBJECT},
};

int cel_attr_of(const char *top, const char *field)
{
    for (size_t i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++)
        if (!strcmp(attrs[i].top, top) && !strcmp(attrs[i].field, field))
            return (int)attrs[i].attr;
    return -1;
}

/* ---------------------------------------------------------------- the tree */

struct cel_expr *cel_expr_new(enum cel_kind kind)
{
    struct cel_expr *e = xcalloc(1, sizeof(*e));
    e->kind = kind;
    return e;
}

void cel_expr_add(struct cel_expr *e, struct cel_expr *arg)
{
    struct cel_expr **a = realloc(e->args, (e->nargs + 1) * sizeof(*a));
    if (!a)
        abort();
    a[e->nargs++] = arg;
    e->args = a;
}

void cel_expr_free(struct cel_expr *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->nargs; i++)
        cel_expr_free(e->args[i]);
    free(e->args);
    free(e->field);
    cel_val_fini(&e->value);
    if (e->re)
        pcre2_code_free(e->re);
    free(e);
}

static pcre2_code *compile(const char *pattern, char **err)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &code, &off, NULL);
    if (!re && err) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof(msg));
        if (asprintf(err, "invalid regex at offset %zu: %s", (size_t)off, (const char *)msg) < 0)
            abort();
    }
    return re;
}

int cel_compile_regex(struct cel_expr *call, const char *pattern, char **err)
{
    call->re = compile(pattern, err);
    return call->re ? 0 : -1;
}

/* ---------------------------------------------------------------- values */

void cel_val_fini(struct cel_val *v)
{
    free(v->s);
    v->s = NULL;
}

static struct cel_val err_val(void) { return (struct cel_val){.t = CEL_T_ERROR}; }
static struct cel_val bool_val(bool b) { return (struct cel_val){.t = CEL_T_BOOL, .b = b}; }
static struct cel_val int_val(int64_t i) { return (struct cel_val){.t = CEL_T_INT, .i = i}; }
static struct cel_val uint_val(uint64_t u) { return (struct cel_val){.t = CEL_T_UINT, .u = u}; }
static struct cel_val dbl_val(double d) { return (struct cel_val){.t = CEL_T_DOUBLE, .d = d}; }

/* takes s (NULL: an error, the value is absent) */
static struct cel_val str_val(char *s)
{
    return s ? (struct cel_val){.t = CEL_T_STRING, .s = s} : err_val();
}

static struct cel_val str_copy(const char *s)
{
    return s ? str_val(xstrndup(s, strlen(s))) : err_val();
}

static char *header(const struct rbac_ctx *ctx, const char *name)
{
    return ctx->header ? ctx->header(ctx->arg, name) : NULL;
}

static char *address(const struct rbac_ip *ip)
{
    char a[INET6_ADDRSTRLEN], *out;
    if (!ip || !ip->family || !inet_ntop(ip->family, ip->addr, a, sizeof(a)))
        return NULL;
    if (asprintf(&out, ip->family == AF_INET6 ? "[%s]:%u" : "%s:%u", a, (unsigned)ip->port) < 0)
        abort();
    return out;
}

struct first_name {
    char *s;
};

static bool take_first(void *arg, const char *v, size_t len)
{
    struct first_name *f = arg;
    f->s = xstrndup(v, len);
    return true;
}

static char *peer_name(const struct rbac_ctx *ctx, int which)
{
    struct first_name f = {NULL};
    if (ctx->tls && ctx->peer_names)
        ctx->peer_names(ctx->peer_arg, which, take_first, &f);
    return f.s;
}

static struct cel_val attribute(enum cel_attr a, const struct rbac_ctx *ctx)
{
    const char *q;

    switch (a) {
    case CEL_A_REQUEST_PATH:
        return str_copy(ctx->path);
    case CEL_A_REQUEST_URL_PATH:
        return ctx->path ? str_val(xstrndup(ctx->path, strcspn(ctx->path, "?#"))) : err_val();
    case CEL_A_REQUEST_QUERY:
        if (!ctx->path)
            return err_val();
        q = ctx->path + strcspn(ctx->path, "?#");
        q = *q == '?' ? q + 1 : q + strlen(q);
        return str_val(xstrndup(q, strcspn(q, "#")));
    case CEL_A_REQUEST_HOST:
        return str_val(header(ctx, ":authority"));
    case CEL_A_REQUEST_SCHEME:
        return str_val(header(ctx, ":scheme"));
    case CEL_A_REQUEST_METHOD:
        return str_val(header(ctx, ":method"));
    case CEL_A_REQUEST_REFERER:
        return str_val(header(ctx, "referer"));
    case CEL_A_REQUEST_USERAGENT:
        return str_val(header(ctx, "user-agent"));
    case CEL_A_REQUEST_ID:
        return str_val(header(ctx, "x-request-id"));
    case CEL_A_REQUEST_HEADERS:
        return ctx->header ? (struct cel_val){.t = CEL_T_HEADERS} : err_val();
    case CEL_A_SOURCE_ADDRESS:
        return str_val(address(ctx->remote));
    case CEL_A_SOURCE_PORT:
        return ctx->remote && ctx->remote->family ? int_val(ctx->remote->port) : err_val();
    case CEL_A_DESTINATION_ADDRESS:
        return str_val(address(ctx->local));
    case CEL_A_DESTINATION_PORT:
        return ctx->local && ctx->local->family ? int_val(ctx->local->port) : err_val();
    case CEL_A_CONNECTION_MTLS: {
        char *subject = peer_name(ctx, RBAC_CERT_SUBJECT);
        bool mtls = subject != NULL;
        free(subject);
        return bool_val(mtls);
    }
    case CEL_A_CONNECTION_SNI:
        return str_copy(ctx->sni ? ctx->sni : "");
    case CEL_A_CONNECTION_URI_SAN:
        return str_val(peer_name(ctx, RBAC_CERT_URI_SAN));
    case CEL_A_CONNECTION_DNS_SAN:
        return str_val(peer_name(ctx, RBAC_CERT_DNS_SAN));
    case CEL_A_CONNECTION_SUBJECT:
        return str_val(peer_name(ctx, RBAC_CERT_SUBJECT));
    }
    return err_val();
}

static bool is_num(const struct cel_val *v)
{
    return v->t == CEL_T_INT || v->t == CEL_T_UINT || v->t == CEL_T_DOUBLE;
}

/* -1, 0, 1 for two numbers of any kinds (CEL orders them across kinds). */
static int num_cmp(const struct cel_val *a, const struct cel_val *b)
{
    if (a->t == CEL_T_INT && b->t == CEL_T_INT)
        return a->i < b->i ? -1 : a->i > b->i;
    if (a->t == CEL_T_UINT && b->t == CEL_T_UINT)
        return a->u < b->u ? -1 : a->u > b->u;
    if (a->t == CEL_T_INT && b->t == CEL_T_UINT)
        return a->i < 0 ? -1 : (uint64_t)a->i < b->u ? -1 : (uint64_t)a->i > b->u;
    if (a->t == CEL_T_UINT && b->t == CEL_T_INT)
        return -num_cmp(b, a);
    double x = a->t == CEL_T_DOUBLE ? a->d : a->t == CEL_T_INT ? (double)a->i : (double)a->u;
    double y = b->t == CEL_T_DOUBLE ? b->d : b->t == CEL_T_INT ? (double)b->i : (double)b->u;
    return x < y ? -1 : x > y;
}

static struct cel_val eval_list_elem(const struct cel_expr *list, size_t i, const struct rbac_ctx *ctx)
{
    return cel_eval(list->args[i], ctx);
}

/* 1 equal, 0 not, -1 an error. Values of different kinds are not equal
 * (numbers compare by value across kinds). */
static int equal(const struct cel_val *a, const struct cel_val *b, const struct rbac_ctx *ctx)
{
    if (a->t == CEL_T_ERROR || b->t == CEL_T_ERROR)
        return -1;
    if (is_num(a) && is_num(b))
        return num_cmp(a, b) == 0 && !(a->t == CEL_T_DOUBLE && isnan(a->d)) && !(b->t == CEL_T_DOUBLE && isnan(b->d));
    if (a->t != b->t)
        return 0;
    switch (a->t) {
    case CEL_T_NULL:
        return 1;
    case CEL_T_BOOL:
        return a->b == b->b;
    case CEL_T_STRING:
        return !strcmp(a->s, b->s);
    case CEL_T_LIST:
        if (a->list->nargs != b->list->nargs)
            return 0;
        for (size_t i = 0; i < a->list->nargs; i++) {
            struct cel_val x = eval_list_elem(a->list, i, ctx), y = eval_list_elem(b->list, i, ctx);
            int r = equal(&x, &y, ctx);
            cel_val_fini(&x);
            cel_val_fini(&y);
            if (r != 1)
                return r;
        }
        return 1;
    default:
        return -1;
    }
}

static size_t utf8_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

static struct cel_val arith(enum cel_fn fn, struct cel_val *a, struct cel_val *b)
{
    if (fn == CEL_F_ADD && a->t == CEL_T_STRING && b->t == CEL_T_STRING) {
        char *s;
        if (asprintf(&s, "%s%s", a->s, b->s) < 0)
            abort();
        return str_val(s);
    }
    if (a->t == CEL_T_INT && b->t == CEL_T_INT) {
        int64_t r;
        switch (fn) {
        case CEL_F_ADD: return __builtin_add_overflow(a->i, b->i, &r) ? err_val() : int_val(r);
        case CEL_F_SUB: return __builtin_sub_overflow(a->i, b->i, &r) ? err_val() : int_val(r);
        case CEL_F_MUL: return __builtin_mul_overflow(a->i, b->i, &r) ? err_val() : int_val(r);
        case CEL_F_DIV:
            return b->i == 0 || (a->i == INT64_MIN && b->i == -1) ? err_val() : int_val(a->i / b->i);
        case CEL_F_MOD:
            return b->i == 0 || (a->i == INT64_MIN && b->i == -1) ? err_val() : int_val(a->i % b->i);
        default: return err_val();
        }
    }
    if (a->t == CEL_T_UINT && b->t == CEL_T_UINT) {
        uint64_t r;
        switch (fn) {
        case CEL_F_ADD: return __builtin_add_overflow(a->u, b->u, &r) ? err_val() : uint_val(r);
        case CEL_F_SUB: return __builtin_sub_overflow(a->u, b->u, &r) ? err_val() : uint_val(r);
        case CEL_F_MUL: return __builtin_mul_overflow(a->u, b->u, &r) ? err_val() : uint_val(r);
        case CEL_F_DIV: return b->u == 0 ? err_val() : uint_val(a->u / b->u);
        case CEL_F_MOD: return b->u == 0 ? err_val() : uint_val(a->u % b->u);
        default: return err_val();
        }
    }
    if (a->t == CEL_T_DOUBLE && b->t == CEL_T_DOUBLE) {
        switch (fn) {
        case CEL_F_ADD: return dbl_val(a->d + b->d);
        case CEL_F_SUB: return dbl_val(a->d - b->d);
        case CEL_F_MUL: return dbl_val(a->d * b->d);
        case CEL_F_DIV: return dbl_val(a->d / b->d);
        default: return err_val();
        }
    }
    return err_val();
}

static struct cel_val convert(enum cel_fn fn, struct cel_val *a)
{
    char *end, buf[64];
    switch (fn) {
    case CEL_F_INT:
        if (a->t == CEL_T_INT)
            return *a;
        if (a->t == CEL_T_UINT)
            return a->u > INT64_MAX ? err_val() : int_val((int64_t)a->u);
        if (a->t == CEL_T_DOUBLE)
            return isfinite(a->d) && a->d > -9.2233720368547758e18 && a->d < 9.2233720368547758e18
                       ? int_val((int64_t)a->d) : err_val();
        if (a->t == CEL_T_STRING) {
            errno = 0;
            long long v = strtoll(a->s, &end, 10);
            return *a->s && !*end && !errno ? int_val(v) : err_val();
        }
        return err_val();
    case CEL_F_UINT:
        if (a->t == CEL_T_UINT)
            return *a;
        if (a->t == CEL_T_INT)
            return a->i < 0 ? err_val() : uint_val((uint64_t)a->i);
        if (a->t == CEL_T_DOUBLE)
            return isfinite(a->d) && a->d >= 0 && a->d < 1.8446744073709552e19 ? uint_val((uint64_t)a->d)
                                                                                : err_val();
        if (a->t == CEL_T_STRING) {
            errno = 0;
            unsigned long long v = strtoull(a->s, &end, 10);
            return *a->s && *a->s != '-' && !*end && !errno ? uint_val(v) : err_val();
        }
        return err_val();
    case CEL_F_DOUBLE:
        if (a->t == CEL_T_DOUBLE)
            return *a;
        if (a->t == CEL_T_INT)
            return dbl_val((double)a->i);
        if (a->t == CEL_T_UINT)
            return dbl_val((double)a->u);
        if (a->t == CEL_T_STRING) {
            double v = strtod(a->s, &end);
            return *a->s && !*end ? dbl_val(v) : err_val();
        }
        return err_val();
    case CEL_F_STRING:
        switch (a->t) {
        case CEL_T_STRING: return str_copy(a->s);
        case CEL_T_INT: snprintf(buf, sizeof(buf), "%" PRId64, a->i); return str_copy(buf);
        case CEL_T_UINT: snprintf(buf, sizeof(buf), "%" PRIu64, a->u); return str_copy(buf);
        case CEL_T_DOUBLE: snprintf(buf, sizeof(buf), "%g", a->d); return str_copy(buf);
        case CEL_T_BOOL: return str_copy(a->b ? "true" : "false");
        default: return err_val();
        }
    default:
        return err_val();
    }
}

static bool regex_search(const pcre2_code *re, const char *s)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md)
        abort();
    int rc = pcre2_match(re, (PCRE2_SPTR)s, strlen(s), 0, 0, md, NULL);
    pcre2_match_data_free(md);
    return rc >= 0;
}

static struct cel_val call2(const struct cel_expr *e, struct cel_val *a, struct cel_val *b,
                            const struct rbac_ctx *ctx)
{
    int r;
    switch (e->fn) {
    case CEL_F_EQ:
    case CEL_F_NE:
        r = equal(a, b, ctx);
        return r < 0 ? err_val() : bool_val((r == 1) == (e->fn == CEL_F_EQ));
    case CEL_F_LT:
    case CEL_F_LE:
    case CEL_F_GT:
    case CEL_F_GE:
        if (is_num(a) && is_num(b))
            r = num_cmp(a, b);
        else if (a->t == CEL_T_STRING && b->t == CEL_T_STRING)
            r = strcmp(a->s, b->s);
        else if (a->t == CEL_T_BOOL && b->t == CEL_T_BOOL)
            r = (int)a->b - (int)b->b;
        else
            return err_val();
        return bool_val(e->fn == CEL_F_LT ? r < 0 : e->fn == CEL_F_LE ? r <= 0 : e->fn == CEL_F_GT ? r > 0 : r >= 0);
    case CEL_F_ADD:
    case CEL_F_SUB:
    case CEL_F_MUL:
    case CEL_F_DIV:
    case CEL_F_MOD:
        return arith(e->fn, a, b);
    case CEL_F_IN:
        if (b->t == CEL_T_HEADERS) {
            if (a->t != CEL_T_STRING)
                return err_val();
            char *v = header(ctx, a->s);
            bool present = v != NULL;
            free(v);
            return bool_val(present);
        }
        if (b->t == CEL_T_LIST) {
            for (size_t i = 0; i < b->list->nargs; i++) {
                struct cel_val x = eval_list_elem(b->list, i, ctx);
                r = equal(a, &x, ctx);
                cel_val_fini(&x);
                if (r == 1)
                    return bool_val(true);
            }
            return bool_val(false);
        }
        return err_val();
    case CEL_F_INDEX:
        if (a->t == CEL_T_HEADERS && b->t == CEL_T_STRING)
            return str_val(header(ctx, b->s)); /* a missing key is an error, as in CEL */
        if (a->t == CEL_T_LIST && (b->t == CEL_T_INT || b->t == CEL_T_UINT)) {
            uint64_t i = b->t == CEL_T_INT ? (uint64_t)b->i : b->u;
            if ((b->t == CEL_T_INT && b->i < 0) || i >= a->list->nargs)
                return err_val();
            return eval_list_elem(a->list, (size_t)i, ctx);
        }
        return err_val();
    case CEL_F_STARTS_WITH:
    case CEL_F_ENDS_WITH:
    case CEL_F_CONTAINS: {
        if (a->t != CEL_T_STRING || b->t != CEL_T_STRING)
            return err_val();
        size_t la = strlen(a->s), lb = strlen(b->s);
        if (e->fn == CEL_F_CONTAINS)
            return bool_val(strstr(a->s, b->s) != NULL);
        if (lb > la)
            return bool_val(false);
        return bool_val(!memcmp(e->fn == CEL_F_STARTS_WITH ? a->s : a->s + la - lb, b->s, lb));
    }
    case CEL_F_MATCHES: {
        if (a->t != CEL_T_STRING || b->t != CEL_T_STRING)
            return err_val();
        if (e->re)
            return bool_val(regex_search(e->re, a->s));
        pcre2_code *re = compile(b->s, NULL);
        if (!re)
            return err_val();
        bool m = regex_search(re, a->s);
        pcre2_code_free(re);
        return bool_val(m);
    }
    default:
        return err_val();
    }
}

static struct cel_val eval_call(const struct cel_expr *e, const struct rbac_ctx *ctx)
{
    struct cel_val a, b, r;

    switch (e->fn) {
    case CEL_F_AND:
    case CEL_F_OR: {
        /* CEL's commutative logic: false && error is false, true || error is true */
        bool stop = e->fn == CEL_F_OR;
        bool error = false;
        for (size_t i = 0; i < e->nargs; i++) {
            a = cel_eval(e->args[i], ctx);
            if (a.t == CEL_T_BOOL && a.b == stop)
                return a;
            error |= a.t != CEL_T_BOOL;
            cel_val_fini(&a);
        }
        return error ? err_val() : bool_val(!stop);
    }
    case CEL_F_COND:
        if (e->nargs != 3)
            return err_val();
        a = cel_eval(e->args[0], ctx);
        if (a.t != CEL_T_BOOL) {
            cel_val_fini(&a);
            return err_val();
        }
        return cel_eval(e->args[a.b ? 1 : 2], ctx);
    case CEL_F_NOT:
    case CEL_F_NEG:
    case CEL_F_SIZE:
    case CEL_F_INT:
    case CEL_F_UINT:
    case CEL_F_DOUBLE:
    case CEL_F_STRING:
        if (e->nargs != 1)
            return err_val();
        a = cel_eval(e->args[0], ctx);
        if (e->fn == CEL_F_NOT)
            r = a.t == CEL_T_BOOL ? bool_val(!a.b) : err_val();
        else if (e->fn == CEL_F_NEG)
            r = a.t == CEL_T_INT && a.i != INT64_MIN ? int_val(-a.i) : a.t == CEL_T_DOUBLE ? dbl_val(-a.d) : err_val();
        else if (e->fn == CEL_F_SIZE)
            r = a.t == CEL_T_STRING ? int_val((int64_t)utf8_len(a.s))
                : a.t == CEL_T_LIST ? int_val((int64_t)a.list->nargs) : err_val();
        else
            r = convert(e->fn, &a);
        cel_val_fini(&a);
        return r;
    default:
        if (e->nargs != 2)
            return err_val();
        a = cel_eval(e->args[0], ctx);
        b = cel_eval(e->args[1], ctx);
        r = call2(e, &a, &b, ctx);
        cel_val_fini(&a);
        cel_val_fini(&b);
        return r;
    }
}

struct cel_val cel_eval(const struct cel_expr *e, const struct rbac_ctx *ctx)
{
    struct cel_val v;

    switch (e->kind) {
    case CEL_CONST:
        v = e->value;
        if (v.t == CEL_T_STRING)
            v.s = xstrndup(e->value.s, strlen(e->value.s));
        return v;
    case CEL_ATTR:
        return attribute(e->attr, ctx);
    case CEL_LIST:
        return (struct cel_val){.t = CEL_T_LIST, .list = e};
    case CEL_SELECT:
        v = cel_eval(e->args[0], ctx);
        if (!e->field) { /* has(top.attribute) */
            bool present = v.t != CEL_T_ERROR;
            cel_val_fini(&v);
            return bool_val(present);
        }
        if (v.t != CEL_T_HEADERS) {
            cel_val_fini(&v);
            return err_val();
        }
        {
            char *h = header(ctx, e->field);
            if (e->test_only) {
                bool present = h != NULL;
                free(h);
                return bool_val(present);
            }
            return str_val(h);
        }
    case CEL_CALL:
        return eval_call(e, ctx);
    }
    return err_val();
}

bool cel_true(const struct cel_expr *e, const struct rbac_ctx *ctx)
{
    struct cel_val v = cel_eval(e, ctx);
    bool t = v.t == CEL_T_BOOL && v.b;
    cel_val_fini(&v);
    return t;
}
