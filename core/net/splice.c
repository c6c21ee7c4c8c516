/* Zero-copy forwarding between a downstream connection and its upstream:
 * bytes go socket -> pipe -> socket with splice(2) and never enter user
 * space. Each direction stops reading while its pipe cannot be emptied into
 * the destination (backpressure bounded by the pipe's size) and half-closes
 * its destination once the source ended and the pipe is empty. Pipes are made
 * on the first byte, so idle connections cost no descriptors. */
#include "config.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "log.h"
#include "net/connection.h"
#include "net/upstream_conn.h"
#include "worker.h"

#define SPLICE_PIPE_SIZE (256 * 1024)

struct splice_dir {
    struct splice_pair *sp;
    int from, to;
    int pipe[2];
    size_t in_pipe, pipe_size;
    bool eof, shut;
    uint64_t *counter, *counter2;     /* bytes moved: downstream rx/tx and upstream tx/rx */
    struct event *rd, *wr;
};

struct splice_pair {
    struct herald_conn *c;
    struct herald_upstream *u;
    struct splice_dir d[2];           /* [0] downstream -> upstream, [1] upstream -> downstream */
};

static void release(struct splice_pair *sp)
{
    for (int i = 0; i < 2; i++) {
        struct splice_dir *d = &sp->d[i];
        event_free(d->rd);
        event_free(d->wr);
        if (d->pipe[0] >= 0) {
            close(d->pipe[0]);
            close(d->pipe[1]);
        }
    }
    sp->c->splice = NULL;
    free(sp);
}

void splice_abort(struct splice_pair *sp)
{
    upstream_release(sp->u, true);
    release(sp);
}

static void end(struct splice_pair *sp, bool reset)
{
    struct herald_conn *c = sp->c;
    upstream_release(sp->u, reset);
    release(sp);
    c->remote_closed = true;
    herald_conn_close(c, reset ? HERALD_CLOSE_RESET : HERALD_CLOSE_FLUSH);
}

static void check_end(struct splice_pair *sp)
{
    if (sp->d[0].shut && sp->d[1].shut)
        end(sp, false);
}

/* Empties the pipe into the destination. 0: empty, 1: blocked, -1: error. */
static int flush_pipe(struct splice_dir *d)
{
    while (d->in_pipe > 0) {
        ssize_t n = splice(d->pipe[0], NULL, d->to, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            d->in_pipe -= (size_t)n;
            *d->counter2 += (uint64_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 1;
        return -1;
    }
    return 0;
}

static void settle(struct splice_dir *d)
{
    int rc = flush_pipe(d);
    if (rc < 0) {
        end(d->sp, true);
        return;
    }
    if (rc == 1) {
        /* The destination is full: stop reading until it drains. */
        event_del(d->rd);
        event_add(d->wr, NULL);
        return;
    }
    event_del(d->wr);
    if (d->eof) {
        if (!d->shut) {
            shutdown(d->to, SHUT_WR);
            d->shut = true;
            check_end(d->sp);
        }
        return;
    }
    event_add(d->rd, NULL);
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct splice_dir *d = arg;
    if (d->pipe[0] < 0) {
        if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
            log_warn("splice", "pipe2: %s", strerror(errno));
            end(d->sp, true);
            return;
        }
        int sz = fcntl(d->pipe[1], F_SETPIPE_SZ, SPLICE_PIPE_SIZE);
        d->pipe_size = sz > 0 ? (size_t)sz : 65536;
    }
    for (int rounds = 0; rounds < 16; rounds++) {
        size_t room = d->pipe_size - d->in_pipe;
        if (room == 0)
            break;
        ssize_t n = splice(d->from, NULL, d->pipe[1], NULL, room, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            d->in_pipe += (size_t)n;
            *d->counter += (uint64_t)n;
            if (flush_pipe(d) != 0)
                break;
            continue;
        }
        if (n == 0) {
            d->eof = true;
            break;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN)
            break;
        end(d->sp, true); /* ECONNRESET and friends */
        return;
    }
    settle(d);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    settle(arg);
}

int herald_conn_splice(struct herald_conn *c, struct herald_upstream *u)
{
    if (c->splice || c->closing || u->gone || !u->connected || c->shut_wr_pending || u->shut_wr_pending)
        return -1;
    /* Only when no other filter wants to see the bytes. */
    for (size_t i = 0; i < c->chain->nfilters; i++) {
        const struct herald_network_filter_ops *ops = c->chain->filters[i].ops;
        if (i + 1 < c->chain->nfilters && (ops->on_read || ops->on_write))
            return -1;
    }
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) || evbuffer_get_length(bufferevent_get_output(c->bev)) ||
        evbuffer_get_length(bufferevent_get_input(u->bev)) || evbuffer_get_length(bufferevent_get_output(u->bev)) ||
        c->read_eof || u->read_eof)
        return -1;
    struct splice_pair *sp = xcalloc(1, sizeof(*sp));
    sp->c = c;
    sp->u = u;
    int dfd = c->fd, ufd = bufferevent_getfd(u->bev);
    struct event_base *base = c->worker->base;
    int fds[2][2] = {{dfd, ufd}, {ufd, dfd}};
    uint64_t *counters[2][2] = {{&c->rx_bytes, &u->tx_bytes}, {&u->rx_bytes, &c->tx_bytes}};
    for (int i = 0; i < 2; i++) {
        struct splice_dir *d = &sp->d[i];
        d->sp = sp;
        d->from = fds[i][0];
        d->to = fds[i][1];
        d->pipe[0] = d->pipe[1] = -1;
        d->counter = counters[i][0];
        d->counter2 = counters[i][1];
        d->rd = event_new(base, d->from, EV_READ | EV_PERSIST, on_readable, d);
        d->wr = event_new(base, d->to, EV_WRITE | EV_PERSIST, on_writable, d);
    }
    /* The bufferevents stay (they own the sockets) but go quiet. */
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    bufferevent_disable(u->bev, EV_READ | EV_WRITE);
    bufferevent_setcb(u->bev, NULL, NULL, NULL, NULL);
    c->splice = sp;
    event_add(sp->d[0].rd, NULL);
    event_add(sp->d[1].rd, NULL);
    return 0;
}
