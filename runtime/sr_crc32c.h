/* sr_crc32c: CRC-32C (Castagnoli), the checksum of checkpoints and WAL
 * records. */
#ifndef SR_CRC32C_H
#define SR_CRC32C_H
#include <stddef.h>
#include <stdint.h>

/* Continues crc (0 to start) over n bytes. */
uint32_t sr_crc32c(uint32_t crc, const void *p, size_t n);

#endif
