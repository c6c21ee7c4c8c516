/* redis_proxy: the worker's connections to Redis servers.
 *
 * One connection per (cluster, host) per worker, shared by all the client
 * connections of that worker and pipelined, as Envoy's redis proxy does: a
 * few long-lived connections per server instead of one per client (Redis
 * pays per connection, and a client's first command does not wait for a
 * connect), and the server's AUTH is sent once per connection. Replies come
 * back in the order requests were written, so each connection keeps a queue
 * of the fragments waiting on it and hands each reply to the head. A client
 * that goes away leaves its entries in the queue with nobody to tell (the
 * reply is dropped when it comes).
 *
 * op_timeout as in Envoy: the timer runs while requests wait on a connected
 * server, restarts at each reply, and when it fires the connection is closed
 * and everything waiting on it is answered "upstream failure" (a timeout or
 * a lost connection leaves no way to tell which reply belongs to whom). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_proxy.h"

struct redis_upreq {
    struct redis_upreq *next;
    struct redis_frag *frag;     /* who gets the reply; NULL: nobody (cancelled, mirrored, our AUTH) */
    bool auth;                   /* the AUTH sent on connecting */
};

struct client {
    struct client *prev, *next;
    struct redis_pool *pool;
    size_t ci;                   /* the cluster's index in the config */
    char addr[128];              /* the host's "ip:port" */
    struct herald_upstream *u;
    bool connected;
    bool in_connect, failed_in_connect;
    struct redis_upreq *head, *tail;
    size_t npending;
    struct resp_decoder dec;     /* replies */
    struct herald_timer *op_timer;
    struct herald_timer *flush_timer;
    struct herald_buf *batch;    /* encoded requests held for max_buffer_size_before_flush */
};

struct redis_pool {
    struct redis_proxy_conf *conf;
    struct client *clients;
};

static const struct herald_upstream_cbs upstream_cbs;

static void buf_write(void *arg, const void *p, size_t n)
{
    herald_buf_add(arg, p, n);
}

struct redis_pool *redis_pool_new(struct redis_proxy_conf *conf)
{
    struct redis_pool *p = calloc(1, sizeof(*p));
    if (p)
        p->conf = conf;
    return p;
}

static void unlink_client(struct client *cl)
{
    if (cl->prev)
        cl->prev->next = cl->next;
    else if (cl->pool->clients == cl)
        cl->pool->clients = cl->next;
    if (cl->next)
        cl->next->prev = cl->prev;
    cl->prev = cl->next = NULL;
}

static void free_client(struct client *cl)
{
    if (cl->u)
        herald_upstream_close(cl->u, HERALD_CLOSE_RESET);
    herald_timer_free(cl->op_timer);
    herald_timer_free(cl->flush_timer);
    if (cl->batch)
        herald_buf_free(cl->batch);
    resp_decoder_fini(&cl->dec);
    free(cl);
}

/* The connection is lost (or given up): everyone waiting on it hears err. */
static void client_fail(struct client *cl, const char *err)
{
    struct redis_cluster *rc = &cl->pool->conf->clusters[cl->ci];
    struct redis_upreq *q = cl->head;

    HERALD_LOGF(HERALD_LOG_DEBUG, "redis_proxy", "connection to %s (cluster %s) failed: %zu request(s) waiting",
                cl->addr, rc->name, cl->npending);
    unlink_client(cl);
    if (cl->u) {
        herald_upstream_close(cl->u, HERALD_CLOSE_RESET);
        cl->u = NULL;
    }
    cl->head = cl->tail = NULL;
    if (cl->npending)
        herald_gauge_add(rc->upstream_rq_active, -(int64_t)cl->npending);
    cl->npending = 0;
    /* Answering may close a client connection, which cancels its other
     * entries here (frag = NULL): read frag only when its turn comes. */
    while (q) {
        struct redis_upreq *next = q->next;
        struct redis_frag *f = q->frag;
        free(q);
        if (f)
            redis_frag_done(f, NULL, err);
        q = next;
    }
    free_client(cl);
}

static void arm_op_timer(struct client *cl)
{
    if (cl->connected && cl->npending > 0 && cl->pool->conf->op_timeout_ms > 0)   /* 0s: no limit */
        herald_timer_arm(cl->op_timer, cl->pool->conf->op_timeout_ms);
    else
        herald_timer_cancel(cl->op_timer);
}

static void on_op_timeout(struct herald_timer *t, void *arg)
{
    struct client *cl = arg;
    struct redis_cluster *rc = &cl->pool->conf->clusters[cl->ci];

    herald_stat_inc(rc->upstream_rq_timeout);
    HERALD_LOGF(HERALD_LOG_DEBUG, "redis_proxy", "%s (cluster %s): no reply within op_timeout", cl->addr,
                rc->name);
    client_fail(cl, REDIS_UPSTREAM_FAILURE);
}

static void flush_batch(struct client *cl)
{
    herald_timer_cancel(cl->flush_timer);
    if (cl->u && cl->batch && herald_buf_len(cl->batch))
        herald_upstream_write(cl->u, cl->batch, false);
}

static void on_flush_timer(struct herald_timer *t, void *arg)
{
    flush_batch(arg);
}

/* One reply from the server: to the head of the queue. */
static int on_reply(struct client *cl, struct resp_value *v)
{
    struct redis_cluster *rc = &cl->pool->conf->clusters[cl->ci];
    struct redis_upreq *q = cl->head;

    if (!q) {
        resp_value_free(v);
        return -1;   /* a reply nobody asked for: the stream is out of step */
    }
    cl->head = q->next;
    if (!cl->head)
        cl->tail = NULL;
    cl->npending--;
    herald_gauge_add(rc->upstream_rq_active, -1);
    arm_op_timer(cl);
    if (q->auth) {
        if (v->type == RESP_ERROR)
            herald_log(HERALD_LOG_WARN, "redis_proxy", "AUTH to %s (cluster %s) refused: %s", cl->addr, rc->name,
                       v->str);
        resp_value_free(v);
    } else if (q->frag) {
        redis_frag_done(q->frag, v, NULL);
    } else {
        resp_value_free(v);
    }
    free(q);
    return 0;
}

static void up_on_data(void *arg, struct herald_buf *data, bool end_stream)
{
    struct client *cl = arg;
    struct iovec vec[16];
    uint8_t chunk[16384];
    size_t len = herald_buf_len(data), off = 0;
    bool bad = false;

    /* the first segments in place, the rest copied out in pieces */
    int nvec = herald_buf_peek(data, len, vec, 16);
    for (int i = 0; i < nvec && i < 16 && !bad; i++) {
        const uint8_t *p = vec[i].iov_base;
        size_t n = vec[i].iov_len;
        off += n;
        while (n > 0 && !bad) {
            size_t used;
            struct resp_value *v;
            enum resp_result r = resp_decode(&cl->dec, p, n, &used, &v);
            p += used;
            n -= used;
            if (r == RESP_ERR)
                bad = true;
            else if (r == RESP_DONE && on_reply(cl, v) < 0)
                bad = true;
        }
    }
    while (off < len && !bad) {
        size_t k = herald_buf_copyout(data, off, chunk, sizeof(chunk));
        if (!k)
            break;
        off += k;
        const uint8_t *p = chunk;
        while (k > 0 && !bad) {
            size_t used;
            struct resp_value *v;
            enum resp_result r = resp_decode(&cl->dec, p, k, &used, &v);
            p += used;
            k -= used;
            if (r == RESP_ERR)
                bad = true;
            else if (r == RESP_DONE && on_reply(cl, v) < 0)
                bad = true;
        }
    }
    herald_buf_drain(data, len);
    if (bad) {
        herald_log(HERALD_LOG_WARN, "redis_proxy", "%s (cluster %s) sent what is not a RESP reply (%s): "
                   "connection closed", cl->addr, cl->pool->conf->clusters[cl->ci].name,
                   cl->dec.error ? cl->dec.error : "a reply to no request");
        client_fail(cl, REDIS_UPSTREAM_FAILURE);
        return;
    }
    if (end_stream)
        client_fail(cl, REDIS_UPSTREAM_FAILURE);   /* the server closed: nothing more will come */
}

static void up_on_event(void *arg, enum herald_conn_event ev)
{
    struct client *cl = arg;

    switch (ev) {
    case HERALD_EV_CONNECTED:
        cl->connected = true;
        arm_op_timer(cl);
        break;
    case HERALD_EV_CONNECT_FAILED:
    case HERALD_EV_CONNECT_TIMEOUT:
    case HERALD_EV_REMOTE_CLOSE:
    case HERALD_EV_LOCAL_CLOSE:
        cl->u = NULL;   /* gone */
        if (cl->in_connect) {
            cl->failed_in_connect = true;
            break;
        }
        client_fail(cl, REDIS_UPSTREAM_FAILURE);
        break;
    default:
        /* ABOVE/BELOW_WRITE_HIGH: a shared connection is not paused for one
         * client; each client's own in-flight limit bounds what it queues */
        break;
    }
}

static const struct herald_upstream_cbs upstream_cbs = {
    .size = sizeof(struct herald_upstream_cbs),
    .on_data = up_on_data,
    .on_event = up_on_event,
};

static struct redis_upreq *enqueue(struct client *cl, struct redis_frag *f, bool auth)
{
    struct redis_upreq *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->frag = f;
    q->auth = auth;
    if (cl->tail)
        cl->tail->next = q;
    else
        cl->head = q;
    cl->tail = q;
    cl->npending++;
    struct redis_cluster *rc = &cl->pool->conf->clusters[cl->ci];
    herald_stat_inc(rc->upstream_rq_total);
    herald_gauge_add(rc->upstream_rq_active, 1);
    if (cl->npending == 1)
        arm_op_timer(cl);
    return q;
}

static struct client *client_new(struct redis_pool *p, size_t ci, struct herald_cluster *hc, struct herald_host *h,
                                 const char *addr)
{
    struct redis_cluster *rc = &p->conf->clusters[ci];
    struct resp_limits lim;
    struct client *cl = calloc(1, sizeof(*cl));

    if (!cl)
        return NULL;
    cl->pool = p;
    cl->ci = ci;
    snprintf(cl->addr, sizeof(cl->addr), "%s", addr);
    resp_limits_reply(&lim);
    if (resp_decoder_init(&cl->dec, &lim) < 0 || !(cl->op_timer = herald_timer_new(on_op_timeout, cl)) ||
        !(cl->flush_timer = herald_timer_new(on_flush_timer, cl))) {
        free_client(cl);
        return NULL;
    }
    enum herald_upstream_error why = HERALD_UPSTREAM_OK;
    cl->in_connect = true;
    cl->u = herald_upstream_connect(hc, h, &upstream_cbs, cl, &why);
    cl->in_connect = false;
    if (!cl->u || cl->failed_in_connect) {
        HERALD_LOGF(HERALD_LOG_DEBUG, "redis_proxy", "cannot connect to %s (cluster %s)%s", addr, rc->name,
                    why == HERALD_UPSTREAM_OVERFLOW ? ": circuit breaker max_connections" : "");
        free_client(cl);
        return NULL;
    }
    cl->next = p->clients;
    if (p->clients)
        p->clients->prev = cl;
    p->clients = cl;
    if (rc->auth_password) {
        /* the server's AUTH goes first on the connection (its reply is only logged when it is an error) */
        struct herald_buf *b = herald_buf_new();
        if (b) {
            resp_encode_array_header(rc->auth_username ? 3 : 2, buf_write, b);
            resp_encode_bulk("AUTH", 4, buf_write, b);
            if (rc->auth_username)
                resp_encode_bulk(rc->auth_username, rc->auth_username_len, buf_write, b);
            resp_encode_bulk(rc->auth_password, rc->auth_password_len, buf_write, b);
            if (enqueue(cl, NULL, true))
                herald_upstream_write(cl->u, b, false);
            herald_buf_free(b);
        }
    }
    HERALD_LOGF(HERALD_LOG_DEBUG, "redis_proxy", "connecting to %s (cluster %s)", addr, rc->name);
    return cl;
}

static struct client *find_client(struct redis_pool *p, size_t ci, const char *addr)
{
    for (struct client *cl = p->clients; cl; cl = cl->next)
        if (cl->ci == ci && strcmp(cl->addr, addr) == 0)
            return cl;
    return NULL;
}

const char *redis_pool_send(struct redis_pool *p, size_t ci, uint64_t hash, const struct resp_value *argv,
                            size_t argc, size_t key, const char *key_str, size_t key_len, struct redis_frag *f,
                            struct redis_upreq **upq)
{
    struct redis_proxy_conf *conf = p->conf;
    struct herald_cluster *hc = herald_cluster_get(conf->clusters[ci].name);
    if (!hc)
        return REDIS_NO_UPSTREAM_HOST;
    struct herald_host *h = herald_cluster_choose_host(hc, hash);
    if (!h)
        return REDIS_NO_UPSTREAM_HOST;
    const char *addr = herald_host_address(h);
    struct client *cl = find_client(p, ci, addr);
    if (!cl && !(cl = client_new(p, ci, hc, h, addr)))
        return REDIS_UPSTREAM_FAILURE;

    bool batching = conf->max_buffer_before_flush > 0;
    struct herald_buf *b = batching ? cl->batch : herald_buf_new();
    if (batching && !b)
        b = cl->batch = herald_buf_new();
    if (!b)
        return REDIS_UPSTREAM_FAILURE;
    struct redis_upreq *q = enqueue(cl, f, false);
    if (!q) {
        if (!batching)
            herald_buf_free(b);
        return REDIS_UPSTREAM_FAILURE;
    }
    resp_encode_array_header(argc, buf_write, b);
    for (size_t i = 0; i < argc; i++) {
        if (i == key)
            resp_encode_bulk(key_str, key_len, buf_write, b);
        else
            resp_encode_bulk(argv[i].str, argv[i].len, buf_write, b);
    }
    if (!batching) {
        herald_upstream_write(cl->u, b, false);
        herald_buf_free(b);
    } else if (herald_buf_len(b) >= conf->max_buffer_before_flush) {
        flush_batch(cl);
    } else {
        herald_timer_arm(cl->flush_timer, conf->buffer_flush_timeout_ms);
    }
    if (upq)
        *upq = q;
    return NULL;
}

void redis_upreq_cancel(struct redis_upreq *q)
{
    if (q)
        q->frag = NULL;
}

void redis_pool_free(struct redis_pool *p)
{
    if (!p)
        return;
    /* the worker is going: its client connections are gone already (they
     * cancelled their entries when they closed) */
    while (p->clients) {
        struct client *cl = p->clients;
        struct redis_cluster *rc = &p->conf->clusters[cl->ci];
        unlink_client(cl);
        if (cl->npending)
            herald_gauge_add(rc->upstream_rq_active, -(int64_t)cl->npending);
        for (struct redis_upreq *q = cl->head, *n; q; q = n) {
            n = q->next;
            free(q);
        }
        free_client(cl);
    }
    free(p);
}
