/* A stream's body sent on at a fixed rate: Envoy's StreamRateLimiter, for
 * the fault filter's response_rate_limit and the bandwidth_limit filter.
 *
 * The filter hands the pacer each data chunk of one direction and returns
 * what stream_pacer_data returns (HERALD_HTTP_STOP: the pacer keeps the
 * bytes). A timer sends them on (SDK 1.10's inject) as the byte bucket
 * allows: limit_kbps KiB a second, a fill_interval's share at a time; the
 * bucket starts with one second's worth, as Envoy's. The bucket is the
 * stream's own, or one a filter config shares between its streams on every
 * worker (bandwidth_limit). Holding more than the connection's buffer limit,
 * the pacer stops the source (the upstream, or reading the client) until it
 * is back under half of it. Compiled into each plugin that uses it. */
#ifndef HERALD_PLUGIN_COMMON_STREAM_PACER_H
#define HERALD_PLUGIN_COMMON_STREAM_PACER_H

#include <stdbool.h>
#include <stdint.h>

#include "herald/herald.h"
#include "pace_bucket.h"

struct stream_pacer;

/* Each time bytes go on: enforced, the limit kept some back; last, the
 * body is all out, and ms is the time from its first byte in to its last out
 * (Envoy's *_transfer_duration). */
typedef void (*pacer_sent_cb)(void *arg, uint64_t bytes, bool enforced, bool last, uint64_t ms);

/* session: the filter's own session (where it is in the chain); shared:
 * a bucket owned by the caller, or NULL for the stream's own at limit_kbps. */
struct stream_pacer *stream_pacer_new(struct herald_http_stream *s, void *session, bool encode,
                                      struct pace_bucket *shared, uint64_t limit_kbps, uint64_t fill_ms,
                                      pacer_sent_cb sent, void *arg);
enum herald_http_status stream_pacer_data(struct stream_pacer *p, struct herald_buf *data, bool end_stream);
/* STOP while bytes wait (the pacer continues the trailers after its last
 * bytes), CONTINUE when it holds nothing. */
enum herald_http_status stream_pacer_trailers(struct stream_pacer *p);
/* Bytes held now. */
uint64_t stream_pacer_pending(const struct stream_pacer *p);
/* The stream is over: no more sending. Safe to call twice. */
void stream_pacer_stop(struct stream_pacer *p);
void stream_pacer_free(struct stream_pacer *p);

#endif
