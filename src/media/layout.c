/*
 * layout.c - the partition layout of a medium with libblkid, shared by
 * ntt.core.media and the mount helper (see layout.h for the rules).
 * Free of Lua: it is compiled into both programs.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <blkid.h>
#include "layout.h"

#define SECTOR 512

static uint32_t le32(const unsigned char *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

static int is_optical(const char *t) { return !strcmp(t, "iso9660") || !strcmp(t, "udf"); }

static int read_at(int fd, uint64_t off, void *buf, size_t len, uint64_t avail)
{
    if (off + len > avail) return -1;
    return pread(fd, buf, len, (off_t)off) == (ssize_t)len ? 0 : -1;
}

uint64_t ntt_layout_declared_size(int fd, uint64_t off, uint64_t avail, const char *t)
{
    unsigned char b[2048];
    if (!strncmp(t, "ext", 3) && read_at(fd, off + 1024, b, 1024, avail) == 0 && le16(b + 56) == 0xEF53) {
        uint64_t blocks = le32(b + 4);
        uint32_t log = le32(b + 24);
        if (le32(b + 96) & 0x80) blocks |= (uint64_t)le32(b + 0x150) << 32;   /* 64bit */
        if (log <= 6) return blocks * (1024ull << log);
    }
    if (is_optical(t) && read_at(fd, off + 32768, b, 2048, avail) == 0 && !memcmp(b + 1, "CD001", 5)) {
        uint64_t blocks = le32(b + 80), bs = le16(b + 128);
        if (bs >= 512 && bs <= 4096) return blocks * bs;
    }
    if ((!strcmp(t, "vfat") || !strcmp(t, "msdos")) &&
        read_at(fd, off, b, 512, avail) == 0 && b[510] == 0x55 && b[511] == 0xAA) {
        uint32_t bps = le16(b + 11), total = le16(b + 19);
        if (!total) total = le32(b + 32);
        if ((bps == 512 || bps == 1024 || bps == 2048 || bps == 4096) && b[13] && total)
            return (uint64_t)total * bps;
    }
    return 0;
}

static void copy_value(blkid_probe pr, const char *key, char *out, size_t n)
{
    const char *v = NULL;
    if (blkid_probe_lookup_value(pr, key, &v, NULL) == 0 && v)
        snprintf(out, n, "%s", v);
}

int ntt_layout_probe_fs(int fd, uint64_t off, uint64_t len, struct ntt_layout_fs *fs)
{
    memset(fs, 0, sizeof *fs);
    fs->rc = -1;
    blkid_probe pr = blkid_new_probe();
    if (!pr) return fs->rc;
    if (len > 0 && blkid_probe_set_device(pr, fd, (blkid_loff_t)off, (blkid_loff_t)len) == 0) {
        blkid_probe_enable_partitions(pr, 0);
        blkid_probe_enable_superblocks(pr, 1);
        blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_LABEL |
                                              BLKID_SUBLKS_UUID | BLKID_SUBLKS_USAGE);
        fs->rc = blkid_do_safeprobe(pr);
        if (fs->rc == 0) {
            copy_value(pr, "TYPE", fs->type, sizeof fs->type);
            copy_value(pr, "LABEL", fs->label, sizeof fs->label);
            copy_value(pr, "UUID", fs->uuid, sizeof fs->uuid);
            copy_value(pr, "USAGE", fs->usage, sizeof fs->usage);
        }
    }
    blkid_free_probe(pr);
    return fs->rc;
}

static struct ntt_layout_part *add(struct ntt_layout *lo, int index, uint64_t off, uint64_t size)
{
    if (lo->nparts >= NTT_LAYOUT_MAX) return NULL;
    struct ntt_layout_part *p = &lo->part[lo->nparts++];
    memset(p, 0, sizeof *p);
    p->index = index;
    p->offset = off;
    p->size = size;
    p->fs.rc = 1;
    return p;
}

/* The whole-disk (or Zip) entry: its size is what the filesystem declares. */
static void add_whole(struct ntt_layout *lo, int fd, uint64_t base, uint64_t at,
                      const struct ntt_layout_fs *fs)
{
    uint64_t declared = ntt_layout_declared_size(fd, base + at, base + lo->size, fs->type);
    struct ntt_layout_part *p = add(lo, 0, at, declared ? declared : lo->size - at);
    p->fs = *fs;
    p->truncated = at + p->size > lo->size;
}

/* The table's entries, copied out before the probe is freed. */
static int read_table(struct ntt_layout *lo, blkid_probe pr)
{
    blkid_probe_enable_superblocks(pr, 0);
    blkid_probe_enable_partitions(pr, 1);
    blkid_probe_set_partitions_flags(pr, BLKID_PARTS_ENTRY_DETAILS);
    blkid_partlist ls = blkid_probe_get_partitions(pr);
    blkid_parttable tab = ls ? blkid_partlist_get_table(ls) : NULL;
    if (!tab) return 0;
    const char *v = blkid_parttable_get_type(tab);
    snprintf(lo->pttype, sizeof lo->pttype, "%s", v ? v : "");
    v = blkid_parttable_get_id(tab);
    snprintf(lo->ptuuid, sizeof lo->ptuuid, "%s", v ? v : "");
    int n = blkid_partlist_numof_partitions(ls);
    for (int i = 0; i < n; i++) {
        blkid_partition par = blkid_partlist_get_partition(ls, i);
        if (!par) continue;
        uint64_t start = (uint64_t)blkid_partition_get_start(par) * SECTOR;
        uint64_t size = (uint64_t)blkid_partition_get_size(par) * SECTOR;
        struct ntt_layout_part *p = add(lo, blkid_partition_get_partno(par), start, size);
        if (!p) break;
        v = blkid_partition_get_type_string(par);
        if (v) snprintf(p->type, sizeof p->type, "%s", v);
        else snprintf(p->type, sizeof p->type, "0x%02x", (unsigned)blkid_partition_get_type(par));
        v = blkid_partition_get_name(par);
        snprintf(p->name, sizeof p->name, "%s", v ? v : "");
        v = blkid_partition_get_uuid(par);
        snprintf(p->partuuid, sizeof p->partuuid, "%s", v ? v : "");
        p->container = blkid_partition_is_extended(par) != 0;
        p->truncated = start + size > lo->size;
        p->beyond = start >= lo->size;
    }
    return lo->nparts;
}

int ntt_layout_probe(int fd, uint64_t base, uint64_t len, struct ntt_layout *lo,
                     char *err, size_t errlen)
{
    memset(lo, 0, sizeof *lo);
    lo->size = len;
    lo->whole.rc = 1;
    if (len == 0) return 0;
    blkid_probe pr = blkid_new_probe();
    if (!pr) { snprintf(err, errlen, "blkid_new_probe failed"); return -1; }
    if (blkid_probe_set_device(pr, fd, (blkid_loff_t)base, (blkid_loff_t)len) != 0) {
        snprintf(err, errlen, "blkid cannot read the image");
        blkid_free_probe(pr);
        return -1;
    }
    int nparts = read_table(lo, pr);
    blkid_free_probe(pr);
    ntt_layout_probe_fs(fd, base, len, &lo->whole);

    if (nparts > 0 && lo->whole.rc == 0 && is_optical(lo->whole.type)) {
        lo->hybrid = 1;       /* Apple APM or isohybrid: the whole disk is the filesystem */
        lo->nparts = 0;
        add_whole(lo, fd, base, 0, &lo->whole);
    } else if (nparts > 0) {
        for (int i = 0; i < lo->nparts; i++) {
            struct ntt_layout_part *p = &lo->part[i];
            if (p->container || p->beyond) continue;
            uint64_t avail = lo->size - p->offset < p->size ? lo->size - p->offset : p->size;
            ntt_layout_probe_fs(fd, base + p->offset, avail, &p->fs);
        }
    } else if (lo->whole.rc == 0 || lo->whole.rc == -2) {
        add_whole(lo, fd, base, 0, &lo->whole);
    } else if (lo->whole.rc == 1 && len > NTT_LAYOUT_ZIP_OFFSET) {
        struct ntt_layout_fs zip;
        if (ntt_layout_probe_fs(fd, base + NTT_LAYOUT_ZIP_OFFSET, len - NTT_LAYOUT_ZIP_OFFSET, &zip) == 0)
            add_whole(lo, fd, base, NTT_LAYOUT_ZIP_OFFSET, &zip);
    }
    return 0;
}
