/* A small TAP emitter for the C unit tests (t/unit/test_*.c).
 *   ok(cond, "name %d", i);  is_int(got, want, "name");  is_str(got, want, "name");
 *   like(got, "substring", "name");  return done_testing();
 * Failures print the values as TAP diagnostics ("# ..."). */
#ifndef HERALD_TAP_H
#define HERALD_TAP_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int tap_n, tap_failed;

static int __attribute__((format(printf, 2, 3))) ok(int cond, const char *fmt, ...)
{
    va_list ap;
    printf("%sok %d - ", cond ? "" : "not ", ++tap_n);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!cond)
        tap_failed++;
    fflush(stdout);
    return cond;
}

#define is_int(got, want, ...)                                                                  \
    do {                                                                                        \
        long long g_ = (long long)(got), w_ = (long long)(want);                                \
        if (!ok(g_ == w_, __VA_ARGS__))                                                         \
            printf("#   got: %lld\n#   expected: %lld\n", g_, w_);                              \
    } while (0)

#define is_str(got, want, ...)                                                                  \
    do {                                                                                        \
        const char *g_ = (got), *w_ = (want);                                                   \
        if (!ok(g_ && w_ ? strcmp(g_, w_) == 0 : g_ == w_, __VA_ARGS__))                        \
            printf("#   got: '%s'\n#   expected: '%s'\n", g_ ? g_ : "(null)", w_ ? w_ : "(null)"); \
    } while (0)

#define like(got, sub, ...)                                                                     \
    do {                                                                                        \
        const char *g_ = (got), *s_ = (sub);                                                    \
        if (!ok(g_ && strstr(g_, s_) != NULL, __VA_ARGS__))                                     \
            printf("#   got: '%s'\n#   expected to contain: '%s'\n", g_ ? g_ : "(null)", s_);   \
    } while (0)

static int done_testing(void)
{
    printf("1..%d\n", tap_n);
    if (tap_failed)
        printf("# failed %d of %d\n", tap_failed, tap_n);
    return tap_failed ? 1 : 0;
}

#endif
