/* Access logs in Envoy's config and format language.
 *
 * A format is parsed once into segments (literal text or %OPERATOR(arg):N%).
 * A filter writes a line by handing a callback that returns each operator's
 * value; the line is built in a per-thread buffer and written with a single
 * write(), so that lines from several workers never interleave (O_APPEND).
 * Files are shared by every log that names the same path, and reopened in
 * place (dup2 over the old descriptor) on SIGUSR1, so writers need no lock. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "access_log.h"
#include "access_log_filter.h"
#include "common.h"
#include "config/data_source.h"
#include "filters.h"
#include "log.h"

/* A format longer than this is a mistake (a log file named by accident). */
#define MAX_FORMAT_FILE (1 << 20)

#define TYPE_PREFIX "type.googleapis.com/"

/* ---------------------------------------------------------------- operators */

#define OP_NUMERIC  0x01u /* a number in json_format output */
#define OP_ARG      0x02u /* takes (arg) */
#define OP_ARG_REQ  0x04u /* requires (arg) */

struct op_def {
    const char *name;
    unsigned flags;
};

/* Envoy's command operators. Those a filter does not provide log as "-". */
static const struct op_def op_defs[] = {
    {"START_TIME", OP_ARG}, {"START_TIME_LOCAL", OP_ARG}, {"EMIT_TIME", OP_ARG}, {"EMIT_TIME_LOCAL", OP_ARG},
    {"DURATION", OP_NUMERIC}, {"REQUEST_DURATION", OP_NUMERIC}, {"REQUEST_TX_DURATION", OP_NUMERIC},
    {"RESPONSE_DURATION", OP_NUMERIC}, {"RESPONSE_TX_DURATION", OP_NUMERIC},
    {"DOWNSTREAM_HANDSHAKE_DURATION", OP_NUMERIC}, {"ROUNDTRIP_DURATION", OP_NUMERIC},
    {"UPSTREAM_CONNECTION_POOL_READY_DURATION", OP_NUMERIC}, {"COMMON_DURATION", OP_ARG | OP_ARG_REQ},
    {"BYTES_RECEIVED", OP_NUMERIC}, {"BYTES_SENT", OP_NUMERIC},
    {"BYTES_RETRANSMITTED", OP_NUMERIC}, {"PACKETS_RETRANSMITTED", OP_NUMERIC},
    {"UPSTREAM_WIRE_BYTES_SENT", OP_NUMERIC}, {"UPSTREAM_WIRE_BYTES_RECEIVED", OP_NUMERIC},
    {"UPSTREAM_HEADER_BYTES_SENT", OP_NUMERIC}, {"UPSTREAM_HEADER_BYTES_RECEIVED", OP_NUMERIC},
    {"DOWNSTREAM_WIRE_BYTES_SENT", OP_NUMERIC}, {"DOWNSTREAM_WIRE_BYTES_RECEIVED", OP_NUMERIC},
    {"DOWNSTREAM_HEADER_BYTES_SENT", OP_NUMERIC}, {"DOWNSTREAM_HEADER_BYTES_RECEIVED", OP_NUMERIC},
    {"REQUEST_HEADERS_BYTES", OP_NUMERIC}, {"RESPONSE_HEADERS_BYTES", OP_NUMERIC},
    {"RESPONSE_TRAILERS_BYTES", OP_NUMERIC},
    {"PROTOCOL", 0}, {"UPSTREAM_PROTOCOL", 0}, {"RESPONSE_CODE", OP_NUMERIC}, {"RESPONSE_CODE_DETAILS", 0},
    {"CONNECTION_TERMINATION_DETAILS", 0}, {"RESPONSE_FLAGS", 0}, {"RESPONSE_FLAGS_LONG", 0},
    {"UPSTREAM_HOST", 0}, {"UPSTREAM_HOST_NAME", 0}, {"UPSTREAM_HOST_NAME_WITHOUT_PORT", 0},
    {"UPSTREAM_CLUSTER", 0}, {"UPSTREAM_CLUSTER_RAW", 0},
    {"UPSTREAM_LOCAL_ADDRESS", 0}, {"UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", 0},
    {"UPSTREAM_LOCAL_PORT", OP_NUMERIC},
    {"UPSTREAM_REMOTE_ADDRESS", 0}, {"UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", 0},
    {"UPSTREAM_REMOTE_PORT", OP_NUMERIC}, {"UPSTREAM_REQUEST_ATTEMPT_COUNT", OP_NUMERIC},
    {"UPSTREAM_TRANSPORT_FAILURE_REASON", 0}, {"UPSTREAM_CONNECTION_ID", OP_NUMERIC},
    {"UPSTREAM_TLS_CIPHER", 0}, {"UPSTREAM_TLS_VERSION", 0}, {"UPSTREAM_TLS_SESSION_ID", 0},
    {"UPSTREAM_PEER_ISSUER", 0}, {"UPSTREAM_PEER_CERT", 0}, {"UPSTREAM_PEER_SUBJECT", 0},
    {"UPSTREAM_PEER_URI_SAN", 0}, {"UPSTREAM_PEER_DNS_SAN", 0}, {"UPSTREAM_PEER_IP_SAN", 0},
    {"UPSTREAM_LOCAL_URI_SAN", 0}, {"UPSTREAM_LOCAL_DNS_SAN", 0}, {"UPSTREAM_LOCAL_IP_SAN", 0},
    {"UPSTREAM_LOCAL_SUBJECT", 0}, {"UPSTREAM_PEER_CERT_V_START", OP_ARG},
    {"UPSTREAM_PEER_CERT_V_END", OP_ARG},
    {"UPSTREAM_FILTER_STATE", OP_ARG | OP_ARG_REQ}, {"UPSTREAM_METADATA", OP_ARG | OP_ARG_REQ},
    {"DOWNSTREAM_REMOTE_ADDRESS", 0}, {"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", 0},
    {"DOWNSTREAM_REMOTE_PORT", OP_NUMERIC}, {"DOWNSTREAM_DIRECT_REMOTE_ADDRESS", 0},
    {"DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT", 0}, {"DOWNSTREAM_DIRECT_REMOTE_PORT", OP_NUMERIC},
    {"DOWNSTREAM_LOCAL_ADDRESS", 0}, {"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", 0},
    {"DOWNSTREAM_LOCAL_PORT", OP_NUMERIC}, {"DOWNSTREAM_DIRECT_LOCAL_ADDRESS", 0},
    {"DOWNSTREAM_DIRECT_LOCAL_ADDRESS_WITHOUT_PORT", 0}, {"DOWNSTREAM_DIRECT_LOCAL_PORT", OP_NUMERIC},
    {"DOWNSTREAM_LOCAL_URI_SAN", 0}, {"DOWNSTREAM_PEER_URI_SAN", 0}, {"DOWNSTREAM_LOCAL_DNS_SAN", 0},
    {"DOWNSTREAM_PEER_DNS_SAN", 0}, {"DOWNSTREAM_LOCAL_IP_SAN", 0}, {"DOWNSTREAM_PEER_IP_SAN", 0},
    {"DOWNSTREAM_LOCAL_SUBJECT", 0}, {"DOWNSTREAM_PEER_SUBJECT", 0}, {"DOWNSTREAM_PEER_ISSUER", 0},
    {"DOWNSTREAM_TLS_SESSION_ID", 0}, {"DOWNSTREAM_TLS_CIPHER", 0}, {"DOWNSTREAM_TLS_VERSION", 0},
    {"DOWNSTREAM_PEER_FINGERPRINT_256", 0}, {"DOWNSTREAM_PEER_FINGERPRINT_1", 0},
    {"DOWNSTREAM_PEER_SERIAL", 0}, {"DOWNSTREAM_PEER_CERT", 0},
    {"DOWNSTREAM_PEER_CERT_V_START", OP_ARG}, {"DOWNSTREAM_PEER_CERT_V_END", OP_ARG},
    {"DOWNSTREAM_TRANSPORT_FAILURE_REASON", 0}, {"CONNECTION_ID", OP_NUMERIC},
    {"REQUESTED_SERVER_NAME", 0}, {"ROUTE_NAME", 0}, {"VIRTUAL_CLUSTER_NAME", 0}, {"HOSTNAME", 0},
    {"LOCAL_REPLY_BODY", 0}, {"FILTER_CHAIN_NAME", 0}, {"ACCESS_LOG_TYPE", 0}, {"UNIQUE_ID", 0},
    {"STREAM_ID", 0}, {"TRACE_ID", 0}, {"CUSTOM_FLAGS", 0},
    {"GRPC_STATUS", OP_ARG}, {"GRPC_STATUS_NUMBER", OP_NUMERIC},
    {"REQ", OP_ARG | OP_ARG_REQ}, {"RESP", OP_ARG | OP_ARG_REQ}, {"TRAILER", OP_ARG | OP_ARG_REQ},
    {"REQ_WITHOUT_QUERY", OP_ARG | OP_ARG_REQ}, {"QUERY_PARAM", OP_ARG | OP_ARG_REQ}, {"PATH", OP_ARG},
    {"DYNAMIC_METADATA", OP_ARG | OP_ARG_REQ}, {"CLUSTER_METADATA", OP_ARG | OP_ARG_REQ},
    {"FILTER_STATE", OP_ARG | OP_ARG_REQ}, {"METADATA", OP_ARG | OP_ARG_REQ},
    {"ENVIRONMENT", OP_ARG | OP_ARG_REQ},
};

/* Operators whose argument is one of a few words: a typo is a config error
 * (as in Envoy), not a field that silently logs something else. */
static const char *arg_problem(const char *op, const char *arg)
{
    if (!arg || !*arg)
        return NULL;
    if (!strcmp(op, "PATH")) {
        const char *colon = strchr(arg, ':');
        size_t n = colon ? (size_t)(colon - arg) : strlen(arg);
        if (n && !(n == 2 && (!memcmp(arg, "WQ", 2) || !memcmp(arg, "NQ", 2))))
            return "the first option must be WQ (with the query) or NQ (without)";
        if (colon && strcmp(colon + 1, "ORIG") && strcmp(colon + 1, "PATH") && strcmp(colon + 1, "ORIG_OR_PATH"))
            return "the second option must be ORIG, PATH or ORIG_OR_PATH";
    } else if (!strcmp(op, "GRPC_STATUS")) {
        if (strcmp(arg, "CAMEL_STRING") && strcmp(arg, "SNAKE_STRING") && strcmp(arg, "NUMBER"))
            return "the format must be CAMEL_STRING, SNAKE_STRING or NUMBER";
    }
    return NULL;
}

static const struct op_def *op_find(const char *name, size_t len)
{
    for (size_t i = 0; i < ARRAY_SIZE(op_defs); i++)
        if (strlen(op_defs[i].name) == len && !memcmp(op_defs[i].name, name, len))
            return &op_defs[i];
    return NULL;
}

/* ---------------------------------------------------------------- formats */

/* Operators whose value the core makes, whatever filter writes the line. */
enum core_op { CORE_NONE = 0, CORE_ENV, CORE_EMIT_TIME, CORE_EMIT_TIME_LOCAL, CORE_START_TIME_LOCAL };

static enum core_op core_op_of(const char *name)
{
    return !strcmp(name, "ENVIRONMENT")        ? CORE_ENV
           : !strcmp(name, "EMIT_TIME")        ? CORE_EMIT_TIME
           : !strcmp(name, "EMIT_TIME_LOCAL")  ? CORE_EMIT_TIME_LOCAL
           : !strcmp(name, "START_TIME_LOCAL") ? CORE_START_TIME_LOCAL
                                               : CORE_NONE;
}

struct seg {
    char *lit;                 /* literal text, or NULL for an operator */
    size_t litlen;
    const struct op_def *op;
    char *arg;                 /* NULL when none */
    size_t maxlen;             /* 0: no limit */
    char *env;                 /* ENVIRONMENT(X): the value, read once */
    enum core_op core;         /* answered by the core, not the filter (decided when parsed) */
};

struct fmt {
    struct seg *segs;
    size_t n, cap;
};

enum jkind { J_FMT = 0, J_OBJ, J_RAW };

struct jmember;

struct jval {
    enum jkind kind;
    struct fmt fmt;            /* J_FMT */
    struct jmember *members;   /* J_OBJ */
    size_t nmembers;
    char *raw;                 /* J_RAW: a literal number, true/false or null */
};

struct jmember {
    char *key;                 /* already JSON-escaped, with its quotes */
    struct jval val;
};

static void fmt_free(struct fmt *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free(f->segs[i].lit);
        free(f->segs[i].arg);
        free(f->segs[i].env);
    }
    free(f->segs);
    memset(f, 0, sizeof(*f));
}

static void jval_free(struct jval *v)
{
    fmt_free(&v->fmt);
    for (size_t i = 0; i < v->nmembers; i++) {
        free(v->members[i].key);
        jval_free(&v->members[i].val);
    }
    free(v->members);
    free(v->raw);
}

static void add_literal(struct fmt *f, const char *s, size_t len)
{
    if (!len)
        return;
    if (f->n && f->segs[f->n - 1].lit) { /* merge with the previous literal */
        struct seg *p = &f->segs[f->n - 1];
        p->lit = xrealloc(p->lit, p->litlen + len + 1);
        memcpy(p->lit + p->litlen, s, len);
        p->litlen += len;
        p->lit[p->litlen] = '\0';
        return;
    }
    struct seg *sg = VEC_PUSH(f->segs, f->n, f->cap);
    memset(sg, 0, sizeof(*sg));
    sg->lit = xstrndup(s, len);
    sg->litlen = len;
}

static bool is_op_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Parses an Envoy format string: text and %OPERATOR%, %OPERATOR(arg)%,
 * %OPERATOR(arg):N% (N: the value's maximum length), %% for a '%'. */
static int fmt_parse(struct fmt *f, const char *s, const struct herald_cfg *at, char **err)
{
    size_t i = 0, len = strlen(s);

    while (i < len) {
        const char *pct = memchr(s + i, '%', len - i);
        if (!pct) {
            add_literal(f, s + i, len - i);
            break;
        }
        size_t p = (size_t)(pct - s);
        add_literal(f, s + i, p - i);
        if (p + 1 < len && s[p + 1] == '%') {
            add_literal(f, "%", 1);
            i = p + 2;
            continue;
        }
        size_t q = p + 1;
        while (q < len && is_op_char(s[q]))
            q++;
        if (q == p + 1)
            return herald_cfg_errorf(at, err, "access log format: expected a command operator after '%%' at "
                                     "position %zu (write %%%% for a literal '%%')", p);
        size_t name_end = q;
        const struct op_def *op = op_find(s + p + 1, name_end - p - 1);
        if (!op)
            return herald_cfg_errorf(at, err, "access log format: unknown command operator '%.*s' at "
                                     "position %zu", (int)(name_end - p - 1), s + p + 1, p);
        char *arg = NULL;
        if (q < len && s[q] == '(') {
            const char *close = memchr(s + q, ')', len - q);
            if (!close)
                return herald_cfg_errorf(at, err, "access log format: missing ')' after %s( at position %zu",
                                         op->name, p);
            if (!(op->flags & OP_ARG))
                return herald_cfg_errorf(at, err, "access log format: %s takes no argument (position %zu)",
                                         op->name, p);
            arg = xstrndup(s + q + 1, (size_t)(close - s) - q - 1);
            q = (size_t)(close - s) + 1;
        }
        size_t maxlen = 0;
        if (q < len && s[q] == ':') {
            size_t d = q + 1;
            while (d < len && s[d] >= '0' && s[d] <= '9' && maxlen < 100000000)
                maxlen = maxlen * 10 + (size_t)(s[d++] - '0');
            if (d == q + 1) {
                free(arg);
                return herald_cfg_errorf(at, err, "access log format: expected a length after ':' in %s at "
                                         "position %zu", op->name, p);
            }
            q = d;
        }
        if (q >= len || s[q] != '%') {
            free(arg);
            return herald_cfg_errorf(at, err, "access log format: %s at position %zu is not closed by '%%'",
                                     op->name, p);
        }
        if ((op->flags & OP_ARG_REQ) && (!arg || !*arg)) {
            free(arg);
            return herald_cfg_errorf(at, err, "access log format: %s at position %zu needs an argument, "
                                     "e.g. %%%s(X)%%", op->name, p, op->name);
        }
        const char *bad = arg_problem(op->name, arg);
        if (bad) {
            int r = herald_cfg_errorf(at, err, "access log format: %s(%s) at position %zu: %s", op->name, arg,
                                      p, bad);
            free(arg);
            return r;
        }
        struct seg *sg = VEC_PUSH(f->segs, f->n, f->cap);
        memset(sg, 0, sizeof(*sg));
        sg->op = op;
        sg->arg = arg;
        sg->maxlen = maxlen;
        sg->core = core_op_of(op->name);
        if (sg->core == CORE_ENV) {
            char *colon = strchr(arg, ':'); /* %ENVIRONMENT(VAR):N% also spelled (VAR:N) */
            const char *v = NULL;
            if (colon) {
                *colon = '\0';
                if (!maxlen)
                    sg->maxlen = (size_t)strtoul(colon + 1, NULL, 10);
            }
            v = getenv(arg);
            sg->env = v ? xstrdup(v) : NULL;
        }
        i = q + 1;
    }
    return 0;
}

static int jval_parse(struct jval *v, const struct herald_cfg *n, char **err);

static char *json_quote(const char *s, size_t len);

static int jobj_parse(struct jval *v, const struct herald_cfg *n, char **err)
{
    size_t k = herald_cfg_len(n);

    v->kind = J_OBJ;
    v->members = xcalloc(k ? k : 1, sizeof(*v->members));
    for (size_t i = 0; i < k; i++) {
        const char *key = herald_cfg_key_at(n, i);
        struct jmember *m = &v->members[v->nmembers++];
        m->key = json_quote(key ? key : "", key ? strlen(key) : 0);
        if (jval_parse(&m->val, herald_cfg_at(n, i), err) < 0)
            return -1;
    }
    return 0;
}

static int jval_parse(struct jval *v, const struct herald_cfg *n, char **err)
{
    switch (herald_cfg_type(n)) {
    case HERALD_CFG_STRING:
        v->kind = J_FMT;
        return fmt_parse(&v->fmt, herald_cfg_str(n, ""), n, err);
    case HERALD_CFG_OBJECT:
        return jobj_parse(v, n, err);
    case HERALD_CFG_INT:
        v->kind = J_RAW;
        v->raw = xasprintf("%lld", (long long)herald_cfg_int(n, 0));
        return 0;
    case HERALD_CFG_REAL:
        v->kind = J_RAW;
        v->raw = xasprintf("%.17g", herald_cfg_real(n, 0));
        return 0;
    case HERALD_CFG_BOOL:
        v->kind = J_RAW;
        v->raw = xstrdup(herald_cfg_bool(n, false) ? "true" : "false");
        return 0;
    case HERALD_CFG_NULL:
        v->kind = J_RAW;
        v->raw = xstrdup("null");
        return 0;
    default:
        return herald_cfg_errorf(n, err, "json_format: lists are not supported as values");
    }
}

/* ---------------------------------------------------------------- output files */

struct log_file {
    char *path;
    int fd;
    unsigned refs;
    struct log_file *next;
};

static pthread_mutex_t files_lock = PTHREAD_MUTEX_INITIALIZER;
static struct log_file *files;

static int open_log(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
}

static struct log_file *file_get(const char *path, char **errmsg)
{
    struct log_file *f;

    pthread_mutex_lock(&files_lock);
    for (f = files; f; f = f->next)
        if (!strcmp(f->path, path))
            break;
    if (f) {
        f->refs++;
    } else {
        int fd = open_log(path);
        if (fd < 0) {
            *errmsg = xasprintf("cannot open access log '%s': %s", path, strerror(errno));
        } else {
            f = xcalloc(1, sizeof(*f));
            f->path = xstrdup(path);
            f->fd = fd;
            f->refs = 1;
            f->next = files;
            files = f;
        }
    }
    pthread_mutex_unlock(&files_lock);
    return f;
}

static void file_put(struct log_file *f)
{
    pthread_mutex_lock(&files_lock);
    if (--f->refs == 0) {
        for (struct log_file **pp = &files; *pp; pp = &(*pp)->next)
            if (*pp == f) {
                *pp = f->next;
                break;
            }
        close(f->fd);
        free(f->path);
        free(f);
    }
    pthread_mutex_unlock(&files_lock);
}

void access_log_reopen_all(void)
{
    pthread_mutex_lock(&files_lock);
    for (struct log_file *f = files; f; f = f->next) {
        int fd = open_log(f->path);
        if (fd < 0) {
            log_error("access_log", "cannot reopen '%s': %s (still writing to the old file)", f->path,
                      strerror(errno));
            continue;
        }
        /* atomic for concurrent writers: they keep using the same number */
        if (dup2(fd, f->fd) < 0)
            log_error("access_log", "cannot reopen '%s': dup2: %s", f->path, strerror(errno));
        close(fd);
    }
    pthread_mutex_unlock(&files_lock);
}

/* ---------------------------------------------------------------- the log */

struct herald_access_log {
    struct log_file *file;     /* NULL for stdout/stderr, or in validate-only mode */
    int fd;                    /* -1: write nothing (validate-only) */
    bool json;
    bool omit_empty;
    struct fmt text;
    struct jval obj;
    struct log_filter *filter; /* NULL: every line is written */
    bool body_format;          /* made by access_log_format_create (a local reply's body) */
};

enum sink { SINK_FILE = 0, SINK_STDOUT, SINK_STDERR };

static bool fmt_uses(const struct fmt *f, const char *prefix)
{
    for (size_t i = 0; i < f->n; i++)
        if (f->segs[i].op && !strncmp(f->segs[i].op->name, prefix, strlen(prefix)))
            return true;
    return false;
}

static bool jval_uses(const struct jval *v, const char *prefix)
{
    if (v->kind == J_FMT)
        return fmt_uses(&v->fmt, prefix);
    for (size_t i = 0; v->kind == J_OBJ && i < v->nmembers; i++)
        if (jval_uses(&v->members[i].val, prefix))
            return true;
    return false;
}

bool access_log_uses(const struct herald_access_log *l, const char *prefix)
{
    return l->json ? jval_uses(&l->obj, prefix) : fmt_uses(&l->text, prefix);
}

static const char *strip_type_prefix(const char *t)
{
    return strncmp(t, TYPE_PREFIX, strlen(TYPE_PREFIX)) ? t : t + strlen(TYPE_PREFIX);
}

static bool in_list(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (!strcmp(s, *list))
            return true;
    return false;
}

/* The core's schema check does not look inside typed_config: check the keys here. */
static int check_keys(const struct herald_cfg *n, const char *const *allowed, const char *what, char **err)
{
    for (size_t i = 0; i < herald_cfg_len(n); i++) {
        const char *k = herald_cfg_key_at(n, i);
        if (k && !in_list(k, allowed))
            return herald_cfg_errorf(herald_cfg_at(n, i), err, "unknown field '%s' in %s", k, what);
    }
    return 0;
}


/* SubstitutionFormatString (log_format). */
static int parse_log_format(struct herald_access_log *l, const struct herald_cfg *lf, const char *def,
                            char **err)
{
    static const char *const keys[] = {"text_format", "json_format", "text_format_source",
                                       "omit_empty_values", "content_type", "formatters",
                                       "json_format_options", NULL};
    if (herald_cfg_type(lf) != HERALD_CFG_OBJECT)
        return herald_cfg_errorf(lf, err, "log_format must be a mapping");
    if (check_keys(lf, keys, "log_format (envoy.config.core.v3.SubstitutionFormatString)", err) < 0)
        return -1;
    if (herald_cfg_get(lf, "formatters") && herald_cfg_len(herald_cfg_get(lf, "formatters")))
        return herald_cfg_errorf(herald_cfg_get(lf, "formatters"), err, "not supported by herald");
    const struct herald_cfg *jfo = herald_cfg_get(lf, "json_format_options");
    if (jfo && herald_cfg_bool(herald_cfg_get(jfo, "sort_properties"), false))
        return herald_cfg_errorf(jfo, err, "sort_properties is not supported by herald");
    l->omit_empty = herald_cfg_bool(herald_cfg_get(lf, "omit_empty_values"), false);

    const struct herald_cfg *tf = herald_cfg_get(lf, "text_format");
    const struct herald_cfg *jf = herald_cfg_get(lf, "json_format");
    const struct herald_cfg *ts = herald_cfg_get(lf, "text_format_source");
    if (!!tf + !!jf + !!ts > 1)
        return herald_cfg_errorf(lf, err, "only one of text_format, json_format and text_format_source "
                                 "may be set");
    if (tf)
        return fmt_parse(&l->text, herald_cfg_str(tf, ""), tf, err);
    if (jf) {
        if (herald_cfg_type(jf) != HERALD_CFG_OBJECT)
            return herald_cfg_errorf(jf, err, "json_format must be a mapping");
        l->json = true;
        return jobj_parse(&l->obj, jf, err);
    }
    if (ts) {
        static const char *const skeys[] = {"inline_string", "filename", "inline_bytes",
                                            "environment_variable", NULL};
        if (check_keys(ts, skeys, "text_format_source (envoy.config.core.v3.DataSource)", err) < 0)
            return -1;
        const struct herald_cfg *v;
        if ((v = herald_cfg_get(ts, "inline_bytes")))
            return herald_cfg_errorf(v, err, "inline_bytes is not supported by herald; use inline_string");
        size_t len;
        char *text = data_source_read(ts, MAX_FORMAT_FILE, &len, err);
        if (!text)
            return -1;
        v = herald_cfg_at(ts, 0);
        int rc = len > MAX_FORMAT_FILE ? herald_cfg_errorf(v, err, "the format is over %d bytes", MAX_FORMAT_FILE)
                                       : fmt_parse(&l->text, text, v, err);
        free(text);
        return rc;
    }
    return fmt_parse(&l->text, def, lf, err);
}

HERALD_EXPORT struct herald_access_log *herald_access_log_create(const struct herald_cfg *entry,
                                                                const struct herald_filter_env *env,
                                                                const char *default_format, char **err)
{
    static const char *const entry_keys[] = {"name", "typed_config", "filter", NULL};
    static const char *const file_keys[] = {"@type", "path", "format", "json_format", "typed_json_format",
                                            "log_format", NULL};
    static const char *const stream_keys[] = {"@type", "log_format", NULL};
    const char *name = herald_cfg_str(herald_cfg_get(entry, "name"), "");
    const struct herald_cfg *tc = herald_cfg_get(entry, "typed_config");
    enum sink sink;

    if (!default_format)
        default_format = HERALD_DEFAULT_ACCESS_LOG_FORMAT;
    if (herald_cfg_type(entry) != HERALD_CFG_OBJECT) {
        herald_cfg_errorf(entry, err, "an access log must be a mapping with name and typed_config");
        return NULL;
    }
    if (check_keys(entry, entry_keys, "access_log (envoy.config.accesslog.v3.AccessLog)", err) < 0)
        return NULL;

    const char *type = tc ? herald_cfg_str(herald_cfg_get(tc, "@type"), NULL) : NULL;
    const char *what = type ? strip_type_prefix(type) : name;
    if (!strcmp(what, "envoy.extensions.access_loggers.file.v3.FileAccessLog") ||
        !strcmp(what, "envoy.config.accesslog.v2.FileAccessLog") ||
        !strcmp(what, "envoy.access_loggers.file") ||
        !strcmp(what, "envoy.file_access_log")) {
        sink = SINK_FILE;
    } else if (!strcmp(what, "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog") ||
               !strcmp(what, "envoy.access_loggers.stdout")) {
        sink = SINK_STDOUT;
    } else if (!strcmp(what, "envoy.extensions.access_loggers.stream.v3.StderrAccessLog") ||
               !strcmp(what, "envoy.access_loggers.stderr")) {
        sink = SINK_STDERR;
    } else {
        const struct herald_cfg *at = type ? herald_cfg_get(tc, "@type") : herald_cfg_get(entry, "name");
        herald_cfg_errorf(at ? at : entry, err, "unsupported access logger '%s' (herald has "
                          "envoy.access_loggers.file, .stdout and .stderr)", *what ? what : "(none)");
        return NULL;
    }
    if (tc && check_keys(tc, sink == SINK_FILE ? file_keys : stream_keys,
                         sink == SINK_FILE ? "FileAccessLog" : "a stream access log", err) < 0)
        return NULL;

    struct herald_access_log *l = xcalloc(1, sizeof(*l));
    l->fd = -1;

    const struct herald_cfg *lf = herald_cfg_get(tc, "log_format");
    const struct herald_cfg *fmt = herald_cfg_get(tc, "format");
    const struct herald_cfg *jf = herald_cfg_get(tc, "json_format");
    if (!jf)
        jf = herald_cfg_get(tc, "typed_json_format");
    int rc;
    if (!!lf + !!fmt + !!jf > 1) {
        rc = herald_cfg_errorf(tc, err, "only one of log_format, format and json_format may be set");
    } else if (lf) {
        rc = parse_log_format(l, lf, default_format, err);
    } else if (fmt) {
        rc = fmt_parse(&l->text, herald_cfg_str(fmt, ""), fmt, err);
    } else if (jf) {
        l->json = true;
        rc = herald_cfg_type(jf) == HERALD_CFG_OBJECT
                 ? jobj_parse(&l->obj, jf, err)
                 : herald_cfg_errorf(jf, err, "json_format must be a mapping");
    } else {
        rc = fmt_parse(&l->text, default_format, tc ? tc : entry, err);
    }
    if (rc < 0)
        goto fail;
    if (herald_cfg_get(entry, "filter") && !(l->filter = log_filter_create(herald_cfg_get(entry, "filter"), err)))
        goto fail;

    bool validate = env && env->validate_only;   /* the field: the config unit test links no filters.c */
    if (sink == SINK_FILE) {
        const struct herald_cfg *pn = herald_cfg_get(tc, "path");
        const char *path = herald_cfg_str(pn, "");
        if (!*path) {
            herald_cfg_errorf(tc ? tc : entry, err, "FileAccessLog needs a path");
            goto fail;
        }
        if (!validate) {
            char *msg = NULL;
            l->file = file_get(path, &msg);
            if (!l->file) {
                herald_cfg_errorf(pn, err, "%s", msg);
                free(msg);
                goto fail;
            }
            l->fd = l->file->fd;
        }
    } else if (!validate) {
        l->fd = sink == SINK_STDOUT ? STDOUT_FILENO : STDERR_FILENO;
    }
    return l;

fail:
    herald_access_log_destroy(l);
    return NULL;
}

struct herald_access_log *access_log_format_create(const struct herald_cfg *sfs, const char *default_format,
                                                  char **err)
{
    struct herald_access_log *l = xcalloc(1, sizeof(*l));
    l->fd = -1;
    l->body_format = true;
    if (parse_log_format(l, sfs, default_format, err) < 0) {
        herald_access_log_destroy(l);
        return NULL;
    }
    return l;
}

struct herald_access_log *access_log_text_create(const char *text, const struct herald_cfg *at, char **err)
{
    struct herald_access_log *l = xcalloc(1, sizeof(*l));
    l->fd = -1;
    if (fmt_parse(&l->text, text, at, err) < 0) {
        herald_access_log_destroy(l);
        return NULL;
    }
    return l;
}

struct herald_access_log *access_log_header_value_create(const char *text, const struct herald_cfg *at, char **err)
{
    struct herald_access_log *l = access_log_text_create(text, at, err);
    if (l)
        l->omit_empty = true;
    return l;
}

bool access_log_is_json(const struct herald_access_log *l)
{
    return l->json;
}

HERALD_EXPORT void herald_access_log_destroy(struct herald_access_log *l)
{
    if (!l)
        return;
    if (l->file)
        file_put(l->file);
    fmt_free(&l->text);
    jval_free(&l->obj);
    log_filter_free(l->filter);
    free(l);
}

/* ---------------------------------------------------------------- writing */

struct line {
    char *p;
    size_t len, cap;
};

static void line_add(struct line *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 512;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void line_add_json_string(struct line *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t start = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[7];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20 || c == 0x7f) {
                u[0] = '\\'; u[1] = 'u'; u[2] = '0'; u[3] = '0';
                u[4] = hex[c >> 4]; u[5] = hex[c & 15]; u[6] = '\0';
                esc = u;
            }
        }
        if (esc) {
            line_add(b, s + start, i - start);
            line_add(b, esc, strlen(esc));
            start = i + 1;
        }
    }
    line_add(b, s + start, n - start);
}

static char *json_quote(const char *s, size_t len)
{
    struct line b = {0};
    line_add(&b, "\"", 1);
    line_add_json_string(&b, s, len);
    line_add(&b, "\"", 1);
    b.p[b.len] = '\0';
    return b.p;
}

static const char *format_time(uint64_t ms, const char *fmt, char *out, size_t len, bool local);

struct ctx {
    herald_log_field_cb field;
    void *arg;
    bool body_format;          /* a local reply's body: an empty %LOCAL_REPLY_BODY% is "", as Envoy's */
    char scratch[512];
};

/* The time operators the core answers for every filter: EMIT_TIME(_LOCAL)
 * from the clock, START_TIME_LOCAL from the filter's own START_TIME (asked
 * for as epoch milliseconds), so a plugin that knows when its line started
 * gets the local-time form without knowing of it. NULL for other operators. */
static const char *core_time_value(struct ctx *c, const struct seg *sg)
{
    uint64_t ms = wall_ms();
    if (sg->core == CORE_START_TIME_LOCAL) {
        char epoch[64] = "";
        const char *v = c->field ? c->field(c->arg, "START_TIME", "%s%3f", epoch, sizeof(epoch)) : NULL;
        char *end = NULL;
        if (!v || !*v)
            return NULL;
        ms = strtoull(v, &end, 10);
        if (end == v || *end)
            return NULL;
    }
    return format_time(ms, sg->arg, c->scratch, sizeof(c->scratch), sg->core != CORE_EMIT_TIME);
}

/* The value of one operator segment, or NULL; *n is its length after :N. */
static const char *seg_value(struct ctx *c, const struct seg *sg, size_t *n)
{
    const char *v;

    if (sg->env) {
        v = sg->env;
    } else if (sg->core == CORE_ENV) {
        v = NULL;
    } else if (sg->core) {
        v = core_time_value(c, sg);   /* EMIT_TIME*, START_TIME_LOCAL: the core's for every filter */
    } else {
        c->scratch[0] = '\0';
        v = c->field ? c->field(c->arg, sg->op->name, sg->arg, c->scratch, sizeof(c->scratch)) : NULL;
        if (!v && !strcmp(sg->op->name, "HOSTNAME") && gethostname(c->scratch, sizeof(c->scratch)) == 0) {
            c->scratch[sizeof(c->scratch) - 1] = '\0';
            v = c->scratch;
        }
    }
    if ((!v || !*v) && c->body_format && sg->op && !strcmp(sg->op->name, "LOCAL_REPLY_BODY")) {
        *n = 0;
        return "";
    }
    if (!v || !*v)
        return NULL;
    *n = strlen(v);
    if (sg->maxlen && *n > sg->maxlen)
        *n = sg->maxlen;
    return v;
}

static void render_text(struct line *b, const struct fmt *f, struct ctx *c, bool json, bool omit_empty)
{
    for (size_t i = 0; i < f->n; i++) {
        const struct seg *sg = &f->segs[i];
        const char *v;
        size_t n = 0;
        if (sg->lit) {
            v = sg->lit;
            n = sg->litlen;
        } else if (!(v = seg_value(c, sg, &n))) {
            if (omit_empty)
                continue;
            v = "-";
            n = 1;
        }
        if (json)
            line_add_json_string(b, v, n);
        else
            line_add(b, v, n);
    }
}

static bool looks_numeric(const char *v, size_t n)
{
    size_t i = 0;
    if (i < n && v[i] == '-')
        i++;
    if (i == n)
        return false;
    bool dot = false;
    for (; i < n; i++) {
        if (v[i] == '.' && !dot)
            dot = true;
        else if (v[i] < '0' || v[i] > '9')
            return false;
    }
    return v[n - 1] != '.';
}

/* Appends the JSON for v; returns false (and appends nothing) when the value
 * is empty and omit_empty is set. */
static bool render_json(struct line *b, const struct jval *v, struct ctx *c, bool omit_empty)
{
    switch (v->kind) {
    case J_RAW:
        line_add(b, v->raw, strlen(v->raw));
        return true;
    case J_OBJ: {
        line_add(b, "{", 1);
        bool first = true;
        for (size_t i = 0; i < v->nmembers; i++) {
            size_t mark = b->len;
            if (!first)
                line_add(b, ",", 1);
            line_add(b, v->members[i].key, strlen(v->members[i].key));
            line_add(b, ":", 1);
            if (render_json(b, &v->members[i].val, c, omit_empty))
                first = false;
            else
                b->len = mark;
        }
        line_add(b, "}", 1);
        return true;
    }
    case J_FMT:
        break;
    }
    /* a lone operator keeps its type (numbers as numbers, missing as null), as Envoy's typed JSON */
    if (v->fmt.n == 1 && !v->fmt.segs[0].lit) {
        const struct seg *sg = &v->fmt.segs[0];
        size_t n = 0;
        const char *val = seg_value(c, sg, &n);
        if (!val) {
            if (omit_empty)
                return false;
            line_add(b, "null", 4);
        } else if ((sg->op->flags & OP_NUMERIC) && looks_numeric(val, n)) {
            line_add(b, val, n);
        } else {
            line_add(b, "\"", 1);
            line_add_json_string(b, val, n);
            line_add(b, "\"", 1);
        }
        return true;
    }
    line_add(b, "\"", 1);
    render_text(b, &v->fmt, c, true, false);
    line_add(b, "\"", 1);
    return true;
}

static __thread struct line tls_line;

void access_log_thread_exit(void)
{
    free(tls_line.p);
    memset(&tls_line, 0, sizeof(tls_line));
}

/* The line for l into b (emptied first). */
static void render_line(struct line *b, const struct herald_access_log *l, herald_log_field_cb field, void *arg)
{
    struct ctx c = {.field = field, .arg = arg, .body_format = l->body_format};
    b->len = 0;
    if (l->json) {
        render_json(b, &l->obj, &c, l->omit_empty);
        line_add(b, "\n", 1);
    } else {
        render_text(b, &l->text, &c, false, l->omit_empty);
    }
}

char *access_log_render(const struct herald_access_log *l, herald_log_field_cb field, void *ctx, size_t *len)
{
    struct line b = {0};
    render_line(&b, l, field, ctx);
    line_add(&b, "", 0);   /* room for the NUL even when empty */
    b.p[b.len] = '\0';
    *len = b.len;
    return b.p;
}

HERALD_EXPORT void herald_access_log_write(struct herald_access_log *l, herald_log_field_cb field, void *arg)
{
    struct line *b = &tls_line;

    if (!l || l->fd < 0)
        return;
    if (l->filter && !log_filter_matches(l->filter, field, arg))
        return;
    render_line(b, l, field, arg);
    if (!b->len)
        return;
    /* one write() per line: O_APPEND keeps lines from several threads whole */
    size_t off = 0;
    while (off < b->len) {
        ssize_t w = write(l->fd, b->p + off, b->len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break; /* a full disk or a closed pipe: drop the line rather than block a worker */
        }
        off += (size_t)w;
    }
    if (b->cap > 65536) { /* one huge line should not pin memory in every worker */
        free(b->p);
        memset(b, 0, sizeof(*b));
    }
}

/* strftime with Envoy's extras: %f / %1f..%9f (fractions of a second), %E3S-style
 * seconds with fractions (%ES, %E1S..%E9S) and %s (epoch seconds). In UTC, or
 * in the local time zone for the *_LOCAL operators (Envoy's default format
 * then ends in the zone's offset instead of Z). */
static const char *format_time(uint64_t ms, const char *fmt, char *out, size_t len, bool local)
{
    char expanded[512];
    size_t o = 0;
    time_t secs = (time_t)(ms / 1000);
    unsigned frac = (unsigned)(ms % 1000); /* ms precision: more digits are zero padded */
    struct tm tm;

    if (local)
        localtime_r(&secs, &tm);
    else
        gmtime_r(&secs, &tm);
    if (!fmt || !*fmt)
        fmt = local ? "%Y-%m-%dT%H:%M:%E3S%z" : "%Y-%m-%dT%H:%M:%E3SZ";
    for (const char *p = fmt; *p && o + 32 < sizeof(expanded); p++) {
        if (*p != '%' || !p[1]) {
            expanded[o++] = *p;
            continue;
        }
        const char *q = p + 1;
        int digits = -1;
        bool es = false;
        if (*q == 'E' && (q[1] == 'S' || (q[1] >= '1' && q[1] <= '9' && q[2] == 'S'))) {
            es = true;
            digits = q[1] == 'S' ? 9 : q[1] - '0';
            q += q[1] == 'S' ? 1 : 2;
        } else if (*q == 'f') {
            digits = 9;
        } else if (*q >= '1' && *q <= '9' && q[1] == 'f') {
            digits = *q - '0';
            q++;
        } else if (*q == 's') {
            o += (size_t)snprintf(expanded + o, sizeof(expanded) - o, "%lld", (long long)secs);
            p = q;
            continue;
        } else {
            expanded[o++] = *p++;
            expanded[o++] = *p;
            continue;
        }
        char f[10];
        snprintf(f, sizeof(f), "%03u000000", frac);
        f[digits] = '\0';
        if (es)
            o += (size_t)snprintf(expanded + o, sizeof(expanded) - o, "%02d.%s", tm.tm_sec, f);
        else
            o += (size_t)snprintf(expanded + o, sizeof(expanded) - o, "%s", f);
        p = q;
    }
    expanded[o] = '\0';
    /* the format is the operator's argument, from the config */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    size_t n = strftime(out, len, expanded, &tm);
#pragma GCC diagnostic pop
    return n ? out : NULL;
}

const char *herald_access_log_format_time(uint64_t ms, const char *fmt, char *out, size_t len)
{
    return format_time(ms, fmt, out, len, false);
}
