/* Per-thread free lists: herald's own per-request objects (streams,
 * upstream requests, header maps, timers) through mem_cache_alloc/free, and
 * the memory of libevent (event_set_mem_functions) and nghttp2 (nghttp2_mem).
 * OpenSSL keeps glibc's malloc: see mem_cache_init.
 *
 * glibc's per-thread cache keeps 7 blocks of a size and nothing over
 * 1 KiB; with a few dozen requests in flight the blocks a request makes
 * and frees (libevent's buffer chains and events, header maps of 1.5 KiB,
 * streams, nghttp2's stream state) overflow it, and each malloc and free
 * took the slow path (bin searches, coalescing: a few hundred instructions).
 *
 * Blocks under 2 KiB wait on lists by their exact malloc chunk size, as in
 * glibc's own cache but up to 4096 per size and 8 MiB per thread: nothing is
 * rounded up, so a long-lived struct costs what malloc gives it. Larger
 * blocks of power-of-two sizes (libevent's chains) and buffers of 8 KiB or
 * more (rounded up to one: nghttp2 frame buffers, short-lived) wait on
 * lists by class, up to 16 MiB per thread. Other sizes are plain malloc.
 *
 * The bounds are for hundreds of requests in flight per worker (at -c 500
 * the lists hold ~5 MiB; with 1 + 2 MiB a third of the blocks went through
 * glibc's slow path). What a burst leaves behind does not stay: each worker
 * calls mem_cache_trim every few seconds, which gives back to malloc the
 * blocks no request took since the call before.
 *
 * The allocator behind stays glibc's: a block freed with free() or through
 * these lists is equally fine, and may be freed on another thread than the
 * one that made it. A thread's exit frees what waits on its lists. Off in
 * ASan builds, so that every free is seen. */
#ifndef HERALD_CORE_MEM_CACHE_H
#define HERALD_CORE_MEM_CACHE_H

#include <stddef.h>
#include <nghttp2/nghttp2.h>

/* Before any other libevent call: hands it the cache. Not needed for
 * mem_cache_alloc/free. */
void mem_cache_init(void);
/* For nghttp2_session_*_new3: NULL when the cache is off (ASan builds). */
nghttp2_mem *mem_cache_nghttp2(void);

/* size bytes, not zeroed; never NULL (out of memory aborts, as xmalloc). */
void *mem_cache_alloc(size_t size);
/* As mem_cache_alloc, zeroed. */
void *mem_cache_alloc_zeroed(size_t size);
/* p (from mem_cache_alloc on any thread, or NULL; size as given there)
 * back to the calling thread's lists, or to malloc when they are full. */
void mem_cache_free(void *p, size_t size);

/* Blocks waiting on the calling thread's list for requests of size bytes. */
unsigned mem_cache_idle(size_t size);
/* Frees what waits on the calling thread's lists (a thread's exit does it
 * by itself). */
void mem_cache_thread_exit(void);
/* Frees the calling thread's blocks that waited through the whole time
 * since its previous call (the bottom of each list, below the fewest that
 * waited): the working set stays, a past burst's surplus goes. */
void mem_cache_trim(void);
/* A timer on base (the calling thread's loop) that calls mem_cache_trim
 * every MEM_CACHE_TRIM_SECONDS; mem_cache_trim_stop frees it (NULL: no-op). */
#define MEM_CACHE_TRIM_SECONDS 10
struct event_base;
struct event;
struct event *mem_cache_trim_start(struct event_base *base);
void mem_cache_trim_stop(struct event *ev);
/* Bytes waiting on the lists of all threads (admin /memory). */
size_t mem_cache_kept_bytes(void);

#endif
