#include "config.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "herald/config.h"
#include "herald/upstream.h"

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

static int base64_value(unsigned char c, bool url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || (url && c == '-'))
        return 62;
    if (c == '/' || (url && c == '_'))
        return 63;
    return -1;
}

char *base64_decode(const char *in, size_t n, size_t *len, bool url)
{
    if (n && in[n - 1] == '=')
        n--;
    if (n && in[n - 1] == '=')
        n--;
    if (n % 4 == 1)   /* one character past a whole group carries no byte */
        return NULL;
    char *out = xmalloc(n / 4 * 3 + 3);
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = base64_value((unsigned char)in[i], url);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6 | (uint32_t)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)(acc >> bits & 0xff);
        }
    }
    if (acc & ((1u << bits) - 1)) {   /* a non-canonical tail: "aGl=" for "hi" */
        free(out);
        return NULL;
    }
    out[o] = '\0';
    *len = o;
    return out;
}

char *herald_base64_decode(const char *in, size_t n, size_t *len, bool url)
{
    return in && len ? base64_decode(in, n, len, url) : NULL;
}

static uint64_t shift_mix(uint64_t v)
{
    return v ^ (v >> 47);
}

uint64_t herald_murmur2_64(const void *data, size_t len, uint64_t seed)
{
    const uint64_t mul = 0xc6a4a7935bd1e995ull;
    const unsigned char *p = data;
    size_t whole = len & ~(size_t)7;
    uint64_t h = seed ^ (len * mul);

    for (size_t i = 0; i < whole; i += 8) {
        uint64_t w = 0;
        for (int b = 7; b >= 0; b--)    /* little-endian, whatever the machine (as on x86/arm64 Envoys) */
            w = (w << 8) | p[i + (size_t)b];
        h ^= shift_mix(w * mul) * mul;
        h *= mul;
    }
    if (len & 7) {
        uint64_t tail = 0;
        for (size_t i = len; i > whole; i--)
            tail = (tail << 8) | p[i - 1];
        h ^= tail;
        h *= mul;
    }
    return shift_mix(shift_mix(h) * mul);
}

void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

void sb_str(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}
