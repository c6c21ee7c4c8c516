/* See recycle.h. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "recycle.h"

#define MAX_BINS 16

struct idle { struct idle *next; };

struct list {
    struct idle *head;
    unsigned n;
};

static atomic_uint nbins;
static __thread struct list lists[MAX_BINS];

/* The bin's slot, numbered on first use (bins are static objects). */
static unsigned slot(struct recycle_bin *b)
{
    unsigned id = __atomic_load_n(&b->id, __ATOMIC_ACQUIRE);
    if (id)
        return id - 1;
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    id = __atomic_load_n(&b->id, __ATOMIC_RELAXED);
    if (!id) {
        id = atomic_fetch_add(&nbins, 1) + 1;
        if (id > MAX_BINS)
            abort();   /* raise MAX_BINS */
        __atomic_store_n(&b->id, id, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&lock);
    return id - 1;
}

#ifndef HERALD_ASAN
static __thread int registered;   /* this thread's exit frees its lists */
static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;

/* A key destructor runs on the exiting thread, its lists still in reach. */
static void free_lists(void *unused)
{
    (void)unused;
    for (unsigned i = 0; i < MAX_BINS; i++) {
        for (struct idle *o = lists[i].head, *next; o; o = next) {
            next = o->next;
            free(o);
        }
        lists[i].head = NULL;
        lists[i].n = 0;
    }
}

static void make_key(void) { pthread_key_create(&exit_key, free_lists); }
#endif

void *recycle_get(struct recycle_bin *b, size_t size)
{
#ifndef HERALD_ASAN
    struct list *l = &lists[slot(b)];
    struct idle *o = l->head;
    if (o) {
        l->head = o->next;
        l->n--;
        return o;
    }
#else
    (void)b;
#endif
    return xmalloc(size < sizeof(struct idle) ? sizeof(struct idle) : size);
}

void *recycle_get_zeroed(struct recycle_bin *b, size_t size)
{
    return memset(recycle_get(b, size), 0, size);
}

void recycle_put(struct recycle_bin *b, void *p)
{
    if (!p)
        return;
#ifndef HERALD_ASAN
    struct list *l = &lists[slot(b)];
    if (l->n < b->max) {
        if (!registered) {
            pthread_once(&exit_once, make_key);
            pthread_setspecific(exit_key, (void *)1);   /* non-NULL: the destructor runs */
            registered = 1;
        }
        struct idle *o = p;
        o->next = l->head;
        l->head = o;
        l->n++;
        return;
    }
#else
    (void)b;
#endif
    free(p);
}

unsigned recycle_idle(struct recycle_bin *b)
{
    return lists[slot(b)].n;
}
