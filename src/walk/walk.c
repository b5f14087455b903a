/*
 * walk.c - ntt.core.walk: enumerate every entry of one filesystem,
 * byte-exact, in parallel (the threads are in walk_engine.c, the C API for
 * consumers that need no Lua tables in walk.h).
 *
 * Lua API (ntt.core.walk):
 *   open(root [, opts]) -> Walker | nil, "root: strerror", "ENOENT"
 *       opts: threads=4, stall_timeout=120, batch=4096, batch_bytes=1 MiB,
 *             max_depth=4096, max_events=1000 (unknown keys raise)
 *   Walker:next()   -> array of records | nil (walk over: done, stalled or
 *                      stopped) | nil, "interrupted", "EINTR"
 *       record: { ino=, parent=, type="f"|"d"|"l"|"b"|"c"|"p"|"s", mode=,
 *                 nlink=, size=, mtime_ns=, uid=, gid=, name=, path=,
 *                 target= (symlinks), rdev= (b, c), mountpoint=true }
 *   Walker:result() -> { entries=, dirs=, errors={ {path=, err="EIO", msg=} },
 *                        duplicates={ {path=} }, mountpoints={ {path=} },
 *                        error_count=, duplicate_count=, mountpoint_count=,
 *                        stalled=bool, stalled_path=, interrupted=bool, seconds= }
 *   Walker:close()  stops and joins the workers (detaches stuck ones); idempotent
 *   count(root [, opts]) -> result | nil, msg, errname
 *                         | nil, "interrupted", "EINTR", result
 *   to_file(root, path [, opts]) -> result | nil, msg, errname
 *                         | nil, "interrupted", "EINTR", result
 *       writes the audit file (format below) via path.tmp.PID + rename;
 *       zstd-compressed when path ends in ".zst"
 *   read_file(path) -> records (array, as next() gives them), result
 *                    | nil, msg, errname ("EBADMSG": not an audit file)
 *
 * Audit file format (integers little-endian; any byte round-trips):
 *   "NTTWALK1"
 *   then items, each starting with one tag byte:
 *   'R' record: u64 ino, parent, nlink, rdev; i64 size, mtime_ns;
 *       u32 mode, uid, gid, flags; u8 type; u32 path_len, name_len,
 *       target_len (0xffffffff: no target); path bytes; target bytes
 *   'E' event:  u8 kind (1 error, 2 duplicate, 3 mountpoint); i32 errno;
 *       u32 path_len, msg_len; path bytes; msg bytes
 *   'Z' end:    u64 entries, dirs, error_count, duplicate_count,
 *       mountpoint_count; u8 stalled, interrupted; u32 stalled_path_len;
 *       stalled_path bytes; f64 seconds (IEEE, little-endian)
 *   A file without its 'Z' item is incomplete.
 * The root record has path "" and name "", and its own inode as parent.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>
#include "ntt.h"
#include "walk.h"

#define WALKER_MT "ntt.Walker"

/* ---- Lua --------------------------------------------------------------- */

typedef struct { struct ntt_walk *w; } Walker;

static const char *const opt_names[] = {
    "batch", "batch_bytes", "max_depth", "max_events", "stall_timeout", "threads", NULL
};

static void walk_luaopts(lua_State *L, int idx, const char *root, struct ntt_walk_opts *o)
{
    memset(o, 0, sizeof *o);
    o->root = root;
    if (lua_isnoneornil(L, idx)) { ntt_walk_defaults(o); return; }
    ntt_checkopts(L, idx, "walk", opt_names);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *k = lua_tostring(L, -2);
        int i = 0;
        while (strcmp(opt_names[i], k) != 0) i++;
        if (!lua_isnumber(L, -1))
            luaL_error(L, "walk: option '%s' must be a number", k);
        double v = lua_tonumber(L, -1);
        if (!(v >= 0)) v = 0;            /* negative or NaN: the default */
        if (v > 1e9) v = 1e9;            /* no overflow in the casts below */
        switch (i) {
        case 0: o->batch = (int)v; break;
        case 1: o->batch_bytes = (size_t)v; break;
        case 2: o->max_depth = (int)v; break;
        case 3: o->max_events = (int)v; break;
        case 4: o->stall_timeout = v; break;
        case 5: o->threads = (int)v; break;
        }
        lua_pop(L, 1);
    }
    ntt_walk_defaults(o);
}

static void walk_pushrec(lua_State *L, const struct ntt_walk_rec *r)
{
    lua_createtable(L, 0, 13);
    lua_pushinteger(L, (lua_Integer)r->ino); lua_setfield(L, -2, "ino");
    lua_pushinteger(L, (lua_Integer)r->parent); lua_setfield(L, -2, "parent");
    lua_pushlstring(L, &r->type, 1); lua_setfield(L, -2, "type");
    lua_pushinteger(L, r->mode); lua_setfield(L, -2, "mode");
    lua_pushinteger(L, (lua_Integer)r->nlink); lua_setfield(L, -2, "nlink");
    lua_pushinteger(L, r->size); lua_setfield(L, -2, "size");
    lua_pushinteger(L, r->mtime_ns); lua_setfield(L, -2, "mtime_ns");
    lua_pushinteger(L, r->uid); lua_setfield(L, -2, "uid");
    lua_pushinteger(L, r->gid); lua_setfield(L, -2, "gid");
    lua_pushlstring(L, r->name, r->name_len); lua_setfield(L, -2, "name");
    lua_pushlstring(L, r->path, r->path_len); lua_setfield(L, -2, "path");
    if (r->target) { lua_pushlstring(L, r->target, r->target_len); lua_setfield(L, -2, "target"); }
    if (r->type == 'b' || r->type == 'c') {
        lua_pushinteger(L, (lua_Integer)r->rdev); lua_setfield(L, -2, "rdev");
    }
    if (r->flags & NTT_WALK_MOUNTPOINT) { lua_pushboolean(L, 1); lua_setfield(L, -2, "mountpoint"); }
}

static void walk_pushstats(lua_State *L, const struct ntt_walk_stats *st)
{
    lua_createtable(L, 0, 14);
    lua_pushinteger(L, (lua_Integer)st->entries); lua_setfield(L, -2, "entries");
    lua_pushinteger(L, (lua_Integer)st->dirs); lua_setfield(L, -2, "dirs");
    lua_pushinteger(L, (lua_Integer)st->errors); lua_setfield(L, -2, "error_count");
    lua_pushinteger(L, (lua_Integer)st->duplicates); lua_setfield(L, -2, "duplicate_count");
    lua_pushinteger(L, (lua_Integer)st->mountpoints); lua_setfield(L, -2, "mountpoint_count");
    static const char *const lists[] = { NULL, "errors", "duplicates", "mountpoints" };
    for (int kind = 1; kind <= 3; kind++) {
        lua_newtable(L);
        int n = 0;
        for (size_t i = 0; i < st->nevents; i++) {
            const struct ntt_walk_event *e = &st->events[i];
            if (e->kind != kind) continue;
            lua_createtable(L, 0, 3);
            lua_pushlstring(L, e->path, e->path_len); lua_setfield(L, -2, "path");
            if (e->err) { lua_pushstring(L, ntt_errname(e->err)); lua_setfield(L, -2, "err"); }
            if (e->msg) { lua_pushstring(L, e->msg); lua_setfield(L, -2, "msg"); }
            lua_rawseti(L, -2, ++n);
        }
        lua_setfield(L, -2, lists[kind]);
    }
    lua_pushboolean(L, st->stalled); lua_setfield(L, -2, "stalled");
    if (st->stalled_path) {
        lua_pushlstring(L, st->stalled_path, st->stalled_path_len);
        lua_setfield(L, -2, "stalled_path");
    }
    lua_pushboolean(L, st->interrupted); lua_setfield(L, -2, "interrupted");
    lua_pushnumber(L, st->seconds); lua_setfield(L, -2, "seconds");
}

static Walker *checkwalker(lua_State *L)
{
    return luaL_checkudata(L, 1, WALKER_MT);
}

struct ntt_walk *ntt_walk_check(lua_State *L, int idx)
{
    Walker *wk = luaL_checkudata(L, idx, WALKER_MT);
    if (!wk->w) luaL_error(L, "walk: walker is closed");
    return wk->w;
}

static int walk_open(lua_State *L)
{
    const char *root = luaL_checkstring(L, 1);
    struct ntt_walk_opts o;
    walk_luaopts(L, 2, root, &o);
    Walker *wk = ntt_newudata(L, sizeof *wk, WALKER_MT);
    wk->w = ntt_walk_start(&o);
    if (!wk->w)
        return ntt_fail(L, errno, root);
    return 1;
}

static int walker_next(lua_State *L)
{
    struct ntt_walk *w = ntt_walk_check(L, 1);
    const struct ntt_walk_rec *recs;
    size_t n = ntt_walk_next(w, &recs);
    if (n == 0) {
        if (ntt_walk_interrupted(w))
            return ntt_fail_interrupted(L);
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        walk_pushrec(L, &recs[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int walker_result(lua_State *L)
{
    struct ntt_walk *w = ntt_walk_check(L, 1);
    struct ntt_walk_stats st;
    ntt_walk_stats(w, &st);
    walk_pushstats(L, &st);
    ntt_walk_stats_free(&st);
    return 1;
}

static int walker_close(lua_State *L)
{
    Walker *wk = checkwalker(L);
    if (wk->w) {
        ntt_walk_finish(wk->w);
        wk->w = NULL;
    }
    return 0;
}

static int walker_tostring(lua_State *L)
{
    Walker *wk = checkwalker(L);
    if (wk->w)
        lua_pushfstring(L, "ntt.Walker (%s)", ntt_walk_root(wk->w));
    else
        lua_pushliteral(L, "ntt.Walker (closed)");
    return 1;
}

/* Result table, or nil, "interrupted", "EINTR", result; frees st. */
static int walk_pushresult(lua_State *L, struct ntt_walk_stats *st)
{
    int intr = st->interrupted;
    if (intr)
        ntt_fail_interrupted(L);
    walk_pushstats(L, st);
    ntt_walk_stats_free(st);
    return intr ? 4 : 1;
}

static int count_sink(void *ctx, const struct ntt_walk_rec *r)
{
    return 0;
}

static int walk_count(lua_State *L)
{
    const char *root = luaL_checkstring(L, 1);
    struct ntt_walk_opts o;
    walk_luaopts(L, 2, root, &o);
    struct ntt_walk_stats st;
    if (ntt_walk_run(&o, count_sink, NULL, &st) < 0) {
        int e = errno;
        ntt_walk_stats_free(&st);
        return ntt_fail(L, e, root);
    }
    return walk_pushresult(L, &st);
}

/* ---- the audit file ---------------------------------------------------- */

struct wfile {
    int fd, err;
    ZSTD_CCtx *z;
    unsigned char *buf, *zbuf;
    size_t used, cap, zcap;
};

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static void wf_flush(struct wfile *f, int end)
{
    if (f->err) return;
    if (!f->z) {
        if (write_all(f->fd, f->buf, f->used) != 0) f->err = errno;
        f->used = 0;
        return;
    }
    ZSTD_inBuffer in = { f->buf, f->used, 0 };
    for (;;) {
        ZSTD_outBuffer out = { f->zbuf, f->zcap, 0 };
        size_t rem = ZSTD_compressStream2(f->z, &out, &in, end ? ZSTD_e_end : ZSTD_e_continue);
        if (ZSTD_isError(rem)) { f->err = EIO; break; }
        if (write_all(f->fd, f->zbuf, out.pos) != 0) { f->err = errno; break; }
        if (end ? rem == 0 : in.pos == in.size) break;
    }
    f->used = 0;
}

static unsigned char *wf_room(struct wfile *f, size_t n)
{
    if (f->used + n > f->cap) wf_flush(f, 0);
    if (n > f->cap) {
        unsigned char *nb = realloc(f->buf, n);
        if (!nb) abort();
        f->buf = nb;
        f->cap = n;
    }
    unsigned char *p = f->buf + f->used;
    f->used += n;
    return p;
}

static unsigned char *put(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++) *p++ = (unsigned char)(v >> (8 * i));
    return p;
}

#define REC_HEAD (1 + 6 * 8 + 4 * 4 + 1 + 3 * 4)

static int file_sink(void *ctx, const struct ntt_walk_rec *r)
{
    struct wfile *f = ctx;
    unsigned char *p = wf_room(f, REC_HEAD + r->path_len + r->target_len);
    *p++ = 'R';
    p = put(p, r->ino, 8); p = put(p, r->parent, 8); p = put(p, r->nlink, 8);
    p = put(p, r->rdev, 8); p = put(p, (uint64_t)r->size, 8); p = put(p, (uint64_t)r->mtime_ns, 8);
    p = put(p, r->mode, 4); p = put(p, r->uid, 4); p = put(p, r->gid, 4); p = put(p, r->flags, 4);
    *p++ = (unsigned char)r->type;
    p = put(p, r->path_len, 4); p = put(p, r->name_len, 4);
    p = put(p, r->target ? r->target_len : 0xffffffffu, 4);
    memcpy(p, r->path, r->path_len);
    if (r->target_len) memcpy(p + r->path_len, r->target, r->target_len);
    return f->err ? 1 : 0;
}

static void file_trailer(struct wfile *f, const struct ntt_walk_stats *st)
{
    for (size_t i = 0; i < st->nevents; i++) {
        const struct ntt_walk_event *e = &st->events[i];
        size_t ml = e->msg ? strlen(e->msg) : 0;
        unsigned char *p = wf_room(f, 1 + 1 + 4 + 4 + 4 + e->path_len + ml);
        *p++ = 'E';
        *p++ = (unsigned char)e->kind;
        p = put(p, (uint32_t)e->err, 4); p = put(p, e->path_len, 4); p = put(p, ml, 4);
        memcpy(p, e->path, e->path_len);
        if (ml) memcpy(p + e->path_len, e->msg, ml);
    }
    unsigned char *p = wf_room(f, 1 + 5 * 8 + 2 + 4 + st->stalled_path_len + 8);
    *p++ = 'Z';
    p = put(p, st->entries, 8); p = put(p, st->dirs, 8); p = put(p, st->errors, 8);
    p = put(p, st->duplicates, 8); p = put(p, st->mountpoints, 8);
    *p++ = (unsigned char)st->stalled;
    *p++ = (unsigned char)st->interrupted;
    p = put(p, st->stalled_path_len, 4);
    if (st->stalled_path_len) memcpy(p, st->stalled_path, st->stalled_path_len);
    p += st->stalled_path_len;
    uint64_t bits;
    memcpy(&bits, &st->seconds, 8);
    put(p, bits, 8);
}

static int walk_to_file(lua_State *L)
{
    const char *root = luaL_checkstring(L, 1);
    size_t plen;
    const char *path = luaL_checklstring(L, 2, &plen);
    struct ntt_walk_opts o;
    walk_luaopts(L, 3, root, &o);
    const char *tmp = lua_pushfstring(L, "%s.tmp.%d", path, (int)getpid());
    struct wfile f = { .fd = -1 };
    f.fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (f.fd < 0)
        return ntt_fail(L, errno, tmp);
    f.cap = 1 << 20;
    f.buf = malloc(f.cap);
    if (plen > 4 && memcmp(path + plen - 4, ".zst", 4) == 0) {
        f.z = ZSTD_createCCtx();
        f.zcap = ZSTD_CStreamOutSize();
        f.zbuf = malloc(f.zcap);
        if (!f.z || !f.zbuf) f.err = ENOMEM;
        else ZSTD_CCtx_setParameter(f.z, ZSTD_c_compressionLevel, 3);
    }
    if (!f.buf) f.err = ENOMEM;
    memcpy(wf_room(&f, 8), "NTTWALK1", 8);
    struct ntt_walk_stats st;
    memset(&st, 0, sizeof st);
    int rc = f.err ? 1 : ntt_walk_run(&o, file_sink, &f, &st);
    int e = rc < 0 ? errno : 0;
    if (rc >= 0 && !f.err) {
        file_trailer(&f, &st);
        wf_flush(&f, 1);
        if (!f.err && fsync(f.fd) != 0) f.err = errno;
    }
    if (close(f.fd) != 0 && !f.err) f.err = errno;
    if (!e && !f.err && !st.interrupted && rename(tmp, path) != 0) f.err = errno;
    free(f.buf);
    free(f.zbuf);
    ZSTD_freeCCtx(f.z);
    if (e || f.err || st.interrupted)
        unlink(tmp);
    if (e || f.err) {
        ntt_walk_stats_free(&st);
        return ntt_fail(L, e ? e : f.err, e ? root : path);
    }
    return walk_pushresult(L, &st);
}

/* Reading: the whole file in memory (audits and specs, not the hot path). */
struct rfile { const unsigned char *p, *end; int bad; };

static uint64_t get(struct rfile *r, int bytes)
{
    if (r->bad || (size_t)(r->end - r->p) < (size_t)bytes) { r->bad = 1; return 0; }
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= (uint64_t)r->p[i] << (8 * i);
    r->p += bytes;
    return v;
}

static const char *getbytes(struct rfile *r, size_t n)
{
    if (r->bad || (size_t)(r->end - r->p) < n) { r->bad = 1; return ""; }
    const char *s = (const char *)r->p;
    r->p += n;
    return s;
}

static int slurp(const char *path, luaL_Buffer *b, lua_State *L)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return errno;
    unsigned char in[1 << 16];
    size_t n = fread(in, 1, sizeof in, fp);
    int z = n >= 4 && in[0] == 0x28 && in[1] == 0xb5 && in[2] == 0x2f && in[3] == 0xfd;
    ZSTD_DCtx *d = z ? ZSTD_createDCtx() : NULL;
    int err = 0;
    while (n > 0 && !err) {
        if (!z) {
            luaL_addlstring(b, (const char *)in, n);
        } else {
            ZSTD_inBuffer zi = { in, n, 0 };
            while (zi.pos < zi.size) {
                char *o = luaL_prepbuffsize(b, 1 << 16);
                ZSTD_outBuffer zo = { o, 1 << 16, 0 };
                if (ZSTD_isError(ZSTD_decompressStream(d, &zo, &zi))) { err = EBADMSG; break; }
                luaL_addsize(b, zo.pos);
            }
        }
        n = fread(in, 1, sizeof in, fp);
    }
    if (ferror(fp) && !err) err = EIO;
    fclose(fp);
    ZSTD_freeDCtx(d);
    return err;
}

static int walk_read_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    int err = slurp(path, &b, L);
    if (err) return ntt_fail(L, err, path);
    luaL_pushresult(&b);
    size_t len;
    const unsigned char *data = (const unsigned char *)lua_tolstring(L, -1, &len);
    struct rfile r = { data, data + len, 0 };
    if (len < 8 || memcmp(data, "NTTWALK1", 8) != 0)
        return ntt_fail(L, EBADMSG, path);
    r.p += 8;
    lua_newtable(L);               /* records */
    int recs = lua_gettop(L);
    struct ntt_walk_stats st;
    memset(&st, 0, sizeof st);
    size_t nev = 0, evcap = 0;
    lua_Integer n = 0;
    int done = 0;
    while (!r.bad && !done && r.p < r.end) {
        int tag = (int)get(&r, 1);
        if (tag == 'R') {
            struct ntt_walk_rec rec;
            rec.ino = get(&r, 8); rec.parent = get(&r, 8); rec.nlink = get(&r, 8);
            rec.rdev = get(&r, 8); rec.size = (int64_t)get(&r, 8); rec.mtime_ns = (int64_t)get(&r, 8);
            rec.mode = (uint32_t)get(&r, 4); rec.uid = (uint32_t)get(&r, 4);
            rec.gid = (uint32_t)get(&r, 4); rec.flags = (uint32_t)get(&r, 4);
            rec.type = (char)get(&r, 1);
            rec.path_len = get(&r, 4); rec.name_len = get(&r, 4);
            uint32_t tl = (uint32_t)get(&r, 4);
            rec.path = getbytes(&r, rec.path_len);
            rec.target_len = tl == 0xffffffffu ? 0 : tl;
            rec.target = tl == 0xffffffffu ? NULL : getbytes(&r, tl);
            if (r.bad || rec.name_len > rec.path_len) { r.bad = 1; break; }
            rec.name = rec.path + rec.path_len - rec.name_len;
            walk_pushrec(L, &rec);
            lua_rawseti(L, recs, ++n);
        } else if (tag == 'E') {
            struct ntt_walk_event e;
            e.kind = (int)get(&r, 1);
            e.err = (int)(int32_t)get(&r, 4);
            e.path_len = get(&r, 4);
            size_t ml = get(&r, 4);
            const char *p = getbytes(&r, e.path_len), *m = getbytes(&r, ml);
            if (r.bad || e.kind < 1 || e.kind > 3) { r.bad = 1; break; }
            if (nev == evcap) {
                evcap = evcap ? 2 * evcap : 16;
                st.events = realloc(st.events, evcap * sizeof *st.events);
                if (!st.events) abort();
            }
            e.path = malloc(e.path_len + 1);
            e.msg = ml ? malloc(ml + 1) : NULL;
            if (!e.path || (ml && !e.msg)) abort();
            memcpy(e.path, p, e.path_len);
            e.path[e.path_len] = 0;
            if (ml) { memcpy(e.msg, m, ml); e.msg[ml] = 0; }
            st.events[nev++] = e;
            st.nevents = nev;
        } else if (tag == 'Z') {
            st.entries = get(&r, 8); st.dirs = get(&r, 8); st.errors = get(&r, 8);
            st.duplicates = get(&r, 8); st.mountpoints = get(&r, 8);
            st.stalled = (int)get(&r, 1); st.interrupted = (int)get(&r, 1);
            st.stalled_path_len = get(&r, 4);
            const char *sp = getbytes(&r, st.stalled_path_len);
            uint64_t bits = get(&r, 8);
            memcpy(&st.seconds, &bits, 8);
            if (!r.bad && st.stalled_path_len) {
                st.stalled_path = malloc(st.stalled_path_len + 1);
                if (!st.stalled_path) abort();
                memcpy(st.stalled_path, sp, st.stalled_path_len);
                st.stalled_path[st.stalled_path_len] = 0;
            }
            done = 1;
        } else {
            r.bad = 1;
        }
    }
    if (r.bad || !done || r.p != r.end) {
        ntt_walk_stats_free(&st);
        return ntt_fail(L, EBADMSG, path);
    }
    walk_pushstats(L, &st);
    ntt_walk_stats_free(&st);
    return 2;
}

static const luaL_Reg walker_methods[] = {
    { "close", walker_close },
    { "next", walker_next },
    { "result", walker_result },
    { NULL, NULL }
};

static const luaL_Reg walker_meta[] = {
    { "__close", walker_close },
    { "__gc", walker_close },
    { "__tostring", walker_tostring },
    { NULL, NULL }
};

static const luaL_Reg walk_funcs[] = {
    { "count", walk_count },
    { "open", walk_open },
    { "read_file", walk_read_file },
    { "to_file", walk_to_file },
    { NULL, NULL }
};

int luaopen_ntt_core_walk(lua_State *L)
{
    ntt_newclass(L, WALKER_MT, walker_methods, walker_meta);
    luaL_newlib(L, walk_funcs);
    return 1;
}
