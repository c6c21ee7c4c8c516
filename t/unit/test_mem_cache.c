/* core/mem_cache.c through the nghttp2 allocator it hands out: a freed
 * block serves the next request of the same malloc chunk size on its
 * thread (small ones kept by exact chunk size, nothing rounded up; large
 * ones by power-of-two class), and never a request it is too small for.
 * In ASan builds the cache is off (NULL allocator): nothing to check. */
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "mem_cache.h"
#include "tap.h"

int main(void)
{
    mem_cache_init();
    nghttp2_mem *m = mem_cache_nghttp2();
    if (!m) {
        ok(1, "cache off in this build (ASan)");
        return done_testing();
    }
    /* small: chunk sizes 16 bytes apart */
    void *a = m->malloc(100, NULL);
    memset(a, 1, 100);
    m->free(a, NULL);
    void *plain = malloc(100);
    ok(plain != a, "the freed block is kept by the cache, not given back to malloc");
    free(plain);
    void *b = m->malloc(90, NULL);   /* 90 and 100 bytes share glibc's 112-byte chunk */
    ok(b == a, "a freed 100-byte block serves a 90-byte request (same chunk size)");
    ok(malloc_usable_size(b) >= 90, "and is large enough");
    m->free(b, NULL);
    void *c = m->malloc(130, NULL);
    ok(c != a, "but not a 130-byte one");
    ok(malloc_usable_size(c) >= 130, "which gets a block large enough");
    void *d = m->malloc(100, NULL);
    ok(d == a, "the kept block is still there for its size");
    m->free(c, NULL);
    m->free(d, NULL);

    /* many of one size: all come back (glibc's own cache keeps 7) */
    void *v[64];
    for (int i = 0; i < 64; i++)
        v[i] = m->malloc(200, NULL);
    for (int i = 0; i < 64; i++)
        m->free(v[i], NULL);
    int back = 0;
    void *w[64];
    for (int i = 0; i < 64; i++) {
        w[i] = m->malloc(200, NULL);
        for (int j = 0; j < 64; j++)
            back += w[i] == v[j];
    }
    is_int(back, 64, "64 freed 200-byte blocks all reused");
    for (int i = 0; i < 64; i++)
        m->free(w[i], NULL);

    /* calloc from the cache is zeroed */
    unsigned char *z = m->malloc(300, NULL);
    memset(z, 0xff, 300);
    m->free(z, NULL);
    unsigned char *y = m->calloc(1, 300, NULL);
    int zero = 1;
    for (int i = 0; i < 300; i++)
        zero &= y[i] == 0;
    ok(y == z && zero, "calloc reuses the block and zeroes it");
    m->free(y, NULL);

    /* large: power-of-two classes */
    void *big = m->malloc(16384, NULL);
    m->free(big, NULL);
    void *big2 = m->malloc(16384, NULL);
    ok(big2 == big, "a 16 KiB block comes back for 16 KiB");
    m->free(big2, NULL);
    mem_cache_thread_exit();
    void *after = m->malloc(16384, NULL);
    ok(after != NULL, "after the thread's lists are freed, allocation goes on");
    m->free(after, NULL);
    mem_cache_thread_exit();
    return done_testing();
}
