/* The TLS transport socket's messages (envoy.extensions.transport_sockets.tls.v3)
 * as schema tables: every Envoy field is listed, so one herald does not
 * implement is a clear "not supported" instead of silence. */
#include <stddef.h>

#include "net/tls.h"

#include "config/data_source.h"
#include "config/schema_tables.h"


static const char *const tls_protocol_values[] = { "TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3", NULL };

static const struct herald_field tls_params_fields[] = {
    ENUM("tls_minimum_protocol_version", tls_protocol_values, .help = "default TLSv1_2"),
    ENUM("tls_maximum_protocol_version", tls_protocol_values, .help = "default TLSv1_3"),
    STRS("cipher_suites", .help = "TLS <= 1.2 ciphers (OpenSSL names or cipher strings); TLS_* names set "
         "the TLS 1.3 suites; default: ECDHE with AES-GCM or CHACHA20-POLY1305 only"),
    STRS("ecdh_curves", .help = "default X25519, P-256, P-384"),
    STRS("signature_algorithms"),
    UNSUP("compliance_policies"),
    END,
};
static const struct herald_message tls_params_msg = {
    "envoy.extensions.transport_sockets.tls.v3.TlsParameters", tls_params_fields, NULL,
};

static const struct herald_field tls_certificate_fields[] = {
    REQ("certificate_chain", MESSAGE, .message = &schema_data_source),
    REQ("private_key", MESSAGE, .message = &schema_data_source),
    MSG("password", schema_data_source),
    UNSUP("pkcs12"),
    UNSUP("watched_directory", .hint = "herald watches certificate_chain and private_key files by itself"),
    UNSUP("private_key_provider"),
    MSG("ocsp_staple", schema_data_source, .help = "a DER OCSP response for this certificate, stapled to handshakes "
        "whose client asks (status_request); a server's only"),
    UNSUP("signed_certificate_timestamp"),
    END,
};
static const struct herald_message tls_certificate_msg = {
    "envoy.extensions.transport_sockets.tls.v3.TlsCertificate", tls_certificate_fields, NULL,
};

/* envoy.type.matcher.v3.StringMatcher */
static const struct herald_field string_matcher_fields[] = {
    STR("exact", .oneof = "match_pattern"),
    STR("prefix", .oneof = "match_pattern"),
    STR("suffix", .oneof = "match_pattern"),
    STR("contains", .oneof = "match_pattern"),
    UNSUP("safe_regex", .oneof = "match_pattern"),
    UNSUP("custom", .oneof = "match_pattern"),
    BOOL("ignore_case"),
    END,
};
static const struct herald_message string_matcher_msg = {
    "envoy.type.matcher.v3.StringMatcher", string_matcher_fields, NULL,
};

static const char *const san_type_values[] = {
    "SAN_TYPE_UNSPECIFIED", "EMAIL", "DNS", "URI", "IP_ADDRESS", "OTHER_NAME", NULL,
};

static const struct herald_field san_matcher_fields[] = {
    REQ("san_type", ENUM, .enum_values = san_type_values),
    REQ("matcher", MESSAGE, .message = &string_matcher_msg),
    UNSUP("oid"),
    END,
};
static const struct herald_message san_matcher_msg = {
    "envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher", san_matcher_fields, NULL,
};

static const struct herald_field empty_fields[] = { END };
static const struct herald_message system_root_certs_msg = {
    "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext.SystemRootCerts", empty_fields, NULL,
};

static const char *const trust_chain_values[] = { "VERIFY_TRUST_CHAIN", "ACCEPT_UNTRUSTED", NULL };

static const struct herald_field validation_context_fields[] = {
    MSG("trusted_ca", schema_data_source),
    UNSUP("ca_certificate_provider_instance"),
    MSG("system_root_certs", system_root_certs_msg, .help = "trust the system's CA store"),
    UNSUP("watched_directory"),
    STRS("verify_certificate_spki", .help = "base64 SHA-256 of the peer's SubjectPublicKeyInfo"),
    STRS("verify_certificate_hash", .help = "hex SHA-256 of the peer's certificate (colons allowed)"),
    LIST("match_typed_subject_alt_names", san_matcher_msg),
    F_("match_subject_alt_names", MESSAGE, HERALD_F_REPEATED | HERALD_F_DEPRECATED, .message = &string_matcher_msg,
       .hint = "use match_typed_subject_alt_names"),
    UNSUP("require_signed_certificate_timestamp"),
    UNSUP("crl"),
    BOOL("allow_expired_certificate"),
    ENUM("trust_chain_verification", trust_chain_values),
    UNSUP("custom_validator_config"),
    UNSUP("only_verify_leaf_cert_crl"),
    UINT("max_verify_depth"),
    END,
};
static const struct herald_message validation_context_msg = {
    "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext", validation_context_fields, NULL,
};

static const struct herald_field common_tls_context_fields[] = {
    MSG("tls_params", tls_params_msg),
    LIST("tls_certificates", tls_certificate_msg),
    UNSUP("tls_certificate_sds_secret_configs", .hint = "SDS"),
    UNSUP("tls_certificate_provider_instance"),
    UNSUP("custom_tls_certificate_selector"),
    UNSUP("tls_certificate_certificate_provider"),
    UNSUP("tls_certificate_certificate_provider_instance"),
    MSG("validation_context", validation_context_msg, .oneof = "validation_context_type"),
    UNSUP("validation_context_sds_secret_config", .oneof = "validation_context_type", .hint = "SDS"),
    UNSUP("combined_validation_context", .oneof = "validation_context_type"),
    UNSUP("validation_context_certificate_provider", .oneof = "validation_context_type"),
    UNSUP("validation_context_certificate_provider_instance", .oneof = "validation_context_type"),
    STRS("alpn_protocols"),
    UNSUP("custom_handshaker"),
    UNSUP("key_log"),
    END,
};
static const struct herald_message common_tls_context_msg = {
    "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext", common_tls_context_fields, NULL,
};

static const struct herald_field session_ticket_keys_fields[] = {
    F_("keys", MESSAGE, HERALD_F_REPEATED | HERALD_F_REQUIRED, .message = &schema_data_source,
       .help = "80 bytes each; the first encrypts"),
    END,
};
static const struct herald_message session_ticket_keys_msg = {
    "envoy.extensions.transport_sockets.tls.v3.TlsSessionTicketKeys", session_ticket_keys_fields, NULL,
};

static const char *const ocsp_policy_values[] = { "LENIENT_STAPLING", "STRICT_STAPLING", "MUST_STAPLE", NULL };

static const struct herald_field downstream_fields[] = {
    MSG("common_tls_context", common_tls_context_msg),
    BOOL("require_client_certificate"),
    BOOL("require_sni"),
    MSG("session_ticket_keys", session_ticket_keys_msg, .oneof = "session_ticket_keys_type"),
    UNSUP("session_ticket_keys_sds_secret_config", .oneof = "session_ticket_keys_type", .hint = "SDS"),
    BOOL("disable_stateless_session_resumption", .oneof = "session_ticket_keys_type"),
    BOOL("disable_stateful_session_resumption"),
    DUR("session_timeout"),
    ENUM("ocsp_staple_policy", ocsp_policy_values,
         .help = "LENIENT_STAPLING (default: an expired staple is left out), STRICT_STAPLING (an expired one fails "
         "the handshake), MUST_STAPLE (every certificate needs one; missing or expired fails)"),
    UNSUP("full_scan_certs_on_sni_mismatch"),
    BOOL("prefer_client_ciphers"),
    END,
};
const struct herald_message tls_downstream_msg = {
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", downstream_fields, NULL,
};

static const struct herald_field upstream_fields[] = {
    MSG("common_tls_context", common_tls_context_msg),
    STR("sni", .help = "the server name sent (up to 255 bytes)"),
    UNSUP("auto_host_sni"),
    BOOL("auto_sni_san_validation", .help = "verify the server certificate's names against sni"),
    BOOL("allow_renegotiation"),
    UINT("max_session_keys", .help = "default 1; 0 disables session resumption"),
    UNSUP("enforce_rsa_key_usage"),
    END,
};
const struct herald_message tls_upstream_msg = {
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", upstream_fields, NULL,
};

/* envoy.config.core.v3.TransportSocket */
static const struct herald_field transport_socket_fields[] = {
    STR("name", .help = "envoy.transport_sockets.tls or envoy.transport_sockets.raw_buffer"),
    TYPED("typed_config", .oneof = "config_type"),
    REMOVED("config", "v2 field: use typed_config with an \"@type\""),
    END,
};
const struct herald_message tls_transport_socket_msg = {
    "envoy.config.core.v3.TransportSocket", transport_socket_fields, NULL,
};
