/* Config diagnostics: "file:line:col: path: message" lines. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config/diag.h"
#include "config/tree.h"

char *diag_format(const struct herald_cfg *at, const char *fmt, va_list ap)
{
    char *msg = xvasprintf(fmt, ap);
    if (!at)
        return msg;
    char path[1024];
    herald_cfg_path(at, path, sizeof(path));
    char *out;
    if (path[0])
        out = xasprintf("%s:%d:%d: %s: %s", at->file ? at->file : "<config>", at->line, at->column, path,
                        msg);
    else
        out = xasprintf("%s:%d:%d: %s", at->file ? at->file : "<config>", at->line, at->column, msg);
    free(msg);
    return out;
}

void diag_error_take(struct cfg_diag *d, char *msg)
{
    *VEC_PUSH(d->errors, d->nerrors, d->caperr) = msg;
}

void diag_error(struct cfg_diag *d, const struct herald_cfg *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = diag_format(at, fmt, ap);
    va_end(ap);
    diag_error_take(d, msg);
}

void diag_warn(struct cfg_diag *d, const struct herald_cfg *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = diag_format(at, fmt, ap);
    va_end(ap);
    *VEC_PUSH(d->warnings, d->nwarnings, d->capwarn) = msg;
}

void diag_print(const struct cfg_diag *d, FILE *out)
{
    for (size_t i = 0; i < d->nerrors; i++)
        fprintf(out, "error: %s\n", d->errors[i]);
    for (size_t i = 0; i < d->nwarnings; i++)
        fprintf(out, "warning: %s\n", d->warnings[i]);
}

void diag_free(struct cfg_diag *d)
{
    for (size_t i = 0; i < d->nerrors; i++)
        free(d->errors[i]);
    free(d->errors);
    for (size_t i = 0; i < d->nwarnings; i++)
        free(d->warnings[i]);
    free(d->warnings);
    memset(d, 0, sizeof(*d));
}

int herald_cfg_errorf(const struct herald_cfg *n, char **err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = diag_format(n, fmt, ap);
    va_end(ap);
    if (err) {
        *err = msg; /* *err may be uninitialised: never freed here */
    } else {
        free(msg);
    }
    return -1;
}
