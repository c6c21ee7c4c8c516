/* See sock_reader.h for why herald reads plain sockets itself. */
#include "config.h"

#include <errno.h>
#include <event2/buffer.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "buffer.h"
#include "common.h"
#include "net/sock_reader.h"

#define READ_MIN (4u * 1024u)     /* small reads touch one page: RSS stays low with many connections */
#define READ_MAX (256u * 1024u)   /* bulk transfers: as bufferevent_set_max_single_read */

struct sock_reader {
    struct event *ev;
    struct bufferevent *bev;
    size_t high;
    size_t next;                  /* bytes to offer the next recv */
    bool enabled;                 /* wanted by the owner */
    bool wm_held;                 /* stopped by the high watermark */
    struct evbuffer_cb_entry *wm_cb;   /* on the input only while held: every add and drain runs its callbacks */
    uint64_t *rx;                 /* where bytes read are counted, or NULL */
    short pending;                /* BEV_EVENT_EOF/ERROR seen after data, not told yet */
    bufferevent_data_cb readcb;
    bufferevent_event_cb eventcb;
    void *arg;
};

static void arm(struct sock_reader *r)
{
    if (r->enabled && !r->wm_held)
        event_add(r->ev, NULL);
    else
        event_del(r->ev);
}

/* The owner drained the input: reading resumes below the high watermark. */
static void on_input_drained(struct evbuffer *in, const struct evbuffer_cb_info *info, void *arg)
{
    struct sock_reader *r = arg;
    if (r->wm_held && info->n_deleted && evbuffer_get_length(in) < r->high) {
        r->wm_held = false;
        evbuffer_remove_cb_entry(in, r->wm_cb);   /* libevent saved its next entry before calling us */
        r->wm_cb = NULL;
        arm(r);
    }
}

/* Reading stops, as bufferevent_socket does, and the owner hears why. */
static void finish(struct sock_reader *r, short why)
{
    r->enabled = false;
    r->pending = 0;
    arm(r);
    r->eventcb(r->bev, (short)(BEV_EVENT_READING | why), r->arg);
}

/* One wake-up: read until the socket is empty, the offer is used up or the
 * input is at its high watermark, then one callback for all of it. A full
 * read means more is waiting, so the next wake-up offers more. */
static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct sock_reader *r = arg;
    struct evbuffer *in = bufferevent_get_input(r->bev);
    size_t total = 0;
    short why = 0;

    if (r->pending) {   /* the end seen right after data, in the last wake-up */
        finish(r, r->pending);
        return;
    }
    size_t offer = r->next;
    evbuffer_unfreeze(in, 0);   /* bufferevent_socket keeps the end frozen except while it reads */
    for (;;) {
        size_t len = evbuffer_get_length(in), want = offer - EV_CHAIN_SLACK;   /* see buffer.h */
        if (r->high) {
            if (len >= r->high) {
                r->wm_held = true;
                if (!r->wm_cb)
                    r->wm_cb = evbuffer_add_cb(in, on_input_drained, r);
                arm(r);
                break;
            }
            if (r->high - len < want)
                want = r->high - len;
        }
        struct evbuffer_iovec v[2];
        int nv = evbuffer_reserve_space(in, (ev_ssize_t)want, v, 2);
        if (nv <= 0)
            break;
        size_t offered = 0;
        for (int i = 0; i < nv; i++)
            offered += v[i].iov_len;
        /* recv/recvmsg, not readv: see write_out in connection.c. struct
         * evbuffer_iovec has struct iovec's layout on Unix (libevent's promise) */
        ssize_t n;
        if (nv == 1) {
            n = recv(fd, v[0].iov_base, v[0].iov_len, 0);
        } else {
            struct msghdr m = {.msg_iov = (struct iovec *)v, .msg_iovlen = (size_t)nv};
            n = recvmsg(fd, &m, 0);
        }
        if (n > 0) {
            size_t left = (size_t)n;
            int used = 0;
            for (; used < nv && left > 0; used++) {
                if (v[used].iov_len > left)
                    v[used].iov_len = left;
                left -= v[used].iov_len;
            }
            evbuffer_commit_space(in, v, used);
            total += (size_t)n;
            if ((size_t)n == offered && total < READ_MAX) {
                if (offer < READ_MAX)
                    offer *= 2;
                continue;   /* full: more may be waiting */
            }
            break;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            break;
        why = n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR;
        break;
    }
    evbuffer_freeze(in, 0);
    if (r->rx)
        *r->rx += total;
    if (total > r->next && r->next < READ_MAX)
        r->next *= 2;
    else if (total < r->next / 8 && r->next > READ_MIN)
        r->next /= 2;   /* slowly: responses vary */
    if (total == 0) {
        if (why)
            finish(r, why);
        return;
    }
    if (why) {
        /* data first; the end in the next loop turn (the callback may free us,
         * and event_free drops the activation with us) */
        r->pending = why;
        event_active(r->ev, EV_READ, 1);
    }
    r->readcb(r->bev, r->arg);
}

struct sock_reader *sock_reader_new(struct event_base *base, struct bufferevent *bev, int fd, size_t high,
                                    bufferevent_data_cb readcb, bufferevent_event_cb eventcb, void *arg)
{
    struct sock_reader *r = xcalloc(1, sizeof(*r));
    r->bev = bev;
    r->high = high;
    r->next = READ_MIN;
    r->readcb = readcb;
    r->eventcb = eventcb;
    r->arg = arg;
    r->ev = event_new(base, fd, EV_READ | EV_PERSIST, on_readable, r);
    bufferevent_disable(bev, EV_READ);
    return r;
}

void sock_reader_enable(struct sock_reader *r)
{
    if (r && !r->enabled) {
        r->enabled = true;
        arm(r);
    }
}

void sock_reader_disable(struct sock_reader *r)
{
    if (r && r->enabled) {
        r->enabled = false;
        arm(r);
    }
}

void sock_reader_count(struct sock_reader *r, uint64_t *rx) { r->rx = rx; }

void sock_reader_free(struct sock_reader *r)
{
    if (!r)
        return;
    if (r->wm_cb)
        evbuffer_remove_cb_entry(bufferevent_get_input(r->bev), r->wm_cb);
    event_free(r->ev);
    free(r);
}
