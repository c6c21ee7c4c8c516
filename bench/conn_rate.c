/* conn_rate: new-TCP-connections-per-second load generator and the tiny backend it talks to.
 *
 *   conn_rate serve PORT [BYTES]          backend: accept, write BYTES (default 16), close
 *   conn_rate client PORT SECONDS CONC [BYTES]
 *                                         keep CONC connections in flight for SECONDS; each one:
 *                                         connect, read until EOF (expects BYTES), close.
 *
 * Both are single-threaded epoll loops on 127.0.0.1. The client prints one line:
 *   conns=N errors=E short=S secs=T rate=R
 * where N counts connections that completed (EOF after BYTES bytes) inside the window, E those
 * that failed (connect error, reset), S those that ended early with fewer bytes.
 * Build: cc -O2 -o conn_rate conn_rate.c */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BYTES 4096

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct sockaddr_in addr_of(int port)
{
    struct sockaddr_in sa;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sa;
}

static int serve(int port, int nbytes)
{
    char msg[MAX_BYTES];
    struct sockaddr_in sa = addr_of(port);
    struct epoll_event ev = { .events = EPOLLIN }, evs[16];
    int one = 1, lfd, ep;

    memset(msg, 'x', sizeof(msg));
    msg[nbytes - 1] = '\n';
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        return perror("socket"), 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4096) < 0)
        return perror("bind/listen"), 1;
    ep = epoll_create1(EPOLL_CLOEXEC);
    ev.data.fd = lfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    for (;;) {
        int n = epoll_wait(ep, evs, 16, -1);

        if (n < 0 && errno != EINTR)
            return perror("epoll_wait"), 1;
        for (;;) {
            int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

            if (fd < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                    break;
                if (errno == EMFILE || errno == ENFILE || errno == ECONNABORTED)
                    continue;
                return perror("accept4"), 1;
            }
            /* a fresh socket's send buffer always has room for a few bytes */
            if (write(fd, msg, (size_t)nbytes) < 0) {
                /* peer already gone: nothing to do */
            }
            close(fd);
        }
    }
}

struct conn {
    int fd;
    int got;
};

static int start_conn(int ep, const struct sockaddr_in *sa, struct conn *c)
{
    struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->got = 0;
    ev.data.ptr = c;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        close(fd);
        return -1;
    }
    return 0;
}

static int client(int port, double secs, int conc, int nbytes)
{
    struct sockaddr_in sa = addr_of(port);
    struct conn *cs = calloc((size_t)conc, sizeof(*cs));
    struct epoll_event evs[256];
    long done = 0, errors = 0, shorts = 0, start_fail = 0;
    double t0, deadline, t1;
    int ep = epoll_create1(EPOLL_CLOEXEC), live = 0;
    char buf[MAX_BYTES * 2];

    if (!cs || ep < 0)
        return perror("init"), 1;
    t0 = now_s();
    deadline = t0 + secs;
    for (int i = 0; i < conc; i++) {
        if (start_conn(ep, &sa, &cs[i]) == 0)
            live++;
        else
            cs[i].fd = -1, start_fail++;
    }
    while (live > 0) {
        double t = now_s();
        int n;

        if (t >= deadline)
            break;
        n = epoll_wait(ep, evs, 256, 100);
        if (n < 0 && errno != EINTR)
            return perror("epoll_wait"), 1;
        t = now_s();
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            int fin = 0, err = 0;

            for (;;) {
                ssize_t r = read(c->fd, buf, sizeof(buf));

                if (r > 0) {
                    c->got += (int)r;
                    continue;
                }
                if (r == 0)
                    fin = 1;
                else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                    err = 1;
                break;
            }
            if (!fin && !err)
                continue;
            close(c->fd);
            c->fd = -1;
            live--;
            if (t < deadline) {
                if (err)
                    errors++;
                else if (c->got < nbytes)
                    shorts++;
                else
                    done++;
                if (start_conn(ep, &sa, c) == 0)
                    live++;
                else
                    start_fail++;
            }
        }
    }
    t1 = now_s();
    if (t1 > deadline)
        t1 = deadline;
    for (int i = 0; i < conc; i++)
        if (cs[i].fd >= 0)
            close(cs[i].fd);
    printf("conns=%ld errors=%ld short=%ld secs=%.3f rate=%.0f\n", done, errors + start_fail, shorts,
           t1 - t0, (double)done / (t1 - t0));
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 3 && strcmp(argv[1], "serve") == 0) {
        int nbytes = argc > 3 ? atoi(argv[3]) : 16;

        if (nbytes < 1 || nbytes > MAX_BYTES)
            nbytes = 16;
        return serve(atoi(argv[2]), nbytes);
    }
    if (argc >= 5 && strcmp(argv[1], "client") == 0) {
        int nbytes = argc > 5 ? atoi(argv[5]) : 16;

        if (nbytes < 1 || nbytes > MAX_BYTES)
            nbytes = 16;
        return client(atoi(argv[2]), atof(argv[3]), atoi(argv[4]), nbytes);
    }
    fprintf(stderr, "usage: conn_rate serve PORT [BYTES] | client PORT SECONDS CONC [BYTES]\n");
    return 2;
}
