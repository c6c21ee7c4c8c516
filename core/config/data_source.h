/* envoy.config.core.v3.DataSource read once, when the config loads: one
 * reader for direct responses, local replies, access log formats and the
 * plugins (the SDK's herald_cfg_data_source). Certificates are not read
 * here: tls.c keeps their file names to reload them when they change. */
#ifndef HERALD_CORE_CONFIG_DATA_SOURCE_H
#define HERALD_CORE_CONFIG_DATA_SOURCE_H

#include <stddef.h>

#include "herald/config.h"

/* Its schema, for every DataSource field of the core's messages. */
extern const struct herald_message schema_data_source;

/* The bytes (malloc'd, a NUL after them, *len of them) of n's
 * inline_string, inline_bytes (base64, standard or URL-safe),
 * environment_variable or filename. Of a file at most max + 1 bytes are
 * read, so *len > max tells a caller the file is over its limit (SIZE_MAX:
 * no limit). NULL with *err (herald_cfg_errorf: the place) when n names
 * none, the base64 is bad, the variable is not set or the file cannot be
 * read. */
char *data_source_read(const struct herald_cfg *n, size_t max, size_t *len, char **err);

#endif
