/* AccessLogFilter: a tree of filters parsed once, evaluated per line from
 * the values the writer's field callback gives (RESPONSE_CODE, DURATION,
 * RESPONSE_FLAGS, GRPC_STATUS_NUMBER, ACCESS_LOG_TYPE, REQ(name)), so that
 * a filter and a format never disagree on what a request was. */
#include <stdlib.h>
#include <string.h>

#include "access_log_filter.h"
#include "common.h"
#include "http/route.h"
#include "runtime.h"

enum lf_kind { LF_STATUS = 0, LF_DURATION, LF_NOT_HC, LF_FLAGS, LF_HEADER, LF_AND, LF_OR, LF_GRPC, LF_LOG_TYPE };
enum cmp_op { CMP_EQ = 0, CMP_GE, CMP_LE, CMP_NE };

struct log_filter {
    enum lf_kind kind;
    enum cmp_op op;                      /* LF_STATUS, LF_DURATION */
    uint64_t value;
    char *runtime_key;                   /* NULL: value as configured */
    char **names;                        /* LF_FLAGS: short flag names; LF_LOG_TYPE: types */
    size_t nnames;
    unsigned grpc_mask;                  /* LF_GRPC: bit per status 0..16 */
    bool exclude;                        /* LF_GRPC, LF_LOG_TYPE */
    struct herald_header_matcher *header; /* LF_HEADER */
    struct log_filter **subs;            /* LF_AND, LF_OR */
    size_t nsubs;
};

/* The response flags Envoy's ResponseFlagFilter accepts (its "in" list). */
static const char *const flag_names[] = {
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC", "URX", "SI",
    "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR", NULL,
};

/* google.rpc codes in GrpcStatusFilter.Status order */
static const char *const grpc_names[] = {
    "OK", "CANCELED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED", NULL,
};

static const char *const log_type_names[] = {
    "NotSet", "TcpUpstreamConnected", "TcpPeriodic", "TcpConnectionEnd", "DownstreamStart",
    "DownstreamPeriodic", "DownstreamEnd", "UpstreamPoolReady", "UpstreamPeriodic", "UpstreamEnd",
    "DownstreamTunnelSuccessfullyEstablished", "UdpTunnelUpstreamConnected", "UdpPeriodic", "UdpSessionEnd",
    NULL,
};

static int name_index(const char *s, const char *const *list)
{
    for (int i = 0; list[i]; i++)
        if (!strcmp(s, list[i]))
            return i;
    return -1;
}

static bool only_keys(const struct herald_cfg *n, const char *const *allowed, const char *what, char **err)
{
    if (herald_cfg_type(n) != HERALD_CFG_OBJECT) {
        herald_cfg_errorf(n, err, "%s must be a mapping", what);
        return false;
    }
    for (size_t i = 0; i < herald_cfg_len(n); i++)
        if (name_index(herald_cfg_key_at(n, i), allowed) < 0) {
            herald_cfg_errorf(herald_cfg_at(n, i), err, "unknown field '%s' in %s", herald_cfg_key_at(n, i), what);
            return false;
        }
    return true;
}

static int parse_comparison(struct log_filter *f, const struct herald_cfg *n, char **err)
{
    static const char *const keys[] = {"comparison", NULL};
    static const char *const cmp_keys[] = {"op", "value", NULL};
    static const char *const val_keys[] = {"default_value", "runtime_key", NULL};
    static const char *const ops[] = {"EQ", "GE", "LE", "NE", NULL};
    if (!only_keys(n, keys, f->kind == LF_STATUS ? "StatusCodeFilter" : "DurationFilter", err))
        return -1;
    const struct herald_cfg *c = herald_cfg_get(n, "comparison");
    if (!c)
        return herald_cfg_errorf(n, err, "comparison is required");
    if (!only_keys(c, cmp_keys, "envoy.config.accesslog.v3.ComparisonFilter", err))
        return -1;
    const struct herald_cfg *op = herald_cfg_get(c, "op");
    if (op) {
        int i = herald_cfg_type(op) == HERALD_CFG_STRING ? name_index(herald_cfg_str(op, ""), ops)
                                                         : (int)herald_cfg_int(op, -1);
        if (i < 0 || i > CMP_NE)
            return herald_cfg_errorf(op, err, "op must be EQ, GE, LE or NE");
        f->op = (enum cmp_op)i;
    }
    const struct herald_cfg *v = herald_cfg_get(c, "value");
    if (!v)
        return herald_cfg_errorf(c, err, "value is required (a RuntimeUInt32: default_value, runtime_key)");
    if (!only_keys(v, val_keys, "envoy.config.core.v3.RuntimeUInt32", err))
        return -1;
    const struct herald_cfg *dv = herald_cfg_get(v, "default_value");
    int64_t d = herald_cfg_int(dv, 0);
    if (dv && (herald_cfg_type(dv) != HERALD_CFG_INT || d < 0 || d > UINT32_MAX))
        return herald_cfg_errorf(dv, err, "default_value must be a number from 0 to 4294967295");
    f->value = (uint64_t)d;
    const struct herald_cfg *rk = herald_cfg_get(v, "runtime_key");
    if (!rk || !*herald_cfg_str(rk, ""))
        return herald_cfg_errorf(rk ? rk : v, err, "runtime_key is required (a non-empty string)");
    f->runtime_key = xstrdup(herald_cfg_str(rk, ""));
    return 0;
}

static int parse_names(struct log_filter *f, const struct herald_cfg *list, const char *const *known,
                       const char *what, char **err)
{
    if (!list)
        return 0;
    if (herald_cfg_type(list) != HERALD_CFG_ARRAY)
        return herald_cfg_errorf(list, err, "must be a list");
    f->names = xcalloc(herald_cfg_len(list) + 1, sizeof(*f->names));
    for (size_t i = 0; i < herald_cfg_len(list); i++) {
        const struct herald_cfg *e = herald_cfg_at(list, i);
        const char *s = herald_cfg_str(e, "");
        if (name_index(s, known) < 0)
            return herald_cfg_errorf(e, err, "unknown %s '%s'", what, s);
        f->names[f->nnames++] = xstrdup(s);
    }
    return 0;
}

static int parse_one(struct log_filter *f, const struct herald_cfg *n, char **err)
{
    static const char *const supported[] = {"status_code_filter", "duration_filter", "not_health_check_filter",
                                            "response_flag_filter", "header_filter", "and_filter",
                                            "or_filter", "grpc_status_filter", "log_type_filter", NULL};
    static const char *const unsupported[] = {"runtime_filter", "traceable_filter", "metadata_filter",
                                              "extension_filter", NULL};
    if (herald_cfg_type(n) != HERALD_CFG_OBJECT)
        return herald_cfg_errorf(n, err, "an AccessLogFilter must be a mapping");
    const struct herald_cfg *v = NULL;
    const char *key = NULL;
    for (size_t i = 0; i < herald_cfg_len(n); i++) {
        const char *k = herald_cfg_key_at(n, i);
        if (name_index(k, unsupported) >= 0)
            return herald_cfg_errorf(herald_cfg_at(n, i), err, "not supported by herald: %s", k);
        if (name_index(k, supported) < 0)
            return herald_cfg_errorf(herald_cfg_at(n, i), err,
                                     "unknown field '%s' in envoy.config.accesslog.v3.AccessLogFilter", k);
        if (v)
            return herald_cfg_errorf(herald_cfg_at(n, i), err, "only one of %s and %s may be set", key, k);
        v = herald_cfg_at(n, i);
        key = k;
    }
    if (!v)
        return herald_cfg_errorf(n, err, "an AccessLogFilter needs one filter (status_code_filter, ...)");
    f->kind = (enum lf_kind)name_index(key, supported);

    switch (f->kind) {
    case LF_STATUS:
    case LF_DURATION:
        return parse_comparison(f, v, err);
    case LF_NOT_HC: {
        static const char *const none[] = {NULL};
        return only_keys(v, none, "NotHealthCheckFilter", err) ? 0 : -1;
    }
    case LF_FLAGS: {
        static const char *const keys[] = {"flags", NULL};
        if (!only_keys(v, keys, "ResponseFlagFilter", err))
            return -1;
        return parse_names(f, herald_cfg_get(v, "flags"), flag_names, "response flag", err);
    }
    case LF_HEADER: {
        static const char *const keys[] = {"header", NULL};
        if (!only_keys(v, keys, "HeaderFilter", err))
            return -1;
        if (!herald_cfg_get(v, "header"))
            return herald_cfg_errorf(v, err, "header is required");
        f->header = herald_header_matcher_new(herald_cfg_get(v, "header"), err);
        return f->header ? 0 : -1;
    }
    case LF_AND:
    case LF_OR: {
        static const char *const keys[] = {"filters", NULL};
        if (!only_keys(v, keys, f->kind == LF_AND ? "AndFilter" : "OrFilter", err))
            return -1;
        const struct herald_cfg *l = herald_cfg_get(v, "filters");
        if (herald_cfg_type(l) != HERALD_CFG_ARRAY || herald_cfg_len(l) < 2)
            return herald_cfg_errorf(l ? l : v, err, "filters must list at least 2 filters");
        f->subs = xcalloc(herald_cfg_len(l), sizeof(*f->subs));
        for (size_t i = 0; i < herald_cfg_len(l); i++) {
            if (!(f->subs[i] = log_filter_create(herald_cfg_at(l, i), err)))
                return -1;
            f->nsubs++;
        }
        return 0;
    }
    case LF_GRPC:
    case LF_LOG_TYPE: {
        static const char *const gkeys[] = {"statuses", "exclude", NULL};
        static const char *const tkeys[] = {"types", "exclude", NULL};
        bool grpc = f->kind == LF_GRPC;
        if (!only_keys(v, grpc ? gkeys : tkeys, grpc ? "GrpcStatusFilter" : "LogTypeFilter", err))
            return -1;
        f->exclude = herald_cfg_bool(herald_cfg_get(v, "exclude"), false);
        if (parse_names(f, herald_cfg_get(v, grpc ? "statuses" : "types"), grpc ? grpc_names : log_type_names,
                        grpc ? "gRPC status" : "access log type", err) < 0)
            return -1;
        if (grpc)
            for (size_t i = 0; i < f->nnames; i++)
                f->grpc_mask |= 1u << name_index(f->names[i], grpc_names);
        return 0;
    }
    }
    return 0;
}

struct log_filter *log_filter_create(const struct herald_cfg *n, char **err)
{
    struct log_filter *f = xcalloc(1, sizeof(*f));
    if (parse_one(f, n, err) < 0) {
        log_filter_free(f);
        return NULL;
    }
    return f;
}

void log_filter_free(struct log_filter *f)
{
    if (!f)
        return;
    free(f->runtime_key);
    for (size_t i = 0; i < f->nnames; i++)
        free(f->names[i]);
    free(f->names);
    herald_header_matcher_free(f->header);
    for (size_t i = 0; i < f->nsubs; i++)
        log_filter_free(f->subs[i]);
    free(f->subs);
    free(f);
}

/* ---------------------------------------------------------------- evaluation */

struct eval {
    herald_log_field_cb field;
    void *ctx;
    char scratch[256];
};

static const char *ask(struct eval *e, const char *op, const char *arg)
{
    e->scratch[0] = '\0';
    return e->field ? e->field(e->ctx, op, arg, e->scratch, sizeof(e->scratch)) : NULL;
}

static uint64_t ask_uint(struct eval *e, const char *op)
{
    const char *v = ask(e, op, NULL);
    return v ? strtoull(v, NULL, 10) : 0;
}

static bool compare(const struct log_filter *f, uint64_t have)
{
    /* Envoy reads the runtime value on every evaluation: a runtime change applies at once */
    uint64_t want = runtime_get_uint(f->runtime_key, f->value);
    switch (f->op) {
    case CMP_EQ: return have == want;
    case CMP_GE: return have >= want;
    case CMP_LE: return have <= want;
    case CMP_NE: return have != want;
    }
    return false;
}

/* Envoy's Grpc::Common::getGrpcStatus: grpc-status from the response, else
 * the HTTP status mapped (Grpc::Utility::httpToGrpcStatus), else UNKNOWN. */
static unsigned grpc_status(struct eval *e)
{
    const char *v = ask(e, "GRPC_STATUS_NUMBER", NULL);
    if (v && *v)
        return (unsigned)strtoul(v, NULL, 10);
    switch (ask_uint(e, "RESPONSE_CODE")) {
    case 400: return 13;
    case 401: return 16;
    case 403: return 7;
    case 404: return 12;
    case 429: case 502: case 503: case 504: return 14;
    default: return 2;
    }
}

static bool has_flag(const char *flags, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = flags; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && !memcmp(p, name, n))
            return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

static bool eval(const struct log_filter *f, struct eval *e)
{
    switch (f->kind) {
    case LF_STATUS:
        return compare(f, ask_uint(e, "RESPONSE_CODE"));
    case LF_DURATION:
        return compare(f, ask_uint(e, "DURATION"));
    case LF_NOT_HC: {
        const char *v = ask(e, LOG_FILTER_HEALTH_CHECK_QUERY, NULL);
        return !(v && !strcmp(v, "1"));
    }
    case LF_FLAGS: {
        const char *flags = ask(e, "RESPONSE_FLAGS", NULL);
        if (!flags || !*flags || !strcmp(flags, "-"))
            return false;
        if (!f->nnames)
            return true;   /* no list: any flag */
        for (size_t i = 0; i < f->nnames; i++)
            if (has_flag(flags, f->names[i]))
                return true;
        return false;
    }
    case LF_HEADER: {
        /* every value of the header, joined with ',' as Envoy matches them */
        const char *v = ask(e, "REQ_ALL", route_header_matcher_name(f->header));
        return route_header_matcher_value_matches(f->header, v);
    }
    case LF_AND:
        for (size_t i = 0; i < f->nsubs; i++)
            if (!eval(f->subs[i], e))
                return false;
        return true;
    case LF_OR:
        for (size_t i = 0; i < f->nsubs; i++)
            if (eval(f->subs[i], e))
                return true;
        return false;
    case LF_GRPC: {
        unsigned st = grpc_status(e);
        bool found = st < 32 && (f->grpc_mask >> st & 1u);
        return found != f->exclude;
    }
    case LF_LOG_TYPE: {
        const char *t = ask(e, "ACCESS_LOG_TYPE", NULL);
        if (!t || !*t)
            t = "NotSet";
        bool found = false;
        for (size_t i = 0; i < f->nnames && !found; i++)
            found = !strcmp(f->names[i], t);
        return found != f->exclude;
    }
    }
    return false;
}

bool log_filter_matches(const struct log_filter *f, herald_log_field_cb field, void *ctx)
{
    struct eval e = {.field = field, .ctx = ctx};
    return eval(f, &e);
}
