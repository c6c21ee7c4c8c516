/* herald SDK umbrella header: include this and build with
 *   cc -shared -fPIC -fvisibility=hidden $(pkg-config --cflags herald-sdk) f.c -o f.so
 * See herald-sdk(3). */
#ifndef HERALD_HERALD_H
#define HERALD_HERALD_H

#include "herald/version.h"
#include "herald/buffer.h"
#include "herald/config.h"
#include "herald/log.h"
#include "herald/stats.h"
#include "herald/timer.h"
#include "herald/runtime.h"
#include "herald/network_filter.h"
#include "herald/listener_filter.h"
#include "herald/upstream.h"
#include "herald/access_log.h"
#include "herald/http.h"
#include "herald/plugin.h"

#endif
