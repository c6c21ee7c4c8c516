/* libFuzzer target for the proxy_protocol listener filter's header parser
 * (pp_parse.c). Byte 0: the versions looked for (bits 0-1) and the step in
 * which the bytes "arrive" (bits 2-7): every prefix the listener would peek
 * is parsed, as on a slow connection, and what a parse says must hold up. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned which = (data[0] & 3u) ? (data[0] & 3u) : 3u;
    size_t step = (size_t)(data[0] >> 2) + 1;
    data++;
    size--;
    /* a copy of exactly the bytes "read so far": a read past them is caught by ASan */
    for (size_t have = step < size ? step : size;; have = have + step < size ? have + step : size) {
        uint8_t *buf = malloc(have ? have : 1);
        if (!buf)
            abort();
        memcpy(buf, data, have);
        struct pp_header h;
        enum pp_result r = pp_parse(buf, have, which, &h);
        if (r == PP_DONE) {
            if (h.len == 0 || h.len > have || (h.version == 1 && h.len > PP_V1_MAX) || h.len > PP_V2_MAX)
                __builtin_trap();
            for (size_t i = 0; i < h.ntlvs; i++)
                if (h.tlvs[i].value < buf || h.tlvs[i].value + h.tlvs[i].len > buf + h.len)
                    __builtin_trap();
            if (h.has_addresses && h.src.ss_family != AF_INET && h.src.ss_family != AF_INET6)
                __builtin_trap();
        }
        if ((r == PP_ERROR && !h.error) || (r != PP_NOT_PROXY && r != PP_MORE && h.version != 1 && h.version != 2))
            __builtin_trap();
        free(buf);
        if (r != PP_MORE || have == size)
            break;
    }
    return 0;
}
