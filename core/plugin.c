/* Plugin loader. Every *.so in the plugin directories is opened once (on
 * the first lookup), its descriptor checked, and its names registered. A file
 * that fails a check is remembered with the reason, so that a config naming
 * the filter it claims to provide gets that reason instead of "not found". */
#include "config.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "log.h"
#include "plugin.h"

#define TYPE_URL_PREFIX "type.googleapis.com/"

struct rejected {
    char *path;
    char *name;      /* what it claimed to provide, when readable */
    char *reason;
};

static char *dirs;
static bool scanned;
static struct plugin *plugins; static size_t nplugins, capplugins;
static struct rejected *rejects; static size_t nrejects, caprejects;

void plugin_set_dirs(const char *d)
{
    free(dirs);
    dirs = NULL;
    if (d && *d)
        dirs = xstrdup(d);
}

const char *plugin_dirs(void)
{
    if (!dirs) {
        const char *env = getenv("HERALD_PLUGIN_PATH");
        dirs = xstrdup(env && *env ? env : HERALD_PLUGIN_DIR);
    }
    return dirs;
}

static void reject(const char *path, const char *name, char *reason)
{
    struct rejected *r = VEC_PUSH(rejects, nrejects, caprejects);
    r->path = xstrdup(path);
    r->name = name ? xstrdup(name) : NULL;
    r->reason = reason;
    log_debug("plugin", "%s: %s", path, reason);
}

static const char *kind_name(enum herald_plugin_kind k)
{
    switch (k) {
    case HERALD_PLUGIN_NETWORK_FILTER: return "network filter";
    case HERALD_PLUGIN_LISTENER_FILTER: return "listener filter";
    case HERALD_PLUGIN_HTTP_FILTER: return "HTTP filter";
    }
    return "unknown kind";
}

static const struct plugin *find_loaded(const char *name)
{
    for (size_t i = 0; i < nplugins; i++) {
        const struct herald_plugin *d = plugins[i].desc;
        if (strcmp(d->name, name) == 0)
            return &plugins[i];
        for (const char *const *a = d->aliases; a && *a; a++)
            if (strcmp(*a, name) == 0)
                return &plugins[i];
    }
    return NULL;
}

static const char *strip_type_url(const char *url)
{
    const char *slash = strrchr(url, '/');
    return slash ? slash + 1 : url;
}

static const struct plugin *find_by_type(const char *url)
{
    url = strip_type_url(url);
    for (size_t i = 0; i < nplugins; i++)
        for (const char *const *t = plugins[i].desc->type_urls; t && *t; t++)
            if (strcmp(strip_type_url(*t), url) == 0)
                return &plugins[i];
    return NULL;
}

/* Checks in the order that gives the most useful message first. */
static void load_one(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        reject(path, NULL, xasprintf("cannot load: %s", dlerror()));
        return;
    }
    const struct herald_plugin *d = dlsym(h, "herald_plugin");
    if (!d) {
        reject(path, NULL, xstrdup("not a herald plugin: it exports no 'herald_plugin' descriptor "
                                   "(declare one with HERALD_PLUGIN() from <herald/plugin.h>)"));
        dlclose(h);
        return;
    }
    if (d->magic != HERALD_PLUGIN_MAGIC) {
        reject(path, NULL, xstrdup("garbled descriptor (bad magic): not a herald plugin?"));
        dlclose(h);
        return;
    }
    const char *claimed = d->name ? d->name : "?";
    if (d->abi_major != HERALD_ABI_MAJOR) {
        reject(path, claimed,
               xasprintf("built for SDK ABI %u.%u; this herald provides %u.%u: rebuild the plugin "
                         "against this herald's SDK (pkg-config herald-sdk)",
                         d->abi_major, d->abi_minor, HERALD_ABI_MAJOR, HERALD_ABI_MINOR));
        dlclose(h);
        return;
    }
    if (d->abi_minor > HERALD_ABI_MINOR) {
        reject(path, claimed,
               xasprintf("built for SDK ABI %u.%u, newer than this herald's %u.%u: upgrade herald "
                         "or rebuild the plugin against this SDK",
                         d->abi_major, d->abi_minor, HERALD_ABI_MAJOR, HERALD_ABI_MINOR));
        dlclose(h);
        return;
    }
    if (d->struct_size < sizeof(struct herald_plugin) || d->build_signature != HERALD_BUILD_SIGNATURE) {
        reject(path, claimed, xasprintf("descriptor size %u / build signature 0x%x do not match this "
                                        "herald's (%zu / 0x%x): not binary compatible",
                                        d->struct_size, d->build_signature, sizeof(struct herald_plugin),
                                        (unsigned)HERALD_BUILD_SIGNATURE));
        dlclose(h);
        return;
    }
    if (!d->name || !d->ops || *(const size_t *)d->ops == 0) {
        reject(path, claimed, xstrdup("descriptor without a name or an ops table"));
        dlclose(h);
        return;
    }
    if (d->kind != HERALD_PLUGIN_NETWORK_FILTER && d->kind != HERALD_PLUGIN_LISTENER_FILTER &&
        (d->kind != HERALD_PLUGIN_HTTP_FILTER || d->abi_minor < 1)) {
        reject(path, claimed, xasprintf("%s plugins are not supported by SDK ABI %u.%u", kind_name(d->kind),
                                        HERALD_ABI_MAJOR, HERALD_ABI_MINOR));
        dlclose(h);
        return;
    }
    const struct plugin *dup = find_loaded(d->name);
    if (dup) {
        /* Registering one name twice is fatal in Envoy; here the first found
         * wins (directories are searched in order) and the other is named. */
        reject(path, claimed, xasprintf("'%s' is already provided by %s; ignored", d->name, dup->path));
        dlclose(h);
        return;
    }
    struct plugin *p = VEC_PUSH(plugins, nplugins, capplugins);
    p->desc = d;
    p->path = xstrdup(path);
    p->handle = h;
    /* its logger, by the name's last part (the component its lines carry) */
    const char *dot = strrchr(d->name, '.');
    log_register(dot ? dot + 1 : d->name);
    log_debug("plugin", "loaded %s (%s %s) from %s", d->name, kind_name(d->kind), d->version ? d->version : "",
              path);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void scan(void)
{
    if (scanned)
        return;
    scanned = true;
    char *copy = xstrdup(plugin_dirs()), *save = NULL;
    for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        DIR *dh = opendir(dir);
        if (!dh) {
            log_debug("plugin", "cannot open plugin directory %s: %s", dir, strerror(errno));
            continue;
        }
        char **names = NULL;
        size_t n = 0, cap = 0;
        struct dirent *de;
        while ((de = readdir(dh))) {
            size_t len = strlen(de->d_name);
            if (len > 3 && strcmp(de->d_name + len - 3, ".so") == 0)
                *VEC_PUSH(names, n, cap) = xasprintf("%s/%s", dir, de->d_name);
        }
        closedir(dh);
        qsort(names, n, sizeof(*names), cmp_names);
        for (size_t i = 0; i < n; i++) {
            load_one(names[i]);
            free(names[i]);
        }
        free(names);
    }
    free(copy);
}

void plugin_load_all(void)
{
    scan();
}

const struct plugin *plugin_find(const char *name, const char *type_url, enum herald_plugin_kind kind, char **err)
{
    scan();
    /* The @type URL picks the extension when there is one (Envoy >= 1.20);
     * the name only when typed_config is absent or a TypedStruct. */
    const struct plugin *p = NULL;
    const char *what = name;
    if (type_url && *type_url) {
        p = find_by_type(type_url);
        what = type_url;
        if (!p && name && *name)
            p = find_loaded(name);
    } else if (name) {
        p = find_loaded(name);
    }
    if (p && p->desc->kind != kind) {
        *err = xasprintf("'%s' is a %s, not a %s", what, kind_name(p->desc->kind), kind_name(kind));
        return NULL;
    }
    if (p)
        return p;
    for (size_t i = 0; i < nrejects; i++)
        if (rejects[i].name && ((name && strcmp(rejects[i].name, name) == 0))) {
            *err = xasprintf("unknown filter '%s': plugin %s cannot be used: %s", name, rejects[i].path,
                             rejects[i].reason);
            return NULL;
        }
    /* The name reads better than the @type URL when both are there. */
    *err = xasprintf("unknown filter '%s' (no plugin provides it; searched: %s)",
                     name && *name ? name : what && *what ? what : "(unnamed)", plugin_dirs());
    return NULL;
}

void plugin_list(FILE *out)
{
    scan();
    fprintf(out, "plugin directories: %s\n", plugin_dirs());
    for (size_t i = 0; i < nplugins; i++) {
        const struct herald_plugin *d = plugins[i].desc;
        fprintf(out, "%s\t%s\t%s\t%s\n", d->name, kind_name(d->kind), d->version ? d->version : "-",
                plugins[i].path);
        for (const char *const *a = d->aliases; a && *a; a++)
            fprintf(out, "    alias: %s\n", *a);
        for (const char *const *t = d->type_urls; t && *t; t++)
            fprintf(out, "    @type: " TYPE_URL_PREFIX "%s\n", *t);
        if (d->description)
            fprintf(out, "    %s\n", d->description);
    }
    for (size_t i = 0; i < nrejects; i++)
        fprintf(out, "not loaded: %s: %s\n", rejects[i].path, rejects[i].reason);
}

static const char *field_kind_name(enum herald_field_kind k)
{
    static const char *const names[] = {"any", "string", "bool", "int64", "uint", "double", "duration",
                                        "enum", "message", "map", "struct", "typed (Any)", "removed"};
    return (unsigned)k < ARRAY_SIZE(names) ? names[k] : "?";
}

static void describe_message(FILE *out, const struct herald_message *m, int depth)
{
    if (depth > 6)
        return;
    for (const struct herald_field *f = m->fields; f && f->name; f++) {
        if (f->kind == HERALD_FIELD_REMOVED)
            continue;
        fprintf(out, "%*s%s: %s%s%s%s%s", depth * 2 + 2, "", f->name, field_kind_name(f->kind),
                (f->flags & HERALD_F_REPEATED) ? " (list)" : "", (f->flags & HERALD_F_REQUIRED) ? " (required)" : "",
                (f->flags & HERALD_F_UNSUPPORTED) ? " (not supported yet)" : "",
                (f->flags & HERALD_F_DEPRECATED) ? " (deprecated)" : "");
        if (f->kind == HERALD_FIELD_ENUM && f->enum_values) {
            fprintf(out, " {");
            for (const char *const *v = f->enum_values; *v; v++)
                fprintf(out, "%s%s", v == f->enum_values ? "" : ", ", *v);
            fprintf(out, "}");
        }
        if (f->help)
            fprintf(out, " -- %s", f->help);
        fprintf(out, "\n");
        if ((f->kind == HERALD_FIELD_MESSAGE || f->kind == HERALD_FIELD_MAP) && f->message &&
            !(f->flags & HERALD_F_UNSUPPORTED))
            describe_message(out, f->message, depth + 1);
    }
}

int plugin_describe(FILE *out, const char *name)
{
    char *err = NULL;
    scan();
    const struct plugin *p = find_loaded(name);
    if (!p)
        p = find_by_type(name);
    if (!p) {
        (void)plugin_find(name, NULL, HERALD_PLUGIN_NETWORK_FILTER, &err);
        fprintf(stderr, "herald: %s\n", err);
        free(err);
        return -1;
    }
    const struct herald_plugin *d = p->desc;
    fprintf(out, "%s (%s, %s)\n", d->name, kind_name(d->kind), p->path);
    if (d->description)
        fprintf(out, "  %s\n", d->description);
    for (const char *const *t = d->type_urls; t && *t; t++)
        fprintf(out, "  @type: " TYPE_URL_PREFIX "%s\n", *t);
    if (d->config_schema) {
        fprintf(out, "typed_config (%s):\n", d->config_schema->name ? d->config_schema->name : "?");
        describe_message(out, d->config_schema, 0);
    }
    return 0;
}

void plugin_unload_all(void)
{
    /* Under ASan, dlclose would lose the symbols of leak reports; unloading
     * buys nothing at exit anyway, so handles are closed only when asked. */
    for (size_t i = 0; i < nplugins; i++) {
        if (!getenv("HERALD_KEEP_PLUGINS_LOADED"))
            dlclose(plugins[i].handle);
        free(plugins[i].path);
    }
    for (size_t i = 0; i < nrejects; i++) {
        free(rejects[i].path);
        free(rejects[i].name);
        free(rejects[i].reason);
    }
    free(plugins);
    free(rejects);
    plugins = NULL;
    rejects = NULL;
    nplugins = capplugins = nrejects = caprejects = 0;
    scanned = false;
    free(dirs);
    dirs = NULL;
}
