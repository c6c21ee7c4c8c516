/* TLS on a downstream socket, driven by herald rather than by
 * bufferevent_openssl.
 *
 * bufferevent_openssl reads each record with two read(2)s (header, then
 * body), arms and disarms EV_WRITE around every write (two epoll_ctl per
 * response on a keep-alive connection, about ten per new connection) and
 * gives its callbacks no say in when records are cut. Here OpenSSL reads
 * ahead through a small socket BIO that notes short reads, so one wake-up
 * costs one read(2) for everything that arrived; the owner's once-per-loop
 * flush hands the output to SSL_write in whole 16 KiB records; EV_WRITE is
 * armed only while the socket refuses bytes. The same shape as plain sockets
 * (sock_reader.c and connection.c's flush).
 *
 * The owner keeps a socket bufferevent, with its own events disabled, as the
 * holder of the plaintext input and output buffers; the callbacks take the
 * bufferevent's types so one set serves plain and TLS connections. */
#ifndef HERALD_CORE_NET_TLS_STREAM_H
#define HERALD_CORE_NET_TLS_STREAM_H

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdint.h>

struct tls_stream;

/* Takes ssl (freed with the stream), not fd or bev. The server handshake
 * starts at once: eventcb hears BEV_EVENT_CONNECTED, or BEV_EVENT_ERROR /
 * BEV_EVENT_EOF / BEV_EVENT_TIMEOUT (handshake_timeout_ms, 0 = none). After
 * it, readcb runs when plaintext was added to the input (kept under high
 * bytes, 0 = unbounded), eventcb with BEV_EVENT_EOF or BEV_EVENT_ERROR when
 * the peer's stream ends, and writecb when output that waited for the socket
 * was written (as much as went). */
struct tls_stream *tls_stream_new(struct event_base *base, struct bufferevent *bev, int fd, SSL *ssl, size_t high,
                                  uint64_t handshake_timeout_ms, bufferevent_data_cb readcb,
                                  bufferevent_data_cb writecb, bufferevent_event_cb eventcb, void *arg);
void tls_stream_read_enable(struct tls_stream *ts);
void tls_stream_read_disable(struct tls_stream *ts);
/* Encrypts and writes the output buffer. 0: all written, or the rest waits
 * for the socket (writecb later); -1: the connection is broken. */
int tls_stream_flush(struct tls_stream *ts);
/* No more callbacks, reads or writes (the connection is closing; the SSL
 * stays usable for a last close_notify). */
void tls_stream_stop(struct tls_stream *ts);
/* The first OpenSSL error seen (0: none), for the logs and ssl.* stats. */
unsigned long tls_stream_error(const struct tls_stream *ts);
/* Plaintext bytes read are added to *rx from now on (NULL: not counted). */
void tls_stream_count(struct tls_stream *ts, uint64_t *rx);
void tls_stream_free(struct tls_stream *ts);

#endif
