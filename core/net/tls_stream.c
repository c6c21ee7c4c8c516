/* See tls_stream.h for why herald drives downstream TLS itself. */
#include "config.h"

#include <errno.h>
#include <event2/buffer.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buffer.h"
#include "common.h"
#include "net/tls_stream.h"

#define TLS_RECORD 16384u   /* plaintext per SSL_write: one full record */
#define TLS_READ (16384u - EV_CHAIN_SLACK)   /* plaintext per SSL_read: a record, in a 16 KiB chain */

struct tls_stream {
    struct event *rev, *wev, *timer;
    struct bufferevent *bev;
    SSL *ssl;
    int fd;
    size_t high;
    size_t blocked_len;       /* an SSL_write to retry with the same bytes (OpenSSL's rule) */
    bool handshaking;
    bool read_enabled;        /* wanted by the owner */
    bool wm_held;             /* input at its high mark */
    struct evbuffer_cb_entry *wm_cb;   /* on the input only while held (see sock_reader.c) */
    uint64_t *rx;             /* where plaintext bytes read are counted, or NULL */
    bool ended;               /* the peer's stream ended or broke: no more reading */
    bool socket_drained;      /* the last recv came back short: nothing more is waiting */
    bool handshake_wants_write, write_wants_write;
    bool read_wants_write;    /* SSL_read must send first (a TLS 1.3 key update answer) */
    bool write_wants_read;    /* SSL_write must read first (renegotiation, which we refuse anyway) */
    short pending;            /* EOF/error seen right after data, told next turn */
    unsigned long err;
    bufferevent_data_cb readcb, writecb;
    bufferevent_event_cb eventcb;
    void *arg;
};

/* ------------------------------------------------------------ socket BIO */

/* OpenSSL's socket BIO with one addition: it remembers whether the last
 * read filled what OpenSSL offered, so a wake-up stops reading without
 * the read that would only say EAGAIN. recv(2), not read(2): see write_out
 * in connection.c. */
static int bio_sock_read(BIO *b, char *buf, int len)
{
    struct tls_stream *ts = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n = recv(ts->fd, buf, (size_t)len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        ts->socket_drained = true;
        BIO_set_retry_read(b);
        return -1;
    }
    ts->socket_drained = n < len;
    return (int)n;
}

static int bio_sock_write(BIO *b, const char *buf, int len)
{
    struct tls_stream *ts = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n = send(ts->fd, buf, (size_t)len, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_write(b);
    return (int)n;
}

static long bio_sock_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b; (void)num; (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;   /* writes are never buffered here */
}

static int bio_sock_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *bio_method;
static pthread_once_t bio_method_once = PTHREAD_ONCE_INIT;

static void bio_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "herald socket");
    if (!m)
        return;
    BIO_meth_set_read(m, bio_sock_read);
    BIO_meth_set_write(m, bio_sock_write);
    BIO_meth_set_ctrl(m, bio_sock_ctrl);
    BIO_meth_set_create(m, bio_sock_create);
    bio_method = m;
}

/* ---------------------------------------------------------------- events */

static void note_error(struct tls_stream *ts)
{
    unsigned long e;
    while ((e = ERR_get_error()))
        if (!ts->err)
            ts->err = e;
}

/* epoll interest follows what OpenSSL and the owner wait for; event_add and
 * event_del on an event already in that state cost nothing. */
static void set_events(struct tls_stream *ts, bool may_keep_read)
{
    bool want_read = !ts->ended && (ts->handshaking || ts->write_wants_read || (ts->read_enabled && !ts->wm_held));
    bool want_write = !ts->ended && (ts->handshake_wants_write || ts->write_wants_write || ts->read_wants_write);
    if (want_read)
        event_add(ts->rev, NULL);
    else if (!may_keep_read)
        event_del(ts->rev);
    if (want_write)
        event_add(ts->wev, NULL);
    else
        event_del(ts->wev);
}

static void update_events(struct tls_stream *ts) { set_events(ts, false); }

static void end(struct tls_stream *ts, short what)
{
    ts->ended = true;
    ts->pending = 0;
    update_events(ts);
    ts->eventcb(ts->bev, what, ts->arg);
}

/* What a failed SSL call means for the stream. */
static short failure(struct tls_stream *ts, int ssl_error, int ret)
{
    int saved = errno;
    note_error(ts);
    if (ssl_error == SSL_ERROR_ZERO_RETURN)
        return BEV_EVENT_EOF;                        /* close_notify */
    if (ssl_error == SSL_ERROR_SYSCALL && !ts->err)
        return ret == 0 || saved == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR;
    /* a peer that closes without close_notify is an EOF, not an error (most clients do) */
    if (!ts->handshaking && ts->err && ERR_GET_REASON(ts->err) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
        return BEV_EVENT_EOF;
    return BEV_EVENT_ERROR;
}

static void handshake(struct tls_stream *ts)
{
    ERR_clear_error();
    int r = SSL_do_handshake(ts->ssl);
    if (r == 1) {
        ts->handshaking = false;
        ts->handshake_wants_write = false;
        if (ts->timer)
            event_del(ts->timer);
        /* The owner enables reading from the callback: dropping the read
         * interest first would cost an epoll_ctl DEL and ADD per connection.
         * If it does not, the first read event drops it (on_socket_readable). */
        set_events(ts, true);
        ts->eventcb(ts->bev, BEV_EVENT_CONNECTED, ts->arg);
        return;
    }
    int e = SSL_get_error(ts->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        ts->handshake_wants_write = e == SSL_ERROR_WANT_WRITE;
        update_events(ts);
        return;
    }
    end(ts, (short)(BEV_EVENT_READING | failure(ts, e, r)));
}

/* Everything that arrived, decrypted into the input, then one callback. */
static void on_input_drained(struct evbuffer *in, const struct evbuffer_cb_info *info, void *arg);

static void do_read(struct tls_stream *ts)
{
    struct evbuffer *in = bufferevent_get_input(ts->bev);
    size_t total = 0;
    short why = 0;

    if (ts->pending) {
        end(ts, ts->pending);
        return;
    }
    ts->read_wants_write = false;
    evbuffer_unfreeze(in, 0);   /* the bufferevent keeps the input's end frozen */
    for (;;) {
        size_t len = evbuffer_get_length(in), want = TLS_READ;
        if (ts->high) {
            if (len >= ts->high) {
                ts->wm_held = true;
                if (!ts->wm_cb)
                    ts->wm_cb = evbuffer_add_cb(in, on_input_drained, ts);
                break;
            }
            if (ts->high - len < want)
                want = ts->high - len;
        }
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(in, (ev_ssize_t)want, &v, 1) < 1)
            break;
        ERR_clear_error();
        int n = SSL_read(ts->ssl, v.iov_base, (int)want);
        if (n > 0) {
            v.iov_len = (size_t)n;
            evbuffer_commit_space(in, &v, 1);
            total += (size_t)n;
            if (ts->socket_drained && !SSL_has_pending(ts->ssl))
                break;   /* all that arrived is in: no read(2) just to hear EAGAIN */
            continue;
        }
        int e = SSL_get_error(ts->ssl, n);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_WANT_WRITE) {
            ts->read_wants_write = true;
            break;
        }
        why = failure(ts, e, n);
        break;
    }
    evbuffer_freeze(in, 0);
    if (ts->rx)
        *ts->rx += total;
    update_events(ts);
    if (total == 0) {
        if (why)
            end(ts, (short)(BEV_EVENT_READING | why));
        return;
    }
    if (why) {
        /* the data first; the end on the next loop turn (the callback may
         * stop reading, and frees happen from deferred events anyway) */
        ts->pending = (short)(BEV_EVENT_READING | why);
        event_active(ts->rev, EV_READ, 1);
    }
    ts->readcb(ts->bev, ts->arg);
}

/* The owner drained the input: reading resumes below the high mark. */
static void on_input_drained(struct evbuffer *in, const struct evbuffer_cb_info *info, void *arg)
{
    struct tls_stream *ts = arg;
    if (ts->wm_held && info->n_deleted && evbuffer_get_length(in) < ts->high) {
        ts->wm_held = false;
        evbuffer_remove_cb_entry(in, ts->wm_cb);   /* libevent saved its next entry before calling us */
        ts->wm_cb = NULL;
        update_events(ts);
        if (ts->read_enabled && !ts->ended && SSL_has_pending(ts->ssl))
            event_active(ts->rev, EV_READ, 1);
    }
}

/* Both socket events: nothing after the end, and the handshake first.
 * true: the event was for those. */
static bool ended_or_handshake(struct tls_stream *ts)
{
    if (ts->ended)
        return true;
    if (ts->handshaking) {
        handshake(ts);
        return true;
    }
    return false;
}

/* Output that waited for the socket: written now, and the owner told.
 * false: the connection broke. */
static bool retry_write(struct tls_stream *ts)
{
    if (tls_stream_flush(ts) < 0) {
        end(ts, BEV_EVENT_WRITING | BEV_EVENT_ERROR);
        return false;
    }
    ts->writecb(ts->bev, ts->arg);
    return true;
}

static void on_socket_readable(evutil_socket_t fd, short what, void *arg)
{
    struct tls_stream *ts = arg;
    (void)fd; (void)what;
    if (ended_or_handshake(ts))
        return;
    if (ts->write_wants_read) {
        ts->write_wants_read = false;
        if (!retry_write(ts) || ts->ended || !ts->read_enabled)
            return;
    }
    if (ts->pending || (ts->read_enabled && !ts->wm_held))
        do_read(ts);
    else
        update_events(ts);   /* interest kept past the handshake that nobody wants now */
}

static void on_socket_writable(evutil_socket_t fd, short what, void *arg)
{
    struct tls_stream *ts = arg;
    (void)fd; (void)what;
    if (ended_or_handshake(ts))
        return;
    if (ts->read_wants_write) {
        do_read(ts);
        if (ts->ended)
            return;
    }
    if (ts->write_wants_write)
        retry_write(ts);
}

static void on_handshake_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct tls_stream *ts = arg;
    (void)fd; (void)what;
    if (ts->handshaking && !ts->ended)
        end(ts, BEV_EVENT_READING | BEV_EVENT_TIMEOUT);
}

/* ------------------------------------------------------------------- API */

struct tls_stream *tls_stream_new(struct event_base *base, struct bufferevent *bev, int fd, SSL *ssl, size_t high,
                                  uint64_t handshake_timeout_ms, bufferevent_data_cb readcb,
                                  bufferevent_data_cb writecb, bufferevent_event_cb eventcb, void *arg)
{
    pthread_once(&bio_method_once, bio_method_init);
    BIO *bio = bio_method ? BIO_new(bio_method) : NULL;
    if (!bio)
        return NULL;
    struct tls_stream *ts = xcalloc(1, sizeof(*ts));
    ts->bev = bev;
    ts->ssl = ssl;
    ts->fd = fd;
    ts->high = high;
    ts->readcb = readcb;
    ts->writecb = writecb;
    ts->eventcb = eventcb;
    ts->arg = arg;
    ts->handshaking = true;
    BIO_set_data(bio, ts);
    SSL_set_bio(ssl, bio, bio);
    /* one read(2) takes all that arrived; retried writes may come from a
     * moved buffer (evbuffer_pullup) */
    SSL_set_read_ahead(ssl, 1);
    SSL_set_mode(ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_set_accept_state(ssl);
    ts->rev = event_new(base, fd, EV_READ | EV_PERSIST, on_socket_readable, ts);
    ts->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, on_socket_writable, ts);
    if (handshake_timeout_ms) {
        struct timeval tv = {(time_t)(handshake_timeout_ms / 1000), (suseconds_t)(handshake_timeout_ms % 1000) * 1000};
        ts->timer = evtimer_new(base, on_handshake_timeout, ts);
        evtimer_add(ts->timer, &tv);
    }
    update_events(ts);   /* the ClientHello comes when the socket is readable */
    return ts;
}

void tls_stream_read_enable(struct tls_stream *ts)
{
    if (ts->read_enabled)
        return;
    ts->read_enabled = true;
    update_events(ts);
    /* Records OpenSSL already holds raise no socket event: read them now
     * (after the handshake, a request often came in with the Finished). */
    if (!ts->handshaking && !ts->ended && (SSL_has_pending(ts->ssl) || ts->pending))
        event_active(ts->rev, EV_READ, 1);
}

void tls_stream_read_disable(struct tls_stream *ts)
{
    if (!ts->read_enabled)
        return;
    ts->read_enabled = false;
    update_events(ts);
}

int tls_stream_flush(struct tls_stream *ts)
{
    if (ts->handshaking || ts->write_wants_read)
        return 0;
    struct evbuffer *out = bufferevent_get_output(ts->bev);
    int rc = 0;
    size_t len;
    evbuffer_unfreeze(out, 1);   /* the bufferevent keeps the output's start frozen */
    while ((len = evbuffer_get_length(out)) > 0) {
        size_t n = ts->blocked_len ? ts->blocked_len : len < TLS_RECORD ? len : TLS_RECORD;
        unsigned char *p = evbuffer_pullup(out, (ev_ssize_t)n);
        ERR_clear_error();
        int r = SSL_write(ts->ssl, p, (int)n);
        if (r > 0) {
            evbuffer_drain(out, (size_t)r);
            ts->blocked_len = 0;
            continue;
        }
        int e = SSL_get_error(ts->ssl, r);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            ts->blocked_len = n;
            ts->write_wants_read = e == SSL_ERROR_WANT_READ;
            break;
        }
        note_error(ts);
        rc = -1;
        break;
    }
    evbuffer_freeze(out, 1);
    ts->write_wants_write = rc == 0 && evbuffer_get_length(out) > 0 && !ts->write_wants_read;
    if (rc == 0)
        update_events(ts);
    return rc;
}

void tls_stream_stop(struct tls_stream *ts)
{
    ts->ended = true;
    ts->pending = 0;
    if (ts->timer)
        event_del(ts->timer);
    update_events(ts);
}

unsigned long tls_stream_error(const struct tls_stream *ts) { return ts->err; }

void tls_stream_count(struct tls_stream *ts, uint64_t *rx) { ts->rx = rx; }

void tls_stream_free(struct tls_stream *ts)
{
    if (!ts)
        return;
    if (ts->wm_cb)
        evbuffer_remove_cb_entry(bufferevent_get_input(ts->bev), ts->wm_cb);
    event_free(ts->rev);
    event_free(ts->wev);
    if (ts->timer)
        event_free(ts->timer);
    SSL_free(ts->ssl);   /* and the BIO */
    free(ts);
}
