/* envoy.filters.listener.tls_inspector: peeks at the first bytes of a
 * connection; when they are a TLS ClientHello (parsed by client_hello.c),
 * sets the transport protocol "tls", the server name (SNI) and the offered
 * ALPN protocols, so the filter chain can be chosen by them. Anything else
 * is "raw_buffer" at once, so one port can serve TLS and plaintext. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "herald/herald.h"
#include "tls_inspector.h"

#define DEFAULT_MAX_READ 16384u   /* Envoy's max ClientHello is 64 KiB; real ones are < 2 KiB (PQ: < 4 KiB) */

struct tls_inspector_conf {
    size_t max_read;
    bool close_on_error;
    struct herald_stat *client_hello_too_large, *tls_found, *tls_not_found, *alpn_found, *alpn_not_found,
        *sni_found, *sni_not_found;
};

struct session {
    struct tls_inspector_conf *conf;
    struct herald_socket *s;
};

/* ------------------------------------------------------------ the filter */

static int config_create(const struct herald_cfg *tc, const struct herald_filter_env *env, void **out, char **err)
{
    struct tls_inspector_conf *c = calloc(1, sizeof(*c));
    if (!c)
        return herald_cfg_errorf(tc, err, "out of memory");
    int64_t irb = herald_cfg_int(herald_cfg_get(tc, "initial_read_buffer_size"), DEFAULT_MAX_READ);
    if (irb < 256 || irb > MAX_MAX_READ) {
        free(c);
        return herald_cfg_errorf(herald_cfg_get(tc, "initial_read_buffer_size"), err,
                                 "initial_read_buffer_size must be between 256 and %u", MAX_MAX_READ);
    }
    /* herald reads the hello within one buffer of this size; a bigger hello counts client_hello_too_large */
    c->max_read = (size_t)irb;
    c->close_on_error = herald_cfg_bool(herald_cfg_get(tc, "close_connection_on_client_hello_parsing_errors"), false);
    const char *p = "tls_inspector";
    c->client_hello_too_large = herald_counter(p, "client_hello_too_large");
    c->tls_found = herald_counter(p, "tls_found");
    c->tls_not_found = herald_counter(p, "tls_not_found");
    c->alpn_found = herald_counter(p, "alpn_found");
    c->alpn_not_found = herald_counter(p, "alpn_not_found");
    c->sni_found = herald_counter(p, "sni_found");
    c->sni_not_found = herald_counter(p, "sni_not_found");
    *out = c;
    return 0;
}

static void config_destroy(void *conf) { free(conf); }

static size_t max_read_bytes(void *conf) { return ((struct tls_inspector_conf *)conf)->max_read; }

static void *session_new(void *conf, struct herald_socket *s)
{
    struct session *ss = calloc(1, sizeof(*ss));
    if (ss) {
        ss->conf = conf;
        ss->s = s;
    }
    return ss;
}

static void session_destroy(void *session) { free(session); }

static enum herald_status on_accept(void *session) { return session ? HERALD_STOP : HERALD_CONTINUE; }

static enum herald_status on_data(void *session, const uint8_t *data, size_t len)
{
    struct session *ss = session;
    struct tls_inspector_conf *c = ss->conf;
    struct tls_hello h;
    switch (tls_parse_client_hello(data, len, &h)) {
    case TLS_PARSE_MORE:
        if (len < c->max_read)
            return HERALD_STOP;
        /* the buffer is full and the hello is not complete */
        /* fall through */
    case TLS_PARSE_TOO_LARGE:
        herald_stat_inc(c->client_hello_too_large);
        herald_log(HERALD_LOG_DEBUG, "tls_inspector", "ClientHello larger than %zu bytes", c->max_read);
        return HERALD_CLOSE; /* as Envoy: too large is closed */
    case TLS_PARSE_NOT_TLS:
        herald_stat_inc(c->tls_not_found);
        herald_socket_set_transport_protocol(ss->s, "raw_buffer");
        return HERALD_CONTINUE;
    case TLS_PARSE_ERROR:
        herald_stat_inc(c->tls_not_found);
        if (c->close_on_error)
            return HERALD_CLOSE;
        herald_socket_set_transport_protocol(ss->s, "raw_buffer");
        return HERALD_CONTINUE;
    case TLS_PARSE_DONE:
        break;
    }
    herald_stat_inc(c->tls_found);
    herald_socket_set_transport_protocol(ss->s, "tls");
    if (h.has_sni) {
        herald_stat_inc(c->sni_found);
        herald_socket_set_server_name(ss->s, h.sni);
    } else {
        herald_stat_inc(c->sni_not_found);
    }
    herald_stat_inc(h.nalpn ? c->alpn_found : c->alpn_not_found);
    for (size_t i = 0; i < h.nalpn; i++)
        herald_socket_add_application_protocol(ss->s, h.alpn[i]);
    return HERALD_CONTINUE;
}

static const struct herald_listener_filter_ops ops = {
    .size = sizeof(struct herald_listener_filter_ops),
    .config_create = config_create,
    .config_destroy = config_destroy,
    .max_read_bytes = max_read_bytes,
    .session_new = session_new,
    .session_destroy = session_destroy,
    .on_accept = on_accept,
    .on_data = on_data,
};

static const struct herald_field fields[] = {
    {.name = "enable_ja3_fingerprinting", .kind = HERALD_FIELD_BOOL, .flags = HERALD_F_UNSUPPORTED},
    {.name = "enable_ja4_fingerprinting", .kind = HERALD_FIELD_BOOL, .flags = HERALD_F_UNSUPPORTED},
    {.name = "initial_read_buffer_size", .kind = HERALD_FIELD_UINT,
     .help = "bytes peeked for the ClientHello (default 16384, at most 65536)"},
    {.name = "close_connection_on_client_hello_parsing_errors", .kind = HERALD_FIELD_BOOL,
     .help = "close a connection whose TLS ClientHello is malformed (default: treat it as raw_buffer)"},
    {.name = NULL},
};

static const struct herald_message schema = {
    "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector", fields, NULL,
};

static const char *const aliases[] = {"envoy.listener.tls_inspector", NULL};
static const char *const type_urls[] = {
    "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
    "envoy.config.filter.listener.tls_inspector.v2.TlsInspector",
    NULL,
};

HERALD_PLUGIN(.name = "envoy.filters.listener.tls_inspector",
              .kind = HERALD_PLUGIN_LISTENER_FILTER,
              .aliases = aliases,
              .type_urls = type_urls,
              .version = "1.0.0",
              .description = "detects TLS and reads SNI and ALPN from the ClientHello for filter chain matching",
              .config_schema = &schema,
              .ops = &ops);
