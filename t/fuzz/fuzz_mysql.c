/* libFuzzer target for the mysql_proxy codec and SQL scanner. Byte 0 picks
 * the split size; the input is then a sequence of records [dir|len16|bytes]
 * (dir bit 0: 0 client, 1 server) — the seed corpus holds real sessions
 * recorded this way by t/fuzz/capture_mysql.py. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "sql.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void cb(void *arg, const struct mysql_ev *ev)
{
    (void)arg;
    if (ev->type == MYSQL_EV_COMMAND && ev->text) {
        struct sql_result r;
        sql_parse(ev->text, ev->text_len, &r);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mysql_codec c;

    if (size < 1)
        return 0;
    size_t step = (size_t)(data[0] % 32) + 1;
    data++;
    size--;
    if (mysql_codec_init(&c, cb, NULL) < 0)
        return 0;
    while (size >= 3) {
        int dir = data[0] & 1;
        size_t n = (size_t)data[1] | (size_t)data[2] << 8;
        data += 3;
        size -= 3;
        if (n > size)
            n = size;
        for (size_t off = 0; off < n; off += step) {
            size_t k = n - off < step ? n - off : step;
            if (dir)
                mysql_codec_server(&c, data + off, k);
            else
                mysql_codec_client(&c, data + off, k);
        }
        data += n;
        size -= n;
    }
    mysql_codec_fini(&c);
    /* and the SQL scanner on the raw bytes */
    struct sql_result r;
    sql_parse((const char *)data, size, &r);
    return 0;
}
