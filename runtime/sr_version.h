/* sr_version: the release of streamrun this source tree builds. */
#ifndef SR_VERSION_H
#define SR_VERSION_H
#define SR_VERSION "0.1.0"
#endif
