/* rbac: the schema of a policy's condition (google.api.expr.v1alpha1.Expr,
 * the parsed form) and the config tree -> cel_expr step. Attributes and
 * functions herald does not know are refused here, with their place, rather
 * than found false on every request. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/herald.h"
#include "cel.h"
#include "matcher.h"

/* ---------------------------------------------------------------- schema */

static const struct herald_field constant_fields[] = {
    {.name = "null_value", .kind = HERALD_FIELD_ANY, .oneof = "constant_kind", .help = "null"},
    {.name = "bool_value", .kind = HERALD_FIELD_BOOL, .oneof = "constant_kind", .help = "a boolean"},
    {.name = "int64_value", .kind = HERALD_FIELD_INT, .oneof = "constant_kind", .help = "an integer"},
    {.name = "uint64_value", .kind = HERALD_FIELD_UINT, .oneof = "constant_kind", .help = "an unsigned integer"},
    {.name = "double_value", .kind = HERALD_FIELD_DOUBLE, .oneof = "constant_kind", .help = "a number"},
    {.name = "string_value", .kind = HERALD_FIELD_STRING, .oneof = "constant_kind", .help = "a string"},
    {.name = "bytes_value", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_UNSUPPORTED, .oneof = "constant_kind",
     .help = "bytes"},
    {.name = "duration_value", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = "constant_kind",
     .help = "a duration"},
    {.name = "timestamp_value", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = "constant_kind",
     .help = "a timestamp"},
    {NULL},
};
static const struct herald_message constant_msg = {.name = "google.api.expr.v1alpha1.Constant",
                                                   .fields = constant_fields};

static const struct herald_field ident_fields[] = {
    {.name = "name", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "request, source, destination or connection"},
    {NULL},
};
static const struct herald_message ident_msg = {.name = "google.api.expr.v1alpha1.Expr.Ident",
                                                .fields = ident_fields};

static const struct herald_field select_fields[] = {
    {.name = "operand", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REQUIRED, .message = &rbac_cel_expr_msg,
     .help = "what the field is taken from"},
    {.name = "field", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED, .help = "the field"},
    {.name = "test_only", .kind = HERALD_FIELD_BOOL, .help = "has(): whether the field is present"},
    {NULL},
};
static const struct herald_message select_msg = {.name = "google.api.expr.v1alpha1.Expr.Select",
                                                 .fields = select_fields};

static const struct herald_field call_fields[] = {
    {.name = "target", .kind = HERALD_FIELD_MESSAGE, .message = &rbac_cel_expr_msg,
     .help = "the receiver of a method call (x in x.startsWith(y))"},
    {.name = "function", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "_&&_, _==_, startsWith, ... (see herald-rbac(5))"},
    {.name = "args", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED, .message = &rbac_cel_expr_msg,
     .help = "the arguments"},
    {NULL},
};
static const struct herald_message call_msg = {.name = "google.api.expr.v1alpha1.Expr.Call",
                                               .fields = call_fields};

static const struct herald_field list_fields[] = {
    {.name = "elements", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED, .message = &rbac_cel_expr_msg,
     .help = "the elements"},
    {NULL},
};
static const struct herald_message list_msg = {.name = "google.api.expr.v1alpha1.Expr.CreateList",
                                               .fields = list_fields};

#define EK "expr_kind"
static const struct herald_field expr_fields[] = {
    {.name = "id", .kind = HERALD_FIELD_INT, .help = "the parser's node id (unused)"},
    {.name = "const_expr", .kind = HERALD_FIELD_MESSAGE, .oneof = EK, .message = &constant_msg,
     .help = "a literal"},
    {.name = "ident_expr", .kind = HERALD_FIELD_MESSAGE, .oneof = EK, .message = &ident_msg,
     .help = "an attribute root"},
    {.name = "select_expr", .kind = HERALD_FIELD_MESSAGE, .oneof = EK, .message = &select_msg,
     .help = "a field: request.path, request.headers.x"},
    {.name = "call_expr", .kind = HERALD_FIELD_MESSAGE, .oneof = EK, .message = &call_msg,
     .help = "an operator or function"},
    {.name = "list_expr", .kind = HERALD_FIELD_MESSAGE, .oneof = EK, .message = &list_msg, .help = "a list"},
    {.name = "struct_expr", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = EK,
     .help = "map and message literals"},
    {.name = "comprehension_expr", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = EK,
     .help = "all(), exists(), map(), filter()"},
    {NULL},
};
#undef EK
const struct herald_message rbac_cel_expr_msg = {.name = "google.api.expr.v1alpha1.Expr", .fields = expr_fields};

/* ---------------------------------------------------------------- building */

#define MAX_DEPTH 64

static int arity_ok(enum cel_fn fn, size_t n)
{
    switch (fn) {
    case CEL_F_AND:
    case CEL_F_OR:
        return n >= 2;
    case CEL_F_NOT:
    case CEL_F_NEG:
    case CEL_F_SIZE:
    case CEL_F_INT:
    case CEL_F_UINT:
    case CEL_F_DOUBLE:
    case CEL_F_STRING:
        return n == 1;
    case CEL_F_COND:
        return n == 3;
    default:
        return n == 2;
    }
}

static struct cel_expr *build(const struct herald_cfg *n, unsigned depth, char **err);

static struct cel_expr *fail(struct cel_expr *e)
{
    cel_expr_free(e);
    return NULL;
}

static struct cel_expr *build_select(const struct herald_cfg *sel, unsigned depth, char **err)
{
    const struct herald_cfg *operand = herald_cfg_get(sel, "operand");
    const char *field = herald_cfg_str(herald_cfg_get(sel, "field"), "");
    bool test_only = herald_cfg_bool(herald_cfg_get(sel, "test_only"), false);
    const struct herald_cfg *ident = herald_cfg_get(operand, "ident_expr");

    if (ident) {
        /* top.field: an attribute, known now or refused */
        const char *top = herald_cfg_str(herald_cfg_get(ident, "name"), "");
        int a = cel_attr_of(top, field);
        if (a < 0) {
            herald_cfg_errorf(sel, err,
                              "unknown attribute %s.%s (herald knows request.{path,url_path,host,scheme,method,"
                              "headers,referer,useragent,id,query}, source/destination.{address,port}, "
                              "connection.{mtls,requested_server_name,uri_san_peer_certificate,"
                              "dns_san_peer_certificate,subject_peer_certificate})",
                              top, field);
            return NULL;
        }
        struct cel_expr *attr = cel_expr_new(CEL_ATTR);
        attr->attr = (enum cel_attr)a;
        if (!test_only)
            return attr;
        struct cel_expr *has = cel_expr_new(CEL_SELECT); /* field NULL: has(top.field) */
        has->test_only = true;
        cel_expr_add(has, attr);
        return has;
    }
    struct cel_expr *op = build(operand, depth + 1, err);
    if (!op)
        return NULL;
    struct cel_expr *e = cel_expr_new(CEL_SELECT);
    cel_expr_add(e, op);
    e->field = strdup(field);
    if (!e->field)
        abort();
    e->test_only = test_only;
    return e;
}

static struct cel_expr *build_call(const struct herald_cfg *call, unsigned depth, char **err)
{
    const struct herald_cfg *fnode = herald_cfg_get(call, "function");
    const char *name = herald_cfg_str(fnode, "");
    const struct herald_cfg *target = herald_cfg_get(call, "target");
    const struct herald_cfg *args = herald_cfg_get(call, "args");
    int fn = cel_fn_of(name);

    if (fn < 0) {
        herald_cfg_errorf(fnode ? fnode : call, err, "the CEL function '%s' is not supported (see herald-rbac(5))",
                          name);
        return NULL;
    }
    struct cel_expr *e = cel_expr_new(CEL_CALL);
    e->fn = (enum cel_fn)fn;
    if (target) {
        struct cel_expr *t = build(target, depth + 1, err);
        if (!t)
            return fail(e);
        cel_expr_add(e, t);
    }
    for (size_t i = 0; i < herald_cfg_len(args); i++) {
        struct cel_expr *a = build(herald_cfg_at(args, i), depth + 1, err);
        if (!a)
            return fail(e);
        cel_expr_add(e, a);
    }
    if (!arity_ok(e->fn, e->nargs)) {
        herald_cfg_errorf(call, err, "'%s' does not take %zu argument%s", name, e->nargs, e->nargs == 1 ? "" : "s");
        return fail(e);
    }
    /* a constant pattern is compiled once, and a bad one is a config error */
    if (e->fn == CEL_F_MATCHES && e->args[1]->kind == CEL_CONST && e->args[1]->value.t == CEL_T_STRING) {
        char *msg = NULL;
        if (cel_compile_regex(e, e->args[1]->value.s, &msg) < 0) {
            herald_cfg_errorf(herald_cfg_at(args, herald_cfg_len(args) - 1), err, "%s", msg);
            free(msg);
            return fail(e);
        }
    }
    return e;
}

static struct cel_expr *build_const(const struct herald_cfg *c, char **err)
{
    struct cel_expr *e = cel_expr_new(CEL_CONST);
    const struct herald_cfg *v;

    if (herald_cfg_get(c, "null_value"))
        e->value.t = CEL_T_NULL;
    else if ((v = herald_cfg_get(c, "bool_value")))
        e->value = (struct cel_val){.t = CEL_T_BOOL, .b = herald_cfg_bool(v, false)};
    else if ((v = herald_cfg_get(c, "int64_value")))
        e->value = (struct cel_val){.t = CEL_T_INT, .i = herald_cfg_int(v, 0)};
    else if ((v = herald_cfg_get(c, "uint64_value")))
        e->value = (struct cel_val){.t = CEL_T_UINT, .u = (uint64_t)herald_cfg_int(v, 0)};
    else if ((v = herald_cfg_get(c, "double_value")))
        e->value = (struct cel_val){.t = CEL_T_DOUBLE, .d = herald_cfg_real(v, 0)};
    else if ((v = herald_cfg_get(c, "string_value"))) {
        e->value.t = CEL_T_STRING;
        e->value.s = strdup(herald_cfg_str(v, ""));
        if (!e->value.s)
            abort();
    } else {
        herald_cfg_errorf(c, err, "a const_expr needs a value");
        return fail(e);
    }
    return e;
}

static struct cel_expr *build(const struct herald_cfg *n, unsigned depth, char **err)
{
    const struct herald_cfg *v;

    if (depth > MAX_DEPTH) {
        herald_cfg_errorf(n, err, "the expression is nested deeper than %d", MAX_DEPTH);
        return NULL;
    }
    if ((v = herald_cfg_get(n, "const_expr")))
        return build_const(v, err);
    if ((v = herald_cfg_get(n, "select_expr")))
        return build_select(v, depth, err);
    if ((v = herald_cfg_get(n, "call_expr")))
        return build_call(v, depth, err);
    if ((v = herald_cfg_get(n, "list_expr"))) {
        struct cel_expr *e = cel_expr_new(CEL_LIST);
        const struct herald_cfg *els = herald_cfg_get(v, "elements");
        for (size_t i = 0; i < herald_cfg_len(els); i++) {
            struct cel_expr *el = build(herald_cfg_at(els, i), depth + 1, err);
            if (!el)
                return fail(e);
            cel_expr_add(e, el);
        }
        return e;
    }
    if ((v = herald_cfg_get(n, "ident_expr"))) {
        herald_cfg_errorf(v, err, "'%s' alone is not a value: name an attribute (request.path, source.address, ...)",
                          herald_cfg_str(herald_cfg_get(v, "name"), ""));
        return NULL;
    }
    herald_cfg_errorf(n, err, "an expression needs const_expr, ident_expr, select_expr, call_expr or list_expr");
    return NULL;
}

struct cel_expr *rbac_cel_from_cfg(const struct herald_cfg *condition, char **err)
{
    return build(condition, 0, err);
}
