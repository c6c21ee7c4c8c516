/* Comma-separated header lists (Cache-Control, Vary, Accept-Encoding,
 * Content-Encoding) for the compressor and decompressor: looking a token up
 * across every value of a header, and appending one. Tokens compare without
 * case and without their ;parameters. */
#ifndef HERALD_PLUGIN_COMMON_HEADER_TOKENS_H
#define HERALD_PLUGIN_COMMON_HEADER_TOKENS_H

#include <stdbool.h>
#include <stddef.h>

#include "herald/herald.h"

/* true when some value of name lists token (e.g. cache-control: no-transform). */
bool header_has_token(const struct herald_headers *h, const char *name, const char *token);
/* Adds token to the list in name: "a, token" (the values joined into one
 * entry), or a new header; nothing when it is already listed. */
void header_append_token(struct herald_headers *h, const char *name, const char *token);
/* The next token of a list from *p: its start and length (no spaces, no
 * ;parameters) and, in *params, what follows ';' up to ',' (or NULL); false at the end. */
bool header_next_token(const char **p, const char **tok, size_t *len, const char **params, size_t *params_len);

#endif
