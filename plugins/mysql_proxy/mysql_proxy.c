/* mysql_proxy: the per-connection sniffer. Client bytes (on_read) and server
 * bytes (on_write) are fed to the codec untouched; its events become
 * Envoy's mysql.<stat_prefix>.* counters, and each parsed COM_QUERY's
 * tables become dynamic metadata under envoy.filters.network.mysql_proxy:
 * key "<table>" or "<table>.<db>" (the database from the statement, else the
 * login's or the last USE's), value the operations "select,delete" (SDK
 * metadata values are strings; network rbac's metadata matcher reads
 * list_match over that comma list). Keys of the previous query that the new
 * one does not touch are set to "" so that rules see only the current one.
 *
 * access_log (a path) gets one JSON line per login result and per COM_QUERY,
 * written with a single write() on an O_APPEND descriptor once the server
 * answers (or when the connection ends first). The file is not reopened on
 * SIGUSR1 (that is the core's AccessLog entries only): rotate with copytruncate. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "mysql_proxy.h"
#include "sql.h"

#define MAX_KEYS 64
#define LOG_QUERY_MAX 4096

struct line {
    char *p;
    size_t len, cap;
};

struct session {
    struct mysql_proxy_conf *conf;
    struct herald_conn *c;
    struct mysql_codec codec;
    char db[SQL_NAME_MAX];
    char *keys[MAX_KEYS];           /* metadata keys set with a non-empty value */
    size_t nkeys;
    char user[SQL_NAME_MAX];
    struct line pending;            /* access log line waiting for the server's answer */
};

static void put(struct line *l, const char *p, size_t n)
{
    if (l->len + n + 1 > l->cap) {
        size_t cap = l->cap ? l->cap : 1024;
        while (cap < l->len + n + 1)
            cap *= 2;
        l->p = realloc(l->p, cap);
        if (!l->p)
            abort();
        l->cap = cap;
    }
    memcpy(l->p + l->len, p, n);
    l->len += n;
    l->p[l->len] = 0;
}

static void put_cstr(struct line *l, const char *p)
{
    put(l, p, strlen(p));
}

/* Length of the valid UTF-8 sequence at p (< n bytes left), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t k = p[0] >= 0xf0 && p[0] <= 0xf4 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 && p[0] < 0xe0 ? 2 : 0;
    if (p[0] >= 0xf5 || k > n)
        return 0;
    for (size_t i = 1; i < k; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return k;
}

/* A JSON string; bytes that are not UTF-8 become U+FFFD. */
static void put_str(struct line *l, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    char esc[8];

    put(l, "\"", 1);
    for (size_t i = 0; i < n;) {
        size_t k;
        if (p[i] == '"' || p[i] == '\\') {
            esc[0] = '\\';
            esc[1] = (char)p[i];
            put(l, esc, 2);
            k = 1;
        } else if (p[i] < 0x20 || p[i] == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", p[i]);
            put(l, esc, 6);
            k = 1;
        } else if (p[i] < 0x80) {
            put(l, s + i, 1);
            k = 1;
        } else if ((k = utf8_len(p + i, n - i)) > 0) {
            put(l, s + i, k);
        } else {
            put_cstr(l, "\\ufffd");
            k = 1;
        }
        i += k;
    }
    put(l, "\"", 1);
}

static void line_start(struct session *s, struct line *l, const char *event)
{
    struct timespec ts;
    struct tm tm;
    char buf[96];

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, sizeof(buf), "{\"time\":\"%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof(buf) - n, ".%03ldZ\",\"connection_id\":%llu,\"event\":\"", ts.tv_nsec / 1000000,
             (unsigned long long)herald_conn_id(s->c));
    l->len = 0;
    put_cstr(l, buf);
    put_cstr(l, event);
    put_cstr(l, "\",\"user\":");
    put_str(l, s->user, strlen(s->user));
    put_cstr(l, ",\"database\":");
    put_str(l, s->db, strlen(s->db));
}

/* Ends l with the result (code < 0: no answer seen) and writes it in one write(). */
static void line_end(struct session *s, struct line *l, int code)
{
    char buf[64];

    if (code < 0)
        snprintf(buf, sizeof(buf), ",\"result\":null}\n");
    else if (code == 0)
        snprintf(buf, sizeof(buf), ",\"result\":\"ok\"}\n");
    else
        snprintf(buf, sizeof(buf), ",\"result\":\"error\",\"error_code\":%d}\n", code);
    put_cstr(l, buf);
    /* one write on O_APPEND: lines from all workers stay whole; a short write is not retried */
    if (write(s->conf->log_fd, l->p, l->len) < 0)
        HERALD_LOGF(HERALD_LOG_DEBUG, "mysql_proxy", "access_log write failed");
    l->len = 0;
}

static void log_login(struct session *s, int code)
{
    struct line l = {0};
    if (s->conf->log_fd < 0)
        return;
    line_start(s, &l, "login");
    line_end(s, &l, code);
    free(l.p);
}

static void log_query(struct session *s, const struct mysql_ev *ev, const struct sql_result *r, bool parsed)
{
    struct line *l = &s->pending;
    char ops[96];

    if (s->conf->log_fd < 0)
        return;
    if (l->len)
        line_end(s, l, -1);
    line_start(s, l, "query");
    size_t n = ev->text ? ev->text_len : 0;
    put_cstr(l, ",\"query\":");
    put_str(l, ev->text ? ev->text : "", n > LOG_QUERY_MAX ? LOG_QUERY_MAX : n);
    bool cut = n > LOG_QUERY_MAX || ev->truncated;
    put_cstr(l, cut ? ",\"query_truncated\":true" : ",\"query_truncated\":false");
    put_cstr(l, parsed ? ",\"parsed\":true,\"tables\":{" : ",\"parsed\":false,\"tables\":{");
    for (size_t i = 0; parsed && i < r->ntables; i++) {
        const struct sql_table *t = &r->tables[i];
        const char *db = *t->db ? t->db : s->db;
        char key[2 * SQL_NAME_MAX + 2];
        snprintf(key, sizeof(key), "%s%s%s", t->name, *db ? "." : "", db);
        if (i)
            put_cstr(l, ",");
        put_str(l, key, strlen(key));
        put_cstr(l, ":");
        const char *o = sql_ops_str(t->ops, ops, sizeof(ops));
        put_str(l, o, strlen(o));
    }
    put_cstr(l, "}");
}

static void publish(struct session *s, const struct sql_result *r)
{
    char *nkeys[MAX_KEYS];
    size_t nn = 0;

    for (size_t i = 0; i < r->ntables && nn < MAX_KEYS; i++) {
        const struct sql_table *t = &r->tables[i];
        const char *db = *t->db ? t->db : s->db;
        char key[2 * SQL_NAME_MAX + 2], ops[96];
        snprintf(key, sizeof(key), "%s%s%s", t->name, *db ? "." : "", db);
        herald_conn_metadata_set(s->c, MYSQL_MD_NS, key, sql_ops_str(t->ops, ops, sizeof(ops)));
        nkeys[nn] = strdup(key);
        if (!nkeys[nn])
            abort();
        nn++;
    }
    for (size_t i = 0; i < s->nkeys; i++) {
        bool kept = false;
        for (size_t j = 0; j < nn && !kept; j++)
            kept = !strcmp(s->keys[i], nkeys[j]);
        if (!kept)
            herald_conn_metadata_set(s->c, MYSQL_MD_NS, s->keys[i], "");
        free(s->keys[i]);
    }
    memcpy(s->keys, nkeys, nn * sizeof(nkeys[0]));
    s->nkeys = nn;
}

static void set_db(struct session *s, const char *db, size_t len)
{
    if (len >= sizeof(s->db))
        len = sizeof(s->db) - 1;
    memcpy(s->db, db, len);
    s->db[len] = 0;
}

static void on_event_cb(void *arg, const struct mysql_ev *ev)
{
    struct session *s = arg;
    const struct mysql_proxy_stats *st = &s->conf->stats;
    unsigned long long id = (unsigned long long)herald_conn_id(s->c);

    switch (ev->type) {
    case MYSQL_EV_GREETING:
        HERALD_LOGF(HERALD_LOG_DEBUG, "mysql_proxy", "[C%llu] server greeting, version %s", id, ev->text);
        break;
    case MYSQL_EV_LOGIN:
        herald_stat_inc(st->login_attempts);
        if (ev->db)
            set_db(s, ev->db, strlen(ev->db));
        snprintf(s->user, sizeof(s->user), "%s", ev->text ? ev->text : "");
        HERALD_LOGF(HERALD_LOG_DEBUG, "mysql_proxy", "[C%llu] login as '%s'", id, ev->text);
        break;
    case MYSQL_EV_SSL_REQUEST:
        herald_stat_inc(st->upgraded_to_ssl);
        HERALD_LOGF(HERALD_LOG_DEBUG, "mysql_proxy", "[C%llu] SSL request: no more decoding", id);
        break;
    case MYSQL_EV_AUTH_SWITCH:
        herald_stat_inc(st->auth_switch_request);
        break;
    case MYSQL_EV_AUTH_MORE:
        break;
    case MYSQL_EV_LOGIN_OK:
        log_login(s, 0);
        break;
    case MYSQL_EV_LOGIN_FAIL:
        log_login(s, ev->code);    /* before the stat: tests wait on the stat, then read the log */
        herald_stat_inc(st->login_failures);
        HERALD_LOGF(HERALD_LOG_DEBUG, "mysql_proxy", "[C%llu] login failed (%u)", id, ev->code);
        break;
    case MYSQL_EV_DECODER_ERROR:
        herald_stat_inc(st->decoder_errors);
        HERALD_LOGF(HERALD_LOG_DEBUG, "mysql_proxy", "[C%llu] decoder error: %s", id, ev->text);
        break;
    case MYSQL_EV_PROTOCOL_ERROR:
        herald_stat_inc(st->protocol_errors);
        HERALD_LOGF(HERALD_LOG_DEBUG, "mysql_proxy", "[C%llu] protocol error: %s", id, ev->text);
        break;
    case MYSQL_EV_RESULT:
        if (s->pending.len)
            line_end(s, &s->pending, ev->code);
        break;
    case MYSQL_EV_COMMAND:
        if (ev->cmd == MYSQL_COM_CHANGE_USER) {
            herald_stat_inc(st->login_attempts);
        } else if (ev->cmd == MYSQL_COM_INIT_DB && ev->text) {
            set_db(s, ev->text, ev->text_len);
        } else if (ev->cmd == MYSQL_COM_QUERY || ev->cmd == MYSQL_COM_STMT_PREPARE) {
            struct sql_result *r = malloc(sizeof(*r));
            if (!r)
                abort();
            bool ok = ev->text && sql_parse(ev->text, ev->text_len, r) == 0;
            /* a statement longer than what the codec keeps is judged on its start */
            if (!ok && ev->text && ev->truncated && r->nstatements == 0 && r->ntables > 0)
                ok = true;
            if (ev->cmd == MYSQL_COM_QUERY) {
                herald_stat_inc(ok ? st->queries_parsed : st->queries_parse_error);
                log_query(s, ev, r, ok);
            }
            if (ok) {
                publish(s, r);
                if (*r->use_db)
                    set_db(s, r->use_db, strlen(r->use_db));
            } else {
                publish(s, &(struct sql_result){0});
            }
            HERALD_LOGF(HERALD_LOG_DEBUG, "mysql_proxy", "[C%llu] %s: %s, %zu table(s)", id,
                        ev->cmd == MYSQL_COM_QUERY ? "query" : "prepare", ok ? "parsed" : "not parsed",
                        ok ? r->ntables : (size_t)0);
            free(r);
        }
        break;
    }
}

static void *session_new(void *conf, void *wstate, struct herald_conn *c)
{
    struct session *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->conf = conf;
    s->c = c;
    if (mysql_codec_init(&s->codec, on_event_cb, s) < 0) {
        free(s);
        return NULL;
    }
    return s;
}

static void session_destroy(void *p)
{
    struct session *s = p;
    mysql_codec_fini(&s->codec);
    if (s->pending.len)
        line_end(s, &s->pending, -1);
    free(s->pending.p);
    for (size_t i = 0; i < s->nkeys; i++)
        free(s->keys[i]);
    free(s);
}

static enum herald_status on_new_connection(void *p)
{
    struct session *s = p;
    herald_stat_inc(s->conf->stats.sessions);
    return HERALD_CONTINUE;
}

static void feed(struct session *s, const struct herald_buf *data, bool client)
{
    struct iovec vec[16];
    size_t len = herald_buf_len(data), off = 0;

    while (off < len) {
        /* peek gives the first segments; copy out past them (rare: long chains) */
        int n = herald_buf_peek(data, len, vec, 16);
        if (n <= 16) {
            for (int i = 0; i < n; i++) {
                if (client)
                    mysql_codec_client(&s->codec, vec[i].iov_base, vec[i].iov_len);
                else
                    mysql_codec_server(&s->codec, vec[i].iov_base, vec[i].iov_len);
            }
            return;
        }
        uint8_t tmp[16384];
        size_t k = herald_buf_copyout(data, off, tmp, sizeof(tmp));
        if (!k)
            return;
        if (client)
            mysql_codec_client(&s->codec, tmp, k);
        else
            mysql_codec_server(&s->codec, tmp, k);
        off += k;
    }
}

static enum herald_status on_read(void *p, struct herald_buf *data, bool end_stream)
{
    feed(p, data, true);
    return HERALD_CONTINUE;
}

static enum herald_status on_write(void *p, struct herald_buf *data, bool end_stream)
{
    feed(p, data, false);
    return HERALD_CONTINUE;
}

const struct herald_network_filter_ops mysql_proxy_ops = {
    .size = sizeof(struct herald_network_filter_ops),
    .config_create = mysql_proxy_config_create,
    .config_destroy = mysql_proxy_config_destroy,
    .session_new = session_new,
    .session_destroy = session_destroy,
    .on_new_connection = on_new_connection,
    .on_read = on_read,
    .on_write = on_write,
};
