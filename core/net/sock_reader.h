/* Reading a plain socket into a bufferevent's input, in place of
 * bufferevent_socket's own reads.
 *
 * Why: libevent 2.1's evbuffer_read() asks FIONREAD before every read and
 * never reads more than 4 KiB at once (EVBUFFER_MAX_READ), so a 16 KiB
 * response took five wake-ups, five filter passes and five writes on the
 * other side, plus an ioctl each time. This reader makes one recv per
 * wake-up into up to `max` bytes of reserved space (growing while reads
 * fill it, so an idle connection never holds a big buffer), keeps the input
 * under its high watermark as bufferevent does, and reports through the
 * bufferevent's own read and event callbacks, so the code above it does not
 * change. Downstream TLS connections are read by tls_stream.c; upstream TLS
 * connections still use bufferevent_openssl. */
#ifndef HERALD_CORE_NET_SOCK_READER_H
#define HERALD_CORE_NET_SOCK_READER_H

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sock_reader;

/* bev: a bufferevent_socket whose EV_READ stays disabled from now on. high:
 * input high watermark (0: none). Starts disabled. */
struct sock_reader *sock_reader_new(struct event_base *base, struct bufferevent *bev, int fd, size_t high,
                                    bufferevent_data_cb readcb, bufferevent_event_cb eventcb, void *arg);
void sock_reader_enable(struct sock_reader *r);
void sock_reader_disable(struct sock_reader *r);
/* Bytes read are added to *rx from now on (NULL: not counted). */
void sock_reader_count(struct sock_reader *r, uint64_t *rx);
void sock_reader_free(struct sock_reader *r);

#endif
