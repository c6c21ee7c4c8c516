/* core/recycle.c: freed objects come back on their thread, at most `max`
 * wait, zeroed when asked, and an object freed on another thread joins
 * that thread's list. In ASan builds nothing is kept: only the
 * allocation contract is checked there. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "recycle.h"
#include "tap.h"

struct obj { char bytes[700]; };

static struct recycle_bin bin = RECYCLE_BIN(4);
static struct recycle_bin other = RECYCLE_BIN(4);

#ifdef HERALD_ASAN
#define KEEPS 0
#else
#define KEEPS 1
#endif

static void *put_on_thread(void *p)
{
    recycle_put(&bin, p);
    /* this thread's list ends with the thread (ASan's leak check in the
     * sanitizer build; here: it simply must not crash) */
    return NULL;
}

int main(void)
{
    struct obj *a = recycle_get(&bin, sizeof(*a));
    ok(a != NULL, "an object");
    memset(a, 0x5a, sizeof(*a));
    recycle_put(&bin, a);
    struct obj *b = recycle_get_zeroed(&bin, sizeof(*b));
    if (KEEPS)
        ok(b == a, "the freed object comes back");
    int zero = 1;
    for (size_t i = 0; i < sizeof(b->bytes); i++)
        zero &= b->bytes[i] == 0;
    ok(zero, "recycle_get_zeroed zeroes all %zu bytes", sizeof(b->bytes));

    /* six freed, four kept: they come back last-freed first, then new ones */
    struct obj *o[6];
    o[0] = b;
    for (int i = 1; i < 6; i++)
        o[i] = recycle_get(&bin, sizeof(struct obj));
    for (int i = 0; i < 6; i++)
        recycle_put(&bin, o[i]);
    is_int(recycle_idle(&bin), KEEPS ? 4 : 0, "at most max (4) objects wait to be reused");
    struct obj *back[6];
    for (int i = 0; i < 6; i++)
        back[i] = recycle_get(&bin, sizeof(struct obj));
    if (KEEPS)
        ok(back[0] == o[3] && back[1] == o[2] && back[2] == o[1] && back[3] == o[0],
           "the kept ones come back, last freed first");
    is_int(recycle_idle(&bin), 0, "then the list is empty");

    /* bins are separate lists */
    recycle_put(&bin, back[0]);
    struct obj *c = recycle_get(&other, sizeof(*c));
    ok(c != back[0], "another bin does not hand out this bin's objects");
    recycle_put(&other, c);

    /* freed on another thread: kept there, gone with that thread */
    pthread_t th;
    pthread_create(&th, NULL, put_on_thread, back[1]);
    pthread_join(th, NULL);
    struct obj *d = recycle_get(&bin, sizeof(*d));
    if (KEEPS)
        ok(d == back[0], "this thread's list is untouched by the other thread's put");
    is_int(recycle_idle(&bin), 0, "and holds nothing else");
    recycle_put(&bin, d);
    for (int i = 2; i < 6; i++)
        recycle_put(&bin, back[i]);
    recycle_put(&bin, NULL);
    ok(1, "NULL is ignored");
    return done_testing();
}
