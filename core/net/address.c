#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/address.h"

int addr_from_ip(const char *ip, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, ip, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        *len = sizeof(*in4);
        return 0;
    }
    if (inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        *len = sizeof(*in6);
        return 0;
    }
    return -1;
}

void addr_format_ip(const struct sockaddr *sa, char *out, size_t size)
{
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)size);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)size);
    else
        snprintf(out, size, "unknown");
}

uint16_t addr_port(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    return 0;
}

bool addr_is_wildcard(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_UNSPECIFIED(a) || IN6_IS_ADDR_V4MAPPED(a);
    }
    return true;
}

void addr_format(const struct sockaddr *sa, char *out, size_t size)
{
    char ip[INET6_ADDRSTRLEN];
    addr_format_ip(sa, ip, sizeof(ip));
    if (sa->sa_family == AF_INET6)
        snprintf(out, size, "[%s]:%u", ip, addr_port(sa));
    else
        snprintf(out, size, "%s:%u", ip, addr_port(sa));
}

int cidr_from_parts(const char *prefix, unsigned len, struct cidr *out)
{
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, prefix, out->bytes) == 1) {
        out->family = AF_INET;
        if (len > 32)
            return -1;
    } else if (inet_pton(AF_INET6, prefix, out->bytes) == 1) {
        out->family = AF_INET6;
        if (len > 128)
            return -1;
    } else {
        return -1;
    }
    out->len = len;
    return 0;
}

int cidr_parse(const char *text, struct cidr *out)
{
    char buf[INET6_ADDRSTRLEN + 8];
    const char *slash = strchr(text, '/');
    size_t n = slash ? (size_t)(slash - text) : strlen(text);
    if (n >= sizeof(buf))
        return -1;
    memcpy(buf, text, n);
    buf[n] = '\0';
    unsigned len = strchr(buf, ':') ? 128 : 32;
    if (slash) {
        char *end;
        unsigned long l = strtoul(slash + 1, &end, 10);
        if (*end || end == slash + 1 || l > 128)
            return -1;
        len = (unsigned)l;
    }
    return cidr_from_parts(buf, len, out);
}

bool cidr_match(const struct cidr *c, const struct sockaddr *sa)
{
    const uint8_t *a;
    uint8_t mapped[4];
    if (sa->sa_family == AF_INET) {
        a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
        if (c->family != AF_INET)
            return false;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *in6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        a = (const uint8_t *)in6;
        if (c->family == AF_INET) {
            if (!IN6_IS_ADDR_V4MAPPED(in6))
                return false;
            memcpy(mapped, a + 12, 4);
            a = mapped;
        }
    } else {
        return false;
    }
    unsigned full = c->len / 8, rest = c->len % 8;
    if (memcmp(a, c->bytes, full) != 0)
        return false;
    if (rest) {
        uint8_t mask = (uint8_t)(0xff << (8 - rest));
        if ((a[full] & mask) != (c->bytes[full] & mask))
            return false;
    }
    return true;
}
