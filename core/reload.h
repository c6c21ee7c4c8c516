/* placeholder: being written */
#ifndef HERALD_RELOAD_H
#define HERALD_RELOAD_H
#endif
