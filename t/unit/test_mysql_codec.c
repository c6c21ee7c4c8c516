/* mysql_proxy codec and SQL scanner: events over every split, multi-packet
 * payloads, hostile lengths, SSL request, and statements' tables/ops. */
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "sql.h"
#include "tap.h"

struct rec {
    int n[16];
    int last_code;
    char last_text[256];
    uint8_t last_cmd;
    uint64_t last_len;
    char db[64];
};

static void cb(void *arg, const struct mysql_ev *ev)
{
    struct rec *r = arg;
    r->n[ev->type]++;
    if (ev->type == MYSQL_EV_RESULT || ev->type == MYSQL_EV_LOGIN_FAIL)
        r->last_code = ev->code;
    if (ev->type == MYSQL_EV_COMMAND) {
        r->last_cmd = ev->cmd;
        r->last_len = ev->payload_len;
    }
    if (ev->text) {
        size_t n = ev->text_len < 255 ? ev->text_len : 255;
        memcpy(r->last_text, ev->text, n);
        r->last_text[n] = 0;
    }
    if (ev->db)
        snprintf(r->db, sizeof(r->db), "%s", ev->db);
}

static size_t pkt(uint8_t *out, uint8_t seq, const void *payload, size_t len)
{
    out[0] = (uint8_t)len;
    out[1] = (uint8_t)(len >> 8);
    out[2] = (uint8_t)(len >> 16);
    out[3] = seq;
    memcpy(out + 4, payload, len);
    return len + 4;
}

static size_t greeting(uint8_t *out)
{
    uint8_t g[128] = {10};
    size_t n = 1;
    memcpy(g + n, "10.11.6-MariaDB", 16);
    n += 16;
    n += 4 + 8 + 1;
    g[n++] = 0xff;
    g[n++] = 0xf7; /* caps low */
    n += 1 + 2;
    g[n++] = 0xff;
    g[n++] = 0x81; /* caps high */
    n += 1 + 10 + 13;
    memcpy(g + n, "mysql_native_password", 22);
    n += 22;
    return pkt(out, 0, g, n);
}

static size_t login(uint8_t *out, const char *user, const char *db)
{
    uint8_t p[256] = {0};
    uint32_t caps = MYSQL_CLIENT_PROTOCOL_41 | MYSQL_CLIENT_SECURE_CONNECTION |
                    (db ? MYSQL_CLIENT_CONNECT_WITH_DB : 0);
    memcpy(p, &caps, 4);
    size_t n = 32;
    strcpy((char *)p + n, user);
    n += strlen(user) + 1;
    p[n++] = 20;
    n += 20;
    if (db) {
        strcpy((char *)p + n, db);
        n += strlen(db) + 1;
    }
    return pkt(out, 1, p, n);
}

/* feeds buf to the codec in pieces of `step` bytes */
static void feed(struct mysql_codec *c, bool client, const uint8_t *b, size_t n, size_t step)
{
    for (size_t off = 0; off < n; off += step) {
        size_t k = n - off < step ? n - off : step;
        if (client)
            mysql_codec_client(c, b + off, k);
        else
            mysql_codec_server(c, b + off, k);
    }
}

static void test_session(size_t step)
{
    struct mysql_codec c;
    struct rec r = {0};
    uint8_t b[1024];
    size_t n;

    mysql_codec_init(&c, cb, &r);
    n = greeting(b);
    feed(&c, false, b, n, step);
    n = login(b, "alice", "shop");
    feed(&c, true, b, n, step);
    uint8_t sw[] = {0xfe, 'm', 'y', 's', 'q', 'l', '_', 'n', 'a', 't', 'i', 'v', 'e', '_', 'p', 'a', 's',
                    's', 'w', 'o', 'r', 'd', 0, 1, 2, 3};
    n = pkt(b, 2, sw, sizeof(sw));
    feed(&c, false, b, n, step);
    n = pkt(b, 3, "12345678901234567890", 20);
    feed(&c, true, b, n, step);
    n = pkt(b, 4, "\x00\x00\x00\x02\x00\x00\x00", 7);
    feed(&c, false, b, n, step);
    const char q[] = "\x03SELECT * FROM orders";
    n = pkt(b, 0, q, sizeof(q) - 1);
    feed(&c, true, b, n, step);
    is_int(r.n[MYSQL_EV_GREETING], 1, "step %zu: greeting", step);
    is_int(r.n[MYSQL_EV_LOGIN], 1, "step %zu: login", step);
    is_str(r.db, "shop", "step %zu: login db", step);
    is_int(r.n[MYSQL_EV_AUTH_SWITCH], 1, "step %zu: auth switch", step);
    is_int(r.n[MYSQL_EV_LOGIN_OK], 1, "step %zu: login ok", step);
    is_int(r.n[MYSQL_EV_COMMAND], 1, "step %zu: command", step);
    is_str(r.last_text, "SELECT * FROM orders", "step %zu: query text", step);
    is_int(r.n[MYSQL_EV_DECODER_ERROR] + r.n[MYSQL_EV_PROTOCOL_ERROR], 0, "step %zu: no errors", step);
    /* command replies: ERR's code; OK / result set as 0; only the first packet of a reply counts */
    const char err[] = "\xff\x7a\x04#42S02Table 'shop.orders' doesn't exist";
    n = pkt(b, 1, err, sizeof(err) - 1);
    feed(&c, false, b, n, step);
    is_int(r.n[MYSQL_EV_RESULT], 1, "step %zu: error result", step);
    is_int(r.last_code, 1146, "step %zu: error code", step);
    n = pkt(b, 0, q, sizeof(q) - 1);
    feed(&c, true, b, n, step);
    n = pkt(b, 1, "\x01", 1);
    feed(&c, false, b, n, step);
    n = pkt(b, 2, "\x03" "def", 4);
    feed(&c, false, b, n, step);
    is_int(r.n[MYSQL_EV_RESULT], 2, "step %zu: one result per command", step);
    is_int(r.last_code, 0, "step %zu: result set is ok", step);
    n = pkt(b, 0, "\x19\x01\x00\x00\x00", 5); /* COM_STMT_CLOSE: no reply */
    feed(&c, true, b, n, step);
    n = pkt(b, 1, "\xff\x01\x00", 3);         /* not taken as its answer */
    feed(&c, false, b, n, step);
    is_int(r.n[MYSQL_EV_RESULT], 2, "step %zu: COM_STMT_CLOSE has no result", step);
    mysql_codec_fini(&c);
}

static void test_failure_and_ssl(void)
{
    struct mysql_codec c;
    struct rec r = {0};
    uint8_t b[1024];
    size_t n;

    mysql_codec_init(&c, cb, &r);
    feed(&c, false, b, greeting(b), 7);
    feed(&c, true, b, login(b, "bob", NULL), 3);
    n = pkt(b, 2, "\xff\x15\x04#28000Access denied", 22);
    feed(&c, false, b, n, 5);
    is_int(r.n[MYSQL_EV_LOGIN_FAIL], 1, "login failure");
    is_int(c.phase, MYSQL_PH_FAILED, "failed phase");
    mysql_codec_fini(&c);

    memset(&r, 0, sizeof(r));
    mysql_codec_init(&c, cb, &r);
    feed(&c, false, b, greeting(b), 1000);
    uint8_t ssl[32] = {0};
    uint32_t caps = MYSQL_CLIENT_PROTOCOL_41 | MYSQL_CLIENT_SSL;
    memcpy(ssl, &caps, 4);
    n = pkt(b, 1, ssl, 32);
    memset(b + n, 0x16, 100); /* a TLS ClientHello follows */
    feed(&c, true, b, n + 100, 1000);
    is_int(r.n[MYSQL_EV_SSL_REQUEST], 1, "ssl request");
    is_int(r.n[MYSQL_EV_DECODER_ERROR], 0, "TLS bytes are not decoded");
    mysql_codec_fini(&c);
}

static void test_big_and_hostile(void)
{
    struct mysql_codec c;
    struct rec r = {0};
    uint8_t hdr[4];

    mysql_codec_init(&c, cb, &r);
    c.phase = MYSQL_PH_COMMAND;
    /* a 20 MiB COM_QUERY: 0xffffff + 0xffffff-1 ... split over packets */
    size_t total = 20u << 20, left = total, sent = 0;
    uint8_t seq = 0;
    uint8_t *chunk = malloc(1 << 20);
    memset(chunk, 'x', 1 << 20);
    const char *head = "\x03INSERT INTO blobs VALUES ('";
    while (left || sent == 0 || (total % 0xffffff == 0)) {
        size_t plen = left >= 0xffffff ? 0xffffff : left;
        hdr[0] = (uint8_t)plen;
        hdr[1] = (uint8_t)(plen >> 8);
        hdr[2] = (uint8_t)(plen >> 16);
        hdr[3] = seq++;
        mysql_codec_client(&c, hdr, 4);
        for (size_t off = 0; off < plen;) {
            size_t k = plen - off < (1u << 20) ? plen - off : (1u << 20);
            if (sent == 0)
                memcpy(chunk, head, strlen(head));
            mysql_codec_client(&c, chunk, k);
            if (sent == 0)
                memset(chunk, 'x', strlen(head));
            sent += k;
            off += k;
        }
        left -= plen;
        if (plen < 0xffffff)
            break;
    }
    free(chunk);
    is_int(r.n[MYSQL_EV_COMMAND], 1, "20 MiB query is one command");
    ok(r.last_len == total, "payload length %llu", (unsigned long long)r.last_len);
    is_int(r.n[MYSQL_EV_PROTOCOL_ERROR], 0, "continuations in sequence");
    ok(c.c2s.have <= MYSQL_CAP_CLIENT, "bounded capture");

    /* garbage: a greeting that is not one, then a header claiming 16 MiB */
    memset(&r, 0, sizeof(r));
    mysql_codec_fini(&c);
    mysql_codec_init(&c, cb, &r);
    uint8_t bad[] = {3, 0, 0, 0, 'a', 'b', 'c', 0xff, 0xff, 0xff, 0x00, 1, 2};
    mysql_codec_server(&c, bad, sizeof(bad));
    is_int(r.n[MYSQL_EV_DECODER_ERROR], 1, "bad greeting counted");
    mysql_codec_fini(&c);
}

static void sql_case(const char *q, int rc, const char *want)
{
    struct sql_result r;
    char got[1024] = "", ops[96];
    int got_rc = sql_parse(q, strlen(q), &r);
    for (size_t i = 0; got_rc == 0 && i < r.ntables; i++) {
        size_t n = strlen(got);
        snprintf(got + n, sizeof(got) - n, "%s%s%s%s=%s", i ? " " : "", r.tables[i].db,
                 *r.tables[i].db ? "." : "", r.tables[i].name, sql_ops_str(r.tables[i].ops, ops, sizeof(ops)));
    }
    is_int(got_rc, rc, "rc: %s", q);
    if (rc == 0)
        is_str(got, want, "tables: %s", q);
}

int main(void)
{
    size_t steps[] = {1, 2, 3, 5, 64, 4096};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++)
        test_session(steps[i]);
    test_failure_and_ssl();
    test_big_and_hostile();

    sql_case("SELECT * FROM orders", 0, "orders=select");
    sql_case("select a.x, b.y from shop.orders a join `items` b on a.id=b.oid where a.x in "
             "(select id from hidden)", 0, "shop.orders=select items=select hidden=select");
    sql_case("INSERT INTO t1 (a,b) SELECT a, b FROM t2", 0, "t1=insert t2=select");
    sql_case("UPDATE orders SET n = n + 1 WHERE id = 3", 0, "orders=update");
    sql_case("DELETE FROM orders WHERE id = 1", 0, "orders=delete");
    sql_case("DELETE o FROM orders o JOIN items i ON i.oid = o.id", 0, "o=delete orders=select items=select");
    sql_case("CREATE TABLE IF NOT EXISTS t (id int)", 0, "t=create");
    sql_case("DROP TABLE a, b", 0, "a=drop b=drop");
    sql_case("ALTER TABLE t ADD COLUMN c int", 0, "t=alter");
    sql_case("SHOW COLUMNS FROM t", 0, "t=show");
    sql_case("SHOW DATABASES", 0, "");
    sql_case("USE shop", 0, "");
    sql_case("select @@version_comment limit 1", 0, "");
    sql_case("SELECT EXTRACT(YEAR FROM d) FROM t", 0, "t=select");
    sql_case("SELECT 1; DELETE FROM t; SELECT * FROM t", 0, "t=select,delete");
    sql_case("SET NAMES utf8mb4", 0, "");
    sql_case("SELECT 'unterminated", -1, "");
    sql_case("SELECT (1", -1, "");
    sql_case("FROBNICATE the database", -1, "");
    sql_case("", -1, "");
    sql_case("/* c */ SELECT * FROM t -- x\n", 0, "t=select");
    return done_testing();
}
