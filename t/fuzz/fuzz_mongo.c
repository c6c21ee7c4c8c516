/* libFuzzer target for the mongo_proxy wire decoder and BSON reader. Byte 0
 * picks how the input is split into feeds (the decoder must give the same
 * messages for any split); the rest is one direction's stream. Each input is
 * also decoded as a lone body, and validated as a BSON document. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bson.h"
#include "codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct tally {
    uint64_t msgs, errs, sum;
};

static void on_msg(void *arg, const struct mongo_msg *m)
{
    struct tally *t = arg;
    t->msgs++;
    t->sum += (uint64_t)m->opcode + strlen(m->db) + strlen(m->collection) + strlen(m->command);
}

static void on_err(void *arg, const char *why)
{
    struct tally *t = arg;
    t->errs++;
}

static void run(const uint8_t *p, size_t n, unsigned split, struct tally *t)
{
    struct mongo_decoder d;
    mongo_decoder_init(&d, on_msg, on_err, t);
    size_t off = 0, step = split ? split : n;
    while (off < n) {
        size_t k = n - off < step ? n - off : step;
        mongo_decoder_feed(&d, p + off, k);
        off += k;
    }
    mongo_decoder_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tally whole = {0}, pieces = {0};
    struct mongo_msg m;
    const char *why;

    if (size < 1)
        return 0;
    unsigned split = data[0] % 17 + 1;
    data++;
    size--;
    run(data, size, 0, &whole);
    run(data, size, split, &pieces);
    if (whole.msgs != pieces.msgs || whole.errs != pieces.errs || whole.sum != pieces.sum)
        abort(); /* the split changed what was decoded */
    if (size >= MONGO_HDR_LEN)
        (void)mongo_decode(data, data + MONGO_HDR_LEN, size - MONGO_HDR_LEN, data[0] & 1, &m, &why);
    (void)bson_validate(data, size, BSON_MAX_DEPTH);
    return 0;
}
