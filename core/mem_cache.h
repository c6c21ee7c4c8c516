/* Per-thread free lists for the memory of libevent (event_set_mem_functions),
 * OpenSSL (CRYPTO_set_mem_functions) and nghttp2 (nghttp2_mem).
 *
 * libevent allocates a buffer chain when data lands in an empty evbuffer and
 * frees it when the buffer drains: several times per proxied request, blocks
 * of 1-16 KiB, sizes glibc's per-thread cache does not keep (it stops at
 * 1 KiB), so each one took malloc's slow path (bin searches, coalescing).
 * Chains come in power-of-two sizes; blocks of those sizes (and buffers of
 * 8 KiB or more, rounded up to one) wait on a list of their thread when
 * freed, for the next one. Blocks under 512 bytes (events, buffer headers,
 * nghttp2's streams) wait on lists by their exact malloc chunk size, as in
 * glibc's own per-thread cache but more than its 7 per size. At most 2 MiB
 * wait per thread; other sizes are plain malloc. The allocator behind stays
 * glibc's; a block freed with free() or through these lists is equally fine
 * (the size comes from malloc_usable_size, never from a header of ours).
 * Off in ASan builds. */
#ifndef HERALD_CORE_MEM_CACHE_H
#define HERALD_CORE_MEM_CACHE_H

#include <nghttp2/nghttp2.h>

/* Before any other libevent or OpenSSL call. */
void mem_cache_init(void);
/* For nghttp2_session_*_new3: NULL when the cache is off (ASan builds). */
nghttp2_mem *mem_cache_nghttp2(void);
/* A thread that ends gives its kept blocks back. */
void mem_cache_thread_exit(void);

#endif
