/* placeholder: being written */
#ifndef HERALD_UPSTREAM_OUTLIER_H
#define HERALD_UPSTREAM_OUTLIER_H
#endif
