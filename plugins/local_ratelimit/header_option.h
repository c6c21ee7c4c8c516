/* Envoy's HeaderValueOption (header {key, value}, append_action, the
 * deprecated append) for the headers a filter adds. */
#ifndef HERALD_LOCAL_RATELIMIT_HEADER_OPTION_H
#define HERALD_LOCAL_RATELIMIT_HEADER_OPTION_H

#include <stddef.h>

#include "herald/herald.h"

enum header_action {
    APPEND_IF_EXISTS_OR_ADD = 0,    /* Envoy's default */
    ADD_IF_ABSENT,
    OVERWRITE_IF_EXISTS_OR_ADD,
    OVERWRITE_IF_EXISTS,
};

struct header_option {
    char *key, *value;
    enum header_action action;
    bool keep_empty_value;
};

extern const struct herald_message header_option_msg;

/* A list of HeaderValueOption (checked by header_option_msg); NULL when empty. */
struct header_option *header_options_parse(const struct herald_cfg *list, size_t *n);
void header_options_free(struct header_option *o, size_t n);
/* Applies them in order, as Envoy's HeaderParser does. */
void header_options_apply(const struct header_option *o, size_t n, struct herald_headers *h);

#endif
