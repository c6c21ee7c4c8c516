/* struct herald_buf is an evbuffer: the SDK's buffer functions are thin
 * wrappers, and core code converts with these casts. */
#ifndef HERALD_CORE_BUFFER_H
#define HERALD_CORE_BUFFER_H

#include <event2/buffer.h>

#include "herald/buffer.h"

static inline struct evbuffer *buf_ev(struct herald_buf *b) { return (struct evbuffer *)b; }
static inline struct herald_buf *ev_buf(struct evbuffer *e) { return (struct herald_buf *)e; }

#endif
