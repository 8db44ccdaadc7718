/* placeholder, replaced by the real socket_text source */
#include "sr_error.h"
#include "sr_source.h"
#include <stdio.h>
static int start(sr_source_t *s, const sr_source_opts_t *o) { (void)o; snprintf(s->err, sizeof(s->err), "socket_text: not built yet"); return SR_EINVAL; }
static void stop(sr_source_t *s) { (void)s; }
const sr_source_type_t sr_source_socket_text = { .kind = "socket_text", .bounded = 0, .start = start, .stop = stop };
