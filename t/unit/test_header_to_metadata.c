/* header_to_metadata's decoders (plugins/header_to_metadata/value.c): base64
 * as Envoy's decodeWithoutPadding, and serialized google.protobuf.Value
 * bytes (written out by hand from the protobuf wire format). */
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "value.h"

static void b64(const char *in, int want_rc, const char *want, size_t want_len)
{
    char *out = NULL;
    size_t len = 0;
    int rc = h2m_base64_decode(in, strlen(in), &out, &len);
    is_int(rc, want_rc, "base64 '%s': %s", in, want_rc ? "refused" : "decoded");
    if (!rc && want) {
        ok(len == want_len && memcmp(out, want, len) == 0, "base64 '%s': %zu bytes as expected", in, want_len);
        ok(out[len] == '\0', "base64 '%s': NUL-terminated", in);
    }
    free(out);
}

static void test_base64(void)
{
    b64("MS4w", 0, "1.0", 3);
    b64("aGVsbG8=", 0, "hello", 5);
    b64("aGVsbG8", 0, "hello", 5);            /* padding is optional */
    b64("aGk=", 0, "hi", 2);
    b64("aGk", 0, "hi", 2);
    b64("AAE=", 0, "\0\1", 2);
    b64("", -1, NULL, 0);
    b64("=", -1, NULL, 0);
    b64("a", -1, NULL, 0);                    /* one character encodes nothing whole */
    b64("aGk*", -1, NULL, 0);                 /* not the alphabet */
    b64("aGl=", -1, NULL, 0);                 /* bits past the end */
    b64("aG=k", -1, NULL, 0);                 /* '=' inside */
    b64("a-_b", -1, NULL, 0);                 /* the URL alphabet is not base64 */
}

static void pb(const char *name, const unsigned char *buf, size_t len, int want_rc, enum h2m_kind want_kind,
               double want_num, const char *want_str)
{
    enum h2m_kind kind = H2M_NONE;
    double num = -1;
    const char *str = NULL;
    size_t slen = 0;
    int rc = h2m_pb_value(buf, len, &kind, &num, &str, &slen);
    is_int(rc, want_rc, "protobuf Value %s: %s", name, want_rc ? "refused" : "parsed");
    if (rc)
        return;
    is_int(kind, want_kind, "protobuf Value %s: its kind", name);
    if (want_kind == H2M_NUMBER || want_kind == H2M_BOOL)
        ok(num == want_num, "protobuf Value %s: %g", name, want_num);
    if (want_str)
        ok(str && slen == strlen(want_str) && memcmp(str, want_str, slen) == 0, "protobuf Value %s: '%s'", name,
           want_str);
}

static void test_pb_value(void)
{
    /* string_value (3, wire type 2) "1.0" */
    static const unsigned char s[] = { 0x1a, 0x03, '1', '.', '0' };
    /* number_value (2, wire type 1) 1.5 = 0x3ff8000000000000, little-endian */
    static const unsigned char n[] = { 0x11, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f };
    /* bool_value (4, wire type 0) true */
    static const unsigned char b[] = { 0x20, 0x01 };
    /* null_value (1, wire type 0) NULL_VALUE */
    static const unsigned char z[] = { 0x08, 0x00 };
    /* list_value (6) with one number; struct_value (5) empty */
    static const unsigned char l[] = { 0x32, 0x09, 0x0a, 0x07, 0x11, 0, 0, 0, 0, 0, 0 };
    static const unsigned char o[] = { 0x2a, 0x00 };
    /* two kinds: the last one wins, as protobuf parses a oneof; an unknown fixed32 field skipped */
    static const unsigned char two[] = { 0x1a, 0x01, 'x', 0x7d, 1, 2, 3, 4, 0x20, 0x00 };
    /* broken: a length past the end, a truncated varint, field number 0, a group */
    static const unsigned char bad1[] = { 0x1a, 0x05, 'a' };
    static const unsigned char bad2[] = { 0x20, 0x80 };
    static const unsigned char bad3[] = { 0x02, 0x00 };
    static const unsigned char bad4[] = { 0x0b };
    pb("string", s, sizeof(s), 0, H2M_STRING, 0, "1.0");
    pb("number", n, sizeof(n), 0, H2M_NUMBER, 1.5, NULL);
    pb("bool", b, sizeof(b), 0, H2M_BOOL, 1, NULL);
    pb("null", z, sizeof(z), 0, H2M_NULL, 0, NULL);
    pb("list", l, sizeof(l), 0, H2M_LIST, 0, NULL);
    pb("struct", o, sizeof(o), 0, H2M_STRUCT, 0, NULL);
    pb("two kinds", two, sizeof(two), 0, H2M_BOOL, 0, NULL);
    pb("empty", s, 0, 0, H2M_NONE, 0, NULL);
    pb("length past the end", bad1, sizeof(bad1), -1, H2M_NONE, 0, NULL);
    pb("truncated varint", bad2, sizeof(bad2), -1, H2M_NONE, 0, NULL);
    pb("field 0", bad3, sizeof(bad3), -1, H2M_NONE, 0, NULL);
    pb("a group", bad4, sizeof(bad4), -1, H2M_NONE, 0, NULL);
    pb("truncated double", n, 5, -1, H2M_NONE, 0, NULL);
}

int main(void)
{
    test_base64();
    test_pb_value();
    return done_testing();
}
