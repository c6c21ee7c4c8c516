/* redis_proxy: the command table (see commands.h), sorted by name. The
 * forwarded commands are those of Envoy's redis proxy; WATCH is left out
 * (without MULTI/EXEC it only leaves state on a shared connection). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "commands.h"

#define S(n) {n, REDIS_CMD_SIMPLE, false}
#define W(n) {n, REDIS_CMD_SIMPLE, true}

static const struct redis_cmd table[] = {
    W("append"), {"auth", REDIS_CMD_AUTH, false}, W("bf.add"), S("bf.card"), S("bf.exists"), S("bf.info"),
    W("bf.insert"), W("bf.loadchunk"), W("bf.madd"), S("bf.mexists"), W("bf.reserve"), S("bf.scandump"),
    S("bitcount"), W("bitfield"), S("bitpos"), W("decr"), W("decrby"), {"del", REDIS_CMD_SUM, true},
    S("dump"), {"echo", REDIS_CMD_ECHO, false}, {"eval", REDIS_CMD_EVAL, true},
    {"eval_ro", REDIS_CMD_EVAL, false}, {"evalsha", REDIS_CMD_EVAL, true}, {"evalsha_ro", REDIS_CMD_EVAL, false},
    {"exists", REDIS_CMD_SUM, false}, W("expire"), W("expireat"), W("geoadd"), S("geodist"), S("geohash"),
    S("geopos"), S("georadius_ro"), S("georadiusbymember_ro"), S("get"), S("getbit"), W("getdel"),
    S("getrange"), W("getset"), W("hdel"), S("hexists"), S("hget"), S("hgetall"), W("hincrby"),
    W("hincrbyfloat"), S("hkeys"), S("hlen"), S("hmget"), W("hmset"), S("hscan"), W("hset"), W("hsetnx"),
    S("hstrlen"), S("hvals"), W("incr"), W("incrby"), W("incrbyfloat"), S("lindex"), W("linsert"), S("llen"),
    W("lmove"), W("lpop"), W("lpush"), W("lpushx"), S("lrange"), W("lrem"), W("lset"), W("ltrim"),
    {"mget", REDIS_CMD_MGET, false}, {"mset", REDIS_CMD_MSET, true}, W("persist"), W("pexpire"),
    W("pexpireat"), W("pfadd"), S("pfcount"), {"ping", REDIS_CMD_PING, false}, W("psetex"), S("pttl"),
    S("publish"), {"quit", REDIS_CMD_QUIT, false}, W("restore"), W("rpop"), W("rpush"), W("rpushx"),
    W("sadd"), S("scard"), W("set"), W("setbit"), W("setex"), W("setnx"), W("setrange"), S("sismember"),
    S("smembers"), W("spop"), S("srandmember"), W("srem"), S("sscan"), S("strlen"),
    {"time", REDIS_CMD_TIME, false}, {"touch", REDIS_CMD_SUM, true}, S("ttl"), S("type"),
    {"unlink", REDIS_CMD_SUM, true}, W("xack"), W("xadd"), W("xautoclaim"), W("xclaim"), W("xdel"), S("xlen"),
    S("xpending"), S("xrange"), S("xrevrange"), W("xtrim"), W("zadd"), S("zcard"), S("zcount"), W("zincrby"),
    S("zlexcount"), W("zpopmax"), W("zpopmin"), S("zrange"), S("zrangebylex"), S("zrangebyscore"), S("zrank"),
    W("zrem"), W("zremrangebylex"), W("zremrangebyrank"), W("zremrangebyscore"), S("zrevrange"),
    S("zrevrangebylex"), S("zrevrangebyscore"), S("zrevrank"), S("zscan"), S("zscore"),
};

#define NCMDS (sizeof(table) / sizeof(table[0]))

size_t redis_cmd_count(void)
{
    return NCMDS;
}

const struct redis_cmd *redis_cmd_at(size_t i)
{
    return i < NCMDS ? &table[i] : NULL;
}

bool redis_cmd_has_stats(enum redis_cmd_kind kind)
{
    return kind <= REDIS_CMD_SUM;
}

const struct redis_cmd *redis_cmd_lookup(const char *name, size_t len, size_t *index)
{
    char low[24];

    if (len == 0 || len >= sizeof(low))
        return NULL;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (c == '\0')
            return NULL;
        low[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    low[len] = '\0';
    size_t lo = 0, hi = NCMDS;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(low, table[mid].name);
        if (c == 0) {
            if (index)
                *index = mid;
            return &table[mid];
        }
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}
