/*
 * fat.c - ntt.core.fat: where a file of a FAT12/16/32 filesystem lies in
 * its image, read from the image itself.  FAT media are read through a FUSE
 * driver, which has no FIEMAP: this is their FIEMAP, so the mapfile can
 * tell which bytes of a file were never rescued.
 *
 * Lua API (ntt.core.fat):
 *   extents(image, fs_offset, path)
 *       -> { { logical=, physical=, length=, flags=0 }, ... }, size
 *          the clusters of the file at `path` (relative to the filesystem's
 *          root, components separated by "/", each its long name or its
 *          8.3 name, the latter in any case) in file order, neighbouring
 *          clusters merged; physical offsets are relative to the start of
 *          the filesystem (fs_offset in the image), as FIEMAP's are; size
 *          is the size the directory entry records.  Only the clusters the
 *          size needs are listed.
 *        | nil, "path: No such file or directory", "ENOENT"
 *        | nil, "image: not a FAT filesystem at offset N", "EINVAL"
 *        | nil, "path: cluster chain ...", "EUCLEAN"  (a chain that leaves
 *          the filesystem, ends early or loops)
 *        | nil, "image: strerror", errname
 * The metadata is read from the image as it is: where the map says it was
 * never rescued it reads as zeros, and the file is then not found.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include "ntt.h"

#define MAX_CHAIN (1u << 28)      /* more clusters than any FAT can hold */

typedef struct {
    int fd;
    uint64_t base;                  /* fs_offset */
    unsigned bps, spc, bits;        /* bytes per sector, sectors per cluster, 12/16/32 */
    uint64_t fat_off, root_off, data_off;   /* byte offsets relative to base */
    uint32_t root_entries, root_clus, nclusters;
    uint64_t cbytes;                /* bytes per cluster */
    uint8_t fatbuf[4096];           /* one cached block of the FAT */
    uint64_t fatbuf_at;             /* its offset; UINT64_MAX when empty */
    uint8_t *cbuf;                  /* one directory cluster */
} Fat;

typedef struct { uint64_t logical, physical, length; } Ext;

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

/* Reads len bytes at off (relative to the filesystem); 0, or an errno
 * (EIO for a short read: the image ends inside the filesystem). */
static int rd(Fat *f, uint64_t off, void *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(f->fd, (char *)buf + done, len - done, (off_t)(f->base + off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return errno;
        if (r == 0) return EIO;
        done += (size_t)r;
    }
    return 0;
}

static int fat_byte(Fat *f, uint64_t off, uint8_t *b)
{
    uint64_t blk = off & ~(uint64_t)4095;
    if (blk != f->fatbuf_at) {
        int e = rd(f, f->fat_off + blk, f->fatbuf, sizeof f->fatbuf);
        if (e == EIO) {             /* a FAT shorter than a block: read what there is */
            memset(f->fatbuf, 0, sizeof f->fatbuf);
            e = rd(f, f->fat_off + off, f->fatbuf + (off - blk), 1);
        }
        if (e) { f->fatbuf_at = UINT64_MAX; return e; }
        f->fatbuf_at = blk;
    }
    *b = f->fatbuf[off - blk];
    return 0;
}

/* The FAT entry of cluster c in *next; 0 or an errno. */
static int fat_next(Fat *f, uint32_t c, uint32_t *next)
{
    uint8_t b[4] = { 0 };
    uint64_t off = f->bits == 12 ? c + c / 2 : (uint64_t)c * (f->bits / 8);
    for (unsigned i = 0; i < (f->bits == 12 ? 2u : f->bits / 8); i++) {
        int e = fat_byte(f, off + i, &b[i]);
        if (e) return e;
    }
    if (f->bits == 12) *next = (c & 1) ? (uint32_t)(le16(b) >> 4) : (uint32_t)(le16(b) & 0xfff);
    else if (f->bits == 16) *next = le16(b);
    else *next = le32(b) & 0x0fffffff;
    return 0;
}

static int is_end(const Fat *f, uint32_t v)
{
    return v >= (f->bits == 12 ? 0xff8u : f->bits == 16 ? 0xfff8u : 0x0ffffff8u);
}

static int valid_cluster(const Fat *f, uint32_t c) { return c >= 2 && c < f->nclusters + 2; }

static uint64_t cluster_off(const Fat *f, uint32_t c) { return f->data_off + (uint64_t)(c - 2) * f->cbytes; }

static int fat_open(Fat *f)
{
    uint8_t bs[512];
    int e = rd(f, 0, bs, sizeof bs);
    if (e) return e == EIO ? EINVAL : e;     /* shorter than a boot sector */
    f->bps = le16(bs + 11);
    f->spc = bs[13];
    unsigned rsvd = le16(bs + 14), nfats = bs[16];
    f->root_entries = le16(bs + 17);
    uint32_t tot = le16(bs + 19) ? le16(bs + 19) : le32(bs + 32);
    uint32_t fatsz = le16(bs + 22) ? le16(bs + 22) : le32(bs + 36);
    if ((f->bps != 512 && f->bps != 1024 && f->bps != 2048 && f->bps != 4096) || !f->spc
        || (f->spc & (f->spc - 1)) || !rsvd || !nfats || !fatsz || !tot)
        return EINVAL;
    uint32_t root_secs = (f->root_entries * 32u + f->bps - 1) / f->bps;
    uint64_t first_data = (uint64_t)rsvd + (uint64_t)nfats * fatsz + root_secs;
    if (first_data >= tot) return EINVAL;
    f->nclusters = (uint32_t)((tot - first_data) / f->spc);
    if (f->nclusters > 0x0ffffff5u) return EINVAL;   /* more than FAT32 can number */
    f->bits = f->nclusters < 4085 ? 12 : f->nclusters < 65525 ? 16 : 32;
    if (f->bits == 32 && f->root_entries) return EINVAL;
    if (f->bits != 32 && !f->root_entries) return EINVAL;
    f->fat_off = (uint64_t)rsvd * f->bps;
    f->root_off = f->fat_off + (uint64_t)nfats * fatsz * f->bps;
    f->data_off = first_data * f->bps;
    f->root_clus = f->bits == 32 ? le32(bs + 44) : 0;
    f->cbytes = (uint64_t)f->bps * f->spc;
    f->fatbuf_at = UINT64_MAX;
    f->cbuf = malloc(f->cbytes);
    return f->cbuf ? 0 : ENOMEM;
}

/* The long name gathered so far, as UTF-8. */
typedef struct {
    uint16_t u[260];
    int have;                       /* parts seen, 0 when none */
    uint8_t sum;                    /* checksum of the short name they belong to */
} Lfn;

static void lfn_part(Lfn *l, const uint8_t *e)
{
    static const int at[13] = { 1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30 };
    int seq = e[0] & 0x1f;
    if (e[0] & 0x40) { memset(l->u, 0xff, sizeof l->u); l->have = 0; l->sum = e[13]; }
    if (seq < 1 || seq > 20 || e[13] != l->sum) { l->have = -1; return; }
    for (int i = 0; i < 13; i++) l->u[(seq - 1) * 13 + i] = le16(e + at[i]);
    if (l->have >= 0) l->have++;
}

static uint8_t short_sum(const uint8_t *e)
{
    uint8_t s = 0;
    for (int i = 0; i < 11; i++) s = (uint8_t)(((s & 1) << 7) + (s >> 1) + e[i]);
    return s;
}

/* UTF-16 (with surrogates) to UTF-8 in out; 0 when it does not fit. */
static size_t lfn_utf8(const Lfn *l, char *out, size_t cap)
{
    size_t n = 0;
    for (int i = 0; i < 260 && l->u[i] && l->u[i] != 0xffff; i++) {
        uint32_t c = l->u[i];
        if (c >= 0xd800 && c < 0xdc00 && i + 1 < 260 && l->u[i + 1] >= 0xdc00 && l->u[i + 1] < 0xe000)
            c = 0x10000 + ((c - 0xd800) << 10) + (l->u[++i] - 0xdc00);
        if (n + 4 >= cap) return 0;
        if (c < 0x80) out[n++] = (char)c;
        else if (c < 0x800) { out[n++] = (char)(0xc0 | c >> 6); out[n++] = (char)(0x80 | (c & 0x3f)); }
        else if (c < 0x10000) {
            out[n++] = (char)(0xe0 | c >> 12); out[n++] = (char)(0x80 | ((c >> 6) & 0x3f));
            out[n++] = (char)(0x80 | (c & 0x3f));
        } else {
            out[n++] = (char)(0xf0 | c >> 18); out[n++] = (char)(0x80 | ((c >> 12) & 0x3f));
            out[n++] = (char)(0x80 | ((c >> 6) & 0x3f)); out[n++] = (char)(0x80 | (c & 0x3f));
        }
    }
    out[n] = 0;
    return n;
}

static void short_name(const uint8_t *e, char *out)
{
    int n = 0, i;
    for (i = 0; i < 8 && e[i] != ' '; i++) out[n++] = (char)(i == 0 && e[0] == 0x05 ? 0xe5 : e[i]);
    if (e[8] != ' ') {
        out[n++] = '.';
        for (i = 8; i < 11 && e[i] != ' '; i++) out[n++] = (char)e[i];
    }
    out[n] = 0;
}

/* Does entry e (with its long name l) carry the name (len bytes)? */
static int names(const uint8_t *e, const Lfn *l, const char *name, size_t len)
{
    char buf[1100];
    if (l->have > 0 && l->sum == short_sum(e)) {
        size_t n = lfn_utf8(l, buf, sizeof buf);
        if (n == len && !memcmp(buf, name, len)) return 1;
    }
    short_name(e, buf);
    return strlen(buf) == len && !strncasecmp(buf, name, len);
}

/* Looks for name in the directory starting at cluster dir (0: FAT12/16's
 * fixed root).  Fills the 32-byte entry; 0, ENOENT or an errno. */
static int lookup(Fat *f, uint32_t dir, const char *name, size_t len, uint8_t *found)
{
    Lfn l = { .have = 0 };
    uint64_t nclus = 0;
    for (;;) {
        uint64_t off, size;
        if (dir == 0) {
            off = f->root_off;
            size = (uint64_t)f->root_entries * 32;
            if (size > f->cbytes) {            /* the fixed root is read in cluster-sized pieces */
                off += nclus * f->cbytes;
                size = (uint64_t)f->root_entries * 32 - nclus * f->cbytes;
                if (size > f->cbytes) size = f->cbytes;
            }
        } else {
            if (!valid_cluster(f, dir)) return EUCLEAN;
            off = cluster_off(f, dir);
            size = f->cbytes;
        }
        int e = rd(f, off, f->cbuf, size);
        if (e) return e;
        for (uint64_t i = 0; i + 32 <= size; i += 32) {
            const uint8_t *d = f->cbuf + i;
            if (d[0] == 0) return ENOENT;
            if (d[0] == 0xe5) { l.have = 0; continue; }
            if ((d[11] & 0x3f) == 0x0f) { lfn_part(&l, d); continue; }
            if (!(d[11] & 0x08) && names(d, &l, name, len)) { memcpy(found, d, 32); return 0; }
            l.have = 0;
        }
        nclus++;
        if (dir == 0) {
            if (nclus * f->cbytes >= (uint64_t)f->root_entries * 32) return ENOENT;
            continue;
        }
        if (nclus > f->nclusters) return EUCLEAN;
        uint32_t next;
        if ((e = fat_next(f, dir, &next))) return e;
        if (is_end(f, next)) return ENOENT;
        dir = next;
    }
}

/* The extents of path; 0 (with *out, *n, *size) or an errno. */
static int map_path(Fat *f, const char *path, Ext **out, size_t *n, uint64_t *size)
{
    uint32_t dir = f->bits == 32 ? f->root_clus : 0;
    uint8_t ent[32];
    const char *p = path;
    int e = ENOENT;
    while (*p == '/') p++;
    if (!*p) return EISDIR;
    while (*p) {
        const char *s = strchr(p, '/');
        size_t len = s ? (size_t)(s - p) : strlen(p);
        if ((e = lookup(f, dir, p, len, ent))) return e;
        p += len;
        while (*p == '/') p++;
        uint32_t first = (f->bits == 32 ? (uint32_t)le16(ent + 20) << 16 : 0) | le16(ent + 26);
        if (*p) {
            if (!(ent[11] & 0x10)) return ENOTDIR;
            dir = first;
            if (dir == 0 && f->bits == 32) dir = f->root_clus;   /* ".." of a top directory */
        } else {
            if (ent[11] & 0x10) return EISDIR;
            *size = le32(ent + 28);
            uint64_t need = (*size + f->cbytes - 1) / f->cbytes;
            if (need > MAX_CHAIN) return EUCLEAN;
            Ext *x = NULL;
            size_t k = 0, cap = 0;
            uint32_t c = first;
            /* clusters seen: a chain that comes back to one loops */
            uint8_t *seen = need ? calloc((size_t)f->nclusters / 8 + 1, 1) : NULL;
            if (need && !seen) return ENOMEM;
            for (uint64_t i = 0; i < need; i++) {
                if (!valid_cluster(f, c) || (seen[(c - 2) / 8] & (1u << ((c - 2) % 8)))) {
                    free(x); free(seen);
                    return EUCLEAN;
                }
                seen[(c - 2) / 8] |= (uint8_t)(1u << ((c - 2) % 8));
                uint64_t phys = cluster_off(f, c);
                if (k && x[k - 1].physical + x[k - 1].length == phys) {
                    x[k - 1].length += f->cbytes;
                } else {
                    if (k == cap) {
                        cap = cap ? cap * 2 : 16;
                        Ext *nx = realloc(x, cap * sizeof *x);
                        if (!nx) { free(x); free(seen); return ENOMEM; }
                        x = nx;
                    }
                    x[k++] = (Ext){ i * f->cbytes, phys, f->cbytes };
                }
                if (i + 1 < need) {
                    uint32_t next;
                    if ((e = fat_next(f, c, &next))) { free(x); free(seen); return e; }
                    c = next;
                }
            }
            free(seen);
            *out = x;
            *n = k;
            return 0;
        }
    }
    return e;
}

/* The extents while the result table is built: freed by the collector
 * should building it raise (out of memory). */
#define BOX_MT "ntt.FatExtents"
static int box_gc(lua_State *L)
{
    Ext **b = luaL_checkudata(L, 1, BOX_MT);
    free(*b);
    *b = NULL;
    return 0;
}

static int fat_extents(lua_State *L)
{
    const char *image = luaL_checkstring(L, 1);
    lua_Integer base = luaL_checkinteger(L, 2);
    const char *path = luaL_checkstring(L, 3);
    luaL_argcheck(L, base >= 0, 2, "fs_offset must be >= 0");
    Fat f;
    memset(&f, 0, sizeof f);
    f.base = (uint64_t)base;
    f.fd = -1;
    Ext **box = ntt_newudata(L, sizeof *box, BOX_MT);
    f.fd = open(image, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (f.fd < 0) return ntt_fail(L, errno, image);
    Ext *x = NULL;
    size_t n = 0;
    uint64_t size = 0;
    int e = fat_open(&f);
    int bad_fs = e == EINVAL;
    if (!e) e = map_path(&f, path, &x, &n, &size);
    *box = x;
    close(f.fd);
    free(f.cbuf);
    if (bad_fs)
        return ntt_failf(L, EINVAL, "%s: not a FAT filesystem at offset %lld", image, (long long)base);
    if (e == EUCLEAN)
        return ntt_failf(L, EUCLEAN, "%s: cluster chain leaves the filesystem, ends early or loops", path);
    if (e == EIO) return ntt_failf(L, EIO, "%s: the image ends inside its FAT filesystem", image);
    if (e) return ntt_fail(L, e, path);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_createtable(L, 0, 4);
        ntt_setint(L, "logical", (lua_Integer)x[i].logical);
        ntt_setint(L, "physical", (lua_Integer)x[i].physical);
        ntt_setint(L, "length", (lua_Integer)x[i].length);
        ntt_setint(L, "flags", 0);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    free(x);
    *box = NULL;
    lua_pushinteger(L, (lua_Integer)size);
    return 2;
}

int luaopen_ntt_core_fat(lua_State *L)
{
    static const luaL_Reg fns[] = { { "extents", fat_extents }, { NULL, NULL } };
    static const luaL_Reg none[] = { { NULL, NULL } };
    static const luaL_Reg meta[] = { { "__gc", box_gc }, { NULL, NULL } };
    ntt_newclass(L, BOX_MT, none, meta);
    luaL_newlib(L, fns);
    return 1;
}
