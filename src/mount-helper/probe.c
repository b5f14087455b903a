/*
 * probe.c - what is on a medium, read in userspace with libblkid.
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
#include <blkid/blkid.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "helper.h"

#define ZIP_OFFSET 16384

static uint32_t le32(const unsigned char *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

static int is_optical(const char *t) { return !strcmp(t, "iso9660") || !strcmp(t, "udf"); }

static int probe_read(int fd, uint64_t off, void *buf, size_t len, uint64_t avail)
{
    if (off + len > avail) return -1;
    return pread(fd, buf, len, (off_t)off) == (ssize_t)len ? 0 : -1;
}

/* The size a filesystem of type t at off claims for itself, or 0 when unknown. */
uint64_t probe_declared_size(int fd, uint64_t off, uint64_t avail, const char *t)
{
    unsigned char b[2048];
    if (!strncmp(t, "ext", 3) && probe_read(fd, off + 1024, b, 1024, avail) == 0 && le16(b + 56) == 0xEF53) {
        uint64_t blocks = le32(b + 4);
        uint32_t log = le32(b + 24);
        if (le32(b + 96) & 0x80) blocks |= (uint64_t)le32(b + 0x150) << 32;   /* 64bit */
        if (log <= 6) return blocks * (1024ull << log);
    }
    if (is_optical(t) && probe_read(fd, off + 32768, b, 2048, avail) == 0 && !memcmp(b + 1, "CD001", 5)) {
        uint64_t blocks = le32(b + 80), bs = le16(b + 128);
        if (bs >= 512 && bs <= 4096) return blocks * bs;
    }
    if ((!strcmp(t, "vfat") || !strcmp(t, "msdos")) &&
        probe_read(fd, off, b, 512, avail) == 0 && b[510] == 0x55 && b[511] == 0xAA) {
        uint32_t bps = le16(b + 11), total = le16(b + 19);
        if (!total) total = le32(b + 32);
        if ((bps == 512 || bps == 1024 || bps == 2048 || bps == 4096) && b[13] && total)
            return (uint64_t)total * bps;
    }
    return 0;
}

/* Probes a filesystem in fd[off, off+size): 1 found (e filled), 0 none, -1 error. */
int probe_fs(int fd, uint64_t off, uint64_t size, struct fsent *e)
{
    blkid_probe pr = blkid_new_probe();
    if (!pr) return -1;
    int rc = -1;
    if (blkid_probe_set_device(pr, fd, (blkid_loff_t)off, (blkid_loff_t)size) != 0) goto out;
    blkid_probe_enable_partitions(pr, 0);
    blkid_probe_enable_superblocks(pr, 1);
    blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_LABEL |
                                          BLKID_SUBLKS_UUID | BLKID_SUBLKS_USAGE);
    int r = blkid_do_safeprobe(pr);
    if (r == 1) { rc = 0; goto out; }
    if (r == -2) { snprintf(e->reason, sizeof e->reason, "ambivalent probe: more than one filesystem signature"); goto out; }
    if (r < 0) goto out;
    const char *v;
    if (blkid_probe_lookup_value(pr, "TYPE", &v, NULL) == 0) snprintf(e->fstype, sizeof e->fstype, "%s", v);
    if (blkid_probe_lookup_value(pr, "LABEL", &v, NULL) == 0) snprintf(e->label, sizeof e->label, "%s", v);
    if (blkid_probe_lookup_value(pr, "UUID", &v, NULL) == 0) snprintf(e->uuid, sizeof e->uuid, "%s", v);
    if (blkid_probe_lookup_value(pr, "USAGE", &v, NULL) == 0 && strcmp(v, "filesystem")) {
        snprintf(e->status, sizeof e->status, "skipped");
        if (!strcmp(e->fstype, "swap"))
            snprintf(e->reason, sizeof e->reason, "swap space");
        else if (!strcmp(v, "raid"))
            snprintf(e->reason, sizeof e->reason, "%s: RAID/LVM member, not assembled", e->fstype);
        else if (!strcmp(v, "crypto"))
            snprintf(e->reason, sizeof e->reason, "%s: encrypted volume", e->fstype);
        else
            snprintf(e->reason, sizeof e->reason, "%s: not a filesystem (%s)", e->fstype, v);
    }
    rc = e->fstype[0] ? 1 : 0;
out:
    blkid_free_probe(pr);
    return rc;
}

static struct fsent *probe_add(struct medium *md, int index, uint64_t off, uint64_t size)
{
    if (md->nfs >= MH_MAXFS) return NULL;
    struct fsent *e = &md->fs[md->nfs++];
    memset(e, 0, sizeof *e);
    e->index = index;
    e->offset = off;
    e->size = size;
    return e;
}

static void probe_whole(int fd, uint64_t file_size, uint64_t off, struct fsent *e, uint64_t *need)
{
    uint64_t declared = probe_declared_size(fd, off, file_size, e->fstype);
    e->size = declared ? declared : file_size - off;
    if (off + e->size > *need) *need = off + e->size;
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
    struct fsent whole;
    memset(&whole, 0, sizeof whole);
    int found = probe_fs(fd, 0, file_size, &whole);

    blkid_probe pr = blkid_new_probe();
    if (!pr) { snprintf(err, errlen, "blkid_new_probe failed"); return -1; }
    if (blkid_probe_set_device(pr, fd, 0, (blkid_loff_t)file_size) != 0) {
        snprintf(err, errlen, "blkid cannot read the image");
        blkid_free_probe(pr);
        return -1;
    }
    blkid_probe_enable_superblocks(pr, 0);
    blkid_probe_enable_partitions(pr, 1);
    blkid_probe_set_partitions_flags(pr, BLKID_PARTS_ENTRY_DETAILS);
    blkid_partlist ls = blkid_probe_get_partitions(pr);
    int nparts = ls ? blkid_partlist_numof_partitions(ls) : 0;
    if (ls && nparts > 0) {
        blkid_parttable tab = blkid_partlist_get_table(ls);
        const char *t = tab ? blkid_parttable_get_type(tab) : NULL;
        snprintf(md->pttype, sizeof md->pttype, "%s", t ? t : "");
    }

    if (nparts > 0 && found == 1 && is_optical(whole.fstype)) {
        /* Hybrid disc (Apple APM or isohybrid): the whole disk is the filesystem. */
        if (!strcmp(md->pttype, "mac")) snprintf(md->hybrid, sizeof md->hybrid, "apm");
        struct fsent *e = probe_add(md, 0, 0, 0);
        *e = whole;
        probe_whole(fd, file_size, 0, e, need);
        char pt[32], ft[32];
        snprintf(pt, sizeof pt, "%s", md->pttype);
        snprintf(ft, sizeof ft, "%s", e->fstype);
        snprintf(e->reason, sizeof e->reason, "%s partition table ignored: whole-disk %s (hybrid disc)", pt, ft);
    } else if (nparts > 0) {
        for (int i = 0; i < nparts; i++) {
            blkid_partition par = blkid_partlist_get_partition(ls, i);
            uint64_t start = (uint64_t)blkid_partition_get_start(par) * 512;
            uint64_t size = (uint64_t)blkid_partition_get_size(par) * 512;
            struct fsent *e = probe_add(md, blkid_partition_get_partno(par), start, size);
            if (!e) break;
            if (start + size > *need) *need = start + size;
            if (blkid_partition_is_extended(par)) {
                snprintf(e->status, sizeof e->status, "skipped");
                snprintf(e->reason, sizeof e->reason, "extended partition container");
                continue;
            }
            if (start >= file_size) {
                snprintf(e->status, sizeof e->status, "truncated");
                snprintf(e->reason, sizeof e->reason,
                         "partition starts at byte %llu, beyond the end of the image file (%llu bytes)",
                         (unsigned long long)start, (unsigned long long)file_size);
                continue;
            }
            uint64_t avail = file_size - start < size ? file_size - start : size;
            int r = probe_fs(fd, start, avail, e);
            if (r == 0 && !e->status[0]) {
                snprintf(e->status, sizeof e->status, "skipped");
                snprintf(e->reason, sizeof e->reason, "no filesystem found (partition type %s)",
                         blkid_partition_get_type_string(par) ? blkid_partition_get_type_string(par) : "?");
            } else if (r < 0 && !e->status[0]) {
                snprintf(e->status, sizeof e->status, "failed");
                if (!e->reason[0]) snprintf(e->reason, sizeof e->reason, "probe failed");
            }
        }
    } else if (found == 1 || whole.status[0]) {
        struct fsent *e = probe_add(md, 0, 0, 0);
        *e = whole;
        probe_whole(fd, file_size, 0, e, need);
    } else {
        struct fsent zip;
        memset(&zip, 0, sizeof zip);
        if (file_size > ZIP_OFFSET && probe_fs(fd, ZIP_OFFSET, file_size - ZIP_OFFSET, &zip) == 1) {
            struct fsent *e = probe_add(md, 0, 0, 0);
            *e = zip;
            e->offset = ZIP_OFFSET;
            probe_whole(fd, file_size, ZIP_OFFSET, e, need);
            if (!e->reason[0])
                snprintf(e->reason, sizeof e->reason, "no partition table: filesystem at Zip offset 16384");
        } else {
            struct fsent *e = probe_add(md, 0, 0, file_size);
            snprintf(e->status, sizeof e->status, "skipped");
            snprintf(e->reason, sizeof e->reason, "%s",
                     whole.reason[0] ? whole.reason : "no partition table and no filesystem found");
        }
    }
    blkid_free_probe(pr);
    return 0;
}
