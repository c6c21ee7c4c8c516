/* rbac: a policy's `condition`, a CEL expression in its parsed form
 * (google.api.expr.v1alpha1.Expr: const, ident, select, call, list), over
 * Envoy's request / source / destination / connection attributes.
 *
 * The subset operators write in RBAC conditions: logic (&&, ||, !, ?:),
 * comparisons, + - * / % on integers, + on strings, `in` on lists and the
 * header map, [] on the header map and lists, has(), size(), startsWith,
 * endsWith, contains, matches (RE2 syntax through PCRE2, a search), int(),
 * uint(), double(), string(). Anything else is refused when the config is
 * loaded, with its place; an expression that fails at run time (a missing
 * header looked up with [], a type mismatch) is an error, and a condition
 * that is an error or not true does not match, as in Envoy.
 *
 * Pure like matcher.c (libc and PCRE2): cel_config.c builds the tree. */
#ifndef HERALD_PLUGIN_RBAC_CEL_H
#define HERALD_PLUGIN_RBAC_CEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "matcher.h"

enum cel_kind {
    CEL_CONST = 0,
    CEL_ATTR,        /* request.path, source.port, request.headers, ...: resolved when built */
    CEL_SELECT,      /* operand.field on a map (request.headers.foo), or has() with test_only */
    CEL_CALL,
    CEL_LIST,
};

/* The attributes herald knows (Envoy's names). */
enum cel_attr {
    CEL_A_REQUEST_PATH = 0, CEL_A_REQUEST_URL_PATH, CEL_A_REQUEST_HOST, CEL_A_REQUEST_SCHEME,
    CEL_A_REQUEST_METHOD, CEL_A_REQUEST_HEADERS, CEL_A_REQUEST_REFERER, CEL_A_REQUEST_USERAGENT,
    CEL_A_REQUEST_ID, CEL_A_REQUEST_QUERY,
    CEL_A_SOURCE_ADDRESS, CEL_A_SOURCE_PORT, CEL_A_DESTINATION_ADDRESS, CEL_A_DESTINATION_PORT,
    CEL_A_CONNECTION_MTLS, CEL_A_CONNECTION_SNI, CEL_A_CONNECTION_URI_SAN, CEL_A_CONNECTION_DNS_SAN,
    CEL_A_CONNECTION_SUBJECT,
};

enum cel_fn {
    CEL_F_AND = 0, CEL_F_OR, CEL_F_NOT, CEL_F_COND, CEL_F_EQ, CEL_F_NE, CEL_F_LT, CEL_F_LE, CEL_F_GT, CEL_F_GE,
    CEL_F_ADD, CEL_F_SUB, CEL_F_MUL, CEL_F_DIV, CEL_F_MOD, CEL_F_NEG, CEL_F_IN, CEL_F_INDEX, CEL_F_SIZE,
    CEL_F_STARTS_WITH, CEL_F_ENDS_WITH, CEL_F_CONTAINS, CEL_F_MATCHES, CEL_F_INT, CEL_F_UINT, CEL_F_DOUBLE,
    CEL_F_STRING,
};

enum cel_type { CEL_T_ERROR = 0, CEL_T_NULL, CEL_T_BOOL, CEL_T_INT, CEL_T_UINT, CEL_T_DOUBLE, CEL_T_STRING,
                CEL_T_LIST, CEL_T_HEADERS };

struct cel_expr;

/* A value. Strings are owned (s); lists point into the expression. */
struct cel_val {
    enum cel_type t;
    bool b;
    int64_t i;
    uint64_t u;
    double d;
    char *s;
    const struct cel_expr *list;       /* CEL_T_LIST: a CEL_LIST node, elements evaluated when used */
};

struct cel_expr {
    enum cel_kind kind;
    struct cel_val value;              /* CONST */
    enum cel_attr attr;                /* ATTR */
    char *field;                       /* SELECT */
    bool test_only;                    /* SELECT: has() */
    enum cel_fn fn;                    /* CALL */
    struct cel_expr **args;            /* CALL (the target first, if any), SELECT (operand), LIST */
    size_t nargs;
    void *re;                          /* CALL matches() with a constant pattern: pcre2_code * */
};

struct cel_expr *cel_expr_new(enum cel_kind kind);
void cel_expr_add(struct cel_expr *e, struct cel_expr *arg); /* takes arg */
void cel_expr_free(struct cel_expr *e);
/* Compiles a constant matches() pattern; 0, or -1 with a malloc'd *err. */
int cel_compile_regex(struct cel_expr *call, const char *pattern, char **err);

/* The function of a CEL name ("_&&_", "startsWith", ...); -1 when unknown. */
int cel_fn_of(const char *name);
/* The attribute "top.field" (e.g. "request", "path"); -1 when unknown. */
int cel_attr_of(const char *top, const char *field);

/* The expression's value; free it with cel_val_fini. */
struct cel_val cel_eval(const struct cel_expr *e, const struct rbac_ctx *ctx);
void cel_val_fini(struct cel_val *v);
/* Whether the condition is the boolean true (errors and other types: no). */
bool cel_true(const struct cel_expr *e, const struct rbac_ctx *ctx);

#endif
