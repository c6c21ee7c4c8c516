/* h2_floor.c -- the least CPU an HTTP/2-over-TLS to HTTP/1.1 proxy can spend
 * per request with the libraries DESIGN.md names (OpenSSL 3 for TLS, nghttp2
 * for HTTP/2): a measuring instrument for bench/cpu_split.sh (MODE=h2), not a
 * proxy anyone should run.
 *
 * WHY: issue 4 asks for herald's CPU per h2 request <= 0.8 x HAProxy's
 * (h2load -c 10 -m 10 over TLS, answers from an HTTP/1.1 backend). HAProxy
 * has its own HPACK and frame code; herald uses nghttp2 as the design says.
 * This program does only what such a proxy cannot skip: TLS records in and
 * out, nghttp2's session (frames, HPACK, flow control), one HTTP/1.1 request
 * written and one answer read per stream on a kept-alive backend connection,
 * and the answer submitted back. No header map, no routing, no timers, no
 * stats, no filters, no libevent (raw epoll), only :path and a Host sent
 * upstream, only :status and content-length sent back. If its us/op is above
 * 0.8 x HAProxy's, the target cannot be met by herald's own code on nghttp2.
 *
 * usage: h2_floor LISTEN_PORT BACKEND_PORT CERT KEY        (127.0.0.1)
 * build: cc -O2 -o h2_floor h2_floor.c -lnghttp2 -lssl -lcrypto
 *
 * The backend must answer every request with a Content-Length (nginx does,
 * for `return` and for static files) and keep the connection alive. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define IO_BUF 65536

enum kind { LISTENER, CLIENT, UPSTREAM };

struct client;

struct upstream {               /* one kept-alive HTTP/1.1 backend connection */
    enum kind kind;
    int fd;
    struct upstream *next_free;
    struct client *owner;       /* while a stream uses it */
    int32_t stream_id;
    char *buf;
    size_t len, cap;
};

struct stream {                 /* an answer on its way back */
    char *body;
    size_t len, off;
};

struct client {
    enum kind kind;
    int fd;
    SSL *ssl;
    nghttp2_session *h2;
    int handshaken, dirty, dead, want_write;
    int inflight;               /* backend requests still to answer: the client is freed only at 0 */
    struct client *next_dirty;
    char path[1024];            /* of the stream whose headers are being read */
    size_t path_len;
    char *out;                  /* bytes nghttp2 produced, not yet accepted by SSL_write */
    size_t out_len, out_cap;
};

static int ep, backend_port;
static struct upstream *free_upstreams;
static struct client *dirty_list;
static unsigned long upstream_opened;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void watch(int fd, void *p, unsigned events, int op)
{
    struct epoll_event ev = {.events = events, .data.ptr = p};
    if (epoll_ctl(ep, op, fd, &ev) < 0)
        die("epoll_ctl");
}

static void mark_dirty(struct client *c)
{
    if (!c->dirty) {
        c->dirty = 1;
        c->next_dirty = dirty_list;
        dirty_list = c;
    }
}

static struct upstream *upstream_get(void)
{
    struct upstream *u = free_upstreams;
    if (u) {
        free_upstreams = u->next_free;
        return u;
    }
    u = calloc(1, sizeof(*u));
    u->kind = UPSTREAM;
    u->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(backend_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(u->fd, (struct sockaddr *)&a, sizeof(a)) < 0) /* blocking: only while warming up */
        die("connect to backend");
    int one = 1;
    setsockopt(u->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    u->cap = IO_BUF;
    u->buf = malloc(u->cap);
    watch(u->fd, u, EPOLLIN, EPOLL_CTL_ADD);
    upstream_opened++;
    return u;
}

/* ------------------------------------------------------------- nghttp2 glue */

static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *user)
{
    (void)s, (void)id, (void)user;
    struct stream *st = src->ptr;
    size_t n = st->len - st->off < len ? st->len - st->off : len;
    memcpy(buf, st->body + st->off, n);
    st->off += n;
    if (st->off == st->len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
    (void)s, (void)f, (void)flags;
    struct client *c = user;
    if (nlen == 5 && memcmp(name, ":path", 5) == 0 && vlen < sizeof(c->path)) {
        memcpy(c->path, value, vlen);
        c->path_len = vlen;
    }
    return 0;
}

static void send_upstream(struct client *c, int32_t id)
{
    struct upstream *u = upstream_get();
    u->owner = c;
    c->inflight++;
    u->stream_id = id;
    u->len = 0;
    char req[1200];
    int n = snprintf(req, sizeof(req), "GET %.*s HTTP/1.1\r\nHost: backend\r\n\r\n", (int)c->path_len, c->path);
    if (send(u->fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        die("send to backend");
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
    (void)s;
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        send_upstream(user, f->hd.stream_id);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t err, void *user)
{
    (void)err, (void)user;
    struct stream *st = nghttp2_session_get_stream_user_data(s, id);
    if (st) {
        free(st->body);
        free(st);
    }
    return 0;
}

static nghttp2_session_callbacks *callbacks(void)
{
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    return cb;
}

/* -------------------------------------------------------------- connections */

static void client_close(struct client *c)
{
    c->dead = 1;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    mark_dirty(c);              /* the loop's end frees it once no backend answer can name it */
}

/* One SSL_write per loop turn and client, of everything nghttp2 has queued. */
static void client_flush(struct client *c)
{
    if (c->dead || !c->handshaken)
        return;
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->h2, &data);
        if (n <= 0)
            break;
        if (c->out_len + (size_t)n > c->out_cap) {
            c->out_cap = (c->out_len + (size_t)n) * 2;
            c->out = realloc(c->out, c->out_cap);
        }
        memcpy(c->out + c->out_len, data, (size_t)n);
        c->out_len += (size_t)n;
    }
    if (!c->out_len)
        return;
    int w = SSL_write(c->ssl, c->out, (int)c->out_len);
    if (w > 0) {
        memmove(c->out, c->out + w, c->out_len - (size_t)w);
        c->out_len -= (size_t)w;
    } else if (SSL_get_error(c->ssl, w) != SSL_ERROR_WANT_WRITE) {
        client_close(c);
        return;
    }
    int want = c->out_len > 0;
    if (want != c->want_write) {
        c->want_write = want;
        watch(c->fd, c, EPOLLIN | (want ? EPOLLOUT : 0), EPOLL_CTL_MOD);
    }
}

static void client_readable(struct client *c)
{
    if (!c->handshaken) {
        int r = SSL_accept(c->ssl);
        if (r <= 0) {
            int e = SSL_get_error(c->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                client_close(c);
            return;
        }
        c->handshaken = 1;
        static nghttp2_session_callbacks *cb;
        if (!cb)
            cb = callbacks();
        nghttp2_session_server_new(&c->h2, cb, c);
        nghttp2_settings_entry set[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100}};
        nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, set, 1);
        mark_dirty(c);
    }
    static char buf[IO_BUF];
    for (;;) {
        int n = SSL_read(c->ssl, buf, sizeof(buf));
        if (n <= 0) {
            int e = SSL_get_error(c->ssl, n);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                client_close(c);
            break;
        }
        if (nghttp2_session_mem_recv(c->h2, (uint8_t *)buf, (size_t)n) < 0) {
            client_close(c);
            break;
        }
        mark_dirty(c);
        if (!SSL_has_pending(c->ssl) && (size_t)n < sizeof(buf))
            break;              /* a short read: the socket is likely empty, epoll says if not */
    }
}

/* Parse as little of the HTTP/1.1 answer as a proxy must: its status and
 * its length; once whole, hand it to the stream. */
static void upstream_readable(struct upstream *u)
{
    for (;;) {
        if (u->cap - u->len < 4096) {
            u->cap *= 2;
            u->buf = realloc(u->buf, u->cap);
        }
        size_t room = u->cap - u->len;
        ssize_t n = recv(u->fd, u->buf + u->len, room, 0);
        if (n <= 0) {
            if (n < 0 && errno == EAGAIN)
                break;
            fprintf(stderr, "backend closed\n");
            exit(1);
        }
        u->len += (size_t)n;
        if ((size_t)n < room)
            break;              /* short read: the socket is empty */
    }
    char *end = memmem(u->buf, u->len, "\r\n\r\n", 4);
    if (!end || !u->owner)
        return;
    size_t head = (size_t)(end + 4 - u->buf), clen = 0;
    for (char *p = u->buf; p < end; p++)
        if (*p == '\n' && strncasecmp(p + 1, "content-length:", 15) == 0) {
            clen = strtoul(p + 16, NULL, 10);
            break;
        }
    if (u->len < head + clen)
        return;
    struct client *c = u->owner;
    c->inflight--;
    if (!c->dead) {
        struct stream *st = malloc(sizeof(*st));
        st->body = malloc(clen ? clen : 1);
        memcpy(st->body, u->buf + head, clen);
        st->len = clen;
        st->off = 0;
        char status[4] = {u->buf[9], u->buf[10], u->buf[11], 0}, length[24];
        int ll = snprintf(length, sizeof(length), "%zu", clen);
        nghttp2_nv nv[] = {
            {(uint8_t *)":status", (uint8_t *)status, 7, 3, NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)"content-length", (uint8_t *)length, 14, (size_t)ll, NGHTTP2_NV_FLAG_NONE},
        };
        nghttp2_data_provider dp = {.source.ptr = st, .read_callback = read_body};
        if (nghttp2_session_set_stream_user_data(c->h2, u->stream_id, st) != 0) {
            free(st->body);     /* the client reset the stream meanwhile */
            free(st);
        } else if (nghttp2_submit_response(c->h2, u->stream_id, nv, 2, &dp) != 0) {
            nghttp2_session_set_stream_user_data(c->h2, u->stream_id, NULL);
            free(st->body);
            free(st);
        }
        mark_dirty(c);
    } else if (!c->inflight) {
        mark_dirty(c);
    }
    u->owner = NULL;
    u->len = 0;
    u->next_free = free_upstreams;
    free_upstreams = u;
}

static int select_h2(SSL *s, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                     unsigned inlen, void *arg)
{
    (void)s, (void)arg;
    unsigned char *o;
    if (nghttp2_select_next_protocol(&o, outlen, in, inlen) != 1)
        return SSL_TLSEXT_ERR_NOACK;
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 4096) < 0)
        die("listen");
    return fd;
}

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: h2_floor LISTEN_PORT BACKEND_PORT CERT KEY\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_term);
    backend_port = atoi(argv[2]);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, argv[3]) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, argv[4], SSL_FILETYPE_PEM) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    SSL_CTX_set_alpn_select_cb(ctx, select_h2, NULL);
    /* without it OpenSSL reads each record in two read(2)s, header then body */
    SSL_CTX_set_read_ahead(ctx, 1);
    ep = epoll_create1(0);
    static enum kind listener = LISTENER;
    int lfd = listen_on(atoi(argv[1]));
    watch(lfd, &listener, EPOLLIN, EPOLL_CTL_ADD);
    struct client *graveyard = NULL;
    struct epoll_event evs[256];
    unsigned long clients = 0;
    while (!stop) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            enum kind *k = evs[i].data.ptr;
            if (*k == LISTENER) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    int one = 1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    struct client *c = calloc(1, sizeof(*c));
                    c->kind = CLIENT;
                    c->fd = fd;
                    c->ssl = SSL_new(ctx);
                    SSL_set_fd(c->ssl, fd);
                    watch(fd, c, EPOLLIN, EPOLL_CTL_ADD);
                    clients++;
                }
            } else if (*k == CLIENT) {
                struct client *c = (struct client *)k;
                if (!c->dead && (evs[i].events & EPOLLOUT))
                    mark_dirty(c);
                if (!c->dead && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                    client_readable(c);
            } else {
                upstream_readable((struct upstream *)k);
            }
        }
        /* what nghttp2 queued in this turn goes out in one TLS write per client */
        while (dirty_list) {
            struct client *c = dirty_list;
            dirty_list = c->next_dirty;
            c->dirty = 0;
            client_flush(c);
            if (c->dead && !c->inflight && !c->dirty) { /* dirty again: closed by its flush, popped later */
                c->next_dirty = graveyard;
                graveyard = c;
            }
        }
        for (struct client *c = graveyard, *next; c; c = next) {
            next = c->next_dirty;
            if (c->h2)
                nghttp2_session_del(c->h2);
            SSL_free(c->ssl);
            free(c->out);
            free(c);
        }
        graveyard = NULL;
    }
    fprintf(stderr, "h2_floor: %lu client connections, %lu backend connections\n", clients, upstream_opened);
    return 0;
}
