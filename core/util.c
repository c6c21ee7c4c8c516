#include "config.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common.h"

static void oom(size_t n)
{
    fprintf(stderr, "herald: out of memory (%zu bytes)\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

/* Small blocks: malloc and memset. glibc's calloc skips the per-thread
 * cache and always takes malloc's slow path, and the proxy makes a few small
 * zeroed objects per request; big ones keep calloc (fresh pages are zero).
 * GCC folds a malloc followed by a memset to zero back into calloc: the
 * empty asm hides the pointer's origin from it. */
void *xcalloc(size_t n, size_t size)
{
    if (!n)
        n = 1;
    if (!size)
        size = 1;
    if (n > SIZE_MAX / size)
        oom(SIZE_MAX);
    size_t total = n * size;
    bool small = total <= 4096;
    void *p = small ? malloc(total) : calloc(n, size);
    if (!p)
        oom(total);
    if (!small)
        return p;
    __asm__("" : "+r"(p));
    return memset(p, 0, total);
}

void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *xvasprintf(const char *fmt, va_list ap)
{
    char *s;
    if (vasprintf(&s, fmt, ap) < 0)
        oom(0);
    return s;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = xvasprintf(fmt, ap);
    va_end(ap);
    return s;
}

void vec_reserve(void **arr, size_t *cap, size_t n, size_t sz)
{
    if (n <= *cap)
        return;
    size_t c = *cap ? *cap * 2 : 4;
    while (c < n)
        c *= 2;
    *arr = xrealloc(*arr, c * sz);
    memset((char *)*arr + *cap * sz, 0, (c - *cap) * sz);
    *cap = c;
}

static uint64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t mono_ms(void) { return clock_ms(CLOCK_MONOTONIC); }
uint64_t wall_ms(void) { return clock_ms(CLOCK_REALTIME); }

void double_str(double d, char *out, size_t size)
{
    snprintf(out, size, "%.15g", d);
    if (strtod(out, NULL) != d)
        snprintf(out, size, "%.17g", d);
}
