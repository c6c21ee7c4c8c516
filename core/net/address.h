/* Socket addresses: parsing, printing and CIDR matching. */
#ifndef HERALD_CORE_NET_ADDRESS_H
#define HERALD_CORE_NET_ADDRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define ADDR_STRLEN 64 /* "[ffff:...:ffff]:65535" fits */

/* An IP literal and a port into ss. 0, or -1 when ip is not an IP address. */
int addr_from_ip(const char *ip, uint16_t port, struct sockaddr_storage *ss, socklen_t *len);
/* "ip:port" ("[v6]:port") into out. */
void addr_format(const struct sockaddr *sa, char *out, size_t size);
/* "ip" alone. */
void addr_format_ip(const struct sockaddr *sa, char *out, size_t size);
uint16_t addr_port(const struct sockaddr *sa);
/* 0.0.0.0 or [::] (any other family: true, so callers ask the socket). */
bool addr_is_wildcard(const struct sockaddr *sa);

struct cidr {
    int family;           /* AF_INET or AF_INET6 */
    uint8_t bytes[16];
    unsigned len;         /* prefix length in bits */
};
/* "10.0.0.0/8", "::1/128", or a bare address (full length). 0 / -1. */
int cidr_parse(const char *text, struct cidr *out);
int cidr_from_parts(const char *prefix, unsigned len, struct cidr *out);
bool cidr_match(const struct cidr *c, const struct sockaddr *sa);

#endif
