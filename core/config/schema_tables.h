/* Shorthand for writing declarative message tables (herald/config.h) in the
 * core: one line per Envoy field. Include it only from *_schema.c files. */
#ifndef HERALD_CORE_CONFIG_SCHEMA_TABLES_H
#define HERALD_CORE_CONFIG_SCHEMA_TABLES_H

#include "herald/config.h"

#define F_(n, k, fl, ...) { .name = (n), .kind = HERALD_FIELD_##k, .flags = (fl), __VA_ARGS__ }
#define STR(n, ...) F_(n, STRING, 0, __VA_ARGS__)
#define STRS(n, ...) F_(n, STRING, HERALD_F_REPEATED, __VA_ARGS__)
#define BOOL(n, ...) F_(n, BOOL, 0, __VA_ARGS__)
#define UINT(n, ...) F_(n, UINT, 0, __VA_ARGS__)
#define DUR(n, ...) F_(n, DURATION, 0, __VA_ARGS__)
#define ENUM(n, vals, ...) F_(n, ENUM, 0, .enum_values = (vals), __VA_ARGS__)
#define MSG(n, m, ...) F_(n, MESSAGE, 0, .message = &(m), __VA_ARGS__)
#define LIST(n, m, ...) F_(n, MESSAGE, HERALD_F_REPEATED, .message = &(m), __VA_ARGS__)
#define STRUCT(n, ...) F_(n, STRUCT, 0, __VA_ARGS__)
#define TYPED(n, ...) F_(n, TYPED, 0, __VA_ARGS__)
#define ANY(n, ...) F_(n, ANY, 0, __VA_ARGS__)
#define REQ(n, k, ...) F_(n, k, HERALD_F_REQUIRED, __VA_ARGS__)
/* an Envoy field herald knows of but does not implement: an error, not silence */
#define UNSUP(n, ...) F_(n, ANY, HERALD_F_UNSUPPORTED, __VA_ARGS__)
#define REMOVED(n, h) F_(n, REMOVED, 0, .hint = (h))
#define END { .name = NULL }

#endif
