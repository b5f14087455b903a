/*
 * load.c - ntt.core.load: stream a directory walk straight into PostgreSQL.
 *
 * The walker (walk.h) hands batches of records to this thread; each record
 * becomes a row of the medium's path table and, the first time its inode is
 * seen, a row of its inode table, both by binary COPY, so names stay raw
 * bytes end to end (no text format of our own to escape).  The two kinds
 * of rows gather in two buffers (struct sink).  Given a second connection
 * for the path rows, each table has one COPY open for the whole walk and
 * the two servers load at once; on one connection a full buffer goes as a
 * COPY of its own.  Memory is bounded by one walk batch plus about two
 * buffers per table, and nothing is loaded twice.
 * Ignore patterns (POSIX extended regular expressions over the path
 * relative to the filesystem root) are applied here, per record, without
 * calling Lua.
 *
 * Lua API (ntt.core.load):
 *   walk(conn, opts) -> stats | nil, msg, code
 *     opts.root         directory to walk (a mounted filesystem's root)
 *     opts.inode_table, opts.path_table   tables shaped like inode and
 *                       path (the medium's fresh partitions)
 *     opts.medium       the medium's hash, stored in every row; absent: the
 *                       rows have no medium column (tables that get it
 *                       afterwards as a constant default, see enumerate.lua)
 *                       Each inode's first sighting gives its inode row:
 *                       regular files pending, everything else non_file
 *                       with its kind as reason; hardlinks (nlink > 1, not
 *                       directories) are remembered so that their other
 *                       names give path rows only
 *     opts.fs_index     integer stored in every row
 *     opts.threads, opts.stall_timeout, opts.batch   walk settings
 *     opts.ignore       array of Regex (util.regex) or pattern strings; the first that matches
 *                       a path puts "ignore:<pattern>" in its exclude column
 *     opts.path_conn    a second connection (its own transaction, in which
 *                       the path table was made) for the path rows
 *     opts.freeze       rows go in frozen (COPY FREEZE: each table must have
 *                       been made in its connection's current transaction),
 *                       so that the first reads after commit need not set
 *                       hint bits on, and so rewrite, every page
 *     opts.progress     function(entries, dirs) called once per batch, and
 *                       about once a second while the walk waits
 *     opts.start, opts.only   walk again one place only (walk.h): start, a
 *                       directory relative to root (its own row is not
 *                       sent), only, one name of its listing; paths stay
 *                       relative to root (the retry of a failed directory)
 *   A file whose every path is excluded goes in as state excluded (a
 *   hardlinked one whose first path is excluded waits for its other paths).
 *   stats = { rows=, entries=, dirs=, excluded=, excluded_inodes=,
 *             inodes=, files=, stalled=bool, stalled_path=,
 *             interrupted=bool, seconds=, errors={ {path=, err=, msg=}... },
 *             duplicates={ path... }, mountpoints={ path... },
 *             error_count=, duplicate_count= }
 *   STATES, REASONS   the inode states and the loader's reasons (states.h)
 *   Failures: an unknown key in opts or a bad regular expression raises;
 *   the root cannot be opened -> nil, "root: strerror", ERRNAME; the COPY
 *   fails -> nil, msg, "EDB", SQLSTATE.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include "ntt.h"
#include "pg.h"
#include "pgcopy.h"
#include "states.h"
#include "inomap.h"
#include "ignore.h"
#include "walk.h"

#ifndef FLUSH_AT
#define FLUSH_AT (4 * 1024 * 1024)
#endif
#ifndef FLUSH_START
#define FLUSH_START (128 * 1024)
#endif
#ifndef STREAM_CHUNK
#define STREAM_CHUNK (256 * 1024)
#endif

/* A hardlinked file whose first path is excluded waits (struct wait) for
 * a path that is not (then its row goes pending) or the walk's end (then
 * excluded): the map gives its index in the list, or LINK_SENT. */
#define LINK_SENT UINT32_MAX
struct wait {
    struct ntt_walk_rec r;   /* its first sighting; no pointers kept */
    int sent;
};

/* One inode row. */
static void put_inode(ntt_copybuf *ib, const char *medium, size_t mlen, int fs_index,
                      const struct ntt_walk_rec *r, const char *state, const char *reason)
{
    ntt_copybuf_tuple(ib, medium ? 12 : 11);
    if (medium) ntt_copybuf_field(ib, medium, mlen);
    ntt_copybuf_int32(ib, fs_index);
    ntt_copybuf_int64(ib, (int64_t)r->ino);
    ntt_copybuf_field(ib, state, strlen(state));
    if (reason) ntt_copybuf_field(ib, reason, strlen(reason));
    else ntt_copybuf_null(ib);
    ntt_copybuf_int64(ib, r->size);
    ntt_copybuf_int32(ib, (int32_t)r->mode);
    ntt_copybuf_int32(ib, (int32_t)(r->nlink > INT32_MAX ? INT32_MAX : r->nlink));
    ntt_copybuf_int64(ib, r->mtime_ns);
    ntt_copybuf_field(ib, &r->type, 1);
    ntt_copybuf_int64(ib, (int64_t)r->parent);
    if (r->target) ntt_copybuf_field(ib, r->target, r->target_len);
    else ntt_copybuf_null(ib);
}

static int valid_table(const char *s)
{
    if (!*s) return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || *p == '_' || (*p >= '0' && *p <= '9' && p != s) || *p == '.'))
            return 0;
    return 1;
}

static void push_events(lua_State *L, const struct ntt_walk_stats *st)
{
    int ne = 0, nd = 0, nm = 0;
    lua_newtable(L); int errs = lua_gettop(L);
    lua_newtable(L); int dups = lua_gettop(L);
    lua_newtable(L); int mnts = lua_gettop(L);
    for (size_t i = 0; i < st->nevents; i++) {
        const struct ntt_walk_event *e = &st->events[i];
        if (e->kind == NTT_WALK_EV_ERROR) {
            lua_createtable(L, 0, 3);
            lua_pushlstring(L, e->path, e->path_len); lua_setfield(L, -2, "path");
            lua_pushstring(L, ntt_errname(e->err)); lua_setfield(L, -2, "err");
            if (e->msg) { lua_pushstring(L, e->msg); lua_setfield(L, -2, "msg"); }
            lua_rawseti(L, errs, ++ne);
        } else {
            lua_pushlstring(L, e->path, e->path_len);
            lua_rawseti(L, e->kind == NTT_WALK_EV_DUPLICATE ? dups : mnts,
                        e->kind == NTT_WALK_EV_DUPLICATE ? ++nd : ++nm);
        }
    }
}

static const char *kind_reason(char type)
{
    if (type == 'f') return NULL;
    size_t i = 0;
    while (NTT_KIND_REASONS[i].type && NTT_KIND_REASONS[i].type != type) i++;
    return NTT_KIND_REASONS[i].reason;
}

/*
 * One table's rows on their way to the server.  A sink that shares its
 * connection with the other sends each full buffer as a COPY of its own
 * (one connection has one COPY at a time).  A sink with a connection of
 * its own keeps one COPY open for the whole walk and sends without waiting
 * (non-blocking), so both servers work on their rows at once while the walk
 * goes on; before each buffer it waits until the previous one has left, so
 * memory stays bounded by about two buffers per table.
 */
struct sink {
    PGconn *c;
    char sql[600];
    ntt_copybuf b;
    size_t hdr;          /* the binary header at the start of b */
    size_t flush_at;
    int stream;          /* the connection is this sink's alone */
    struct sink *other;  /* the other table's sink */
    int open;            /* stream: the COPY has begun */
    long long rows;
};

static void sink_init(struct sink *s, PGconn *c, int stream)
{
    memset(s, 0, sizeof *s);
    s->c = c;
    s->stream = stream;
    ntt_copybuf_init(&s->b);
    ntt_copybuf_header(&s->b);
    s->hdr = s->b.len;
    /* A streaming sink sends small chunks: the server keeps up with the walk
     * and has little left when it ends, and a chunk costs no more than a
     * write.  A shared sink's first COPYs are small, so the server starts on
     * the rows while the walk is still reading directories (a small medium's
     * whole load would otherwise wait for its end); they double up to
     * FLUSH_AT, as each COPY costs a round trip. */
    s->flush_at = stream ? STREAM_CHUNK : FLUSH_START;
}

/* Until every byte queued on sink s has left (its server reads as fast as
 * it loads), keeping the other sink's queue moving meanwhile, so that
 * neither server waits for rows that sit in our buffers.  0, or -1 with err. */
static int sink_drain(struct sink *s, struct sink *other, char *err, size_t errlen)
{
    if (!s->stream || !s->open)
        return 0;
    for (;;) {
        struct sink *q[2] = { s, other };
        struct pollfd p[2];
        PGconn *pc[2];
        int k = 0;
        for (int i = 0; i < 2; i++) {
            if (!q[i] || !q[i]->stream || !q[i]->open) continue;
            int r = PQflush(q[i]->c);
            if (r < 0) {
                snprintf(err, errlen, "%s", PQerrorMessage(q[i]->c));
                return -1;
            }
            if (r == 0 && i == 0) return 0;
            if (r == 1) {
                pc[k] = q[i]->c;
                p[k].fd = PQsocket(q[i]->c);
                p[k].events = POLLOUT | POLLIN;
                p[k].revents = 0;
                k++;
            }
        }
        if (poll(p, (nfds_t)k, -1) < 0 && errno != EINTR) {
            snprintf(err, errlen, "poll: %s", strerror(errno));
            return -1;
        }
        /* whatever the server says mid-COPY is read here, and an error it
         * reported is returned at the COPY's end */
        for (int i = 0; i < k; i++)
            if ((p[i].revents & (POLLIN | POLLHUP | POLLERR)) && !PQconsumeInput(pc[i])) {
                snprintf(err, errlen, "%s", PQerrorMessage(pc[i]));
                return -1;
            }
    }
}

/*
 * Send what b holds.  A shared sink sends it as one COPY (header, rows,
 * trailer) and empties b down to its header; a streaming sink begins its
 * COPY the first time and queues b without waiting for the server.
 * 0, or -1 with err and the SQLSTATE in state.
 */
static int sink_flush(struct sink *s, char *err, size_t errlen, char state[6])
{
    ntt_copybuf *b = &s->b;
    if (b->failed) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (s->stream) {
        if (!s->open) {
            if (ntt_pg_copy_begin(s->c, s->sql, err, errlen, state) != 0)
                return -1;
            s->open = 1;
            if (PQsetnonblocking(s->c, 1) != 0) {
                snprintf(err, errlen, "%s", PQerrorMessage(s->c));
                return -1;
            }
        }
        if (sink_drain(s, s->other, err, errlen) != 0)
            return -1;
        if (PQputCopyData(s->c, b->data, (int)b->len) != 1 || PQflush(s->c) < 0) {
            snprintf(err, errlen, "%s", PQerrorMessage(s->c));
            return -1;
        }
        b->len = 0;   /* the header went with the first buffer */
        return 0;
    }
    long long n = 0;
    if (ntt_pg_copy_begin(s->c, s->sql, err, errlen, state) != 0)
        return -1;
    ntt_copybuf_trailer(b);
    int rc = b->failed ? -1 : ntt_pg_copy_send(s->c, b->data, b->len, err, errlen);
    if (rc && b->failed)
        snprintf(err, errlen, "out of memory");
    char err2[1024] = "";
    int endrc = ntt_pg_copy_end(s->c, rc ? err : NULL, &n, err2, sizeof err2, state);
    if (!rc && endrc) {
        snprintf(err, errlen, "%s", err2);
        rc = -1;
    }
    b->len = s->hdr;
    s->rows += n;
    return rc;
}

/* Send b when it has grown past the sink's threshold. */
static int sink_maybe_flush(struct sink *s, char *err, size_t errlen, char state[6])
{
    if (s->b.len < s->flush_at && !s->b.failed)
        return 0;
    if (!s->stream)
        s->flush_at = s->flush_at < FLUSH_AT ? 2 * s->flush_at : FLUSH_AT;
    return sink_flush(s, err, errlen, state);
}

/*
 * The end of the walk: what is left in the buffers, then each streaming
 * COPY's trailer and end, the two servers finishing at once.  failed: the
 * load is abandoned (the open COPYs are ended with an error, so that the
 * connections are usable for the ROLLBACK).  Keeps the first error.
 */
static int sink_finish(struct sink **s, int n, int failed, char *err, size_t errlen, char state[6])
{
    int rc = failed ? -1 : 0;
    for (int i = 0; i < n && rc == 0; i++) {
        if (s[i]->stream) {
            ntt_copybuf_trailer(&s[i]->b);
            rc = sink_flush(s[i], err, errlen, state);
        } else if (s[i]->b.len > s[i]->hdr) {
            rc = sink_flush(s[i], err, errlen, state);
        }
    }
    for (int i = 0; i < n && rc == 0; i++)
        rc = sink_drain(s[i], s[i]->other, err, errlen);
    for (int i = 0; i < n; i++) {
        if (!s[i]->stream || !s[i]->open) continue;
        char err2[1024] = "", state2[6] = "";
        long long rows = 0;
        /* back to blocking: a failed drain leaves bytes queued, and the end must reach the server */
        while (PQsetnonblocking(s[i]->c, 0) != 0 && PQflush(s[i]->c) >= 0) {
            struct pollfd p = { .fd = PQsocket(s[i]->c), .events = POLLOUT | POLLIN };
            poll(&p, 1, 1000);
            if (p.revents & POLLIN) PQconsumeInput(s[i]->c);
        }
        s[i]->open = 0;
        if (ntt_pg_copy_end(s[i]->c, rc ? "load abandoned" : NULL, &rows, err2, sizeof err2, state2) != 0
            && rc == 0) {
            snprintf(err, errlen, "%s", err2);
            memcpy(state, state2, 6);
            rc = -1;
        }
        s[i]->rows += rows;
    }
    return rc;
}

static const char *const walk_opts[] = { "root", "inode_table", "path_table", "medium", "fs_index",
    "threads", "stall_timeout", "batch", "ignore", "path_conn", "freeze", "progress", "start", "only", NULL };

/* The progress callback, also while the walk waits (a slow directory). */
struct idle_ctx {
    lua_State *L;
    int progress;
    struct ntt_walk *w;
};

static void report_progress(lua_State *L, int progress, struct ntt_walk *w)
{
    struct ntt_walk_stats st;
    ntt_walk_stats(w, &st);
    lua_pushvalue(L, progress);
    lua_pushinteger(L, (lua_Integer)st.entries);
    lua_pushinteger(L, (lua_Integer)st.dirs);
    ntt_walk_stats_free(&st);
    if (ntt_call(L, 2, 0) != LUA_OK)
        lua_pop(L, 1);   /* progress is advisory */
}

static void load_idle(void *arg)
{
    struct idle_ctx *c = arg;
    if (c->w)
        report_progress(c->L, c->progress, c->w);
}

static int load_walk(lua_State *L)
{
    PGconn *conn = ntt_pg_checkconn(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    ntt_checkopts(L, 2, "load.walk", walk_opts);
    lua_getfield(L, 2, "root");
    const char *root = luaL_checkstring(L, -1);
    lua_getfield(L, 2, "inode_table");
    const char *itable = luaL_checkstring(L, -1);
    lua_getfield(L, 2, "path_table");
    const char *ptable = luaL_checkstring(L, -1);
    if (!valid_table(itable) || !valid_table(ptable))
        return luaL_error(L, "load.walk: bad table name '%s'", valid_table(itable) ? ptable : itable);
    lua_getfield(L, 2, "medium");
    size_t mlen = 0;
    const char *medium = luaL_optlstring(L, -1, NULL, &mlen);
    lua_getfield(L, 2, "fs_index");
    int fs_index = (int)luaL_checkinteger(L, -1);
    struct ntt_walk_opts o;
    memset(&o, 0, sizeof o);
    ntt_walk_defaults(&o);
    o.root = root;
    lua_getfield(L, 2, "threads");
    if (!lua_isnil(L, -1)) o.threads = (int)luaL_checkinteger(L, -1);
    lua_getfield(L, 2, "stall_timeout");
    if (!lua_isnil(L, -1)) o.stall_timeout = luaL_checknumber(L, -1);
    lua_getfield(L, 2, "batch");
    if (!lua_isnil(L, -1)) o.batch = (int)luaL_checkinteger(L, -1);
    lua_getfield(L, 2, "start");
    if (!lua_isnil(L, -1)) o.start = luaL_checkstring(L, -1);
    lua_getfield(L, 2, "only");
    if (!lua_isnil(L, -1)) {
        o.only = luaL_checkstring(L, -1);
        if (!*o.only || strchr(o.only, '/') || !strcmp(o.only, ".") || !strcmp(o.only, ".."))
            return luaL_error(L, "load.walk: only must be one name, not '%s'", o.only);
    }
    lua_getfield(L, 2, "freeze");
    const char *freeze = lua_toboolean(L, -1) ? ", FREEZE" : "";
    PGconn *pconn = NULL;
    lua_getfield(L, 2, "path_conn");
    if (!lua_isnil(L, -1)) {
        pconn = ntt_pg_checkconn(L, -1);
        if (pconn == conn) pconn = NULL;
    }
    lua_getfield(L, 2, "progress");
    int progress = lua_isfunction(L, -1) ? lua_gettop(L) : 0;
    struct idle_ctx ictx = { L, progress, NULL };
    if (progress) {
        o.idle = load_idle;
        o.idle_arg = &ictx;
    }

    char err[1024] = "", state[6] = "";
    struct ignore ig;
    if (ntt_ignore_compile(L, 2, &ig, err, sizeof err) != 0)
        return luaL_error(L, "load.walk: %s", err);

    struct ntt_walk *w = ntt_walk_start(&o);
    ictx.w = w;
    if (!w) {
        int e = errno;
        ntt_ignore_free(&ig);
        return ntt_fail(L, e, root);
    }
    struct sink is, ps;
    sink_init(&is, conn, pconn != NULL);
    sink_init(&ps, pconn ? pconn : conn, pconn != NULL);
    is.other = &ps;
    ps.other = &is;
    snprintf(is.sql, sizeof is.sql,
             "COPY %s (%sfs_index, ino, state, reason, size, mode, nlink, mtime_ns, fs_type,"
             " dir_key, link_target) FROM STDIN (FORMAT binary%s)", itable, medium ? "medium_hash, " : "", freeze);
    snprintf(ps.sql, sizeof ps.sql,
             "COPY %s (%sfs_index, path, ino, parent_ino, exclude_reason) FROM STDIN (FORMAT binary%s)",
             ptable, medium ? "medium_hash, " : "", freeze);
    ntt_copybuf *ib = &is.b, *pb = &ps.b;
    char *tmp = NULL;
    size_t tmpcap = 0;
    long long excluded = 0, excluded_inodes = 0, inodes = 0, files = 0;
    struct ntt_inomap links = { 0 };
    struct wait *waits = NULL;
    uint32_t nwaits = 0, capwaits = 0;
    int rc = 0;
    const struct ntt_walk_rec *recs;
    size_t n;
    while (rc == 0 && (n = ntt_walk_next(w, &recs)) > 0) {
        for (size_t i = 0; i < n; i++) {
            const struct ntt_walk_rec *r = &recs[i];
            int m = ntt_ignore_match(&ig, r->path, r->path_len, &tmp, &tmpcap);
            int first = 1;
            uint32_t *link = NULL;
            if (r->nlink > 1 && r->type != 'd') {
                link = ntt_inomap_get(&links, r->ino, LINK_SENT, &first);
                if (!link) { pb->failed = 1; break; }
            }
            if (first) {
                inodes++;
                if (r->type == 'f') files++;
            }
            if (first && r->type == 'f' && m >= 0 && link) {
                if (nwaits == capwaits) {
                    uint32_t cap = capwaits ? capwaits * 2 : 64;
                    struct wait *t = cap > capwaits ? realloc(waits, cap * sizeof *t) : NULL;
                    if (!t) { pb->failed = 1; break; }
                    waits = t; capwaits = cap;
                }
                waits[nwaits] = (struct wait){ .r = *r };
                waits[nwaits].r.name = waits[nwaits].r.path = waits[nwaits].r.target = NULL;
                *link = nwaits++;
            } else if (first && r->type == 'f' && m >= 0) {
                /* its only path is excluded: never claimable */
                put_inode(ib, medium, mlen, fs_index, r, NTT_STATE_EXCLUDED, NTT_REASON_EXCLUDED);
                excluded_inodes++;
            } else if (first) {
                put_inode(ib, medium, mlen, fs_index, r, r->type == 'f' ? NTT_STATE_PENDING : NTT_STATE_NON_FILE,
                          kind_reason(r->type));
            } else if (link && *link != LINK_SENT && m < 0) {
                /* a path that is not excluded: the waiting file is to be copied */
                put_inode(ib, medium, mlen, fs_index, &waits[*link].r, NTT_STATE_PENDING, NULL);
                waits[*link].sent = 1;
                *link = LINK_SENT;
            }
            ntt_copybuf_tuple(pb, medium ? 6 : 5);
            if (medium) ntt_copybuf_field(pb, medium, mlen);
            ntt_copybuf_int32(pb, fs_index);
            ntt_copybuf_field(pb, r->path, r->path_len);
            ntt_copybuf_int64(pb, (int64_t)r->ino);
            ntt_copybuf_int64(pb, (int64_t)r->parent);
            if (m >= 0) {
                char why[600];
                int len = snprintf(why, sizeof why, "ignore:%s", ig.src[m]);
                ntt_copybuf_field(pb, why, (size_t)(len < (int)sizeof why ? len : (int)sizeof why - 1));
                excluded++;
            } else {
                ntt_copybuf_null(pb);
            }
        }
        rc = sink_maybe_flush(&is, err, sizeof err, state);
        if (rc == 0)
            rc = sink_maybe_flush(&ps, err, sizeof err, state);
        if (rc == 0 && progress)
            report_progress(L, progress, w);
    }
    for (uint32_t k = 0; k < nwaits; k++) {
        if (waits[k].sent) continue;
        put_inode(ib, medium, mlen, fs_index, &waits[k].r, NTT_STATE_EXCLUDED, NTT_REASON_EXCLUDED);
        excluded_inodes++;
    }
    struct sink *sinks[2] = { &is, &ps };
    rc = sink_finish(sinks, 2, rc, err, sizeof err, state);
    long long rows = ps.rows;
    ntt_copybuf_free(ib);
    ntt_copybuf_free(pb);
    ntt_inomap_free(&links);
    free(waits);
    free(tmp);
    ntt_ignore_free(&ig);
    struct ntt_walk_stats st;
    ntt_walk_stats(w, &st);
    ntt_walk_finish(w);
    if (rc != 0) {
        ntt_walk_stats_free(&st);
        return ntt_pg_fail(L, err, state);
    }
    lua_createtable(L, 0, 16);
    int res = lua_gettop(L);
    lua_pushinteger(L, rows); lua_setfield(L, res, "rows");
    lua_pushinteger(L, (lua_Integer)st.entries); lua_setfield(L, res, "entries");
    lua_pushinteger(L, (lua_Integer)st.dirs); lua_setfield(L, res, "dirs");
    lua_pushinteger(L, excluded); lua_setfield(L, res, "excluded");
    lua_pushinteger(L, excluded_inodes); lua_setfield(L, res, "excluded_inodes");
    lua_pushinteger(L, inodes); lua_setfield(L, res, "inodes");
    lua_pushinteger(L, files); lua_setfield(L, res, "files");
    lua_pushinteger(L, (lua_Integer)st.errors); lua_setfield(L, res, "error_count");
    lua_pushinteger(L, (lua_Integer)st.duplicates); lua_setfield(L, res, "duplicate_count");
    lua_pushboolean(L, st.stalled); lua_setfield(L, res, "stalled");
    if (st.stalled_path) {
        lua_pushlstring(L, st.stalled_path, st.stalled_path_len);
        lua_setfield(L, res, "stalled_path");
    }
    lua_pushboolean(L, st.interrupted); lua_setfield(L, res, "interrupted");
    lua_pushnumber(L, st.seconds); lua_setfield(L, res, "seconds");
    push_events(L, &st);
    lua_setfield(L, res, "mountpoints");
    lua_setfield(L, res, "duplicates");
    lua_setfield(L, res, "errors");
    ntt_walk_stats_free(&st);
    return 1;
}

static const luaL_Reg load_funcs[] = {
    { "walk", load_walk },
    { NULL, NULL }
};

int luaopen_ntt_core_load(lua_State *L)
{
    luaL_newlib(L, load_funcs);
    ntt_push_states(L);
    return 1;
}
