/* sr_runtime: version and clock functions of the FFI surface. */
#ifndef SR_RUNTIME_H
#define SR_RUNTIME_H
const char *sr_version(void);
double sr_clock_ms(void);
double sr_unix_ms(void);
#endif
