/* mysql_proxy: the MySQL/MariaDB wire protocol decoder (see codec.h). */
#include <stdlib.h>
#include <string.h>

#include "codec.h"

static const char *const phase_names[] = {"init", "login", "auth", "command", "ssl", "failed", "opaque"};

const char *mysql_phase_name(enum mysql_phase p)
{
    return (unsigned)p < sizeof(phase_names) / sizeof(phase_names[0]) ? phase_names[p] : "?";
}

static int dir_init(struct mysql_dir *d, size_t cap)
{
    memset(d, 0, sizeof(*d));
    d->cap = cap;
    d->buf = malloc(cap + 1);
    return d->buf ? 0 : -1;
}

int mysql_codec_init(struct mysql_codec *c, mysql_ev_fn cb, void *arg)
{
    memset(c, 0, sizeof(*c));
    c->cb = cb;
    c->arg = arg;
    if (dir_init(&c->c2s, MYSQL_CAP_CLIENT) < 0 || dir_init(&c->s2c, MYSQL_CAP_SERVER) < 0) {
        mysql_codec_fini(c);
        return -1;
    }
    return 0;
}

void mysql_codec_fini(struct mysql_codec *c)
{
    free(c->c2s.buf);
    free(c->s2c.buf);
    c->c2s.buf = c->s2c.buf = NULL;
}

static void emit(struct mysql_codec *c, enum mysql_event type, const struct mysql_dir *d, const char *text)
{
    struct mysql_ev ev = {.type = type, .seq = d->seq, .text = text, .text_len = text ? strlen(text) : 0,
                          .truncated = d->total > d->have, .payload_len = d->total};
    if (c->cb)
        c->cb(c->arg, &ev);
}

static uint32_t le16(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static uint32_t le32(const uint8_t *p)
{
    return le16(p) | le16(p + 2) << 16;
}

/* A length-encoded integer at *pos (< end); false when it does not fit. */
static bool lenenc(const uint8_t *b, size_t end, size_t *pos, uint64_t *out)
{
    if (*pos >= end)
        return false;
    uint8_t f = b[*pos];
    size_t n = f < 0xfb ? 0 : f == 0xfc ? 2 : f == 0xfd ? 3 : f == 0xfe ? 8 : SIZE_MAX;
    if (n == SIZE_MAX || end - *pos - 1 < n)
        return false;
    if (n == 0) {
        *out = f;
    } else {
        *out = 0;
        for (size_t i = 0; i < n; i++)
            *out |= (uint64_t)b[*pos + 1 + i] << (8 * i);
    }
    *pos += 1 + n;
    return true;
}

/* The NUL-terminated string at pos, or NULL when it is not terminated within have. */
static const char *cstr(const struct mysql_dir *d, size_t pos)
{
    if (pos >= d->have || !memchr(d->buf + pos, 0, d->have - pos))
        return NULL;
    return (const char *)d->buf + pos;
}

static void client_login(struct mysql_codec *c, struct mysql_dir *d)
{
    const uint8_t *b = d->buf;
    size_t n = d->have;

    if (d->seq != (uint8_t)(c->last_auth_seq + 1))
        emit(c, MYSQL_EV_PROTOCOL_ERROR, d, "handshake response out of sequence");
    c->last_auth_seq = d->seq;
    if (n < 2) {
        c->phase = MYSQL_PH_AUTH;
        emit(c, MYSQL_EV_DECODER_ERROR, d, "short handshake response");
        return;
    }
    bool p41 = le16(b) & MYSQL_CLIENT_PROTOCOL_41;
    if (p41 && n < 4) {
        c->phase = MYSQL_PH_AUTH;
        emit(c, MYSQL_EV_DECODER_ERROR, d, "short handshake response");
        return;
    }
    c->client_caps = p41 ? le32(b) : le16(b);
    if ((c->client_caps & MYSQL_CLIENT_SSL) && d->total == (p41 ? 32u : 5u)) {
        c->phase = MYSQL_PH_SSL;
        emit(c, MYSQL_EV_SSL_REQUEST, d, NULL);
        return;
    }
    c->phase = MYSQL_PH_AUTH;
    size_t pos = p41 ? 32 : 5;
    const char *user = cstr(d, pos);
    if (!user) {
        emit(c, MYSQL_EV_DECODER_ERROR, d, "handshake response without a user name");
        return;
    }
    pos += strlen(user) + 1;
    const char *db = NULL;
    bool ok = true;
    if (c->client_caps & MYSQL_CLIENT_PLUGIN_AUTH_LENENC) {
        uint64_t alen;
        ok = lenenc(b, n, &pos, &alen) && alen <= n - pos;
        if (ok)
            pos += (size_t)alen;
    } else if (c->client_caps & MYSQL_CLIENT_SECURE_CONNECTION) {
        ok = pos < n && b[pos] <= n - pos - 1;
        if (ok)
            pos += 1 + b[pos];
    } else {
        const char *a = cstr(d, pos);
        if (a)
            pos += strlen(a) + 1;
        else
            pos = n;
    }
    if (ok && (c->client_caps & MYSQL_CLIENT_CONNECT_WITH_DB)) {
        db = cstr(d, pos);
        if (db && !*db)
            db = NULL;
    }
    if (!ok && d->total == d->have) {
        emit(c, MYSQL_EV_DECODER_ERROR, d, "bad auth data length in handshake response");
        return;
    }
    struct mysql_ev ev = {.type = MYSQL_EV_LOGIN, .seq = d->seq, .text = user, .text_len = strlen(user),
                          .db = db, .payload_len = d->total, .truncated = d->total > d->have};
    if (c->cb)
        c->cb(c->arg, &ev);
}

static void client_command(struct mysql_codec *c, struct mysql_dir *d)
{
    const uint8_t *b = d->buf;

    /* seq != 0: more data for the current command (LOAD DATA LOCAL INFILE) */
    if (d->seq != 0)
        return;
    if (d->have == 0) {
        emit(c, MYSQL_EV_DECODER_ERROR, d, "empty command packet");
        return;
    }
    struct mysql_ev ev = {.type = MYSQL_EV_COMMAND, .cmd = b[0], .seq = d->seq, .payload_len = d->total,
                          .truncated = d->total > d->have};
    if (b[0] == MYSQL_COM_QUERY || b[0] == MYSQL_COM_INIT_DB || b[0] == MYSQL_COM_STMT_PREPARE) {
        size_t pos = 1;
        bool ok = true;
        if (b[0] == MYSQL_COM_QUERY && (c->client_caps & c->server_caps & MYSQL_CLIENT_QUERY_ATTRIBUTES)) {
            uint64_t nparams = 0, nsets = 0;
            /* only attribute-free queries are understood */
            ok = lenenc(b, d->have, &pos, &nparams) && lenenc(b, d->have, &pos, &nsets) && nparams == 0;
        }
        if (ok) {
            ev.text = (const char *)b + pos;
            ev.text_len = d->have - pos;
        }
    }
    if (b[0] == MYSQL_COM_CHANGE_USER) {
        c->phase = MYSQL_PH_AUTH;
        c->last_auth_seq = 0;
    }
    c->await_reply = b[0] != MYSQL_COM_QUIT && b[0] != MYSQL_COM_STMT_CLOSE &&
                     b[0] != MYSQL_COM_STMT_SEND_LONG_DATA && b[0] != MYSQL_COM_CHANGE_USER;
    c->reply_cmd = b[0];
    if (c->cb)
        c->cb(c->arg, &ev);
}

static void on_client_msg(struct mysql_codec *c, struct mysql_dir *d)
{
    switch (c->phase) {
    case MYSQL_PH_INIT:
        emit(c, MYSQL_EV_PROTOCOL_ERROR, d, "client data before the server greeting");
        break;
    case MYSQL_PH_LOGIN:
        client_login(c, d);
        break;
    case MYSQL_PH_AUTH:
        if (d->seq != (uint8_t)(c->last_auth_seq + 1))
            emit(c, MYSQL_EV_PROTOCOL_ERROR, d, "auth data out of sequence");
        c->last_auth_seq = d->seq;
        break;
    case MYSQL_PH_COMMAND:
        client_command(c, d);
        break;
    default:
        break;
    }
}

static void server_greeting(struct mysql_codec *c, struct mysql_dir *d)
{
    const uint8_t *b = d->buf;

    if (d->seq != 0)
        emit(c, MYSQL_EV_PROTOCOL_ERROR, d, "greeting out of sequence");
    c->last_auth_seq = d->seq;
    if (d->have >= 1 && b[0] == 0xff) {
        /* the server refuses us before any login (too many connections, host blocked) */
        c->phase = MYSQL_PH_FAILED;
        return;
    }
    c->phase = MYSQL_PH_LOGIN;
    const char *version = d->have >= 1 && b[0] == 10 ? cstr(d, 1) : NULL;
    if (!version) {
        emit(c, MYSQL_EV_DECODER_ERROR, d, "bad server greeting");
        return;
    }
    size_t pos = 1 + strlen(version) + 1 + 4 + 8 + 1;
    if (pos + 2 <= d->have)
        c->server_caps = le16(b + pos);
    pos += 2 + 1 + 2;
    if (pos + 2 <= d->have)
        c->server_caps |= le16(b + pos) << 16;
    emit(c, MYSQL_EV_GREETING, d, version);
}

static void server_auth(struct mysql_codec *c, struct mysql_dir *d)
{
    const uint8_t *b = d->buf;

    if (d->seq != (uint8_t)(c->last_auth_seq + 1))
        emit(c, MYSQL_EV_PROTOCOL_ERROR, d, "auth reply out of sequence");
    c->last_auth_seq = d->seq;
    if (d->have == 0) {
        emit(c, MYSQL_EV_DECODER_ERROR, d, "empty auth reply");
        return;
    }
    switch (b[0]) {
    case 0x00:
        c->phase = (c->client_caps & c->server_caps & MYSQL_CLIENT_COMPRESS) ? MYSQL_PH_OPAQUE
                                                                             : MYSQL_PH_COMMAND;
        emit(c, MYSQL_EV_LOGIN_OK, d, NULL);
        break;
    case 0xff: {
        c->phase = MYSQL_PH_FAILED;
        struct mysql_ev ev = {.type = MYSQL_EV_LOGIN_FAIL, .seq = d->seq, .payload_len = d->total,
                              .code = d->have >= 3 ? (uint16_t)le16(b + 1) : 0};
        if (c->cb)
            c->cb(c->arg, &ev);
        break;
    }
    case 0xfe:
        emit(c, MYSQL_EV_AUTH_SWITCH, d, cstr(d, 1));
        break;
    case 0x01:
        emit(c, MYSQL_EV_AUTH_MORE, d, NULL);
        break;
    default:
        emit(c, MYSQL_EV_DECODER_ERROR, d, "unknown auth reply");
        break;
    }
}

static void on_server_msg(struct mysql_codec *c, struct mysql_dir *d)
{
    switch (c->phase) {
    case MYSQL_PH_INIT:
        server_greeting(c, d);
        break;
    case MYSQL_PH_LOGIN:
        emit(c, MYSQL_EV_PROTOCOL_ERROR, d, "server data before the handshake response");
        if (d->have >= 1 && d->buf[0] == 0xff)
            c->phase = MYSQL_PH_FAILED;
        break;
    case MYSQL_PH_AUTH:
        server_auth(c, d);
        break;
    case MYSQL_PH_COMMAND:
        /* only the reply's first packet says OK / ERR / result set; the rest is framed, not read */
        if (c->await_reply && d->seq == 1) {
            c->await_reply = false;
            struct mysql_ev ev = {.type = MYSQL_EV_RESULT, .cmd = c->reply_cmd, .seq = d->seq,
                                  .payload_len = d->total};
            if (d->have >= 3 && d->buf[0] == 0xff)
                ev.code = (uint16_t)le16(d->buf + 1);
            if (c->cb)
                c->cb(c->arg, &ev);
        }
        break;
    default:
        break;
    }
}

static bool decoding(const struct mysql_codec *c)
{
    return c->phase != MYSQL_PH_SSL && c->phase != MYSQL_PH_OPAQUE;
}

static void feed(struct mysql_codec *c, struct mysql_dir *d, const uint8_t *p, size_t len, bool client)
{
    while (len && decoding(c)) {
        if (d->hdr_have < 4) {
            size_t n = 4 - d->hdr_have < len ? 4 - d->hdr_have : len;
            memcpy(d->hdr + d->hdr_have, p, n);
            d->hdr_have += (unsigned)n;
            p += n;
            len -= n;
            if (d->hdr_have < 4)
                return;
            uint32_t plen = (uint32_t)d->hdr[0] | (uint32_t)d->hdr[1] << 8 | (uint32_t)d->hdr[2] << 16;
            uint8_t seq = d->hdr[3];
            if (!d->in_msg) {
                d->in_msg = true;
                d->seq = seq;
                d->total = 0;
                d->have = 0;
            } else if (seq != (uint8_t)(d->last_seq + 1)) {
                emit(c, MYSQL_EV_PROTOCOL_ERROR, d, "continuation packet out of sequence");
            }
            d->last_seq = seq;
            d->left = plen;
            d->more = plen == 0xffffffu;
            d->total += plen;
            c->packets++;
        } else {
            size_t n = d->left < len ? d->left : len;
            size_t room = d->cap - d->have;
            size_t k = n < room ? n : room;
            memcpy(d->buf + d->have, p, k);
            d->have += k;
            d->left -= (uint32_t)n;
            p += n;
            len -= n;
        }
        if (d->left == 0) {
            d->hdr_have = 0;
            if (d->more)
                continue;
            d->in_msg = false;
            d->buf[d->have] = 0;
            if (client)
                on_client_msg(c, d);
            else
                on_server_msg(c, d);
        }
    }
}

void mysql_codec_client(struct mysql_codec *c, const uint8_t *data, size_t len)
{
    feed(c, &c->c2s, data, len, true);
}

void mysql_codec_server(struct mysql_codec *c, const uint8_t *data, size_t len)
{
    feed(c, &c->s2c, data, len, false);
}
