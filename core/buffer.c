#include "config.h"

#include <stdio.h>
#include <string.h>

#include "buffer.h"
#include "common.h"

struct herald_buf *herald_buf_new(void) { return ev_buf(evbuffer_new()); }

void herald_buf_free(struct herald_buf *b)
{
    if (b)
        evbuffer_free(buf_ev(b));
}

size_t herald_buf_len(const struct herald_buf *b)
{
    return evbuffer_get_length((const struct evbuffer *)b);
}

int herald_buf_add(struct herald_buf *b, const void *data, size_t len)
{
    return evbuffer_add(buf_ev(b), data, len);
}

int herald_buf_printf(struct herald_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = evbuffer_add_vprintf(buf_ev(b), fmt, ap);
    va_end(ap);
    return n < 0 ? -1 : 0;
}

size_t herald_buf_move(struct herald_buf *dst, struct herald_buf *src, size_t len)
{
    size_t have = evbuffer_get_length(buf_ev(src));
    if (len >= have) {
        evbuffer_add_buffer(buf_ev(dst), buf_ev(src));
        return have;
    }
    int n = evbuffer_remove_buffer(buf_ev(src), buf_ev(dst), len);
    return n < 0 ? 0 : (size_t)n;
}

size_t herald_buf_copyout(const struct herald_buf *b, size_t offset, void *out, size_t len)
{
    struct evbuffer *e = (struct evbuffer *)b;
    size_t have = evbuffer_get_length(e);
    if (offset >= have)
        return 0;
    if (len > have - offset)
        len = have - offset;
    struct evbuffer_ptr pos;
    if (evbuffer_ptr_set(e, &pos, offset, EVBUFFER_PTR_SET) < 0)
        return 0;
    ev_ssize_t n = evbuffer_copyout_from(e, &pos, out, len);
    return n < 0 ? 0 : (size_t)n;
}

void herald_buf_drain(struct herald_buf *b, size_t len) { evbuffer_drain(buf_ev(b), len); }

int herald_buf_peek(const struct herald_buf *b, size_t len, struct iovec *vec, int n)
{
    struct evbuffer_iovec ev[64];
    int want = n < 64 ? n : 64;
    int need = evbuffer_peek((struct evbuffer *)b, (ev_ssize_t)len, NULL, ev, want);
    for (int i = 0; i < need && i < want; i++) {
        vec[i].iov_base = ev[i].iov_base;
        vec[i].iov_len = ev[i].iov_len;
    }
    return need;
}

const uint8_t *herald_buf_pullup(struct herald_buf *b, size_t len)
{
    if (evbuffer_get_length(buf_ev(b)) < len)
        return NULL;
    return evbuffer_pullup(buf_ev(b), (ev_ssize_t)len);
}
