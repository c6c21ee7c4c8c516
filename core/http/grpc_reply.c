/* See grpc_reply.h. */
#include <stdio.h>
#include <stdlib.h>

#include "common.h"
#include "http/grpc_reply.h"

int grpc_status_for_http(int http_status)
{
    switch (http_status) {
    case 400:
        return 13;                 /* INTERNAL */
    case 401:
        return 16;                 /* UNAUTHENTICATED */
    case 403:
        return 7;                  /* PERMISSION_DENIED */
    case 404:
        return 12;                 /* UNIMPLEMENTED */
    case 429:
    case 502:
    case 503:
    case 504:
        return 14;                 /* UNAVAILABLE */
    default:
        return 2;                  /* UNKNOWN */
    }
}

void grpc_reply_headers(struct herald_headers *h, int grpc_status, const char *body, size_t len)
{
    char num[16];
    herald_headers_add(h, ":status", "200");
    herald_headers_add(h, "content-type", "application/grpc");
    snprintf(num, sizeof(num), "%d", grpc_status);
    herald_headers_add(h, "grpc-status", num);
    if (!len)
        return;
    /* the gRPC spec's Percent-Encoded: every byte outside ' '..'~', and '%' */
    char *msg = xmalloc(len * 3 + 1), *o = msg;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)body[i];
        if (c < ' ' || c > '~' || c == '%')
            o += sprintf(o, "%%%02X", c);
        else
            *o++ = (char)c;
    }
    *o = '\0';
    herald_headers_add(h, "grpc-message", msg);
    free(msg);
}
