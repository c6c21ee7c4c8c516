/* envoy.type.matcher.v3 RegexMatcher and StringMatcher as schema tables:
 * for routes, the bootstrap (admin.allow_paths) and, through the SDK
 * (herald_string_matcher_schema), filters' own configs. A regex must compile
 * with PCRE2, which matches it against whole values. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <string.h>

#include "common.h"
#include "config/schema.h"
#include "config/tree.h"
#include "herald/http.h"

#include "config/schema_tables.h"

static int regex_matcher_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *re = herald_cfg_get(n, "regex");
    int code;
    PCRE2_SIZE off;
    pcre2_code *c = pcre2_compile((PCRE2_SPTR)herald_cfg_str(re, ""), PCRE2_ZERO_TERMINATED, PCRE2_UTF, &code,
                                  &off, NULL);
    if (!c) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof(msg));
        return herald_cfg_errorf(re, err, "invalid regex '%s': %s at offset %zu", herald_cfg_str(re, ""),
                                 (const char *)msg, (size_t)off);
    }
    pcre2_code_free(c);
    return 0;
}

static const struct herald_field regex_matcher_fields[] = {
    F_("google_re2", ANY, HERALD_F_DEPRECATED, .hint = "ignored (herald uses PCRE2)"),
    F_("regex", STRING, HERALD_F_REQUIRED, .help = "matched against the whole value (PCRE2 syntax)"),
    END,
};
const struct herald_message schema_regex_matcher = {
    "envoy.type.matcher.v3.RegexMatcher", regex_matcher_fields, regex_matcher_check,
};

static int string_matcher_check(const struct herald_cfg *n, char **err)
{
    static const char *const kinds[] = { "exact", "prefix", "suffix", "contains", "safe_regex" };
    bool any = false;
    for (size_t i = 0; i < ARRAY_SIZE(kinds); i++)
        any |= herald_cfg_get(n, kinds[i]) != NULL;
    if (!any)
        return herald_cfg_errorf(n, err, "a string matcher needs one of exact, prefix, suffix, contains or "
                                 "safe_regex");
    if (herald_cfg_get(n, "safe_regex") && herald_cfg_bool(herald_cfg_get(n, "ignore_case"), false))
        return herald_cfg_errorf(herald_cfg_get(n, "ignore_case"), err,
                                 "ignore_case has no effect on safe_regex: use (?i) in the regex");
    return 0;
}

static const struct herald_field string_matcher_fields[] = {
    STR("exact", .oneof = "match_pattern"),
    STR("prefix", .oneof = "match_pattern"),
    STR("suffix", .oneof = "match_pattern"),
    MSG("safe_regex", schema_regex_matcher, .oneof = "match_pattern"),
    STR("contains", .oneof = "match_pattern"),
    UNSUP("custom", .oneof = "match_pattern"),
    BOOL("ignore_case", .help = "for exact, prefix, suffix and contains"),
    REMOVED("regex", "v2 field: use safe_regex: {regex: ...}"),
    END,
};
/* exported: filters put it in their own schemas (SDK 1.6) */
const struct herald_message herald_string_matcher_schema = {
    "envoy.type.matcher.v3.StringMatcher", string_matcher_fields, string_matcher_check,
};
