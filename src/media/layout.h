/*
 * layout.h - the partition layout of a medium, read in userspace with
 * libblkid: one probe shared by ntt.core.media (media.c, `ntt inspect`)
 * and the mount helper (src/mount-helper/probe.c), so the two always
 * agree on what is where.  No Lua here: the helper links this file too.
 *
 * Rules (docs/media.md):
 *   - a partition table with at least one entry and no whole-disk
 *     iso9660/udf: one entry per partition, fs_index = its number,
 *     offset/size from the table; each probed within its bounds clipped at
 *     the end of the region; an extended container, or a partition that
 *     starts at or past the end, is not probed;
 *   - a table plus a whole-disk iso9660/udf: a hybrid disc (Apple APM or
 *     isohybrid); the table is ignored, one entry fs_index 0 at offset 0;
 *   - a GPT libblkid refuses because the image is cut short (backup header
 *     and the end of the usable area missing): the primary header and entry
 *     array are read here, their CRC32s checked, and used (gpt_primary);
 *   - an MBR whose extended chain loops: the logical partitions before the
 *     loop are kept, the loop is flagged (ebr_loop);
 *   - no table (or an empty one): a whole-disk filesystem (or an ambivalent
 *     probe) at offset 0, else a filesystem at the Zip offset 16384, else
 *     no entry at all.
 * Offsets are relative to the start of the probed region.
 */
#ifndef NTT_LAYOUT_H
#define NTT_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#define NTT_LAYOUT_ZIP_OFFSET 16384

/* What the superblock probe found in a range. */
struct ntt_layout_fs {
    int rc;                         /* blkid: 0 found, 1 nothing, -2 ambivalent, -1 error */
    char type[32], label[128], uuid[64], usage[32];   /* "" when absent */
};

struct ntt_layout_part {
    int index;                      /* fs_index: partition number, 0 = whole disk */
    uint64_t offset, size;          /* bytes; size as declared (table or filesystem) */
    char type[40];                  /* table's type ("0x83", a GPT type uuid) or "" */
    char name[128], partuuid[64];
    int container;                  /* extended partition container: not probed */
    int truncated;                  /* offset + size is past the end of the region */
    int beyond;                     /* starts at or past the end: not probed */
    struct ntt_layout_fs fs;        /* rc 1 when not probed */
};

struct ntt_layout {
    uint64_t size;                  /* bytes of the region */
    char pttype[32], ptuuid[64];    /* "" without a table */
    int hybrid;                     /* a table ignored for a whole-disk optical fs */
    int gpt_primary;                /* GPT read from its primary header alone */
    int ebr_loop;                   /* an MBR extended chain links back on itself */
    struct ntt_layout_fs whole;     /* the superblock probe of the whole region */
    int nparts, cap, oom;           /* oom: an entry could not be added (probe fails) */
    struct ntt_layout_part *part;   /* nparts entries, no fixed cap: ntt_layout_free */
};

/*
 * Probes fd[base, base+len) (a regular file or block device).  0, or -1
 * with a message in err (libblkid could not be set up or read, out of
 * memory); on -1 nothing is left allocated.  After 0, ntt_layout_free(lo).
 */
int ntt_layout_probe(int fd, uint64_t base, uint64_t len, struct ntt_layout *lo,
                     char *err, size_t errlen);

/* Frees lo->part (idempotent). */
void ntt_layout_free(struct ntt_layout *lo);

/* The superblock probe of fd[off, off+len); returns fs->rc. */
int ntt_layout_probe_fs(int fd, uint64_t off, uint64_t len, struct ntt_layout_fs *fs);

/*
 * The size a filesystem of type t at off claims for itself (ext superblock,
 * FAT boot sector, ISO volume descriptor), or 0 when unknown.  Reads only
 * below avail (absolute).
 */
uint64_t ntt_layout_declared_size(int fd, uint64_t off, uint64_t avail, const char *t);

#endif
