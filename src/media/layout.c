/*
 * layout.c - the partition layout of a medium with libblkid, shared by
 * ntt.core.media and the mount helper (see layout.h for the rules).
 * Free of Lua: it is compiled into both programs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <blkid.h>
#include "layout.h"

#define SECTOR 512

static uint32_t le32(const unsigned char *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint64_t le64(const unsigned char *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

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
    /* NTFS counts its sectors without the backup boot sector that ends the volume */
    if (!strcmp(t, "ntfs") && read_at(fd, off, b, 512, avail) == 0 && !memcmp(b + 3, "NTFS    ", 8)) {
        uint32_t bps = le16(b + 11);
        uint64_t total = le64(b + 40);
        if ((bps == 512 || bps == 1024 || bps == 2048 || bps == 4096) && total && total < (1ull << 48))
            return (total + 1) * bps;
    }
    if (!strcmp(t, "exfat") && read_at(fd, off, b, 512, avail) == 0 && !memcmp(b + 3, "EXFAT   ", 8)) {
        uint64_t total = le64(b + 72);
        unsigned shift = b[108];
        if (shift >= 9 && shift <= 12 && total && total < (1ull << 48)) return total << shift;
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

/* A new entry; NULL when out of memory (lo->oom then fails the probe). */
static struct ntt_layout_part *add(struct ntt_layout *lo, int index, uint64_t off, uint64_t size)
{
    if (lo->nparts == lo->cap) {
        int cap = lo->cap ? lo->cap * 2 : 16;
        struct ntt_layout_part *np = realloc(lo->part, (size_t)cap * sizeof *np);
        if (!np) { lo->oom = 1; return NULL; }
        lo->part = np;
        lo->cap = cap;
    }
    struct ntt_layout_part *p = &lo->part[lo->nparts++];
    memset(p, 0, sizeof *p);
    p->index = index;
    p->offset = off;
    p->size = size;
    p->fs.rc = 1;
    return p;
}

void ntt_layout_free(struct ntt_layout *lo)
{
    free(lo->part);
    lo->part = NULL;
    lo->nparts = lo->cap = 0;
}

/* The whole-disk (or Zip) entry: its size is what the filesystem declares. */
static void add_whole(struct ntt_layout *lo, int fd, uint64_t base, uint64_t at,
                      const struct ntt_layout_fs *fs)
{
    uint64_t declared = ntt_layout_declared_size(fd, base + at, base + lo->size, fs->type);
    struct ntt_layout_part *p = add(lo, 0, at, declared ? declared : lo->size - at);
    if (!p) return;
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

/* ---- the primary GPT alone ----
 * libblkid checks a GPT header's last usable LBA against the device size and
 * then looks for the backup header in the last sector: an image cut short
 * has neither, so libblkid reports no table at all although the primary
 * header and entry array at its start are intact.  They are read here (512-
 * byte sectors, as everywhere in this file), both CRC32s checked. */

static uint32_t crc32_ieee(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xFFFFFFFFu;
}

/* A GUID as libblkid prints it: mixed-endian fields, lower case. */
static void guid_str(const unsigned char *g, char *out, size_t n)
{
    snprintf(out, n, "%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             le32(g), le16(g + 4), le16(g + 6), g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
}

/* A partition name (UTF-16LE, NUL-padded) as UTF-8; unpaired surrogates become U+FFFD. */
static void utf16_name(const unsigned char *s, size_t units, char *out, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < units; i++) {
        uint32_t c = le16(s + 2 * i);
        if (!c) break;
        if (c >= 0xD800 && c < 0xDC00 && i + 1 < units && le16(s + 2 * i + 2) >= 0xDC00 &&
            le16(s + 2 * i + 2) < 0xE000) {
            c = 0x10000 + ((c - 0xD800) << 10) + (le16(s + 2 * i + 2) - 0xDC00);
            i++;
        } else if (c >= 0xD800 && c < 0xE000) {
            c = 0xFFFD;
        }
        unsigned char b[4];
        size_t k = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
        if (k == 1) b[0] = (unsigned char)c;
        else if (k == 2) { b[0] = (unsigned char)(0xC0 | c >> 6); b[1] = (unsigned char)(0x80 | (c & 0x3F)); }
        else if (k == 3) { b[0] = (unsigned char)(0xE0 | c >> 12); b[1] = (unsigned char)(0x80 | (c >> 6 & 0x3F));
                           b[2] = (unsigned char)(0x80 | (c & 0x3F)); }
        else { b[0] = (unsigned char)(0xF0 | c >> 18); b[1] = (unsigned char)(0x80 | (c >> 12 & 0x3F));
               b[2] = (unsigned char)(0x80 | (c >> 6 & 0x3F)); b[3] = (unsigned char)(0x80 | (c & 0x3F)); }
        if (o + k >= n) break;
        memcpy(out + o, b, k);
        o += k;
    }
    out[o] = 0;
}

#define GPT_MAX_ARRAY (4u << 20)    /* bytes of entry array accepted (GPT's usual: 16 KiB) */

/* The table from the primary header and its entry array; nparts, or 0 when
 * there is no valid primary GPT (no protective MBR, a bad signature or CRC). */
static int read_gpt_primary(struct ntt_layout *lo, int fd, uint64_t base)
{
    unsigned char mbr[SECTOR], h[SECTOR];
    uint64_t end = base + lo->size;
    if (read_at(fd, base, mbr, SECTOR, end) != 0 || mbr[510] != 0x55 || mbr[511] != 0xAA) return 0;
    int protective = 0;
    for (int i = 0; i < 4; i++) protective |= mbr[446 + 16 * i + 4] == 0xEE;
    if (!protective || read_at(fd, base + SECTOR, h, SECTOR, end) != 0 || memcmp(h, "EFI PART", 8)) return 0;
    uint32_t hsize = le32(h + 12), hcrc = le32(h + 16);
    if (hsize < 92 || hsize > SECTOR || le64(h + 24) != 1) return 0;
    memset(h + 16, 0, 4);
    if (crc32_ieee(h, hsize) != hcrc) return 0;
    uint64_t array_lba = le64(h + 72);
    uint32_t count = le32(h + 80), esize = le32(h + 84);
    if (esize < 128 || esize % 8 || count == 0 || (uint64_t)count * esize > GPT_MAX_ARRAY ||
        array_lba < 2 || array_lba > lo->size / SECTOR) return 0;
    size_t alen = (size_t)count * esize;
    unsigned char *a = malloc(alen);
    if (!a) { lo->oom = 1; return 0; }
    if (read_at(fd, base + array_lba * SECTOR, a, alen, end) != 0 || crc32_ieee(a, alen) != le32(h + 88)) {
        free(a);
        return 0;
    }
    static const unsigned char unused[16];
    for (uint32_t i = 0; i < count; i++) {
        const unsigned char *e = a + (size_t)i * esize;
        uint64_t first = le64(e + 32), last = le64(e + 40);
        if (!memcmp(e, unused, 16) || last < first || last >= UINT64_MAX / SECTOR) continue;
        struct ntt_layout_part *p = add(lo, (int)i + 1, first * SECTOR, (last - first + 1) * SECTOR);
        if (!p) break;
        guid_str(e, p->type, sizeof p->type);
        guid_str(e + 16, p->partuuid, sizeof p->partuuid);
        utf16_name(e + 56, (esize - 56) / 2 < 36 ? (esize - 56) / 2 : 36, p->name, sizeof p->name);
        p->truncated = p->offset + p->size > lo->size;
        p->beyond = p->offset >= lo->size;
    }
    free(a);
    snprintf(lo->pttype, sizeof lo->pttype, "gpt");
    guid_str(h + 56, lo->ptuuid, sizeof lo->ptuuid);
    lo->gpt_primary = 1;
    return lo->nparts;
}

/* ---- MBR extended chains ----
 * libblkid follows each extended partition's chain of EBRs and quietly
 * stops one that links back on itself; the chain is walked again here so
 * that such a loop is reported (ebr_loop), never silent and never endless. */

#define EBR_MAX 65536               /* links followed before a chain counts as a loop */

static int is_ext_type(unsigned t) { return t == 0x05 || t == 0x0f || t == 0x85; }

static void check_ebr_chains(struct ntt_layout *lo, int fd, uint64_t base)
{
    uint64_t *seen = NULL;
    size_t cap = 0;
    for (int k = 0; k < lo->nparts && !lo->ebr_loop; k++) {
        const struct ntt_layout_part *p = &lo->part[k];
        if (!p->container || p->index > 4) continue;
        uint64_t ext = p->offset / SECTOR, cur = ext;
        size_t n = 0;
        for (;;) {
            for (size_t i = 0; i < n; i++) if (seen[i] == cur) { lo->ebr_loop = 1; break; }
            if (lo->ebr_loop) break;
            if (n == EBR_MAX) { lo->ebr_loop = 1; break; }
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 64;
                uint64_t *ns = realloc(seen, nc * sizeof *ns);
                if (!ns) { lo->oom = 1; free(seen); return; }
                seen = ns;
                cap = nc;
            }
            seen[n++] = cur;
            unsigned char b[SECTOR];
            if (cur > lo->size / SECTOR || read_at(fd, base + cur * SECTOR, b, SECTOR, base + lo->size) != 0 ||
                b[510] != 0x55 || b[511] != 0xAA) break;
            uint64_t next = 0;
            for (int i = 0; i < 4 && !next; i++) {
                const unsigned char *e = b + 446 + 16 * i;
                if (is_ext_type(e[4]) && le32(e + 12)) next = ext + le32(e + 8);
            }
            if (!next) break;
            cur = next;
        }
    }
    free(seen);
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
    if (!lo->pttype[0] && !lo->oom) nparts = read_gpt_primary(lo, fd, base);
    else if (!strcmp(lo->pttype, "dos")) check_ebr_chains(lo, fd, base);
    if (lo->oom) {
        ntt_layout_free(lo);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
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
    if (lo->oom) {
        ntt_layout_free(lo);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}
