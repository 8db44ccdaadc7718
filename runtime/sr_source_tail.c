/* placeholder, replaced by the real tail source */
#include "sr_error.h"
#include "sr_source.h"
#include <stdio.h>
static int start(sr_source_t *s, const sr_source_opts_t *o) { (void)o; snprintf(s->err, sizeof(s->err), "tail: not built yet"); return SR_EINVAL; }
static void stop(sr_source_t *s) { (void)s; }
const sr_source_type_t sr_source_tail = { .kind = "tail", .bounded = 0, .start = start, .stop = stop };
