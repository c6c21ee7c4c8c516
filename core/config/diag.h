/* Config diagnostics: errors stop start-up, warnings are printed (and are
 * what --mode validate reports as likely mistakes). Each line is
 * "file:line:col: field.path: message". */
#ifndef HERALD_CORE_CONFIG_DIAG_H
#define HERALD_CORE_CONFIG_DIAG_H

#include <stdarg.h>
#include <stdio.h>

#include "herald/config.h"

struct cfg_diag {
    char **errors; size_t nerrors, caperr;
    char **warnings; size_t nwarnings, capwarn;
};

void diag_error(struct cfg_diag *d, const struct herald_cfg *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void diag_warn(struct cfg_diag *d, const struct herald_cfg *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Takes ownership of an already formatted message (from herald_cfg_errorf). */
void diag_error_take(struct cfg_diag *d, char *msg);
void diag_print(const struct cfg_diag *d, FILE *out); /* "error: ..." / "warning: ..." lines */
void diag_free(struct cfg_diag *d);
/* Formats "where: path: msg" for node at (at may be NULL). malloc'd. */
char *diag_format(const struct herald_cfg *at, const char *fmt, va_list ap);

#endif
