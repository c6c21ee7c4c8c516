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
    bool want_read, want_write;       /* read `from` / wait for `to` to drain */
    uint64_t *counter, *counter2;     /* bytes moved: downstream rx/tx and upstream tx/rx */
};

/* One event per socket (not per direction and kind): a socket is read for
 * one direction and written for the other. */
struct splice_sock {
    int fd;
    short mask;
    struct event *ev;
};

struct splice_pair {
    struct herald_conn *c;
    struct herald_upstream *u;
    struct splice_dir d[2];           /* [0] downstream -> upstream, [1] upstream -> downstream */
    struct splice_sock s[2];          /* [0] downstream, [1] upstream */
};

/* Empty pipes are kept per worker: making one costs pipe2 + fcntl + 2 close. */
#define PIPE_POOL_MAX 64
static __thread int pipe_pool[PIPE_POOL_MAX][2];
static __thread size_t pipe_pool_sizes[PIPE_POOL_MAX];
static __thread unsigned pipe_pool_n;

static int pipe_get(struct splice_dir *d)
{
    if (pipe_pool_n > 0) {
        pipe_pool_n--;
        d->pipe[0] = pipe_pool[pipe_pool_n][0];
        d->pipe[1] = pipe_pool[pipe_pool_n][1];
        d->pipe_size = pipe_pool_sizes[pipe_pool_n];
        return 0;
    }
    if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) < 0)
        return -1;
    int sz = fcntl(d->pipe[1], F_SETPIPE_SZ, SPLICE_PIPE_SIZE);
    d->pipe_size = sz > 0 ? (size_t)sz : 65536;
    return 0;
}

static void pipe_put(struct splice_dir *d)
{
    if (d->pipe[0] < 0)
        return;
    if (d->in_pipe == 0 && pipe_pool_n < PIPE_POOL_MAX) {
        pipe_pool[pipe_pool_n][0] = d->pipe[0];
        pipe_pool[pipe_pool_n][1] = d->pipe[1];
        pipe_pool_sizes[pipe_pool_n++] = d->pipe_size;
    } else {
        close(d->pipe[0]);
        close(d->pipe[1]);
    }
    d->pipe[0] = d->pipe[1] = -1;
}

void splice_worker_cleanup(void)
{
    while (pipe_pool_n > 0) {
        pipe_pool_n--;
        close(pipe_pool[pipe_pool_n][0]);
        close(pipe_pool[pipe_pool_n][1]);
    }
}

static void on_socket(evutil_socket_t fd, short what, void *arg);

/* Re-arms each socket's event for what its two directions want now. */
static void update_events(struct splice_pair *sp)
{
    for (int i = 0; i < 2; i++) {
        struct splice_sock *k = &sp->s[i];
        /* socket i is read by direction i and written by direction 1 - i */
        short mask = (short)((sp->d[i].want_read ? EV_READ : 0) | (sp->d[1 - i].want_write ? EV_WRITE : 0));
        if (mask == k->mask)
            continue;
        event_del(k->ev);
        k->mask = mask;
        if (mask) {
            event_assign(k->ev, sp->c->worker->base, k->fd, mask | EV_PERSIST, on_socket, sp);
            event_add(k->ev, NULL);
        }
    }
}

static void release(struct splice_pair *sp)
{
    for (int i = 0; i < 2; i++) {
        event_free(sp->s[i].ev);
        pipe_put(&sp->d[i]);
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

/* Returns true when the pair ended (and is freed). */
static bool settle(struct splice_dir *d)
{
    int rc = flush_pipe(d);
    if (rc < 0) {
        end(d->sp, true);
        return true;
    }
    if (rc == 1) {
        /* The destination is full: stop reading until it drains. */
        d->want_read = false;
        d->want_write = true;
        return false;
    }
    d->want_write = false;
    d->want_read = !d->eof;
    if (d->eof && !d->shut) {
        shutdown(d->to, SHUT_WR);
        d->shut = true;
        if (d->sp->d[0].shut && d->sp->d[1].shut) {
            end(d->sp, false);
            return true;
        }
    }
    return false;
}

/* Returns true when the pair ended (and is freed). */
static bool on_readable(struct splice_dir *d)
{
    if (d->pipe[0] < 0 && pipe_get(d) < 0) {
        log_warn("splice", "pipe2: %s", strerror(errno));
        end(d->sp, true);
        return true;
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
        return true;
    }
    return settle(d);
}

static void on_socket(evutil_socket_t fd, short what, void *arg)
{
    struct splice_pair *sp = arg;
    int i = fd == sp->s[0].fd ? 0 : 1;
    /* Drain the direction writing to this socket first: it frees pipe room. */
    if ((what & EV_WRITE) && settle(&sp->d[1 - i]))
        return;
    if ((what & EV_READ) && sp->d[i].want_read && on_readable(&sp->d[i]))
        return;
    update_events(sp);
}

int herald_conn_splice(struct herald_conn *c, struct herald_upstream *u)
{
    if (c->splice || c->closing || u->gone || !u->connected || c->shut_wr_pending || u->shut_wr_pending)
        return -1;
    /* TLS: the kernel would move ciphertext; the filters copy instead */
    if (c->ssl || u->ssl)
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
        d->want_read = true;
        sp->s[i].fd = fds[i][0];
        sp->s[i].ev = event_new(base, sp->s[i].fd, EV_READ | EV_PERSIST, on_socket, sp);
    }
    /* The bufferevents stay (they own the sockets) but go quiet. */
    conn_read_stop(c);
    upstream_read_stop(u);
    bufferevent_disable(c->bev, EV_WRITE);
    bufferevent_disable(u->bev, EV_WRITE);
    bufferevent_setcb(u->bev, NULL, NULL, NULL, NULL);
    c->splice = sp;
    update_events(sp);
    return 0;
}
