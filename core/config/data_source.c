/* envoy.config.core.v3.DataSource: the bytes of inline_string,
 * inline_bytes (base64), environment_variable or filename, read when the
 * config loads (see data_source.h). */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config/data_source.h"
#include "config/schema_tables.h"

static const struct herald_field data_source_fields[] = {
    STR("filename", .oneof = "specifier",
        .help = "read when the config loads (a TLS certificate's is watched for changes too)"),
    STR("inline_bytes", .oneof = "specifier", .help = "base64 (standard or URL-safe)"),
    STR("inline_string", .oneof = "specifier"),
    STR("environment_variable", .oneof = "specifier"),
    UNSUP("watched_directory"),
    END,
};
const struct herald_message schema_data_source = {"envoy.config.core.v3.DataSource", data_source_fields, NULL};

static char *read_file(const struct herald_cfg *at, const char *path, size_t max, size_t *len, char **err)
{
    FILE *f = fopen(path, "rbe");
    if (!f) {
        herald_cfg_errorf(at, err, "cannot read '%s': %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0, got;
    size_t limit = max < SIZE_MAX ? max + 1 : max;   /* one byte past max tells a file over it */
    char *buf = xmalloc(cap + 1);
    while (n < limit && (got = fread(buf + n, 1, (cap - n < limit - n ? cap - n : limit - n), f)) > 0) {
        n += got;
        if (n == cap)
            buf = xrealloc(buf, (cap *= 2) + 1);
    }
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        herald_cfg_errorf(at, err, "cannot read '%s'", path);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

char *data_source_read(const struct herald_cfg *n, size_t max, size_t *len, char **err)
{
    static const char *const keys[] = {"inline_string", "inline_bytes", "environment_variable", "filename", NULL};
    const struct herald_cfg *v = NULL;
    const char *key = NULL;

    for (size_t i = 0; keys[i] && !v; i++)
        if ((v = herald_cfg_get(n, keys[i])))
            key = keys[i];
    if (!v) {
        herald_cfg_errorf(n, err, "a DataSource needs one of inline_string, inline_bytes, environment_variable "
                          "and filename");
        return NULL;
    }
    const char *s = herald_cfg_str(v, "");
    if (!strcmp(key, "inline_string")) {
        *len = strlen(s);
        return xstrdup(s);
    }
    if (!strcmp(key, "inline_bytes")) {
        char *b = base64_decode(s, strlen(s), len, true);
        if (!b)
            herald_cfg_errorf(v, err, "inline_bytes is not base64");
        return b;
    }
    if (!strcmp(key, "environment_variable")) {
        const char *e = getenv(s);
        if (!e) {
            herald_cfg_errorf(v, err, "environment variable '%s' is not set", s);
            return NULL;
        }
        *len = strlen(e);
        return xstrdup(e);
    }
    return read_file(v, s, max, len, err);
}

char *herald_cfg_data_source(const struct herald_cfg *n, size_t max, size_t *len, char **err)
{
    size_t l = 0;
    char *b = data_source_read(n, max, &l, err);
    if (len)
        *len = l;
    return b;
}
