/* placeholder: being written */
#ifndef HERALD_OVERLOAD_H
#define HERALD_OVERLOAD_H
#endif
