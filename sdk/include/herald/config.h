/* herald SDK: the configuration tree and declarative schemas.
 *
 * A plugin never sees YAML or JSON: the core parses both into one tree whose
 * nodes remember file:line:column, validates a filter's typed_config against
 * the schema the plugin declares (unknown fields, types, enums, required
 * fields, did-you-mean), and hands the plugin the validated node. The plugin
 * reads it with the accessors below and reports its own semantic errors with
 * herald_cfg_errorf(), which prefixes the position and field path.
 */
#ifndef HERALD_CONFIG_H
#define HERALD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herald/version.h"

#ifdef __cplusplus
extern "C" {
#endif

struct herald_cfg; /* one node of the tree; owned by the core, read-only */

enum herald_cfg_type {
    HERALD_CFG_NULL = 0,
    HERALD_CFG_BOOL,
    HERALD_CFG_INT,
    HERALD_CFG_REAL,
    HERALD_CFG_STRING,
    HERALD_CFG_ARRAY,
    HERALD_CFG_OBJECT,
};

/* Navigation. Every function accepts NULL and then returns NULL/0/def, so
 * optional fields read in one line: herald_cfg_str(herald_cfg_get(n, "x"), "d"). */
HERALD_EXPORT enum herald_cfg_type herald_cfg_type(const struct herald_cfg *n);
HERALD_EXPORT const struct herald_cfg *herald_cfg_get(const struct herald_cfg *obj, const char *key);
HERALD_EXPORT size_t herald_cfg_len(const struct herald_cfg *n); /* array items or object members */
HERALD_EXPORT const struct herald_cfg *herald_cfg_at(const struct herald_cfg *n, size_t i);
HERALD_EXPORT const char *herald_cfg_key_at(const struct herald_cfg *obj, size_t i);

/* Scalars. Numbers given as strings ("8080") are accepted, as protobuf's JSON
 * mapping accepts them. */
HERALD_EXPORT const char *herald_cfg_str(const struct herald_cfg *n, const char *def);
HERALD_EXPORT int64_t herald_cfg_int(const struct herald_cfg *n, int64_t def);
HERALD_EXPORT double herald_cfg_real(const struct herald_cfg *n, double def);
HERALD_EXPORT bool herald_cfg_bool(const struct herald_cfg *n, bool def);
/* "1s", "0.25s" -> milliseconds (rounded up to 1 ms when non-zero). */
HERALD_EXPORT uint64_t herald_cfg_duration_ms(const struct herald_cfg *n, uint64_t def);

/* Where a node is, for messages: "file:line:col" and "a.b[2].c". */
HERALD_EXPORT const char *herald_cfg_file(const struct herald_cfg *n);
HERALD_EXPORT int herald_cfg_line(const struct herald_cfg *n);
HERALD_EXPORT int herald_cfg_column(const struct herald_cfg *n);
HERALD_EXPORT size_t herald_cfg_path(const struct herald_cfg *n, char *out, size_t size);

/* (1.9) An envoy.config.core.v3.DataSource node's bytes: inline_string,
 * inline_bytes (base64), environment_variable or filename (at most max + 1
 * bytes of it read, so *len > max tells a file over the caller's limit;
 * SIZE_MAX: none). Malloc'd, a NUL after them; NULL with *err (the place)
 * when n names none, the variable is not set or the file cannot be read. */
HERALD_EXPORT char *herald_cfg_data_source(const struct herald_cfg *n, size_t max, size_t *len, char **err);

/* (1.9) Base64 (RFC 4648) as configs and headers carry bytes: the standard
 * alphabet, and the URL-safe one too when url (protobuf's JSON takes both);
 * '=' padding optional. The n bytes of in -> malloc'd bytes with a NUL after
 * them, *len of them; NULL when in is not base64. */
HERALD_EXPORT char *herald_base64_decode(const char *in, size_t n, size_t *len, bool url);

/* Formats "file:line:col: path: <message>" into a malloc'd *err (freed by the
 * core) and returns -1, so a factory can write `return herald_cfg_errorf(...)`. */
HERALD_EXPORT int herald_cfg_errorf(const struct herald_cfg *n, char **err, const char *fmt, ...)
    HERALD_PRINTF(3, 4);

/* ---------------------------------------------------------------- schemas
 * A message is a table of fields, ended by an entry whose name is NULL. The
 * core checks a node against it: unknown field (with a did-you-mean), wrong
 * type, enum value (any case; normalised to the table's spelling), required
 * field, oneof groups, and "not supported" for Envoy fields herald knows of
 * but does not implement. A scalar or mapping given where a list is expected
 * becomes a list of one, as in Envoy's loader. */

enum herald_field_kind {
    HERALD_FIELD_ANY = 0,   /* any value, not checked (google.protobuf.Value) */
    HERALD_FIELD_STRING,
    HERALD_FIELD_BOOL,
    HERALD_FIELD_INT,       /* int64 */
    HERALD_FIELD_UINT,      /* uint32/uint64 and UInt32Value wrappers */
    HERALD_FIELD_DOUBLE,
    HERALD_FIELD_DURATION,  /* "1.5s" */
    HERALD_FIELD_ENUM,      /* one of .enum_values */
    HERALD_FIELD_MESSAGE,   /* nested .message */
    HERALD_FIELD_MAP,       /* map<string, .message>, or map<string, any> without one */
    HERALD_FIELD_STRUCT,    /* google.protobuf.Struct: a free-form mapping */
    HERALD_FIELD_TYPED,     /* google.protobuf.Any ("@type" + fields): checked by whoever owns the type */
    HERALD_FIELD_REMOVED,   /* an old (v2-era) field: always an error, with .hint */
};

#define HERALD_F_REPEATED    0x01u /* a list of the kind */
#define HERALD_F_REQUIRED    0x02u /* must be present (and non-empty for a list) */
#define HERALD_F_UNSUPPORTED 0x04u /* an Envoy field herald does not implement: "not supported" */
#define HERALD_F_DEPRECATED  0x08u /* accepted with a warning (.hint says what replaces it) */

struct herald_message;

struct herald_field {
    const char *name;
    enum herald_field_kind kind;
    unsigned flags;
    const struct herald_message *message;  /* MESSAGE, MAP */
    const char *const *enum_values;        /* ENUM: NULL-terminated, canonical spelling */
    const char *oneof;                     /* fields sharing a oneof name exclude each other */
    const char *help;                      /* one line for --describe and the man pages */
    const char *hint;                      /* REMOVED/DEPRECATED: what to write instead */
};

struct herald_message {
    const char *name;                      /* full proto name, e.g. envoy.config.cluster.v3.Cluster */
    const struct herald_field *fields;     /* ends with { NULL } */
    /* Optional semantic check after the fields passed; returns 0 or -1 with *err
     * set through herald_cfg_errorf(). */
    int (*check)(const struct herald_cfg *node, char **err);
};

#ifdef __cplusplus
}
#endif
#endif
