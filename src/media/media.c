/*
 * media.c - ntt.core.media: the bytes and facts of a medium (image file or
 * block device) that identify and inspect need.
 *
 * Lua API (ntt.core.media):
 *   read_regions(path, first, last)
 *       -> head, tail, size, bad
 *          head: the first min(first, size) bytes; tail: the last
 *          min(last, size) bytes (the two overlap on a small medium);
 *          size: bytes of the file or device; bad: how many of the returned
 *          bytes could not be read and were replaced by zeros.  A region is
 *          read in one go and only on an error sector by sector (512 B).
 *        | nil, "path: strerror", "ENOENT"   (open/stat failed, or a
 *          directory "EISDIR", or neither file nor block device "EINVAL")
 *   hash_lenient(path [, nbytes]) -> hex, size, bad
 *          BLAKE3 (nbytes of output, default 32) of the whole medium read
 *          like read_regions: unreadable sectors hashed as zeros, bad their
 *          count in bytes (ntt.core.hash.file is faster; this is for a
 *          medium it cannot read through) | nil, msg, errname | nil,
 *          "interrupted", "EINTR"
 *   device_facts(path)
 *       -> { size=, logical_sector=, model=|nil, serial=|nil,
 *            rotational=bool|nil, removable=bool|nil, major=, minor= }
 *          from ioctls (BLKGETSIZE64, BLKSSZGET), sysfs
 *          (/sys/dev/block/M:m/{device/model,device/serial,queue/rotational,
 *          removable}; a partition uses its disk's) and udev
 *          (/run/udev/data/bM:m E:ID_SERIAL_SHORT, E:ID_MODEL)
 *        | nil, "path: Block device required", "ENOTBLK" | nil, msg, errname
 *   scan_uniform(path [, { block=bytes, ranges={ {pos=, size=}, ... } }])
 *       -> { uniform=bool, byte=n|nil, size=, scanned=, differs_at=n|nil }
 *          reads the whole medium (or only the given ranges) once in large
 *          blocks (1 MiB) and stops at the first byte that differs from the first
 *          one; byte is that value when uniform.  An empty scan is not
 *          uniform.
 *        | nil, "path: strerror", errname | nil, "interrupted", "EINTR"
 *   probe(path [, { offset=, size= }])
 *       -> { size=, pttype="dos"|"gpt"|...|nil, ptuuid=, hybrid=true|nil,
 *            fstype=, label=, uuid=, usage=, ambivalent=true|nil,
 *            partitions = { { fs_index=, offset=, size=, type=, name=, partuuid=,
 *                             container=bool, truncated=bool, fstype=, label=,
 *                             uuid=, usage=, ambivalent=true|nil }, ... } }
 *          the layout probe the mount helper uses too (layout.h has the
 *          rules), on the file itself, no loop device.  fstype/label/uuid
 *          at the top: the whole region.  Offsets are absolute in the file.
 *        | nil, msg, errname
 *   fiemap(path)
 *       -> { { logical=, physical=, length=, flags= }, ... }
 *          the file's extents (FS_IOC_FIEMAP); physical offsets are relative
 *          to the start of its filesystem's device; a symbolic link is not
 *          followed (nil, msg, "ELOOP")
 *        | nil, "path: Operation not supported", "EOPNOTSUPP" where the
 *          filesystem has no FIEMAP (tmpfs, most FUSE filesystems, vfat...)
 *        | nil, msg, errname
 *   EXTENT = { last=, unknown=, delalloc=, encoded=, ... }  fiemap flag bits
 * An options table holding a key its function does not know raises (with a
 * did-you-mean).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include "ntt.h"
#include "layout.h"
#include "blake3.h"

#define RES_MT "ntt.MediaResource"
#define SECTOR 512
#define REGION_MAX ((lua_Integer)256 << 20)
#define SCAN_BLOCK (1 << 20)

/* OS resources held while a function builds Lua tables: freed by close or
 * by the collector if a Lua error interrupts the function. */
typedef struct {
    int fd;
    void *mem;
    int open;
} Res;

/* Frees the resource at idx now (its __gc then finds nothing to do). */
static void res_free(lua_State *L, int idx)
{
    Res *r = luaL_checkudata(L, idx, RES_MT);
    if (r->fd >= 0) close(r->fd);
    free(r->mem);
    r->fd = -1; r->mem = NULL; r->open = 0;
}

static int res_close(lua_State *L)
{
    res_free(L, 1);
    return 0;
}

static int res_tostring(lua_State *L)
{
    Res *r = luaL_checkudata(L, 1, RES_MT);
    lua_pushfstring(L, "ntt.MediaResource(%s)", r->open ? "open" : "closed");
    return 1;
}

static Res *res_new(lua_State *L)
{
    Res *r = ntt_newudata(L, sizeof *r, RES_MT);
    r->fd = -1;
    r->open = 1;
    return r;
}

/* Open a regular file or block device read-only and find its size.
 * Returns the fd or -1 with errno set. */
static int media_open(const char *path, int64_t *size, struct stat *st)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -1;
    if (fstat(fd, st) < 0)
        goto fail;
    if (S_ISREG(st->st_mode)) {
        *size = st->st_size;
    } else if (S_ISBLK(st->st_mode)) {
        uint64_t sz = 0;
        if (ioctl(fd, BLKGETSIZE64, &sz) < 0)
            goto fail;
        *size = (int64_t)sz;
    } else {
        errno = S_ISDIR(st->st_mode) ? EISDIR : EINVAL;
        goto fail;
    }
    return fd;
fail:;
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

/* Read len bytes at off into buf; unreadable sectors and bytes past EOF
 * become zeros.  Returns how many bytes were zero-filled. */
static size_t read_lenient(int fd, char *buf, size_t len, int64_t off)
{
    size_t done = 0, bad = 0;
    while (done < len) {
        ssize_t n = pread(fd, buf + done, len - done, off + (int64_t)done);
        if (n > 0) { done += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n == 0) {                      /* shorter than it said */
            memset(buf + done, 0, len - done);
            return bad + (len - done);
        }
        break;                             /* an error: go sector by sector */
    }
    while (done < len) {
        int64_t pos = off + (int64_t)done;
        size_t want = SECTOR - (size_t)(pos % SECTOR);
        if (want > len - done) want = len - done;
        ssize_t n;
        do n = pread(fd, buf + done, want, pos); while (n < 0 && errno == EINTR);
        if (n <= 0) {
            memset(buf + done, 0, want);
            bad += want;
            n = (ssize_t)want;
        }
        done += (size_t)n;
    }
    return bad;
}

static int media_read_regions(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer first = luaL_checkinteger(L, 2), last = luaL_checkinteger(L, 3);
    luaL_argcheck(L, first >= 0 && first <= REGION_MAX, 2, "0 .. 256 MiB");
    luaL_argcheck(L, last >= 0 && last <= REGION_MAX, 3, "0 .. 256 MiB");
    /* Buffers before the fd: nothing below can raise while it is open. */
    char *hb = lua_newuserdatauv(L, (size_t)first + 1, 0);
    char *tb = lua_newuserdatauv(L, (size_t)last + 1, 0);
    struct stat st;
    int64_t size;
    int fd = media_open(path, &size, &st);
    if (fd < 0)
        return ntt_fail(L, errno, path);
    size_t hn = (size_t)(first < size ? first : size);
    size_t tn = (size_t)(last < size ? last : size);
    size_t bad = read_lenient(fd, hb, hn, 0);
    bad += read_lenient(fd, tb, tn, size - (int64_t)tn);
    close(fd);
    lua_pushlstring(L, hb, hn);
    lua_pushlstring(L, tb, tn);
    lua_pushinteger(L, size);
    lua_pushinteger(L, (lua_Integer)bad);
    return 4;
}

static int media_hash_lenient(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer nb = luaL_optinteger(L, 2, NTT_BLAKE3_OUT_LEN);
    luaL_argcheck(L, nb >= 1 && nb <= 64, 2, "1 .. 64 bytes");
    char *buf = lua_newuserdatauv(L, SCAN_BLOCK, 0);
    uint8_t out[64];
    struct stat st;
    int64_t size;
    int fd = media_open(path, &size, &st);
    if (fd < 0)
        return ntt_fail(L, errno, path);
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    ntt_blake3 b3;
    ntt_blake3_init(&b3);
    size_t bad = 0;
    int64_t pos = 0;
    while (pos < size && !ntt_interrupted) {
        size_t want = (size_t)(size - pos < SCAN_BLOCK ? size - pos : SCAN_BLOCK);
        bad += read_lenient(fd, buf, want, pos);
        ntt_blake3_update(&b3, buf, want);
        pos += (int64_t)want;
    }
    close(fd);
    if (ntt_interrupted)
        return ntt_fail_interrupted(L);
    ntt_blake3_finalize(&b3, out, (size_t)nb);
    static const char digits[] = "0123456789abcdef";
    char hex[129];
    for (lua_Integer i = 0; i < nb; i++) {
        hex[2 * i] = digits[out[i] >> 4];
        hex[2 * i + 1] = digits[out[i] & 15];
    }
    lua_pushlstring(L, hex, (size_t)(2 * nb));
    lua_pushinteger(L, size);
    lua_pushinteger(L, (lua_Integer)bad);
    return 3;
}

/* Read a small sysfs/udev text file into buf, trailing blanks trimmed.
 * Returns 1 when something non-empty was read. */
static int read_small(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n;
    do n = read(fd, buf, size - 1); while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        buf[--n] = 0;
    size_t lead = strspn(buf, " \t");
    memmove(buf, buf + lead, (size_t)n - lead + 1);
    return buf[0] != 0;
}

/* The value of "E:KEY=" in a udev database text, copied into out. */
static int udev_value(const char *db, const char *key, char *out, size_t size)
{
    size_t kl = strlen(key);
    for (const char *p = db; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, "E:", 2) == 0 && strncmp(p + 2, key, kl) == 0 && p[2 + kl] == '=') {
            const char *v = p + 3 + kl, *e = strchr(v, '\n');
            size_t n = e ? (size_t)(e - v) : strlen(v);
            if (n >= size) n = size - 1;
            memcpy(out, v, n);
            out[n] = 0;
            return n > 0;
        }
    }
    return 0;
}

static int media_device_facts(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st) < 0)
        return ntt_fail(L, errno, path);
    if (!S_ISBLK(st.st_mode))
        return ntt_fail(L, ENOTBLK, path);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return ntt_fail(L, errno, path);
    uint64_t size = 0;
    int ssz = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) < 0 || ioctl(fd, BLKSSZGET, &ssz) < 0) {
        int e = errno;
        close(fd);
        return ntt_fail(L, e, path);
    }
    close(fd);

    unsigned maj = major(st.st_rdev), min = minor(st.st_rdev);
    char sys[PATH_MAX], link[64], file[PATH_MAX + 64], model[256] = "", serial[256] = "";
    char rot[16] = "", rem[16] = "", db[8192] = "";
    snprintf(link, sizeof link, "/sys/dev/block/%u:%u", maj, min);
    if (realpath(link, sys)) {
        snprintf(file, sizeof file, "%s/partition", sys);
        if (access(file, F_OK) == 0) {      /* a partition: facts of its disk */
            char *slash = strrchr(sys, '/');
            if (slash) *slash = 0;
        }
        snprintf(file, sizeof file, "%s/device/model", sys);
        read_small(file, model, sizeof model);
        snprintf(file, sizeof file, "%s/device/serial", sys);
        read_small(file, serial, sizeof serial);
        snprintf(file, sizeof file, "%s/queue/rotational", sys);
        read_small(file, rot, sizeof rot);
        snprintf(file, sizeof file, "%s/removable", sys);
        read_small(file, rem, sizeof rem);
    }
    snprintf(file, sizeof file, "/run/udev/data/b%u:%u", maj, min);
    if (read_small(file, db, sizeof db)) {
        if (!serial[0]) udev_value(db, "ID_SERIAL_SHORT", serial, sizeof serial);
        if (!model[0]) udev_value(db, "ID_MODEL", model, sizeof model);
    }

    lua_createtable(L, 0, 8);
    ntt_setint(L, "size", (lua_Integer)size);
    ntt_setint(L, "logical_sector", ssz);
    ntt_setint(L, "major", maj);
    ntt_setint(L, "minor", min);
    ntt_setstr_opt(L, "model", model);
    ntt_setstr_opt(L, "serial", serial);
    if (rot[0]) ntt_setbool(L, "rotational", rot[0] == '1');
    if (rem[0]) ntt_setbool(L, "removable", rem[0] == '1');
    return 1;
}

struct range { int64_t pos, size; };

static const char *const scan_opts[] = { "block", "ranges", NULL };

static int media_scan_uniform(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer block = SCAN_BLOCK;
    int nranges = -1;
    struct range *ranges = NULL;
    if (!lua_isnoneornil(L, 2)) {
        ntt_checkopts(L, 2, "media.scan_uniform", scan_opts);
        if (lua_getfield(L, 2, "block") != LUA_TNIL) block = luaL_checkinteger(L, -1);
        lua_pop(L, 1);
        luaL_argcheck(L, block >= 4096 && block <= (64 << 20), 2, "block: 4 KiB .. 64 MiB");
        if (lua_getfield(L, 2, "ranges") != LUA_TNIL) {
            luaL_checktype(L, -1, LUA_TTABLE);
            nranges = (int)lua_rawlen(L, -1);
            ranges = lua_newuserdatauv(L, sizeof *ranges * (size_t)(nranges + 1), 0);
            for (int i = 0; i < nranges; i++) {
                lua_rawgeti(L, -2, i + 1);
                luaL_checktype(L, -1, LUA_TTABLE);
                lua_getfield(L, -1, "pos");
                lua_getfield(L, -2, "size");
                ranges[i].pos = luaL_checkinteger(L, -2);
                ranges[i].size = luaL_checkinteger(L, -1);
                if (ranges[i].pos < 0 || ranges[i].size < 0)
                    luaL_error(L, "scan_uniform: range %d: pos and size must be >= 0", i + 1);
                lua_pop(L, 3);
            }
        }
    }
    unsigned char *buf = lua_newuserdatauv(L, (size_t)block, 0);
    struct stat st;
    int64_t size;
    int fd = media_open(path, &size, &st);
    if (fd < 0)
        return ntt_fail(L, errno, path);
    struct range whole;
    if (nranges < 0) {
        whole.pos = 0; whole.size = size;
        ranges = &whole;
        nranges = 1;
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    int first = -1, err = 0;
    int64_t scanned = 0, differs = -1;
    for (int i = 0; i < nranges && differs < 0 && !err; i++) {
        int64_t pos = ranges[i].pos, end = ranges[i].pos + ranges[i].size;
        if (end > size) end = size;
        while (pos < end) {
            if (ntt_interrupted) { err = EINTR; break; }
            size_t want = (size_t)(end - pos < block ? end - pos : block);
            ssize_t n = pread(fd, buf, want, pos);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) { err = errno; break; }
            if (n == 0) { err = EIO; break; }   /* shrank while we read */
            if (first < 0) first = buf[0];
            if (buf[0] != first || memcmp(buf, buf + 1, (size_t)n - 1) != 0) {
                size_t k = 0;
                while (k < (size_t)n && buf[k] == first) k++;
                differs = pos + (int64_t)k;
                scanned += (int64_t)k;
                break;
            }
            pos += n;
            scanned += n;
        }
    }
    close(fd);
    if (err == EINTR)
        return ntt_fail_interrupted(L);
    if (err)
        return ntt_fail(L, err, path);
    lua_createtable(L, 0, 5);
    int uniform = differs < 0 && first >= 0;
    ntt_setbool(L, "uniform", uniform);
    if (uniform) ntt_setint(L, "byte", first);
    ntt_setint(L, "size", size);
    ntt_setint(L, "scanned", scanned);
    if (differs >= 0) ntt_setint(L, "differs_at", differs);
    return 1;
}

/* fstype/label/uuid/usage (and ambivalent) of a probe into the table on top. */
static void push_fs(lua_State *L, const struct ntt_layout_fs *fs)
{
    if (fs->rc == -2) ntt_setbool(L, "ambivalent", 1);
    if (fs->rc != 0) return;
    ntt_setstr_opt(L, "fstype", fs->type);
    ntt_setstr_opt(L, "label", fs->label);
    ntt_setstr_opt(L, "uuid", fs->uuid);
    ntt_setstr_opt(L, "usage", fs->usage);
}

static const char *const probe_opts[] = { "offset", "size", NULL };

static int media_probe(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer base = 0, want = -1;
    if (!lua_isnoneornil(L, 2)) {
        ntt_checkopts(L, 2, "media.probe", probe_opts);
        if (lua_getfield(L, 2, "offset") != LUA_TNIL) base = luaL_checkinteger(L, -1);
        if (lua_getfield(L, 2, "size") != LUA_TNIL) want = luaL_checkinteger(L, -1);
        lua_pop(L, 2);
        luaL_argcheck(L, base >= 0, 2, "offset must be >= 0");
    }
    Res *r = res_new(L);
    int ri = lua_gettop(L);
    struct stat st;
    int64_t fsize;
    r->fd = media_open(path, &fsize, &st);
    if (r->fd < 0) {
        int e = errno;
        res_free(L, ri);
        return ntt_fail(L, e, path);
    }
    if (base > fsize) {
        res_free(L, ri);
        return ntt_failf(L, EINVAL, "%s: offset %lld is past the end (%lld bytes)", path,
                         (long long)base, (long long)fsize);
    }
    int64_t len = fsize - base;
    if (want >= 0 && want < len) len = want;
    struct ntt_layout *lo = lua_newuserdatauv(L, sizeof *lo, 0);   /* collected, even on a raise */
    char err[256];
    int rc = ntt_layout_probe(r->fd, (uint64_t)base, (uint64_t)len, lo, err, sizeof err);
    close(r->fd);
    r->fd = -1;
    if (rc != 0) {
        res_free(L, ri);
        return ntt_failf(L, EIO, "%s: %s", path, err);
    }
    r->mem = lo->part;              /* the entries go with the resource, even on a raise */
    lua_createtable(L, 0, 8);
    ntt_setint(L, "size", len);
    ntt_setstr_opt(L, "pttype", lo->pttype);
    ntt_setstr_opt(L, "ptuuid", lo->ptuuid);
    if (lo->hybrid) ntt_setbool(L, "hybrid", 1);
    if (lo->gpt_primary) ntt_setbool(L, "gpt_primary", 1);
    if (lo->ebr_loop) ntt_setbool(L, "ebr_loop", 1);
    push_fs(L, &lo->whole);
    lua_createtable(L, lo->nparts, 0);
    for (int i = 0; i < lo->nparts; i++) {
        const struct ntt_layout_part *p = &lo->part[i];
        lua_createtable(L, 0, 12);
        ntt_setint(L, "fs_index", p->index);
        ntt_setint(L, "offset", base + (int64_t)p->offset);
        ntt_setint(L, "size", (int64_t)p->size);
        ntt_setstr_opt(L, "type", p->type);
        ntt_setstr_opt(L, "name", p->name);
        ntt_setstr_opt(L, "partuuid", p->partuuid);
        ntt_setbool(L, "container", p->container);
        ntt_setbool(L, "truncated", p->truncated);
        push_fs(L, &p->fs);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "partitions");
    res_free(L, ri);
    return 1;
}

#define FIEMAP_BATCH 256

static int media_fiemap(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    Res *r = res_new(L);
    int ri = lua_gettop(L);
    r->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
    if (r->fd < 0) {
        int e = errno;
        res_free(L, ri);
        return ntt_fail(L, e, path);
    }
    size_t sz = sizeof(struct fiemap) + FIEMAP_BATCH * sizeof(struct fiemap_extent);
    struct fiemap *fm = r->mem = calloc(1, sz);
    if (!fm) {
        res_free(L, ri);
        return ntt_fail(L, ENOMEM, path);
    }
    lua_newtable(L);
    int out = lua_gettop(L);
    lua_Integer n = 0;
    uint64_t start = 0;
    for (;;) {
        memset(fm, 0, sz);
        fm->fm_start = start;
        fm->fm_length = FIEMAP_MAX_OFFSET - start;
        fm->fm_extent_count = FIEMAP_BATCH;
        if (ioctl(r->fd, FS_IOC_FIEMAP, fm) < 0) {
            int e = errno;
            res_free(L, ri);
            if (e == ENOTTY || e == EOPNOTSUPP)
                e = EOPNOTSUPP;
            return ntt_fail(L, e, path);
        }
        if (fm->fm_mapped_extents == 0)
            break;
        int last = 0;
        for (unsigned i = 0; i < fm->fm_mapped_extents; i++) {
            struct fiemap_extent *x = &fm->fm_extents[i];
            lua_createtable(L, 0, 4);
            ntt_setint(L, "logical", (lua_Integer)x->fe_logical);
            ntt_setint(L, "physical", (lua_Integer)x->fe_physical);
            ntt_setint(L, "length", (lua_Integer)x->fe_length);
            ntt_setint(L, "flags", (lua_Integer)x->fe_flags);
            lua_rawseti(L, out, ++n);
            start = x->fe_logical + x->fe_length;
            if (x->fe_flags & FIEMAP_EXTENT_LAST) last = 1;
        }
        if (last || ntt_interrupted)
            break;
    }
    res_free(L, ri);
    if (ntt_interrupted)
        return ntt_fail_interrupted(L);
    lua_pushvalue(L, out);
    return 1;
}

static const luaL_Reg res_methods[] = {
    { "close", res_close },
    { NULL, NULL }
};

static const luaL_Reg res_meta[] = {
    { "__close", res_close },
    { "__gc", res_close },
    { "__tostring", res_tostring },
    { NULL, NULL }
};

static const luaL_Reg media_funcs[] = {
    { "device_facts", media_device_facts },
    { "fiemap", media_fiemap },
    { "probe", media_probe },
    { "hash_lenient", media_hash_lenient },
    { "read_regions", media_read_regions },
    { "scan_uniform", media_scan_uniform },
    { NULL, NULL }
};

int luaopen_ntt_core_media(lua_State *L)
{
    ntt_newclass(L, RES_MT, res_methods, res_meta);
    luaL_newlib(L, media_funcs);
    static const struct { const char *name; int bit; } flags[] = {
        { "last", FIEMAP_EXTENT_LAST }, { "unknown", FIEMAP_EXTENT_UNKNOWN },
        { "delalloc", FIEMAP_EXTENT_DELALLOC }, { "encoded", FIEMAP_EXTENT_ENCODED },
        { "data_encrypted", FIEMAP_EXTENT_DATA_ENCRYPTED },
        { "not_aligned", FIEMAP_EXTENT_NOT_ALIGNED }, { "data_inline", FIEMAP_EXTENT_DATA_INLINE },
        { "data_tail", FIEMAP_EXTENT_DATA_TAIL }, { "unwritten", FIEMAP_EXTENT_UNWRITTEN },
        { "merged", FIEMAP_EXTENT_MERGED }, { "shared", FIEMAP_EXTENT_SHARED },
    };
    lua_createtable(L, 0, (int)(sizeof flags / sizeof flags[0]));
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        ntt_setint(L, flags[i].name, flags[i].bit);
    lua_setfield(L, -2, "EXTENT");
    return 1;
}
