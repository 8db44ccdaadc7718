/* sr_duration: duration strings to milliseconds. */
#include "sr_duration.h"
#include "sr_error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int sr_duration_parse(const char *s, int64_t *ms)
{
    static const struct { const char *unit; double scale; } units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"", 1000},
    };
    if (!s || !*s || *s == '-' || *s == '+' || *s == ' ') return SR_EDURATION;
    char *end;
    double v = strtod(s, &end);
    if (end == s || !isfinite(v) || v < 0) return SR_EDURATION;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].unit) != 0) continue;
        double total = v * units[i].scale;
        if (total > 9.0e15 || fabs(total - llround(total)) > 1e-6) return SR_EDURATION;
        *ms = (int64_t)llround(total);
        return SR_OK;
    }
    return SR_EDURATION;
}
