/* libFuzzer target for the config loader: bytes -> tree (YAML, or JSON when
 * they start with '{') -> schema check and bootstrap extraction -> free. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "config/bootstrap.h"
#include "config/tree.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *name = size && data[0] == '{' ? "fuzz.json" : "fuzz.yaml";
    char *err = NULL;
    struct cfg_doc *doc = cfg_load_string((const char *)data, size, name, &err);
    free(err);
    if (!doc)
        return 0;
    json_t *j = cfg_to_json(doc->root);
    json_decref(j);
    struct cfg_diag d = { 0 };
    struct bootstrap *b = bootstrap_load(doc, &d);
    bootstrap_free(b);
    diag_free(&d);
    return 0;
}
