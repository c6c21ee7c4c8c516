/* envoy.extensions.transport_sockets.proxy_protocol.v3 and the PROXY protocol
 * messages of envoy.config.core.v3, as schema tables (net/proxy_header.c). */
#include <stddef.h>

#include "net/proxy_header.h"
#include "net/tls.h"

#include "config/schema_tables.h"

static const char *const pass_match_values[] = { "INCLUDE_ALL", "INCLUDE", NULL };

static const struct herald_field pass_through_fields[] = {
    ENUM("match_type", pass_match_values, .help = "INCLUDE_ALL (default) or INCLUDE (the types in tlv_type)"),
    F_("tlv_type", UINT, HERALD_F_REPEATED, .help = "0 to 255"),
    END,
};
static const struct herald_message pp_pass_through_msg = {
    "envoy.config.core.v3.ProxyProtocolPassThroughTLVs", pass_through_fields, NULL,
};

static const struct herald_field tlv_entry_fields[] = {
    REQ("type", UINT, .help = "0 to 255"),
    STR("value", .help = "base64 bytes, at least one"),
    UNSUP("format_string"),
    END,
};
static const struct herald_message tlv_entry_msg = { "envoy.config.core.v3.TlvEntry", tlv_entry_fields, NULL };

static const char *const version_values[] = { "V1", "V2", NULL };

static const struct herald_field config_fields[] = {
    ENUM("version", version_values, .help = "V1 (default, text) or V2 (binary, with TLVs)"),
    MSG("pass_through_tlvs", pp_pass_through_msg, .help = "downstream TLVs to send on (v2); unset: none"),
    LIST("added_tlvs", tlv_entry_msg),
    END,
};
static const struct herald_message config_msg = { "envoy.config.core.v3.ProxyProtocolConfig", config_fields, NULL };

static const struct herald_field pool_fields[] = {
    UNSUP("allow_unspecified_address"),
    UNSUP("tlv_as_pool_key"),
    END,
};
static const struct herald_message pool_msg = {
    "envoy.extensions.transport_sockets.proxy_protocol.v3.ConnectionPoolSettings", pool_fields, NULL,
};

static const struct herald_field upstream_fields[] = {
    MSG("config", config_msg),
    REQ("transport_socket", MESSAGE, .message = &tls_transport_socket_msg,
        .help = "the socket it wraps: raw_buffer, or tls with an UpstreamTlsContext"),
    MSG("connection_pool_settings", pool_msg),
    END,
};
const struct herald_message pp_upstream_msg = {
    "envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport", upstream_fields, NULL,
};

static const struct herald_field per_host_fields[] = {
    LIST("added_tlvs", tlv_entry_msg),
    END,
};
const struct herald_message pp_per_host_msg = { "envoy.config.core.v3.PerHostConfig", per_host_fields, NULL };
