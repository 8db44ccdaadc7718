/* sr_deadletter: the dead-letter output as JSON lines. */
#include "sr_deadletter.h"
#include "sr_error.h"

#include <string.h>

int sr_deadletter_open(sr_deadletter_t *dl, const char *path)
{
    memset(dl, 0, sizeof(*dl));
    if (!path || strcmp(path, "-") == 0) {
        dl->fp = stderr;
        return SR_OK;
    }
    dl->fp = fopen(path, "a");
    if (!dl->fp) return SR_EIO;
    dl->owned = 1;
    return SR_OK;
}

void sr_deadletter_close(sr_deadletter_t *dl)
{
    if (dl->owned && dl->fp) fclose(dl->fp);
    dl->fp = NULL;
}

void sr_json_write_string(FILE *fp, const char *s, size_t len)
{
    fputc('"', fp);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': fputs("\\\"", fp); break;
        case '\\': fputs("\\\\", fp); break;
        case '\n': fputs("\\n", fp); break;
        case '\r': fputs("\\r", fp); break;
        case '\t': fputs("\\t", fp); break;
        default:
            if (c < 0x20 || c == 0x7f) fprintf(fp, "\\u%04x", c);
            else fputc(c, fp);
        }
    }
    fputc('"', fp);
}

void sr_deadletter_write(sr_deadletter_t *dl, const char *source, int64_t offset,
                         const char *reason, const char *record, size_t len)
{
    dl->count++;
    if (!dl->fp) return;
    fputs("{\"dead_letter\":true,\"source\":", dl->fp);
    sr_json_write_string(dl->fp, source, strlen(source));
    fprintf(dl->fp, ",\"offset\":%lld,\"reason\":", (long long)offset);
    sr_json_write_string(dl->fp, reason, strlen(reason));
    fputs(",\"record\":", dl->fp);
    sr_json_write_string(dl->fp, record ? record : "", record ? len : 0);
    fputs("}\n", dl->fp);
    fflush(dl->fp);
}
