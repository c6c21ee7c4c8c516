/* The config tree: YAML (libyaml) and JSON (jansson) parse into the same
 * nodes, each knowing its file:line:column, its parent and its key, so that
 * every error can name where it is and the field path that leads there.
 *
 * Why not jansson's json_t as the tree (as DESIGN.md first said): json_t
 * nodes carry no position and no parent, and jansson's true/false/null are
 * shared singletons, so an error about a boolean could not say where it is.
 * jansson still parses JSON (strictly, with its own line:column errors) and
 * renders /config_dump. */
#ifndef HERALD_CORE_CONFIG_TREE_H
#define HERALD_CORE_CONFIG_TREE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herald/config.h"

struct herald_cfg {
    enum herald_cfg_type type;
    int line, column;              /* 1-based; of the value (for a mapping member: of its key) */
    const char *file;              /* shared, owned by the document */
    struct herald_cfg *parent;
    char *key;                     /* set when the parent is an object */
    size_t index;                  /* position in the parent */
    bool quoted;                   /* a YAML scalar written in quotes: always a string */
    union {
        bool b;
        int64_t i;
        double r;
        struct { char *s; size_t len; } str;
        struct { struct herald_cfg **items; size_t n, cap; } kids; /* ARRAY and OBJECT */
    } u;
};

/* A parsed document: the root plus the file name storage (more_files: names
 * of documents merged in by cfg_merge, whose nodes now live here). */
struct cfg_doc {
    struct herald_cfg *root;
    char *file;
    char **more_files; size_t nmore_files;
};

/* Bounds that make hostile input an error instead of an OOM or a stack
 * overflow (a "billion laughs" of YAML aliases, [[[[...]]]]). */
#define CFG_MAX_NODES 1000000u
#define CFG_MAX_DEPTH 256

/* Parses a file (.yaml/.yml/.json; anything else: by its first non-blank
 * character, '{' meaning JSON). Errors ("file:line:col: message", with
 * duplicate keys among them) go to *err (malloc'd). */
struct cfg_doc *cfg_load_file(const char *path, char **err);
/* name is what errors call it (e.g. "--config-yaml"). */
struct cfg_doc *cfg_load_string(const char *text, size_t len, const char *name, char **err);
void cfg_doc_free(struct cfg_doc *d);

/* Deep-merges over into base as Envoy merges --config-yaml over -c (protobuf
 * MergeFrom): objects merge key by key, lists are concatenated, scalars are
 * replaced. Nodes (and file names) are moved: over is left empty, and the
 * caller still frees it with cfg_doc_free(). */
void cfg_merge(struct cfg_doc *base, struct cfg_doc *over);

/* Building and editing (used by normalisation and tests). */
struct herald_cfg *cfg_new(enum herald_cfg_type type, const struct herald_cfg *pos_from);
void cfg_free(struct herald_cfg *n);
void cfg_append(struct herald_cfg *arr, struct herald_cfg *item);
void cfg_set(struct herald_cfg *obj, const char *key, struct herald_cfg *val); /* replaces */
/* Replaces node n (in its parent) with a one-element array holding n. */
struct herald_cfg *cfg_wrap_in_array(struct herald_cfg *n);
/* Removes and frees member key of obj, if present. */
void cfg_remove(struct herald_cfg *obj, const char *key);

/* Rendering, for /config_dump and --mode validate output. */
json_t *cfg_to_json(const struct herald_cfg *n);

/* "file:line:col" and the path, into out. */
void cfg_where(const struct herald_cfg *n, char *out, size_t size);

#endif
