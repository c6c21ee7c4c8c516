/* placeholder: being written */
#ifndef HERALD_SD_NOTIFY_H
#define HERALD_SD_NOTIFY_H
#endif
