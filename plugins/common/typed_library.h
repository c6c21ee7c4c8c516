/* A compression library's typed_config (compressor_library /
 * decompressor_library): the core leaves google.protobuf.Any fields to
 * whoever owns the type, so the plugin checks the node against its own
 * schema here, with the same file:line:col + field path messages. Scalar
 * fields only (UINT, BOOL, STRING, ENUM), which is all the gzip messages
 * have. */
#ifndef HERALD_PLUGIN_COMMON_TYPED_LIBRARY_H
#define HERALD_PLUGIN_COMMON_TYPED_LIBRARY_H

#include "herald/herald.h"

/* envoy.config.core.v3.TypedExtensionConfig {name, typed_config}: the
 * compressor_library / decompressor_library field's message. */
extern const struct herald_message typed_library_schema;

/* 0, or -1 with *err: @type is not schema->name, an unknown field, a wrong
 * type, an enum value not in the list, or a field flagged not supported. */
int typed_library_check(const struct herald_cfg *typed_config, const struct herald_message *schema, char **err);
/* A UINT field of the library's config, dflt when absent, into *out; 0, or
 * -1 with *err when it is outside lo..hi. */
int typed_library_uint(const struct herald_cfg *typed_config, const char *field, int64_t lo, int64_t hi,
                       int64_t dflt, int64_t *out, char **err);
/* An ENUM field's value in the table's spelling (any case accepted), or dflt. */
const char *typed_library_enum(const struct herald_cfg *typed_config, const struct herald_message *schema,
                               const char *field, const char *dflt);

#endif
