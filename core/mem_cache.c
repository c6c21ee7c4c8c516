/* See mem_cache.h. */
#include "config.h"

#include <event2/event.h>
#include <malloc.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "mem_cache.h"

#ifndef HERALD_ASAN

/* Small blocks: exact malloc chunk sizes, 16-byte steps from 32. */
#define SMALL_CHUNK_MAX 2048u
#define NSMALL (SMALL_CHUNK_MAX / 16u - 2u)
#define SMALL_MAX_BLOCKS 4096u
#define SMALL_MAX_BYTES (8u << 20)

/* Large blocks: power-of-two classes. */
#define MIN_SHIFT 11u                 /* 2 KiB: smaller blocks are small ones */
#define MAX_SHIFT 17u                 /* 128 KiB: beyond, malloc maps pages anyway */
#define NCLASS (MAX_SHIFT - MIN_SHIFT + 1)
#define CLASS_MAX_BLOCKS 4096u
#define LARGE_MAX_BYTES (16u << 20)

/* a trim that frees this much also returns malloc's free pages to the system */
#define TRIM_RETURN_BYTES (1u << 20)

struct block { struct block *next; };

struct shelf {
    struct block *head;
    unsigned n;
    unsigned low;     /* fewest waiting since the last trim: blocks nobody needed */
};

struct kept {
    struct shelf small[NSMALL];
    struct shelf large[NCLASS];
    /* written by the owning thread only; read by the admin (relaxed) */
    size_t small_bytes, large_bytes;
    struct kept *next_thread;
};

static __thread struct kept kept;
static __thread bool exit_registered;
static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;

/* Every thread that keeps blocks, for mem_cache_kept_bytes. */
static pthread_mutex_t threads_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kept *threads;

/* glibc's chunk size for a request of n bytes (its request2size) */
static inline size_t chunk_of(size_t n)
{
    size_t c = (n + sizeof(size_t) + 15u) & ~(size_t)15u;
    return c < 32u ? 32u : c;
}

static inline unsigned small_index(size_t chunk) { return (unsigned)(chunk / 16u) - 2u; }

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

/* A key destructor runs on the exiting thread, its lists still in reach
 * (worker threads and any other that freed through the cache). */
static void thread_gone(void *unused);
static void make_key(void) { pthread_key_create(&exit_key, thread_gone); }

__attribute__((noinline, cold)) static void register_exit(void)
{
    pthread_once(&exit_once, make_key);
    pthread_setspecific(exit_key, (void *)1);   /* non-NULL: the destructor runs */
    exit_registered = true;
    pthread_mutex_lock(&threads_lock);
    kept.next_thread = threads;
    threads = &kept;
    pthread_mutex_unlock(&threads_lock);
}

static inline void set_bytes(size_t *bytes, size_t v) { __atomic_store_n(bytes, v, __ATOMIC_RELAXED); }

/* A kept block of size bytes from s, or NULL. */
static inline void *take(struct shelf *s, size_t *bytes, size_t size)
{
    struct block *b = s->head;
    if (b) {
        s->head = b->next;
        s->n--;
        if (s->n < s->low)
            s->low = s->n;
        set_bytes(bytes, *bytes - size);
    }
    return b;
}

/* Keeps p (size bytes) on s, unless s or the thread holds enough already:
 * then false, and the caller frees it. */
static inline bool keep(struct shelf *s, size_t *bytes, unsigned max_blocks, size_t max_bytes,
                        void *p, size_t size)
{
    if (s->n >= max_blocks || *bytes + size > max_bytes)
        return false;
    if (!exit_registered)
        register_exit();
    struct block *b = p;
    b->next = s->head;
    s->head = b;
    s->n++;
    set_bytes(bytes, *bytes + size);
    return true;
}

static inline bool keep_small(void *p, size_t chunk)
{
    return keep(&kept.small[small_index(chunk)], &kept.small_bytes, SMALL_MAX_BLOCKS,
                SMALL_MAX_BYTES, p, chunk);
}

/* Small blocks by exact chunk size. Larger ones rounded up to a class:
 * power-of-two sizes (libevent's chains) and big buffers (8 KiB and more).
 * A long-lived struct of 2.5 KiB stays 2.5 KiB: idle connections are many. */
static void *mc_malloc(size_t n)
{
    size_t chunk = chunk_of(n);
    if (chunk < SMALL_CHUNK_MAX) {
        void *b = take(&kept.small[small_index(chunk)], &kept.small_bytes, chunk);
        return b ? b : malloc(n);
    }
    unsigned c = class_for(n);
    if (c == NCLASS || ((n & (n - 1)) != 0 && n < 8192))
        return malloc(n);
    size_t size = (size_t)1 << (c + MIN_SHIFT);
    void *b = take(&kept.large[c], &kept.large_bytes, size);
    return b ? b : malloc(size);
}

/* Any block may come here (also one libevent got from realloc): what malloc
 * says it holds decides its list, so nothing is trusted but malloc itself. */
static void mc_free(void *p)
{
    if (!p)
        return;
    size_t usable = malloc_usable_size(p);
    size_t chunk = usable + sizeof(size_t);
    if (chunk < SMALL_CHUNK_MAX) {
        /* (chunk & 15): a page-mapped block, whose overhead differs */
        if ((chunk & 15u) || !keep_small(p, chunk))
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
    if (!keep(&kept.large[c], &kept.large_bytes, CLASS_MAX_BLOCKS, LARGE_MAX_BYTES, p,
              (size_t)1 << shift))
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

void *mem_cache_alloc(size_t size)
{
    void *p = mc_malloc(size ? size : 1);
    return p ? p : xmalloc(size);   /* which reports and aborts */
}

/* The caller's size names the list: mem_cache_alloc gave a block of at
 * least that chunk, so it serves any later request of that chunk size.
 * Saves asking malloc for the block's size. */
void mem_cache_free(void *p, size_t size)
{
    if (!p)
        return;
    size_t chunk = chunk_of(size);
    if (chunk < SMALL_CHUNK_MAX) {
        if (!keep_small(p, chunk))
            free(p);
        return;
    }
    mc_free(p);
}

unsigned mem_cache_idle(size_t size)
{
    size_t chunk = chunk_of(size);
    if (chunk < SMALL_CHUNK_MAX)
        return kept.small[small_index(chunk)].n;
    unsigned c = class_for(size);
    return c == NCLASS ? 0 : kept.large[c].n;
}

/* nghttp2's signatures */
static void *ng_malloc(size_t n, void *ud) { (void)ud; return mc_malloc(n); }
static void ng_free(void *p, void *ud) { (void)ud; mc_free(p); }
static void *ng_calloc(size_t n, size_t size, void *ud) { (void)ud; return mc_calloc(n, size); }
static void *ng_realloc(void *p, size_t n, void *ud) { (void)ud; return mc_realloc(p, n); }

static nghttp2_mem ng_mem = {NULL, ng_malloc, ng_free, ng_calloc, ng_realloc};

void mem_cache_init(void)
{
    event_set_mem_functions(mc_malloc, mc_realloc, mc_free);
    /* Not OpenSSL's: through these lists a full handshake cost 3-8% more CPU
     * than on glibc's malloc (two heralds loaded at once, session 20), and
     * keep-alive TLS and h2 over TLS gained nothing measurable (< 1%). */
}

nghttp2_mem *mem_cache_nghttp2(void) { return &ng_mem; }

static void free_blocks(struct block *b)
{
    for (struct block *next; b; b = next) {
        next = b->next;
        free(b);
    }
}

static void free_shelf(struct shelf *s)
{
    free_blocks(s->head);
    s->head = NULL;
    s->n = s->low = 0;
}

/* The s->low blocks at the bottom of the list were never taken since the
 * last trim: back to malloc. The last freed (the top) stay: they are the
 * ones still in cache. */
static void trim_shelf(struct shelf *s, size_t *bytes, size_t size)
{
    unsigned drop = s->low, stay = s->n - drop;
    if (drop) {
        struct block **cut = &s->head;
        for (unsigned i = 0; i < stay; i++)
            cut = &(*cut)->next;
        free_blocks(*cut);
        *cut = NULL;
        s->n = stay;
        set_bytes(bytes, *bytes - (size_t)drop * size);
    }
    s->low = s->n;
}

void mem_cache_trim(void)
{
    size_t before = kept.small_bytes + kept.large_bytes;
    for (unsigned k = 0; k < NSMALL; k++)
        trim_shelf(&kept.small[k], &kept.small_bytes, (size_t)(k + 2u) * 16u);
    for (unsigned c = 0; c < NCLASS; c++)
        trim_shelf(&kept.large[c], &kept.large_bytes, (size_t)1 << (c + MIN_SHIFT));
    /* a burst's worth went back to malloc, which keeps freed memory mapped:
     * hand its free pages back to the system too */
    if (before - (kept.small_bytes + kept.large_bytes) >= TRIM_RETURN_BYTES)
        malloc_trim(0);
}

static void free_kept(void *unused)
{
    (void)unused;
    for (unsigned k = 0; k < NSMALL; k++)
        free_shelf(&kept.small[k]);
    for (unsigned c = 0; c < NCLASS; c++)
        free_shelf(&kept.large[c]);
    set_bytes(&kept.small_bytes, 0);
    set_bytes(&kept.large_bytes, 0);
}

static void thread_gone(void *unused)
{
    free_kept(unused);
    pthread_mutex_lock(&threads_lock);
    for (struct kept **k = &threads; *k; k = &(*k)->next_thread)
        if (*k == &kept) {
            *k = kept.next_thread;
            break;
        }
    pthread_mutex_unlock(&threads_lock);
    exit_registered = false;
}

void mem_cache_thread_exit(void) { free_kept(NULL); }

size_t mem_cache_kept_bytes(void)
{
    size_t total = 0;
    pthread_mutex_lock(&threads_lock);
    for (struct kept *k = threads; k; k = k->next_thread)
        total += __atomic_load_n(&k->small_bytes, __ATOMIC_RELAXED) +
                 __atomic_load_n(&k->large_bytes, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&threads_lock);
    return total;
}

#else /* HERALD_ASAN: plain malloc everywhere */

void mem_cache_init(void) {}
nghttp2_mem *mem_cache_nghttp2(void) { return NULL; }   /* nghttp2's default */
void *mem_cache_alloc(size_t size) { return xmalloc(size ? size : 1); }
void mem_cache_free(void *p, size_t size) { (void)size; free(p); }
unsigned mem_cache_idle(size_t size) { (void)size; return 0; }
void mem_cache_thread_exit(void) {}
void mem_cache_trim(void) {}
size_t mem_cache_kept_bytes(void) { return 0; }

#endif

static void on_trim_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    mem_cache_trim();
}

struct event *mem_cache_trim_start(struct event_base *base)
{
    struct event *ev = event_new(base, -1, EV_PERSIST, on_trim_tick, NULL);
    struct timeval every = {MEM_CACHE_TRIM_SECONDS, 0};
    if (ev)
        event_add(ev, &every);
    return ev;
}

void mem_cache_trim_stop(struct event *ev)
{
    if (ev)
        event_free(ev);
}

void *mem_cache_alloc_zeroed(size_t size)
{
    return memset(mem_cache_alloc(size), 0, size);
}
