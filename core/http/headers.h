/* Core helpers on top of the SDK header map (sdk/include/herald/http.h). */
#ifndef HERALD_CORE_HTTP_HEADERS_H
#define HERALD_CORE_HTTP_HEADERS_H

#include <stdbool.h>
#include <stddef.h>

#include "herald/http.h"

/* Sum of name and value lengths (what max_request_headers_kb counts). */
size_t headers_byte_size(const struct herald_headers *h);
struct herald_headers *headers_clone(const struct herald_headers *h);
/* Adds without copying or lower-casing: name and value are malloc'd and
 * taken over, name already lower-case. For codecs. */
void headers_add_owned(struct herald_headers *h, char *name, char *value);
/* Moves every entry of src to the end of dst (src is left empty). */
void headers_append_move(struct herald_headers *dst, struct herald_headers *src);
/* Removes entry i (order kept); false past the end. */
bool headers_remove_at(struct herald_headers *h, size_t i);
/* Number of entries named name. */
size_t headers_count_name(const struct herald_headers *h, const char *name);
/* True when the value of name, split at commas, has token tok (case-insensitive),
 * e.g. headers_has_token(h, "connection", "close"). */
bool headers_has_token(const struct herald_headers *h, const char *name, const char *tok);

#endif
