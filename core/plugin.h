/* The plugin registry: finds the plugin that provides a filter name or @type
 * URL in the plugin directories, loads it with dlopen and checks its
 * descriptor (magic, ABI major and minor, struct size, build signature). */
#ifndef HERALD_CORE_PLUGIN_H
#define HERALD_CORE_PLUGIN_H

#include <stdbool.h>
#include <stdio.h>

#include "herald/plugin.h"

struct plugin {
    const struct herald_plugin *desc;
    char *path;
    void *handle;
};

/* dirs: colon-separated; NULL means $HERALD_PLUGIN_PATH, then the built-in directory. */
void plugin_set_dirs(const char *dirs);
const char *plugin_dirs(void);
/* Looks a filter up by name, alias or @type (with or without the
 * type.googleapis.com/ prefix). NULL with a message in *err. */
const struct plugin *plugin_find(const char *name, const char *type_url, enum herald_plugin_kind kind, char **err);
/* --list-plugins: every plugin found, or why a file is not one. */
void plugin_list(FILE *out);
/* --describe NAME: the plugin's config fields. */
int plugin_describe(FILE *out, const char *name);
/* every plugin in the directories, now (they are otherwise found on first use) */
void plugin_load_all(void);
void plugin_unload_all(void);

#endif
