/* mysql_proxy: the per-connection sniffer. Client bytes (on_read) and server
 * bytes (on_write) are fed to the codec untouched; its events become
 * Envoy's mysql.<stat_prefix>.* counters, and each parsed COM_QUERY's
 * tables become dynamic metadata under envoy.filters.network.mysql_proxy:
 * key "<table>" or "<table>.<db>" (the database from the statement, else the
 * login's or the last USE's), value the operations "select,delete" (SDK
 * metadata values are strings; network rbac's metadata matcher reads
 * list_match over that comma list). Keys of the previous query that the new
 * one does not touch are set to "" so that rules see only the current one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "mysql_proxy.h"
#include "sql.h"

#define MAX_KEYS 64

struct session {
    struct mysql_proxy_conf *conf;
    struct herald_conn *c;
    struct mysql_codec codec;
    char db[SQL_NAME_MAX];
    char *keys[MAX_KEYS];           /* metadata keys set with a non-empty value */
    size_t nkeys;
};

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
    case MYSQL_EV_LOGIN_OK:
        break;
    case MYSQL_EV_LOGIN_FAIL:
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
            if (ev->cmd == MYSQL_COM_QUERY)
                herald_stat_inc(ok ? st->queries_parsed : st->queries_parse_error);
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
