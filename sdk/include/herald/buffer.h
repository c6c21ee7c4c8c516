/* herald SDK: opaque byte buffers. Underneath they are chains of segments,
 * so moving bytes from one buffer to another copies nothing. */
#ifndef HERALD_BUFFER_H
#define HERALD_BUFFER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "herald/version.h"

#ifdef __cplusplus
extern "C" {
#endif

struct herald_buf;

HERALD_EXPORT struct herald_buf *herald_buf_new(void);
HERALD_EXPORT void herald_buf_free(struct herald_buf *b);
HERALD_EXPORT size_t herald_buf_len(const struct herald_buf *b);
HERALD_EXPORT int herald_buf_add(struct herald_buf *b, const void *data, size_t len);
HERALD_EXPORT int herald_buf_printf(struct herald_buf *b, const char *fmt, ...) HERALD_PRINTF(2, 3);
/* Moves up to len bytes (SIZE_MAX: all) from src to the end of dst, without copying. */
HERALD_EXPORT size_t herald_buf_move(struct herald_buf *dst, struct herald_buf *src, size_t len);
/* Copies up to len bytes from the front (at offset) into out without draining. */
HERALD_EXPORT size_t herald_buf_copyout(const struct herald_buf *b, size_t offset, void *out, size_t len);
HERALD_EXPORT void herald_buf_drain(struct herald_buf *b, size_t len);
/* Fills up to n iovecs covering the first len bytes; returns how many are needed. */
HERALD_EXPORT int herald_buf_peek(const struct herald_buf *b, size_t len, struct iovec *vec, int n);
/* Makes the first len bytes contiguous and returns them (NULL if fewer). */
HERALD_EXPORT const uint8_t *herald_buf_pullup(struct herald_buf *b, size_t len);

#ifdef __cplusplus
}
#endif
#endif
