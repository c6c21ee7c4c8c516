/* core/mem_cache.c: a freed block serves the next request of the same
 * malloc chunk size on its thread (small ones kept by exact chunk size,
 * nothing rounded up; large ones by power-of-two class), and never a
 * request it is too small for; last freed comes back first; at most 4096
 * wait per size; a trim frees what waited since the trim before; a block freed on another thread joins that thread's
 * lists and goes with it. Through mem_cache_alloc/free (herald's own
 * objects) and the nghttp2 allocator (libraries' memory). In ASan builds
 * nothing is kept: only the allocation contract is checked there. */
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "mem_cache.h"
#include "tap.h"

#ifdef HERALD_ASAN
#define KEEPS 0
#else
#define KEEPS 1
#endif

struct obj { char bytes[700]; };

static unsigned other_thread_idle;

static void *free_on_thread(void *p)
{
    mem_cache_free(p, sizeof(struct obj));
    other_thread_idle = mem_cache_idle(sizeof(struct obj));
    /* this thread's lists end with the thread (ASan's leak check in the
     * sanitizer build; here: the key destructor frees them) */
    return NULL;
}

/* mem_cache_trim gives back what no request took since the call before,
 * the bottom of the list, and keeps the last freed */
static void trimming(void)
{
    mem_cache_thread_exit();
    mem_cache_trim();
    void *o[10];
    for (int i = 0; i < 10; i++)
        o[i] = mem_cache_alloc(sizeof(struct obj));
    for (int i = 0; i < 10; i++)
        mem_cache_free(o[i], sizeof(struct obj));
    size_t kept = mem_cache_kept_bytes();
    mem_cache_trim();
    is_int(mem_cache_idle(sizeof(struct obj)), KEEPS ? 10 : 0, "a trim keeps blocks freed since the last one");
    void *t[3];
    for (int i = 0; i < 3; i++)
        t[i] = mem_cache_alloc(sizeof(struct obj));
    for (int i = 0; i < 3; i++)
        mem_cache_free(t[i], sizeof(struct obj));
    mem_cache_trim();
    is_int(mem_cache_idle(sizeof(struct obj)), KEEPS ? 3 : 0,
           "after three were taken and freed again, the seven that waited throughout go");
    if (KEEPS) {
        ok(mem_cache_kept_bytes() < kept && mem_cache_kept_bytes() > 0, "and the kept bytes shrink with them");
        void *a = mem_cache_alloc(sizeof(struct obj));
        ok(a == t[2], "the last freed stays on top");
        mem_cache_free(a, sizeof(struct obj));
    }
    mem_cache_trim();
    is_int(mem_cache_idle(sizeof(struct obj)), KEEPS ? 1 : 0, "the next trim keeps the one taken since");
    mem_cache_trim();
    is_int(mem_cache_idle(sizeof(struct obj)), 0, "a trim after a quiet period empties the list");
    ok(mem_cache_kept_bytes() == 0, "and nothing is kept");
}

/* herald's own objects: mem_cache_alloc / mem_cache_free */
static void own_objects(void)
{
    struct obj *a = mem_cache_alloc(sizeof(*a));
    ok(a != NULL, "an object");
    ok(malloc_usable_size(a) >= sizeof(*a), "large enough");
    memset(a, 0x5a, sizeof(*a));
    mem_cache_free(a, sizeof(*a));
    is_int(mem_cache_idle(sizeof(struct obj)), KEEPS ? 1 : 0, "a freed object waits on its size's list");
    struct obj *b = mem_cache_alloc_zeroed(sizeof(*b));
    if (KEEPS)
        ok(b == a, "the freed object comes back");
    int zero = 1;
    for (size_t i = 0; i < sizeof(b->bytes); i++)
        zero &= b->bytes[i] == 0;
    ok(zero, "mem_cache_alloc_zeroed zeroes all %zu bytes", sizeof(b->bytes));

    /* six freed and back: last freed first */
    struct obj *o[6];
    o[0] = b;
    for (int i = 1; i < 6; i++)
        o[i] = mem_cache_alloc(sizeof(struct obj));
    for (int i = 0; i < 6; i++)
        mem_cache_free(o[i], sizeof(struct obj));
    is_int(mem_cache_idle(sizeof(struct obj)), KEEPS ? 6 : 0, "all six wait");
    struct obj *back[6];
    for (int i = 0; i < 6; i++)
        back[i] = mem_cache_alloc(sizeof(struct obj));
    if (KEEPS)
        ok(back[0] == o[5] && back[1] == o[4] && back[2] == o[3] && back[5] == o[0],
           "they come back last freed first");
    is_int(mem_cache_idle(sizeof(struct obj)), 0, "then the list is empty");

    /* sizes are separate lists */
    mem_cache_free(back[0], sizeof(struct obj));
    void *c = mem_cache_alloc(1000);
    ok(c != back[0], "a 700-byte block is not handed out for 1000 bytes");
    ok(malloc_usable_size(c) >= 1000, "which gets a block large enough");
    mem_cache_free(c, 1000);

    /* freed on another thread: kept there, gone with that thread */
    pthread_t th;
    pthread_create(&th, NULL, free_on_thread, back[1]);
    pthread_join(th, NULL);
    is_int(other_thread_idle, KEEPS ? 1 : 0, "a block freed on another thread waits on that thread's list");
    struct obj *d = mem_cache_alloc(sizeof(*d));
    if (KEEPS)
        ok(d == back[0], "this thread's list is untouched by the other thread's free");
    is_int(mem_cache_idle(sizeof(struct obj)), 0, "and holds nothing else");
    mem_cache_free(d, sizeof(*d));
    for (int i = 2; i < 6; i++)
        mem_cache_free(back[i], sizeof(struct obj));
    mem_cache_free(NULL, 10);
    ok(1, "NULL is ignored");

    /* at most 4096 wait per size */
    enum { MANY = 4200 };
    void **many = xmalloc(MANY * sizeof(*many));
    for (int i = 0; i < MANY; i++)
        many[i] = mem_cache_alloc(272);
    for (int i = 0; i < MANY; i++)
        mem_cache_free(many[i], 272);
    is_int(mem_cache_idle(272), KEEPS ? 4096 : 0, "of 4200 freed blocks of a size, 4096 wait to be reused");
    free(many);
    trimming();

    /* a header map's size (1464 B): over glibc's per-thread cache, kept here */
    void *map = mem_cache_alloc(1464);
    mem_cache_free(map, 1464);
    void *map2 = mem_cache_alloc(1464);
    if (KEEPS)
        ok(map2 == map, "a 1464-byte block comes back");
    mem_cache_free(map2, 1464);

    mem_cache_thread_exit();
    is_int(mem_cache_idle(272), 0, "mem_cache_thread_exit empties the lists");
}

/* libraries' memory: the nghttp2 allocator (same lists as libevent's and OpenSSL's) */
static void library_blocks(nghttp2_mem *m)
{
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

    /* a block from mem_cache_alloc and one from the library allocator of
     * the same chunk size share a list */
    void *own = mem_cache_alloc(1000);
    mem_cache_free(own, 1000);
    void *lib = m->malloc(1000, NULL);
    ok(lib == own, "the libraries' allocator and mem_cache_alloc share lists");
    m->free(lib, NULL);

    /* large: power-of-two classes */
    void *big = m->malloc(16384, NULL);
    m->free(big, NULL);
    void *big2 = m->malloc(16384, NULL);
    ok(big2 == big, "a 16 KiB block comes back for 16 KiB");
    m->free(big2, NULL);
    void *odd = m->malloc(3000, NULL);
    m->free(odd, NULL);
    void *odd2 = m->malloc(4000, NULL);
    ok(malloc_usable_size(odd2) >= 4000, "a 3000-byte block is never handed out for 4000 bytes");
    m->free(odd2, NULL);
    mem_cache_thread_exit();
    void *after = m->malloc(16384, NULL);
    ok(after != NULL, "after the thread's lists are freed, allocation goes on");
    m->free(after, NULL);
    mem_cache_thread_exit();
}

int main(void)
{
    mem_cache_init();
    own_objects();
    nghttp2_mem *m = mem_cache_nghttp2();
    if (m)
        library_blocks(m);
    else
        ok(!KEEPS, "library allocator off in this build (ASan)");
    return done_testing();
}
