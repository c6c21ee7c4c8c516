/* Per-thread lists of freed objects of one kind, for what the proxy makes
 * and frees per request: streams, upstream requests, header maps, timers.
 *
 * glibc's per-thread cache keeps 7 blocks of a size; with a few dozen
 * requests in flight those sizes overflow it, and each malloc and free then
 * takes the slow path (a few hundred instructions). A freed object of a kind
 * waits on its thread's list for the next one made there; at most `max`
 * wait, and the thread's exit frees them. Objects may be freed on another
 * thread than the one that made them: the block is plain malloc memory.
 * Off in ASan builds, so that every free is seen. */
#ifndef HERALD_CORE_RECYCLE_H
#define HERALD_CORE_RECYCLE_H

#include <stddef.h>

struct recycle_bin {
    unsigned max;   /* idle objects a thread keeps */
    unsigned id;    /* given on first use */
};

#define RECYCLE_BIN(max_idle) {.max = (max_idle), .id = 0}

/* An object of size bytes (the same size on every call for a bin), not
 * zeroed; never NULL (out of memory aborts, as xmalloc). */
void *recycle_get(struct recycle_bin *b, size_t size);
/* As recycle_get, zeroed. */
void *recycle_get_zeroed(struct recycle_bin *b, size_t size);
/* p (from recycle_get on any thread, or NULL) back to the calling thread's list. */
void recycle_put(struct recycle_bin *b, void *p);
/* Objects waiting on the calling thread's list of b. */
unsigned recycle_idle(struct recycle_bin *b);

#endif
