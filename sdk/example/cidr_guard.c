/* cidr_guard: an example herald network filter, built out of tree against
 * the installed SDK (see README.md).
 *
 * It closes connections whose remote address falls in one of the denied
 * CIDR ranges (IPv4 or IPv6), and counts what passes through it:
 *
 *   cidr_guard.<stat_prefix>.denied / allowed    connections
 *   cidr_guard.<stat_prefix>.rx_bytes / tx_bytes bytes from / to the client
 *
 * It only looks at the bytes (on_read and on_write return CONTINUE), so it
 * goes in front of a terminal filter such as tcp_proxy. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <herald/herald.h>

struct cidr {
    int family;         /* AF_INET or AF_INET6 */
    uint8_t addr[16];   /* network byte order, host bits cleared */
    unsigned prefix;    /* bits */
};

struct guard_conf {
    struct cidr *deny;
    size_t ndeny;
    struct herald_stat *denied, *allowed, *rx_bytes, *tx_bytes;
};

struct guard_session {
    struct guard_conf *conf;
    struct herald_conn *conn;
};

/* ---------------------------------------------------------------- CIDRs */

/* "10.0.0.0/8", "2001:db8::/32", or a bare address (a /32 or /128). */
static int parse_cidr(const char *s, struct cidr *out)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    size_t hl = slash ? (size_t)(slash - s) : strlen(s);

    if (hl == 0 || hl >= sizeof(host))
        return -1;
    memcpy(host, s, hl);
    host[hl] = '\0';
    memset(out, 0, sizeof(*out));
    unsigned max;
    if (inet_pton(AF_INET, host, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, host, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        return -1;
    }
    out->prefix = max;
    if (slash) {
        char *end;
        unsigned long p = strtoul(slash + 1, &end, 10);
        if (!slash[1] || *end || p > max)
            return -1;
        out->prefix = (unsigned)p;
    }
    /* clear the host bits so that matching is a plain prefix compare */
    for (unsigned bit = out->prefix; bit < max; bit++)
        out->addr[bit / 8] &= (uint8_t)~(0x80u >> (bit % 8));
    return 0;
}

static bool prefix_match(const uint8_t *a, const uint8_t *net, unsigned prefix)
{
    unsigned whole = prefix / 8, rest = prefix % 8;

    if (memcmp(a, net, whole) != 0)
        return false;
    if (!rest)
        return true;
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (a[whole] & mask) == net[whole];
}

static bool denied(const struct guard_conf *conf, const struct sockaddr *sa)
{
    uint8_t v4[4], v6[16];
    const uint8_t *mapped = NULL; /* ::ffff:a.b.c.d also matches IPv4 ranges */

    if (!sa)
        return false;
    if (sa->sa_family == AF_INET) {
        memcpy(v4, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        memcpy(v6, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (!memcmp(v6, v4mapped, 12))
            mapped = v6 + 12;
    } else {
        return false; /* unix sockets: nothing to match */
    }
    for (size_t i = 0; i < conf->ndeny; i++) {
        const struct cidr *c = &conf->deny[i];
        if (c->family == AF_INET && sa->sa_family == AF_INET && prefix_match(v4, c->addr, c->prefix))
            return true;
        if (c->family == AF_INET && mapped && prefix_match(mapped, c->addr, c->prefix))
            return true;
        if (c->family == AF_INET6 && sa->sa_family == AF_INET6 && prefix_match(v6, c->addr, c->prefix))
            return true;
    }
    return false;
}

/* ---------------------------------------------------------------- config */

static int check_config(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *deny = herald_cfg_get(n, "deny");

    for (size_t i = 0; i < herald_cfg_len(deny); i++) {
        const struct herald_cfg *item = herald_cfg_at(deny, i);
        struct cidr c;
        if (parse_cidr(herald_cfg_str(item, ""), &c) < 0)
            return herald_cfg_errorf(item, err, "'%s' is not a CIDR range (e.g. 10.0.0.0/8 or 2001:db8::/32)",
                                     herald_cfg_str(item, ""));
    }
    return 0;
}

static const struct herald_field guard_fields[] = {
    {.name = "stat_prefix", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "stats are named cidr_guard.<stat_prefix>.*"},
    {.name = "deny", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REPEATED,
     .help = "CIDR ranges whose connections are closed at once (IPv4 and IPv6)"},
    {NULL},
};

static const struct herald_message guard_schema = {
    .name = "example.CidrGuard",
    .fields = guard_fields,
    .check = check_config,
};

static void config_destroy(void *p)
{
    struct guard_conf *conf = p;

    if (conf) {
        free(conf->deny);
        free(conf);
    }
}

static int config_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out,
                         char **err)
{
    const struct herald_cfg *deny = herald_cfg_get(n, "deny");
    struct guard_conf *conf = calloc(1, sizeof(*conf));

    if (!conf || check_config(n, err) < 0) {
        free(conf);
        return conf ? -1 : herald_cfg_errorf(n, err, "out of memory");
    }
    conf->ndeny = herald_cfg_len(deny);
    conf->deny = calloc(conf->ndeny ? conf->ndeny : 1, sizeof(*conf->deny));
    if (!conf->deny) {
        free(conf);
        return herald_cfg_errorf(n, err, "out of memory");
    }
    for (size_t i = 0; i < conf->ndeny; i++)
        parse_cidr(herald_cfg_str(herald_cfg_at(deny, i), ""), &conf->deny[i]);
    if (conf->ndeny == 0)
        herald_env_warn(env, n, "deny is empty: cidr_guard lets every connection through");

    char prefix[256];
    snprintf(prefix, sizeof(prefix), "cidr_guard.%s", herald_cfg_str(herald_cfg_get(n, "stat_prefix"), ""));
    conf->denied = herald_counter(prefix, "denied");
    conf->allowed = herald_counter(prefix, "allowed");
    conf->rx_bytes = herald_counter(prefix, "rx_bytes");
    conf->tx_bytes = herald_counter(prefix, "tx_bytes");
    *out = conf;
    return 0;
}

/* ---------------------------------------------------------------- connections */

static void *session_new(void *conf, void *wstate, struct herald_conn *c)
{
    struct guard_session *s = calloc(1, sizeof(*s));

    if (s) {
        s->conf = conf;
        s->conn = c;
    }
    return s; /* NULL refuses the connection: the right answer when out of memory */
}

static void session_destroy(void *s)
{
    free(s);
}

static enum herald_status on_new_connection(void *arg)
{
    struct guard_session *s = arg;

    if (denied(s->conf, herald_conn_remote_addr(s->conn, NULL))) {
        herald_stat_inc(s->conf->denied);
        HERALD_LOGF(HERALD_LOG_DEBUG, "cidr_guard", "[C%llu] %s denied",
                    (unsigned long long)herald_conn_id(s->conn), herald_conn_remote_str(s->conn));
        return HERALD_CLOSE;
    }
    herald_stat_inc(s->conf->allowed);
    return HERALD_CONTINUE;
}

static enum herald_status on_read(void *arg, struct herald_buf *data, bool end_stream)
{
    struct guard_session *s = arg;

    herald_stat_add(s->conf->rx_bytes, herald_buf_len(data));
    return HERALD_CONTINUE;
}

static enum herald_status on_write(void *arg, struct herald_buf *data, bool end_stream)
{
    struct guard_session *s = arg;

    herald_stat_add(s->conf->tx_bytes, herald_buf_len(data));
    return HERALD_CONTINUE;
}

static const struct herald_network_filter_ops guard_ops = {
    .size = sizeof(struct herald_network_filter_ops),
    .config_create = config_create,
    .config_destroy = config_destroy,
    .session_new = session_new,
    .session_destroy = session_destroy,
    .on_new_connection = on_new_connection,
    .on_read = on_read,
    .on_write = on_write,
};

static const char *const guard_type_urls[] = {"example.CidrGuard", NULL};

HERALD_PLUGIN(.name = "example.cidr_guard",
              .kind = HERALD_PLUGIN_NETWORK_FILTER,
              .type_urls = guard_type_urls,
              .version = "1.0.0",
              .description = "closes connections from denied CIDR ranges; counts connections and bytes",
              .config_schema = &guard_schema,
              .ops = &guard_ops);
