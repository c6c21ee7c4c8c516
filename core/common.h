/* Small helpers every core file uses. */
#ifndef HERALD_CORE_COMMON_H
#define HERALD_CORE_COMMON_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define UNUSED(x) (void)(x)
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/* ASan builds: memory is never recycled by herald itself (free lists would
 * hide a use-after-free from ASan). */
#if defined(__SANITIZE_ADDRESS__)
#define HERALD_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HERALD_ASAN 1
#endif
#endif

/* Allocation failures at boot or on the data path abort: herald does not
 * limp on without memory. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* malloc'd printf; never NULL. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A growing string, always NUL-terminated once something was added
 * (s NULL until then); the caller frees s. */
struct sbuf { char *s; size_t n, cap; };
void sb_add(struct sbuf *b, const char *s, size_t n);
void sb_str(struct sbuf *b, const char *s);

/* Base64 (RFC 4648): the standard alphabet, and the URL-safe one too when
 * url (protobuf's JSON takes both for bytes); '=' padding optional, only at
 * the end; the bits past the last whole byte must be zero. The n bytes of in
 * -> malloc'd bytes with a NUL after them, *len of them; NULL when in is not
 * base64. (The SDK's herald_base64_decode.) */
char *base64_decode(const char *in, size_t n, size_t *len, bool url);
char *xvasprintf(const char *fmt, va_list ap);

/* Grows *arr (of *cap elements of size sz) so that index n fits. */
void vec_reserve(void **arr, size_t *cap, size_t n, size_t sz);
#define VEC_PUSH(arr, n, cap) \
    (vec_reserve((void **)&(arr), &(cap), (n) + 1, sizeof(*(arr))), &(arr)[(n)++])

/* Reference counts shared between the main thread and workers. */
struct refcount { atomic_uint n; };
static inline void ref_init(struct refcount *r) { atomic_init(&r->n, 1); }
static inline void ref_get(struct refcount *r) { atomic_fetch_add_explicit(&r->n, 1, memory_order_relaxed); }
/* true when this was the last reference */
static inline bool ref_put(struct refcount *r) { return atomic_fetch_sub_explicit(&r->n, 1, memory_order_acq_rel) == 1; }

/* A double as protobuf's JSON prints it: the shorter of %.15g and %.17g that
 * reads back the same value ("1", "1.5", "0.1"). */
void double_str(double d, char *out, size_t size);

uint64_t mono_ms(void);      /* CLOCK_MONOTONIC in ms */
uint64_t wall_ms(void);      /* CLOCK_REALTIME in ms */

#endif
