/* redis_proxy: the commands the proxy knows and how it handles each. Pure.
 *
 * Only commands that can be sent to the one server owning their key are
 * forwarded (Envoy's rule): their first key decides the host. A few are
 * answered by the proxy itself, and the multi-key ones are split into one
 * command per key and their replies put back together. Everything else is
 * refused with "unsupported command": in particular whatever changes the
 * state of a connection (SELECT, CLIENT, HELLO, MULTI/EXEC/WATCH,
 * SUBSCRIBE), blocks it (BLPOP) or has no key (KEYS, SCAN, FLUSHALL), since a
 * server connection is shared by all the clients of a worker. */
#ifndef HERALD_PLUGIN_REDIS_COMMANDS_H
#define HERALD_PLUGIN_REDIS_COMMANDS_H

#include <stdbool.h>
#include <stddef.h>

enum redis_cmd_kind {
    REDIS_CMD_SIMPLE = 0,   /* key in argv[1]: forwarded whole */
    REDIS_CMD_EVAL,         /* EVAL script numkeys key ...: key in argv[3] */
    REDIS_CMD_MGET,         /* split into GET key, the replies make an array */
    REDIS_CMD_MSET,         /* split into SET key value, OK when all are */
    REDIS_CMD_SUM,          /* DEL, UNLINK, EXISTS, TOUCH: one per key, integers added */
    REDIS_CMD_PING,         /* answered here */
    REDIS_CMD_ECHO,
    REDIS_CMD_TIME,
    REDIS_CMD_QUIT,
    REDIS_CMD_AUTH,
};

struct redis_cmd {
    const char *name;       /* lower case */
    enum redis_cmd_kind kind;
    bool write;             /* changes data (mirror policies' exclude_read_commands) */
};

/* The command named by name (len bytes, any case), or NULL. *index is its
 * place in the table (for per-command stats). */
const struct redis_cmd *redis_cmd_lookup(const char *name, size_t len, size_t *index);
/* The table, for making the stats: redis_cmd_at(i) for i < redis_cmd_count(). */
size_t redis_cmd_count(void);
const struct redis_cmd *redis_cmd_at(size_t i);
/* Whether the kind gets command.<name>.* stats (local answers do not, as in Envoy). */
bool redis_cmd_has_stats(enum redis_cmd_kind kind);

#endif
