/* placeholder: being written */
#ifndef HERALD_UPSTREAM_HEALTH_CHECK_H
#define HERALD_UPSTREAM_HEALTH_CHECK_H
#endif
