/*
 * probe.c - what is on a medium, read in userspace with libblkid through
 * the layout probe that `ntt inspect` uses too (src/media/layout.c), and
 * what the helper makes of each entry.
 *
 * The kernels ntt runs on may have no partition-table support at all, so
 * the table is parsed here and every filesystem gets its own loop device
 * with offset and size limit.  Decisions (docs/mount-helper.md):
 *   - APM (or any) table plus a whole-disk iso9660/udf: the disc is a hybrid,
 *     mount the whole disk (fs_index 0);
 *   - a table: one entry per partition (extended containers, swap, RAID and
 *     LVM members, encrypted and empty partitions are skipped with a reason);
 *   - no table: a whole-disk filesystem, else a filesystem at the Zip offset
 *     16384, else nothing (layout "none").
 * The declared size of a filesystem (ext superblock, FAT boot sector, ISO
 * volume descriptor) tells how long an image should be.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "helper.h"
#include "layout.h"

/* The probe's findings in e: type, label, uuid; status and reason when not mountable. */
static void probe_fill(struct fsent *e, const struct ntt_layout_fs *fs, int in_table, const char *pt)
{
    snprintf(e->fstype, sizeof e->fstype, "%s", fs->type);
    snprintf(e->label, sizeof e->label, "%s", fs->label);
    snprintf(e->uuid, sizeof e->uuid, "%s", fs->uuid);
    if (fs->rc == -2) {
        snprintf(e->status, sizeof e->status, in_table ? "failed" : "skipped");
        snprintf(e->reason, sizeof e->reason, "ambivalent probe: more than one filesystem signature");
    } else if (fs->rc < 0) {
        snprintf(e->status, sizeof e->status, "failed");
        snprintf(e->reason, sizeof e->reason, "probe failed");
    } else if (fs->rc == 1 || !fs->type[0]) {
        snprintf(e->status, sizeof e->status, "skipped");
        snprintf(e->reason, sizeof e->reason, "no filesystem found (partition type %s)", pt[0] ? pt : "?");
    } else if (fs->usage[0] && strcmp(fs->usage, "filesystem")) {
        snprintf(e->status, sizeof e->status, "skipped");
        if (!strcmp(fs->type, "swap"))
            snprintf(e->reason, sizeof e->reason, "swap space");
        else if (!strcmp(fs->usage, "raid"))
            snprintf(e->reason, sizeof e->reason, "%s: RAID/LVM member, not assembled", fs->type);
        else if (!strcmp(fs->usage, "crypto"))
            snprintf(e->reason, sizeof e->reason, "%s: encrypted volume", fs->type);
        else
            snprintf(e->reason, sizeof e->reason, "%s: not a filesystem (%s)", fs->type, fs->usage);
    }
}

struct fsent *medium_add(struct medium *md)
{
    if (md->nfs == md->cap) {
        int cap = md->cap ? md->cap * 2 : 16;
        struct fsent *n = realloc(md->fs, (size_t)cap * sizeof *n);
        if (!n) return NULL;
        md->fs = n;
        md->cap = cap;
    }
    struct fsent *e = &md->fs[md->nfs++];
    memset(e, 0, sizeof *e);
    return e;
}

void medium_free(struct medium *md)
{
    free(md->fs);
    md->fs = NULL;
    md->nfs = md->cap = 0;
}

static struct fsent *probe_add(struct medium *md, int index, uint64_t off, uint64_t size)
{
    struct fsent *e = medium_add(md);
    if (!e) return NULL;
    e->index = index;
    e->offset = off;
    e->size = size;
    return e;
}

/*
 * Fills md->fs with every filesystem or skipped area of the image in fd.
 * *need gets the size the image should have (table extent, declared sizes).
 * Entries still to be mounted have an empty status.  0, or -1 with err.
 */
int probe_medium(int fd, uint64_t file_size, uint64_t *need, struct medium *md,
                 char *err, size_t errlen)
{
    *need = file_size;
    struct ntt_layout *lo = malloc(sizeof *lo);
    if (!lo) { snprintf(err, errlen, "out of memory"); return -1; }
    if (ntt_layout_probe(fd, 0, file_size, lo, err, errlen) != 0) { free(lo); return -1; }
    snprintf(md->pttype, sizeof md->pttype, "%s", lo->pttype);
    if (lo->hybrid && !strcmp(lo->pttype, "mac")) snprintf(md->hybrid, sizeof md->hybrid, "apm");
    md->gpt_primary = lo->gpt_primary;
    md->ebr_loop = lo->ebr_loop;
    int table = lo->pttype[0] && !lo->hybrid && lo->nparts > 0;
    for (int i = 0; i < lo->nparts; i++) {
        const struct ntt_layout_part *p = &lo->part[i];
        struct fsent *e = probe_add(md, p->index, p->offset, p->size);
        if (!e) goto oom;
        if (p->offset + p->size > *need) *need = p->offset + p->size;
        if (p->container) {
            snprintf(e->status, sizeof e->status, "skipped");
            snprintf(e->reason, sizeof e->reason, "extended partition container");
        } else if (p->beyond) {
            snprintf(e->status, sizeof e->status, "truncated");
            snprintf(e->reason, sizeof e->reason,
                     "partition starts at byte %llu, beyond the end of the image file (%llu bytes)",
                     (unsigned long long)p->offset, (unsigned long long)file_size);
        } else {
            probe_fill(e, &p->fs, table, p->type);
        }
        if (lo->hybrid && !e->reason[0])
            snprintf(e->reason, sizeof e->reason, "%s partition table ignored: whole-disk %s (hybrid disc)",
                     lo->pttype, p->fs.type);
        else if (!table && p->offset == NTT_LAYOUT_ZIP_OFFSET && !e->reason[0])
            snprintf(e->reason, sizeof e->reason, "no partition table: filesystem at Zip offset 16384");
    }
    if (lo->nparts == 0) {
        struct fsent *e = probe_add(md, 0, 0, file_size);
        if (!e) goto oom;
        snprintf(e->status, sizeof e->status, "skipped");
        snprintf(e->reason, sizeof e->reason, "no partition table and no filesystem found");
    }
    ntt_layout_free(lo);
    free(lo);
    return 0;
oom:
    ntt_layout_free(lo);
    free(lo);
    snprintf(err, errlen, "out of memory");
    return -1;
}
