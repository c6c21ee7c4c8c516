/* See mem_cache.h. */
#include "config.h"

#include <event2/event.h>
#include <malloc.h>
#include <nghttp2/nghttp2.h>
#include <openssl/crypto.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "mem_cache.h"

#ifndef HERALD_ASAN

#define MIN_SHIFT 9u                  /* 512 B: smaller blocks are glibc's tcache's business */
#define MAX_SHIFT 17u                 /* 128 KiB: beyond, malloc maps pages anyway */
#define NCLASS (MAX_SHIFT - MIN_SHIFT + 1)
#define CLASS_MAX_BLOCKS 1024u
#define THREAD_MAX_BYTES (2u << 20)   /* what one thread may keep idle */

struct block { struct block *next; };

static __thread struct block *lists[NCLASS];
static __thread unsigned counts[NCLASS];
static __thread size_t kept_bytes;

/* Blocks under 512 bytes are kept by their exact malloc chunk size (16-byte
 * steps from 32), so nothing is rounded up: glibc's own per-thread cache
 * holds 7 blocks of a size, and a burst of streams (an h2 connection's ten
 * requests, libevent's buffers and events for each) overflowed it into
 * malloc's slow path. */
#define SMALL_CHUNK_MAX 512u
#define NSMALL (SMALL_CHUNK_MAX / 16u - 2u)
#define SMALL_MAX_BLOCKS 256u

static __thread struct block *small_lists[NSMALL];
static __thread unsigned small_counts[NSMALL];

/* glibc's chunk size for a request of n bytes (its request2size) */
static inline size_t chunk_of(size_t n)
{
    size_t c = (n + sizeof(size_t) + 15u) & ~(size_t)15u;
    return c < 32u ? 32u : c;
}

/* The class whose size holds n bytes, or NCLASS when none does. */
static unsigned class_for(size_t n)
{
    if (n <= (1u << MIN_SHIFT))
        return 0;
    if (n > (1u << MAX_SHIFT))
        return NCLASS;
    unsigned shift = 64u - (unsigned)__builtin_clzll((unsigned long long)(n - 1));
    return shift - MIN_SHIFT;
}

/* A kept block of size bytes from list, or NULL. */
static inline void *take(struct block **list, unsigned *count, size_t size)
{
    struct block *b = *list;
    if (b) {
        *list = b->next;
        (*count)--;
        kept_bytes -= size;
    }
    return b;
}

/* Keeps p (size bytes) on list, unless the list or the thread holds enough
 * already: then false, and the caller frees it. */
static inline bool keep(struct block **list, unsigned *count, unsigned max, void *p, size_t size)
{
    if (*count >= max || kept_bytes + size > THREAD_MAX_BYTES)
        return false;
    struct block *b = p;
    b->next = *list;
    *list = b;
    (*count)++;
    kept_bytes += size;
    return true;
}

/* Small blocks by exact chunk size. Larger ones rounded up to a class:
 * power-of-two sizes (libevent's chains) and big buffers (8 KiB and more:
 * record and frame buffers, short-lived). A long-lived struct of 600 bytes
 * stays 600 bytes: idle connections are many. */
static void *mc_malloc(size_t n)
{
    size_t chunk = chunk_of(n);
    if (chunk < SMALL_CHUNK_MAX) {
        unsigned k = (unsigned)(chunk / 16u) - 2u;
        void *b = take(&small_lists[k], &small_counts[k], chunk);
        return b ? b : malloc(n);
    }
    unsigned c = class_for(n);
    if (c == NCLASS || n < (1u << MIN_SHIFT) || ((n & (n - 1)) != 0 && n < 8192))
        return malloc(n);
    size_t size = (size_t)1 << (c + MIN_SHIFT);
    void *b = take(&lists[c], &counts[c], size);
    return b ? b : malloc(size);
}

/* Any block may come here (also one libevent got from realloc): what malloc
 * says it holds decides its class, so nothing is trusted but malloc itself. */
static void mc_free(void *p)
{
    if (!p)
        return;
    size_t usable = malloc_usable_size(p);
    size_t chunk = usable + sizeof(size_t);
    if (chunk < SMALL_CHUNK_MAX) {
        unsigned k = (unsigned)(chunk / 16u) - 2u;
        if ((chunk & 15u) || !keep(&small_lists[k], &small_counts[k], SMALL_MAX_BLOCKS, p, chunk))
            free(p);
        return;
    }
    if (usable < (1u << MIN_SHIFT) || usable > ((size_t)2 << MAX_SHIFT)) {
        free(p);
        return;
    }
    /* the largest class that fits in the block */
    unsigned shift = 63u - (unsigned)__builtin_clzll((unsigned long long)usable);
    if (shift > MAX_SHIFT)
        shift = MAX_SHIFT;
    unsigned c = shift - MIN_SHIFT;
    if (!keep(&lists[c], &counts[c], CLASS_MAX_BLOCKS, p, (size_t)1 << shift))
        free(p);
}

static void *mc_realloc(void *p, size_t n)
{
    if (p && malloc_usable_size(p) >= n)
        return p;
    return realloc(p, n);
}

static void *mc_calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = mc_malloc(n * size);
    if (p)
        memset(p, 0, n * size);
    return p;
}

/* OpenSSL's and nghttp2's signatures */
static void *crypto_malloc(size_t n, const char *file, int line) { (void)file; (void)line; return mc_malloc(n); }
static void *crypto_realloc(void *p, size_t n, const char *file, int line) { (void)file; (void)line; return mc_realloc(p, n); }
static void crypto_free(void *p, const char *file, int line) { (void)file; (void)line; mc_free(p); }
static void *ng_malloc(size_t n, void *ud) { (void)ud; return mc_malloc(n); }
static void ng_free(void *p, void *ud) { (void)ud; mc_free(p); }
static void *ng_calloc(size_t n, size_t size, void *ud) { (void)ud; return mc_calloc(n, size); }
static void *ng_realloc(void *p, size_t n, void *ud) { (void)ud; return mc_realloc(p, n); }

static nghttp2_mem ng_mem = {NULL, ng_malloc, ng_free, ng_calloc, ng_realloc};

void mem_cache_init(void)
{
    event_set_mem_functions(mc_malloc, mc_realloc, mc_free);
    /* record buffers (SSL_MODE_RELEASE_BUFFERS gives them back after each
     * record) and handshake state come and go per request and connection */
    CRYPTO_set_mem_functions(crypto_malloc, crypto_realloc, crypto_free);
}

nghttp2_mem *mem_cache_nghttp2(void) { return &ng_mem; }

static void free_list(struct block **list, unsigned *count)
{
    for (struct block *b = *list, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    *list = NULL;
    *count = 0;
}

void mem_cache_thread_exit(void)
{
    for (unsigned c = 0; c < NCLASS; c++)
        free_list(&lists[c], &counts[c]);
    for (unsigned k = 0; k < NSMALL; k++)
        free_list(&small_lists[k], &small_counts[k]);
    kept_bytes = 0;
}

#else /* HERALD_ASAN: plain malloc everywhere */

void mem_cache_init(void) {}
nghttp2_mem *mem_cache_nghttp2(void) { return NULL; }   /* nghttp2's default */
void mem_cache_thread_exit(void) {}

#endif
