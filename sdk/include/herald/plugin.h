/* herald SDK: the plugin descriptor. A plugin is a shared object exporting
 * exactly one data symbol, `herald_plugin`, made with HERALD_PLUGIN(). The
 * core finds it by the names in the descriptor (never by the file name).
 *
 * The first five members (magic, abi_major, abi_minor, struct_size, name)
 * keep their place in every ABI version, so that any herald can tell what an
 * incompatible plugin is and say so. */
#ifndef HERALD_PLUGIN_H
#define HERALD_PLUGIN_H

#include <stdint.h>

#include "herald/config.h"
#include "herald/listener_filter.h"
#include "herald/network_filter.h"
#include "herald/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HERALD_PLUGIN_MAGIC 0x48524c44u /* "HRLD" */

enum herald_plugin_kind {
    HERALD_PLUGIN_NETWORK_FILTER = 1,
    HERALD_PLUGIN_LISTENER_FILTER = 2,
    HERALD_PLUGIN_HTTP_FILTER = 3,     /* since SDK 1.1: ops are struct herald_http_filter_ops */
};

/* Bits of build_signature: what the plugin's compiler assumed. */
#define HERALD_SIG_PTR64 0x01u
#define HERALD_BUILD_SIGNATURE ((sizeof(void *) == 8 ? HERALD_SIG_PTR64 : 0u))

#define HERALD_PLUGIN_TERMINAL 0x01u /* must be the last filter of its chain (tcp_proxy, http_connection_manager,
                                        router) */

struct herald_plugin {
    uint32_t magic;
    uint16_t abi_major;
    uint16_t abi_minor;
    uint32_t struct_size;
    const char *name;                /* canonical Envoy name: envoy.filters.network.tcp_proxy */
    uint32_t build_signature;
    enum herald_plugin_kind kind;
    uint32_t flags;                  /* HERALD_PLUGIN_TERMINAL */
    const char *const *aliases;      /* NULL-terminated deprecated names (envoy.tcp_proxy) or NULL */
    const char *const *type_urls;    /* NULL-terminated proto names of typed_config, without
                                        "type.googleapis.com/"; v2 and v3 spellings */
    const char *version;             /* the plugin's own version */
    const char *description;         /* one line */
    const struct herald_message *config_schema; /* checked before config_create; NULL: any */
    const void *ops;                 /* struct herald_{network,listener,http}_filter_ops, by kind */
};

#define HERALD_PLUGIN(...)                                        \
    HERALD_EXPORT const struct herald_plugin herald_plugin = {    \
        .magic = HERALD_PLUGIN_MAGIC,                             \
        .abi_major = HERALD_ABI_MAJOR,                            \
        .abi_minor = HERALD_ABI_MINOR,                            \
        .struct_size = sizeof(struct herald_plugin),              \
        .build_signature = HERALD_BUILD_SIGNATURE,                \
        __VA_ARGS__}

#ifdef __cplusplus
}
#endif
#endif
