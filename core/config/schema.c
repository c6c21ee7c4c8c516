/* Checks config nodes against declarative message tables (herald/config.h)
 * and normalises them in place. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "config/schema.h"
#include "config/tree.h"

/* ------------------------------------------------------------ helpers */

static size_t levenshtein(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return SIZE_MAX;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost = tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 1]) ? 0 : 1;
            size_t best = diag + cost;
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static const char *closest(const char *name, const char *const *cands, size_t n)
{
    size_t limit = strlen(name) / 3;
    if (limit < 2)
        limit = 2;
    const char *best = NULL;
    size_t bestd = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        size_t dist = levenshtein(name, cands[i]);
        if (dist <= limit && dist < bestd) {
            best = cands[i];
            bestd = dist;
        }
    }
    return best;
}

static char *camel_to_snake(const char *s)
{
    size_t len = strlen(s);
    char *out = xmalloc(len * 2 + 1), *o = out;
    for (; *s; s++) {
        if (isupper((unsigned char)*s)) {
            *o++ = '_';
            *o++ = (char)tolower((unsigned char)*s);
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
    return out;
}

static const struct herald_field *find_field(const struct herald_message *msg, const char *name)
{
    for (const struct herald_field *f = msg->fields; f && f->name; f++)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

const char *schema_did_you_mean(const struct herald_message *msg, const char *name)
{
    const char *cands[512];
    size_t n = 0;
    for (const struct herald_field *f = msg->fields; f && f->name && n < ARRAY_SIZE(cands); f++)
        cands[n++] = f->name;
    char *snake = camel_to_snake(name);
    const char *best = closest(snake, cands, n);
    free(snake);
    return best;
}

/* A short description of a value, for "got ..." in messages. */
static const char *describe(const struct herald_cfg *n, char *buf, size_t size)
{
    switch (n->type) {
    case HERALD_CFG_NULL:
        return "nothing (null)";
    case HERALD_CFG_BOOL:
        return n->u.b ? "true" : "false";
    case HERALD_CFG_INT:
        snprintf(buf, size, "%" PRId64, n->u.i);
        return buf;
    case HERALD_CFG_REAL:
        snprintf(buf, size, "%g", n->u.r);
        return buf;
    case HERALD_CFG_STRING:
        if (n->u.str.len > 40)
            snprintf(buf, size, "'%.37s...'", n->u.str.s);
        else
            snprintf(buf, size, "'%s'", n->u.str.s);
        return buf;
    case HERALD_CFG_ARRAY:
        return "a list";
    case HERALD_CFG_OBJECT:
        return "a mapping";
    }
    return "?";
}

static void to_int(struct herald_cfg *n, int64_t v)
{
    if (n->type == HERALD_CFG_STRING)
        free(n->u.str.s);
    n->type = HERALD_CFG_INT;
    n->u.i = v;
}

static void to_string(struct herald_cfg *n, const char *s)
{
    n->type = HERALD_CFG_STRING;
    n->u.str.s = xstrdup(s);
    n->u.str.len = strlen(s);
}

/* Decimal integer with nothing else around it. */
static bool str_to_int(const char *s, int64_t *out)
{
    if (!*s || isspace((unsigned char)*s))
        return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

static bool str_to_real(const char *s, double *out)
{
    if (!*s || isspace((unsigned char)*s))
        return false;
    char *end;
    double v = strtod(s, &end);
    if (*end || isnan(v))
        return false;
    *out = v;
    return true;
}

/* ------------------------------------------------------------ durations */

int schema_parse_duration_ms(const char *s, uint64_t *ms)
{
    const char *p = s;
    uint64_t sec = 0, ns = 0;
    int digits = 0, frac = 0;
    while (isdigit((unsigned char)*p)) {
        if (sec > 315576000000ull) /* protobuf's Duration range */
            return -1;
        sec = sec * 10 + (uint64_t)(*p - '0');
        p++;
        digits++;
    }
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p)) {
            if (frac == 9)
                return -1;
            ns = ns * 10 + (uint64_t)(*p - '0');
            p++;
            frac++;
        }
        for (int i = frac; i < 9; i++)
            ns *= 10;
    }
    if ((!digits && !frac) || *p != 's' || p[1] || sec > 315576000000ull)
        return -1;
    uint64_t v = sec * 1000 + ns / 1000000;
    if (v == 0 && (sec || ns))
        v = 1;
    *ms = v;
    return 0;
}

/* Explains a value that is not a protobuf duration, with what to write. */
static void duration_error(struct cfg_diag *d, const struct herald_cfg *n)
{
    char buf[96], sugg[64] = "";
    const char *what = describe(n, buf, sizeof(buf));
    double secs = -1;
    if (n->type == HERALD_CFG_INT || n->type == HERALD_CFG_REAL) {
        secs = n->type == HERALD_CFG_INT ? (double)n->u.i : n->u.r;
    } else if (n->type == HERALD_CFG_STRING) {
        char *end;
        const char *s = n->u.str.s;
        double v = strtod(s, &end);
        if (end != s && isfinite(v) && v >= 0) {
            if (strcmp(end, "ms") == 0)
                secs = v / 1000;
            else if (strcmp(end, "us") == 0)
                secs = v / 1e6;
            else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
                secs = v * 60;
            else if (strcmp(end, "h") == 0)
                secs = v * 3600;
            else if (strcmp(end, "S") == 0 || strcmp(end, "sec") == 0 || strcmp(end, "s ") == 0 ||
                     strcmp(end, " s") == 0)
                secs = v;
        }
    }
    if (secs >= 0 && secs < 1e12) {
        snprintf(sugg, sizeof(sugg), "%.9f", secs);
        char *dot = strchr(sugg, '.');
        char *e = sugg + strlen(sugg) - 1;
        while (e > dot && *e == '0')
            *e-- = '\0';
        if (e == dot)
            *e = '\0';
    }
    if (n->type == HERALD_CFG_STRING && n->u.str.s[0] == '-')
        diag_error(d, n, "expected a duration like \"1s\" or \"0.25s\", got %s: durations cannot be negative",
                   what);
    else if (sugg[0])
        diag_error(d, n, "expected a duration like \"1s\" or \"0.25s\", got %s: durations are seconds with "
                   "an 's' suffix; write \"%ss\"", what, sugg);
    else
        diag_error(d, n, "expected a duration like \"1s\" or \"0.25s\", got %s", what);
}

/* ------------------------------------------------------------ checking */

static int check_message(struct herald_cfg *node, const struct herald_message *msg, struct cfg_diag *d);

static char *fmt_at(const struct herald_cfg *at, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static char *fmt_at(const struct herald_cfg *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = diag_format(at, fmt, ap);
    va_end(ap);
    return s;
}

static void enum_error(struct cfg_diag *d, const struct herald_cfg *n, const struct herald_field *f)
{
    char list[1024] = "", buf[96];
    size_t count = 0, at = 0;
    for (const char *const *v = f->enum_values; *v; v++, count++)
        at += (size_t)snprintf(list + at, at < sizeof(list) ? sizeof(list) - at : 0, "%s%s",
                               count ? ", " : "", *v);
    const char *best = n->type == HERALD_CFG_STRING ? closest(n->u.str.s, f->enum_values, count) : NULL;
    if (n->type == HERALD_CFG_STRING)
        diag_error(d, n, "unknown value %s (expected one of %s)%s%s%s", describe(n, buf, sizeof(buf)), list,
                   best ? "; did you mean '" : "", best ? best : "", best ? "'?" : "");
    else
        diag_error(d, n, "expected one of %s, got %s", list, describe(n, buf, sizeof(buf)));
}

static void type_error(struct cfg_diag *d, const struct herald_cfg *n, const char *expected)
{
    char buf[96];
    diag_error(d, n, "expected %s, got %s", expected, describe(n, buf, sizeof(buf)));
}

/* Checks one value (not a list) of field f. */
static void check_value(struct herald_cfg *n, const struct herald_field *f, struct cfg_diag *d)
{
    char buf[96];
    int64_t iv;
    double rv;

    switch (f->kind) {
    case HERALD_FIELD_ANY:
    case HERALD_FIELD_REMOVED:
        return;
    case HERALD_FIELD_STRING:
        /* a YAML `name: 8080` means the string; protobuf would refuse it, but
         * nobody writing it means anything else */
        if (n->type == HERALD_CFG_INT || n->type == HERALD_CFG_REAL || n->type == HERALD_CFG_BOOL)
            to_string(n, describe(n, buf, sizeof(buf)));
        else if (n->type != HERALD_CFG_STRING)
            type_error(d, n, "a string");
        return;
    case HERALD_FIELD_BOOL:
        if (n->type == HERALD_CFG_BOOL)
            return;
        if (n->type == HERALD_CFG_STRING) {
            const char *s = n->u.str.s;
            if (strcasecmp(s, "true") == 0 || strcasecmp(s, "false") == 0) {
                bool b = strcasecmp(s, "true") == 0;
                free(n->u.str.s);
                n->type = HERALD_CFG_BOOL;
                n->u.b = b;
                return;
            }
            if (strcasecmp(s, "yes") == 0 || strcasecmp(s, "no") == 0 || strcasecmp(s, "on") == 0 ||
                strcasecmp(s, "off") == 0) {
                diag_error(d, n, "expected true or false, got '%s' (YAML 1.1 yes/no/on/off are not "
                           "booleans here; write true or false)", s);
                return;
            }
        }
        type_error(d, n, "true or false");
        return;
    case HERALD_FIELD_INT:
    case HERALD_FIELD_UINT: {
        bool uns = f->kind == HERALD_FIELD_UINT;
        const char *want = uns ? "a non-negative integer" : "an integer";
        if (n->type == HERALD_CFG_STRING && str_to_int(n->u.str.s, &iv))
            to_int(n, iv);
        else if (n->type == HERALD_CFG_REAL && n->u.r == floor(n->u.r) && fabs(n->u.r) < 9e18)
            to_int(n, (int64_t)n->u.r);
        if (n->type != HERALD_CFG_INT)
            type_error(d, n, want);
        else if (uns && n->u.i < 0)
            type_error(d, n, want);
        return;
    }
    case HERALD_FIELD_DOUBLE:
        if (n->type == HERALD_CFG_STRING && str_to_real(n->u.str.s, &rv)) {
            free(n->u.str.s);
            n->type = HERALD_CFG_REAL;
            n->u.r = rv;
        }
        if (n->type != HERALD_CFG_INT && n->type != HERALD_CFG_REAL)
            type_error(d, n, "a number");
        return;
    case HERALD_FIELD_DURATION: {
        uint64_t ms;
        if (n->type != HERALD_CFG_STRING || schema_parse_duration_ms(n->u.str.s, &ms) < 0)
            duration_error(d, n);
        return;
    }
    case HERALD_FIELD_ENUM:
        if (n->type == HERALD_CFG_STRING) {
            for (const char *const *v = f->enum_values; v && *v; v++) {
                if (strcasecmp(*v, n->u.str.s) == 0) {
                    if (strcmp(*v, n->u.str.s) != 0) {
                        free(n->u.str.s);
                        n->u.str.s = xstrdup(*v);
                        n->u.str.len = strlen(*v);
                    }
                    return;
                }
            }
        }
        enum_error(d, n, f);
        return;
    case HERALD_FIELD_MESSAGE:
        if (n->type == HERALD_CFG_OBJECT || n->type == HERALD_CFG_NULL) {
            if (f->message)
                check_message(n, f->message, d);
        } else {
            char want[160];
            snprintf(want, sizeof(want), "a mapping (%s)", f->message ? f->message->name : "a message");
            type_error(d, n, want);
        }
        return;
    case HERALD_FIELD_MAP:
        if (n->type == HERALD_CFG_NULL)
            return;
        if (n->type != HERALD_CFG_OBJECT) {
            type_error(d, n, "a mapping of names to values");
            return;
        }
        if (f->message)
            for (size_t i = 0; i < n->u.kids.n; i++) {
                struct herald_cfg *v = n->u.kids.items[i];
                if (v->type == HERALD_CFG_OBJECT || v->type == HERALD_CFG_NULL)
                    check_message(v, f->message, d);
                else {
                    char want[160];
                    snprintf(want, sizeof(want), "a mapping (%s)", f->message->name);
                    type_error(d, v, want);
                }
            }
        return;
    case HERALD_FIELD_STRUCT:
        if (n->type != HERALD_CFG_OBJECT && n->type != HERALD_CFG_NULL)
            type_error(d, n, "a mapping");
        return;
    case HERALD_FIELD_TYPED: {
        if (n->type == HERALD_CFG_NULL)
            return;
        if (n->type != HERALD_CFG_OBJECT) {
            type_error(d, n, "a mapping with an \"@type\"");
            return;
        }
        const struct herald_cfg *t = herald_cfg_get(n, "@type");
        if (t && t->type != HERALD_CFG_STRING)
            diag_error(d, t, "\"@type\" must be a string such as "
                       "\"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\"");
        return;
    }
    }
}

/* The field of msg whose message has a field called name: for a field given
 * one level too high (e.g. listeners at the top instead of in static_resources). */
static const struct herald_field *field_one_level_down(const struct herald_message *msg, const char *name)
{
    for (const struct herald_field *f = msg->fields; f && f->name; f++) {
        const struct herald_field *inner;
        if (f->kind == HERALD_FIELD_MESSAGE && f->message && !(f->flags & HERALD_F_UNSUPPORTED) &&
            (inner = find_field(f->message, name)) && inner->kind != HERALD_FIELD_REMOVED)
            return f;
    }
    return NULL;
}

static bool is_set(const struct herald_cfg *n)
{
    return n && n->type != HERALD_CFG_NULL;
}

static int check_message(struct herald_cfg *node, const struct herald_message *msg, struct cfg_diag *d)
{
    size_t errors_before = d->nerrors;
    char buf[96];

    if (node->type == HERALD_CFG_NULL)
        goto required; /* an empty message: only the required fields can be wrong */
    if (node->type != HERALD_CFG_OBJECT) {
        char want[160];
        snprintf(want, sizeof(want), "a mapping (%s)", msg->name);
        type_error(d, node, want);
        return -1;
    }

    struct { const char *oneof; const struct herald_cfg *node; } oneofs[32];
    size_t noneofs = 0;

    for (size_t i = 0; i < node->u.kids.n; i++) {
        struct herald_cfg *m = node->u.kids.items[i];
        if (strcmp(m->key, "@type") == 0)
            continue;
        const struct herald_field *f = find_field(msg, m->key);
        if (!f && strpbrk(m->key, "ABCDEFGHIJKLMNOPQRSTUVWXYZ")) {
            /* protobuf JSON's lowerCamelCase name: normalise to the proto name */
            char *snake = camel_to_snake(m->key);
            f = find_field(msg, snake);
            if (f) {
                const struct herald_cfg *other = herald_cfg_get(node, snake);
                if (other) {
                    diag_error(d, m, "'%s' is the same field as '%s' (line %d): give it once", m->key,
                               snake, other->line);
                    free(snake);
                    continue;
                }
                free(m->key);
                m->key = snake;
            } else {
                free(snake);
            }
        }
        if (!f) {
            const char *best = schema_did_you_mean(msg, m->key);
            const struct herald_field *home = best ? NULL : field_one_level_down(msg, m->key);
            if (home)
                diag_error(d, m, "unknown field '%s' in %s (it belongs inside '%s')", m->key, msg->name,
                           home->name);
            else
                diag_error(d, m, "unknown field '%s' in %s%s%s%s", m->key, msg->name,
                           best ? " (did you mean '" : "", best ? best : "", best ? "'?)" : "");
            continue;
        }
        if (f->kind == HERALD_FIELD_REMOVED) {
            diag_error(d, m, "'%s' is no longer a field of %s (%s)", f->name, msg->name,
                       f->hint ? f->hint : "removed from Envoy's v3 API");
            continue;
        }
        if (f->flags & HERALD_F_UNSUPPORTED) {
            diag_error(d, m, "not supported: %s.%s (herald does not implement it yet%s%s)", msg->name,
                       f->name, f->hint ? "; " : "", f->hint ? f->hint : "");
            continue;
        }
        if (f->flags & HERALD_F_DEPRECATED)
            diag_warn(d, m, "'%s' is deprecated%s%s", f->name, f->hint ? ": " : "", f->hint ? f->hint : "");
        if (f->oneof && is_set(m)) {
            size_t j;
            for (j = 0; j < noneofs; j++)
                if (strcmp(oneofs[j].oneof, f->oneof) == 0)
                    break;
            if (j < noneofs) {
                diag_error(d, m, "'%s' and '%s' (line %d) are both set, but only one of them may be "
                           "(oneof %s)", f->name, oneofs[j].node->key, oneofs[j].node->line, f->oneof);
                continue;
            }
            if (noneofs < ARRAY_SIZE(oneofs)) {
                oneofs[noneofs].oneof = f->oneof;
                oneofs[noneofs++].node = m;
            }
        }
        if (m->type == HERALD_CFG_NULL)
            continue; /* protobuf JSON: null means unset */
        if (f->flags & HERALD_F_REPEATED) {
            if (m->type != HERALD_CFG_ARRAY)
                m = cfg_wrap_in_array(m);
            for (size_t j = 0; j < m->u.kids.n; j++) {
                struct herald_cfg *item = m->u.kids.items[j];
                if (item->type == HERALD_CFG_NULL && f->kind != HERALD_FIELD_MESSAGE &&
                    f->kind != HERALD_FIELD_ANY)
                    diag_error(d, item, "a list item is empty (null)");
                else
                    check_value(item, f, d);
            }
            if ((f->flags & HERALD_F_REQUIRED) && m->u.kids.n == 0)
                diag_error(d, m, "'%s' must have at least one item", f->name);
        } else if (m->type == HERALD_CFG_ARRAY && f->kind != HERALD_FIELD_ANY) {
            diag_error(d, m, "expected a single value, got a list (%s is not a repeated field)", f->name);
        } else {
            check_value(m, f, d);
        }
    }
    (void)buf;
required:
    for (const struct herald_field *f = msg->fields; f && f->name; f++) {
        if (!(f->flags & HERALD_F_REQUIRED) || (f->flags & HERALD_F_UNSUPPORTED))
            continue;
        const struct herald_cfg *m = herald_cfg_get(node, f->name);
        if (!is_set(m))
            diag_error(d, node, "missing required field '%s'%s", f->name,
                       node->type == HERALD_CFG_NULL ? " (the mapping is empty)" : "");
    }
    if (d->nerrors != errors_before)
        return -1;
    if (msg->check) {
        char *err = NULL;
        if (msg->check(node, &err) < 0) {
            diag_error_take(d, err ? err : fmt_at(node, "invalid %s", msg->name));
            return -1;
        }
        free(err);
    }
    return 0;
}

int schema_check(struct herald_cfg *node, const struct herald_message *msg, struct cfg_diag *d)
{
    if (!node || !msg)
        return 0;
    return check_message(node, msg, d);
}

/* ------------------------------------------------------------ v2 names */

static const struct { const char *old, *now; } v2_names[] = {
    { "envoy.router", "envoy.filters.http.router" },
    { "envoy.http_connection_manager", "envoy.filters.network.http_connection_manager" },
    { "envoy.tcp_proxy", "envoy.filters.network.tcp_proxy" },
    { "envoy.mongo_proxy", "envoy.filters.network.mongo_proxy" },
    { "envoy.mysql_proxy", "envoy.filters.network.mysql_proxy" },
    { "envoy.redis_proxy", "envoy.filters.network.redis_proxy" },
    { "envoy.echo", "envoy.filters.network.echo" },
    { "envoy.ratelimit", "envoy.filters.network.ratelimit" },
    { "envoy.client_ssl_auth", "envoy.filters.network.client_ssl_auth" },
    { "envoy.ext_authz", "envoy.filters.http.ext_authz" },
    { "envoy.rate_limit", "envoy.filters.http.ratelimit" },
    { "envoy.cors", "envoy.filters.http.cors" },
    { "envoy.fault", "envoy.filters.http.fault" },
    { "envoy.gzip", "envoy.filters.http.compressor" },
    { "envoy.health_check", "envoy.filters.http.health_check" },
    { "envoy.lua", "envoy.filters.http.lua" },
    { "envoy.buffer", "envoy.filters.http.buffer" },
    { "envoy.grpc_web", "envoy.filters.http.grpc_web" },
    { "envoy.grpc_json_transcoder", "envoy.filters.http.grpc_json_transcoder" },
    { "envoy.ip_tagging", "envoy.filters.http.ip_tagging" },
    { "envoy.squash", "envoy.filters.http.squash" },
    { "envoy.listener.tls_inspector", "envoy.filters.listener.tls_inspector" },
    { "envoy.listener.original_dst", "envoy.filters.listener.original_dst" },
    { "envoy.listener.proxy_protocol", "envoy.filters.listener.proxy_protocol" },
    { "envoy.listener.http_inspector", "envoy.filters.listener.http_inspector" },
    { "envoy.listener.original_src", "envoy.filters.listener.original_src" },
    { "envoy.file_access_log", "envoy.access_loggers.file" },
    { "envoy.http_grpc_access_log", "envoy.access_loggers.http_grpc" },
    { "envoy.tcp_grpc_access_log", "envoy.access_loggers.tcp_grpc" },
    { "tls", "envoy.transport_sockets.tls" },
    { "raw_buffer", "envoy.transport_sockets.raw_buffer" },
};

const char *schema_v2_filter_hint(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < ARRAY_SIZE(v2_names); i++)
        if (strcmp(v2_names[i].old, name) == 0)
            return v2_names[i].now;
    return NULL;
}
