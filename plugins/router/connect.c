/* connect.c: a CONNECT this proxy ends itself (the route's upgrade_configs
 * entry for CONNECT has connect_config, Envoy's "CONNECT termination").
 * Instead of an HTTP request to the cluster, a plain TCP connection to one of
 * its hosts: once it is up the router hears a 200 through the same callbacks
 * an HTTP upstream request uses, the request body goes to the host as it
 * comes and the host's bytes come back as the response body; each side's end
 * is a half-close of its direction. Bytes the client sends before the
 * connection is up are kept and written first. */
#include <stdlib.h>

#include "router.h"

struct connect_tunnel {
    const struct herald_http_upstream_cbs *cbs;
    void *arg;
    struct herald_upstream *up;      /* NULL once the core dropped it */
    struct herald_buf *early;        /* client bytes before the connection was up */
    bool early_end;
    bool connected, ended_out, ended_in;
    bool paused;
    unsigned in_cb;                  /* inside one of our callbacks to the router */
    bool freed;                      /* the router freed it during a callback */
};

static void tunnel_destroy(struct connect_tunnel *t)
{
    if (t->up) {
        /* both directions done: let the last bytes out; cancelled: drop them */
        herald_upstream_close(t->up, t->ended_out && t->ended_in ? HERALD_CLOSE_FLUSH : HERALD_CLOSE_RESET);
        t->up = NULL;
    }
    if (t->early)
        herald_buf_free(t->early);
    free(t);
}

/* Around a callback that may free t: false when it did (t is gone). */
static void enter(struct connect_tunnel *t)
{
    t->in_cb++;
}

static bool leave(struct connect_tunnel *t)
{
    if (--t->in_cb == 0 && t->freed) {
        tunnel_destroy(t);
        return false;
    }
    return !t->freed;
}

/* As an HTTP upstream request: gone once its on_reset returns. */
static void tunnel_reset(struct connect_tunnel *t, enum herald_upstream_reset why)
{
    enter(t);
    t->freed = true;
    t->cbs->on_reset(t->arg, why);
    leave(t);
}

static void on_connected(struct connect_tunnel *t)
{
    t->connected = true;
    if (t->paused)
        herald_upstream_pause_reading(t->up, HERALD_PAUSE_PEER);
    struct herald_headers *h = herald_headers_new();
    herald_headers_set(h, ":status", "200");
    enter(t);
    t->cbs->on_headers(t->arg, h, false);
    if (!leave(t) || !t->up)
        return;
    if (t->early) {
        struct herald_buf *b = t->early;
        t->early = NULL;
        herald_upstream_write(t->up, b, t->early_end);
        herald_buf_free(b);
        t->ended_out = t->early_end;
    }
}

static void up_data(void *arg, struct herald_buf *data, bool end_stream)
{
    struct connect_tunnel *t = arg;
    if (t->freed || t->ended_in) {
        herald_buf_drain(data, herald_buf_len(data));
        return;
    }
    t->ended_in = end_stream;
    enter(t);
    t->cbs->on_data(t->arg, data, end_stream);
    leave(t);
}

static void up_event(void *arg, enum herald_conn_event ev)
{
    struct connect_tunnel *t = arg;
    switch (ev) {
    case HERALD_EV_CONNECTED:
        if (!t->freed && !t->connected)
            on_connected(t);
        break;
    case HERALD_EV_CONNECT_FAILED:
    case HERALD_EV_CONNECT_TIMEOUT:
        t->up = NULL;
        if (!t->freed)
            tunnel_reset(t, HERALD_UPSTREAM_RESET_CONNECT_FAILURE);
        break;
    case HERALD_EV_REMOTE_CLOSE:
    case HERALD_EV_LOCAL_CLOSE:
        t->up = NULL;
        if (t->freed)
            break;
        if (!t->connected)
            tunnel_reset(t, HERALD_UPSTREAM_RESET_CONNECT_FAILURE);
        else if (!t->ended_in)
            /* gone without its end (a reset, or closed before our end went out) */
            tunnel_reset(t, HERALD_UPSTREAM_RESET_REMOTE);
        break;
    case HERALD_EV_ABOVE_WRITE_HIGH:
    case HERALD_EV_BELOW_WRITE_LOW:
        if (!t->freed && t->cbs->on_watermark) {
            enter(t);
            t->cbs->on_watermark(t->arg, ev == HERALD_EV_ABOVE_WRITE_HIGH);
            leave(t);
        }
        break;
    default:
        break;
    }
}

static const struct herald_upstream_cbs tunnel_cbs = {
    .size = sizeof(struct herald_upstream_cbs),
    .on_data = up_data,
    .on_event = up_event,
};

struct connect_tunnel *connect_tunnel_start(struct herald_cluster *c, struct herald_host *h,
                                            const struct herald_conn *d, const struct herald_http_upstream_cbs *cbs,
                                            void *arg, enum herald_upstream_reset *why)
{
    struct connect_tunnel *t = calloc(1, sizeof(*t));
    if (!t)
        abort();
    t->cbs = cbs;
    t->arg = arg;
    enum herald_upstream_error err = HERALD_UPSTREAM_OK;
    t->up = herald_upstream_connect_from(c, h, &tunnel_cbs, t, &err, d);
    if (!t->up) {
        *why = err == HERALD_UPSTREAM_OVERFLOW ? HERALD_UPSTREAM_RESET_OVERFLOW : HERALD_UPSTREAM_RESET_CONNECT_FAILURE;
        free(t);
        return NULL;
    }
    return t;
}

void connect_tunnel_send(struct connect_tunnel *t, struct herald_buf *data, bool end_stream)
{
    if (t->ended_out) {
        herald_buf_drain(data, herald_buf_len(data));
        return;
    }
    if (!t->connected) {
        if (!t->early)
            t->early = herald_buf_new();
        herald_buf_move(t->early, data, SIZE_MAX);
        t->early_end = t->early_end || end_stream;
        return;
    }
    if (!t->up) {
        herald_buf_drain(data, herald_buf_len(data));
        return;
    }
    t->ended_out = end_stream;
    herald_upstream_write(t->up, data, end_stream);
}

void connect_tunnel_pause_reading(struct connect_tunnel *t, bool pause)
{
    if (t->paused == pause)
        return;
    t->paused = pause;
    if (!t->up || !t->connected)
        return;
    if (pause)
        herald_upstream_pause_reading(t->up, HERALD_PAUSE_PEER);
    else
        herald_upstream_resume_reading(t->up, HERALD_PAUSE_PEER);
}

void connect_tunnel_free(struct connect_tunnel *t)
{
    if (t->in_cb) {
        t->freed = true;
        return;
    }
    tunnel_destroy(t);
}
