/* The schema of Envoy's HeaderValueOption: the tables and the per-message
 * check, apart from the parser (header_option.c) so that the config code
 * (bootstrap health checks) links without the HTTP and access-log code. */
#include <string.h>
#include <strings.h>

#include "common.h"
#include "config/schema.h"
#include "config/tree.h"
#include "http/header_option.h"

#include "config/schema_tables.h"

const char *const header_option_actions[] = {
    "APPEND_IF_EXISTS_OR_ADD", "ADD_IF_ABSENT", "OVERWRITE_IF_EXISTS_OR_ADD", "OVERWRITE_IF_EXISTS", NULL,
};

static bool modifiable(const char *key)
{
    return key[0] != ':' && strcasecmp(key, "host") != 0;
}

int header_option_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *append = herald_cfg_get(n, "append");
    if (append && herald_cfg_get(n, "append_action"))
        return herald_cfg_errorf(append, err, "append and append_action are both set: give only append_action");
    const struct herald_cfg *hv = herald_cfg_get(n, "header");
    if (!hv)
        return herald_cfg_errorf(n, err, "missing required field 'header'");
    const char *key = herald_cfg_str(herald_cfg_get(hv, "key"), "");
    if (!*key)
        return herald_cfg_errorf(hv, err, "the header key is empty");
    /* RFC 9110 token characters: what may be a field name on the wire */
    for (const char *p = key; *p; p++)
        if (!(strchr("!#$%&'*+-.^_`|~", *p) || (*p >= '0' && *p <= '9') || ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z'))
            && !(p == key && *p == ':'))
            return herald_cfg_errorf(herald_cfg_get(hv, "key"), err, "'%s' is not a header name", key);
    if (!modifiable(key))
        return herald_cfg_errorf(herald_cfg_get(hv, "key"), err,
                                 "':'-prefixed or host headers may not be modified (use the route's "
                                 "prefix_rewrite / host_rewrite_literal)");
    return 0;
}

const struct herald_field header_option_value_fields[] = {
    F_("key", STRING, HERALD_F_REQUIRED),
    STR("value", .help = "literal text, %% for '%', and the access log's %OPERATORS%"),
    UNSUP("raw_value", .hint = "use value"),
    END,
};
static const struct herald_message header_value_msg = {
    "envoy.config.core.v3.HeaderValue", header_option_value_fields, NULL,
};

const struct herald_field header_option_fields[] = {
    MSG("header", header_value_msg),
    F_("append", BOOL, HERALD_F_DEPRECATED, .hint = "use append_action"),
    ENUM("append_action", header_option_actions, .help = "APPEND_IF_EXISTS_OR_ADD (default), ADD_IF_ABSENT, "
         "OVERWRITE_IF_EXISTS_OR_ADD, OVERWRITE_IF_EXISTS"),
    BOOL("keep_empty_value", .help = "add the header even when its value is empty"),
    END,
};
HERALD_EXPORT const struct herald_message herald_header_value_option_schema = {
    "envoy.config.core.v3.HeaderValueOption", header_option_fields, header_option_check,
};

