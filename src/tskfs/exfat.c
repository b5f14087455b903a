/*
 * exfat.c - ntt-tskfs: exFAT's UTC offsets.  An exFAT file entry keeps each
 * timestamp as local wall-clock time plus, since exFAT 1.00, the zone it
 * was written in (the UtcOffset fields).  The Sleuth Kit reads the wall
 * clock and ignores the zone, so a file written at 10:20 in Paris would show
 * 11:20 UTC; this finds the entry and gives the offsets to take off.
 */
#include <string.h>
#include "tskfs.h"

#define FIRST_NORMINO 3         /* TSK's first inode of a directory entry (FAT and exFAT) */
#define DENTRY 32
#define FILE_ENTRY 0x05         /* entry type without its in-use bit (0x80) */

/* Seconds of a UtcOffset byte: valid bit, then 15-minute steps, signed 7 bits. */
static long zone(uint8_t b)
{
    if (!(b & 0x80)) return 0;
    int v = b & 0x7f;
    if (v & 0x40) v -= 0x80;
    return (long)v * 15 * 60;
}

/*
 * off[0..2]: seconds to take off TSK's create, modify and access times of
 * the exFAT file entry addr (0 where the entry names no zone).  0, or -1
 * when the entry cannot be read or is not a file entry.
 */
int exfat_utc_offsets(TSK_FS_INFO *fs, TSK_INUM_T addr, long off[3])
{
    off[0] = off[1] = off[2] = 0;
    if (fs->ftype != TSK_FS_TYPE_EXFAT || addr < FIRST_NORMINO) return -1;
    uint8_t boot[512];
    if (tsk_fs_read(fs, 0, (char *)boot, sizeof boot) != (ssize_t)sizeof boot) { tsk_error_reset(); return -1; }
    unsigned shift = boot[108];
    if (shift < 9 || shift > 12) return -1;
    uint64_t ssize = 1ull << shift, per = ssize / DENTRY;
    uint64_t heap = (uint64_t)boot[88] | (uint64_t)boot[89] << 8 | (uint64_t)boot[90] << 16 | (uint64_t)boot[91] << 24;
    /* TSK numbers the entries of the cluster heap from its first sector on */
    uint64_t at = ((addr - FIRST_NORMINO) / per + heap) * ssize + ((addr - FIRST_NORMINO) % per) * DENTRY;
    uint8_t e[DENTRY];
    if (tsk_fs_read(fs, (TSK_OFF_T)at, (char *)e, sizeof e) != (ssize_t)sizeof e) { tsk_error_reset(); return -1; }
    if ((e[0] & 0x7f) != FILE_ENTRY) return -1;
    off[0] = zone(e[22]);
    off[1] = zone(e[23]);
    off[2] = zone(e[24]);
    return 0;
}
