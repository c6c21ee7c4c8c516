/* struct herald_buf is an evbuffer: the SDK's buffer functions are thin
 * wrappers, and core code converts with these casts. */
#ifndef HERALD_CORE_BUFFER_H
#define HERALD_CORE_BUFFER_H

#include <event2/buffer.h>

#include "herald/buffer.h"

static inline struct evbuffer *buf_ev(struct herald_buf *b) { return (struct evbuffer *)b; }
static inline struct herald_buf *ev_buf(struct evbuffer *e) { return (struct herald_buf *)e; }

/* libevent allocates a chain as one power-of-two block holding its header
 * and the data, so reserving exactly 4 KiB allocates 8 KiB: readers reserve
 * a power of two less this (the header's size is libevent's; this bounds it). */
#define EV_CHAIN_SLACK 128u

/* Output of at least this much is written when queued, not at the end of
 * the loop iteration (see write_now() in net/connection.c). */
#define WRITE_NOW_BYTES (16u * 1024u)

#endif
