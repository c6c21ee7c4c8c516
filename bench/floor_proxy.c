/* floor_proxy.c -- the least CPU a user-space proxy can spend per proxied
 * HTTP/1.1 keep-alive request with kernel sockets: a measuring instrument for
 * bench/cpu_split.sh, not a proxy anyone should run.
 *
 * WHY: issue 3 asks for herald's CPU per request <= 0.7 x HAProxy's. Most of
 * a proxied request's CPU is the kernel's (loopback TCP delivery to the peer,
 * wake-ups), and it is the same for every proxy that makes the same system
 * calls. This program makes exactly those calls and does nothing else: no
 * parsing, no headers, no routing, no timers, no stats. Each client
 * connection gets its own upstream connection (what a keep-alive pool is at
 * steady state); bytes read on one side are written to the other. Its us/op
 * is the floor under any proxy's: if the floor is above 0.7 x HAProxy's, the
 * target cannot be met by doing less work in user space.
 *
 * Two event loops, chosen by the first argument:
 *   epoll     epoll_wait, then recv() and send() per ready socket: the calls
 *             HAProxy makes (2 recvfrom + 2 sendto per request).
 *   io_uring  one io_uring: a recv queued per socket, completions reaped in
 *             batches, sends queued and submitted with the next wait, so the
 *             system calls per request fall well under one; the kernel's TCP
 *             work stays. Built only when liburing is there (-DHAVE_URING).
 *   splice    epoll as above, but the bytes go socket -> pipe -> socket with
 *             splice(2) and never enter user space: the floor of a proxy that
 *             forwards bodies without copying them (HAProxy's "option
 *             splice-response"). Heads are spliced too, so for small answers
 *             it is below what any parsing proxy could reach.
 *
 * usage: floor_proxy epoll|epoll-batch|splice|io_uring LISTEN_PORT BACKEND_PORT  (127.0.0.1)
 * build: cc -O2 -o floor_proxy floor_proxy.c [-DHAVE_URING -luring]
 *
 * A short write (never seen with 128 B and 16 KiB answers and default socket
 * buffers) is finished with blocking-style retries on EAGAIN under epoll;
 * this keeps the instrument small, and it is counted and printed at exit so
 * a run that hit it can be told apart. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef HAVE_URING
#include <liburing.h>
#endif

#define BUF 65536

struct side {
    int fd;
    struct side *peer;
    char *buf;                  /* io_uring: this side's receive buffer */
    int pipe[2];                /* splice: bytes read here, on their way to peer */
};

static volatile sig_atomic_t stop;
static unsigned long short_writes;

static void on_signal(int sig) { (void)sig; stop = 1; }

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 4096))
        die("listen");
    return fd;
}

/* A blocking connect is fine: it happens once per client connection and the
 * benchmark measures steady keep-alive traffic after a warm-up. */
static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)))
        die("connect backend");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

static struct side *pair_up(int client, int backend_port)
{
    int one = 1;
    struct side *c = calloc(2, sizeof(*c));
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c[0].fd = client;
    c[1].fd = connect_to(backend_port);
    c[0].peer = &c[1];
    c[1].peer = &c[0];
    return c;
}

/* every waiting client, each paired with its backend connection and watched
 * on both sides (with_pipes: each side gets the pipe splice needs) */
static void accept_all(int ep, int lfd, int backend_port, int with_pipes)
{
    int c;
    while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
        struct side *p = pair_up(c, backend_port);
        for (int k = 0; k < 2; k++) {
            if (with_pipes && pipe2(p[k].pipe, O_NONBLOCK))
                die("pipe2");
            struct epoll_event e = {.events = EPOLLIN, .data.ptr = &p[k]};
            epoll_ctl(ep, EPOLL_CTL_ADD, p[k].fd, &e);
        }
    }
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            if (n)
                short_writes++;
        } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
            return;
        }
    }
}

/* batch: read every ready socket first, then write them all, so the peers
 * woken by the first writes are still running when the later ones land */
static void run_epoll(int lfd, int backend_port, int batch)
{
    int ep = epoll_create1(0);
    static char buf[BUF], bufs[256][BUF];
    static ssize_t lens[256];
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    while (!stop) {
        int n = epoll_wait(ep, evs, 256, 200);
        for (int i = 0; i < n; i++) {
            lens[i] = 0;
            struct side *s = evs[i].data.ptr;
            if (!s) {
                accept_all(ep, lfd, backend_port, false);
                continue;
            }
            if (s->fd < 0)
                continue;
            ssize_t r = recv(s->fd, batch ? bufs[i] : buf, BUF, 0);
            if (r > 0) {
                if (batch)
                    lens[i] = r;
                else
                    send_all(s->peer->fd, buf, (size_t)r);
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                /* Both sides go; the pair's memory is kept (a few bytes per
                 * connection in a benchmark) so a later event in this batch
                 * for the peer finds fd -1 instead of freed memory. */
                close(s->fd);
                close(s->peer->fd);
                s->fd = s->peer->fd = -1;
            }
        }
        for (int i = 0; batch && i < n; i++) {
            struct side *s = evs[i].data.ptr;
            if (lens[i] > 0 && s->fd >= 0)
                send_all(s->peer->fd, bufs[i], (size_t)lens[i]);
        }
    }
}

/* splice: each side's bytes pass through its own pipe */
static void run_splice(int lfd, int backend_port)
{
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    while (!stop) {
        int n = epoll_wait(ep, evs, 256, 200);
        for (int i = 0; i < n; i++) {
            struct side *s = evs[i].data.ptr;
            if (!s) {
                accept_all(ep, lfd, backend_port, true);
                continue;
            }
            if (s->fd < 0)
                continue;
            ssize_t r = splice(s->fd, NULL, s->pipe[1], NULL, BUF, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (r > 0) {
                while (r > 0) {
                    ssize_t w = splice(s->pipe[0], NULL, s->peer->fd, NULL, (size_t)r, SPLICE_F_MOVE);
                    if (w > 0) {
                        r -= w;
                        if (r)
                            short_writes++;
                    } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                        break;
                    }
                }
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                close(s->fd);
                close(s->peer->fd);
                s->fd = s->peer->fd = -1;
            }
        }
    }
}

#ifdef HAVE_URING
/* user_data: the side pointer, low bit set for a send completion */
static void queue_recv(struct io_uring *ring, struct side *s)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) {
        io_uring_submit(ring);
        sqe = io_uring_get_sqe(ring);
    }
    io_uring_prep_recv(sqe, s->fd, s->buf, BUF, 0);
    io_uring_sqe_set_data(sqe, s);
}

static void queue_send(struct io_uring *ring, struct side *to, const char *p, size_t n)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) {
        io_uring_submit(ring);
        sqe = io_uring_get_sqe(ring);
    }
    io_uring_prep_send(sqe, to->fd, p, n, MSG_NOSIGNAL);
    io_uring_sqe_set_data(sqe, (void *)((uintptr_t)to | 1));
}

static void run_uring(int lfd, int backend_port)
{
    struct io_uring ring;
    struct io_uring_params params = {.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN};
    if (io_uring_queue_init_params(4096, &ring, &params) < 0) {
        params.flags = 0;
        if (io_uring_queue_init_params(4096, &ring, &params) < 0)
            die("io_uring_queue_init");
    }
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, 0);
    io_uring_sqe_set_data(sqe, NULL);
    struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 200000000};
    while (!stop) {
        struct io_uring_cqe *cqe;
        io_uring_submit_and_wait_timeout(&ring, &cqe, 1, &ts, NULL);
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            void *ud = io_uring_cqe_get_data(cqe);
            int res = cqe->res;
            if (!ud) {
                if (res >= 0) {
                    fcntl(res, F_SETFL, 0);   /* io_uring polls internally; keep the socket blocking-style */
                    struct side *p = pair_up(res, backend_port);
                    for (int k = 0; k < 2; k++) {
                        fcntl(p[k].fd, F_SETFL, 0);
                        p[k].buf = malloc(BUF);
                        queue_recv(&ring, &p[k]);
                    }
                }
                continue;
            }
            if ((uintptr_t)ud & 1) {
                struct side *to = (struct side *)((uintptr_t)ud & ~(uintptr_t)1);
                (void)to;
                if (res < 0)
                    continue;     /* the recv side sees the close */
                continue;
            }
            struct side *s = ud;
            if (res > 0) {
                /* The receive buffer is reused only after the next recv
                 * completes, which needs the peer's answer, which needs this
                 * send to have gone out: one buffer per side suffices. */
                queue_send(&ring, s->peer, s->buf, (size_t)res);
                queue_recv(&ring, s);
            } else if (s->fd >= 0) {
                shutdown(s->peer->fd, SHUT_RDWR);
                close(s->fd);
                s->fd = -1;
            }
        }
        io_uring_cq_advance(&ring, seen);
    }
}
#endif

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s epoll|epoll-batch|splice|io_uring LISTEN_PORT BACKEND_PORT\n", argv[0]);
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    int lfd = listen_on(atoi(argv[2])), backend_port = atoi(argv[3]);
    if (strcmp(argv[1], "epoll") == 0 || strcmp(argv[1], "epoll-batch") == 0) {
        run_epoll(lfd, backend_port, strcmp(argv[1], "epoll-batch") == 0);
    } else if (strcmp(argv[1], "splice") == 0) {
        run_splice(lfd, backend_port);
    } else if (strcmp(argv[1], "io_uring") == 0) {
#ifdef HAVE_URING
        run_uring(lfd, backend_port);
#else
        fprintf(stderr, "floor_proxy: built without liburing\n");
        return 2;
#endif
    } else {
        fprintf(stderr, "floor_proxy: unknown loop %s\n", argv[1]);
        return 2;
    }
    fprintf(stderr, "floor_proxy: %lu short writes\n", short_writes);
    return 0;
}
