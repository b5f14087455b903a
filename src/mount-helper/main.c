/*
 * ntt-mount-helper - mounts a disk image read-only for ntt; the only part of
 * ntt that needs root (run through sudo when ntt is not root).
 *
 *   ntt-mount-helper mount   HASH IMAGE [--map MAPFILE] [--timeout SECONDS]
 *                            [--expect DEV:INO:SIZE:MTIME_NS:CTIME_NS]
 *   ntt-mount-helper unmount HASH [IMAGE] [--timeout SECONDS]
 *   ntt-mount-helper status  HASH [IMAGE] [--timeout SECONDS]
 *   ntt-mount-helper cleanup [--timeout SECONDS]
 *
 * --timeout (whole seconds, 1..3600, default 10) bounds every mount attempt
 * and FUSE start; waiting for a medium's lock gets 6 times as long (at
 * least 60 s).  It is an argument, not an environment variable, because
 * sudo does not pass the caller's environment on.  The command line and
 * the config file are checked in args.c.
 *
 * Prints one JSON object on stdout ({"error":..,"code":..} on failure, with
 * a message on stderr).  Exit: 0 ok, 1 nothing mountable / partial,
 * 2 bad arguments (an unparsable mapfile too), 3 not permitted, 4 internal
 * error, 5 refused: a partial image whose honest view cannot be set up,
 * 6 the file opened is not the one --expect describes (the stat ntt took
 * when it hashed the image: replaced or written since, it is not the
 * medium ntt identified, and nothing of it is attached).
 *
 * Trust: the hash must be ^[0-9a-f]{16,64}$, the image a regular file,
 * opened through a walk that follows no link swapped in after the check
 * (resolve.c);
 * a caller coming through sudo (SUDO_UID of another user, or real uid not
 * 0) may only name images under the "root =" lines of the root-owned,
 * not group/world-writable /etc/ntt/mount-helper.conf, and its mounts go to
 * the config's mount_root (default /run/ntt/mnt).  No free-form options.
 * Everything is serialised per medium by flock(<base>/.locks/<hash>.lock).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "helper.h"
#include "out.h"

#define DEFAULT_BASE "/run/ntt/mnt"

int mh_lock_fd = -1;

static struct mh_conf C;

static const char *mh_hash;

#define die mh_die

void mh_die(int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fputs("{\"error\":", stdout);
    json_str(stdout, msg);
    printf(",\"code\":%d", code);
    if (mh_hash) json_kv(stdout, "hash", mh_hash, 1);
    puts("}");
    fprintf(stderr, "ntt-mount-helper: %s\n", msg);
    exit(code);
}

static int under_roots(const char *real)
{
    return mh_under_roots(&C, real);
}

/* The regular file the caller names, resolved without following a link
 * swapped in on the way (resolve.c); its fd is what gets used. */
static int open_input(const char *what, const char *arg, char *real)
{
    char err[PATH_MAX + 256];
    int fd, rc = mh_open_input(&C, what, arg, real, &fd, err, sizeof err);
    if (rc) die(rc, "%s", err);
    return fd;
}

static void need_root(void)
{
    if (geteuid() != 0) die(MH_DENIED, "must run as root (through sudo)");
}

static void mkdir_p(const char *path, mode_t mode)
{
    char err[MH_PATH + 256];
    int rc = mh_mkdirs(&C, path, mode, err, sizeof err);
    if (rc) die(rc, "%s", err);
}

static void setup_base(void)
{
    const char *env = getenv("NTT_MOUNT_ROOT");
    if (!C.restricted && env && *env) snprintf(C.base, sizeof C.base, "%s", env);
    if (!C.base[0]) snprintf(C.base, sizeof C.base, "%s", DEFAULT_BASE);
    if (C.base[0] != '/' || strlen(C.base) > 200) die(MH_USAGE, "mount root must be an absolute path < 200 bytes");
}

static void lock_medium(const char *hash)
{
    char p[MH_PATH];
    mkdir_p(C.base, 0755);
    snprintf(p, sizeof p, "%s/.locks", C.base);
    mkdir_p(p, 0700);
    snprintf(p, sizeof p, "%s/.state", C.base);
    mkdir_p(p, 0700);
    snprintf(p, sizeof p, "%s/.locks/%s.lock", C.base, hash);
    mh_lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (mh_lock_fd < 0) die(MH_INTERNAL, "lock %s: %s", p, strerror(errno));
    /* Bounded: a helper stuck behind a hung filesystem must not stall every caller. */
    int limit_ms = (mh_timeout * 6 > 60 ? mh_timeout * 6 : 60) * 1000;
    for (int waited = 0; flock(mh_lock_fd, LOCK_EX | LOCK_NB) < 0; waited += 50) {
        if (errno != EWOULDBLOCK && errno != EINTR) die(MH_INTERNAL, "flock %s: %s", p, strerror(errno));
        if (waited >= limit_ms) die(MH_INTERNAL, "medium %s is busy: another helper holds its lock", hash);
        struct timespec nap = { 0, 50000000 };
        nanosleep(&nap, NULL);
    }
}

static void state_path(char *buf, size_t len, const char *hash)
{
    snprintf(buf, len, "%s/.state/%s", C.base, hash);
}

/* ---- loops belonging to a medium ---- */

static void make_tag(char *tag, size_t len, const char *hash)
{
    snprintf(tag, len < 64 ? len : 64, "ntt:%s", hash);
}

/* Whether the honest view still answers.  An open, not a stat: the kernel
 * answers a stat from its cached attributes after the daemon died. */
static int view_answers(const char *file)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    close(fd);
    return 1;
}

/* Unmounts, detaches, stops the view: everything of one medium.  Returns problems found. */
static int teardown(const char *hash, const char *image, FILE *out)
{
    char dir[MH_PATH], vdir[MH_PATH], vfile[MH_PATH], tag[64], msgs[2048] = "";
    snprintf(dir, sizeof dir, "%s/%s", C.base, hash);
    snprintf(vdir, sizeof vdir, "%s/.views/%s", C.base, hash);
    snprintf(vfile, sizeof vfile, "%s/image", vdir);
    make_tag(tag, sizeof tag, hash);
    /* a view that no longer answers: the mounts on it are dead */
    int dead = mnt_is_mounted(vdir) && !view_answers(vfile);
    int problems = mnt_unmount_under(dir, dead, msgs, sizeof msgs) != 0;
    struct loopq q = { .image = image, .viewfile = vfile, .tag = tag };
    loop_each(loop_match, &q);
    int detached = 0;
    for (int i = 0; i < q.n; i++) {
        if (loop_detach(q.nr[i]) == 0) detached++;
        else mh_appendf(msgs, sizeof msgs, "detach loop%d: %s", q.nr[i], strerror(errno));
    }
    /* Detach is lazy while a FUSE driver still holds the device: wait for it.
     * Not over a dead view: its loops go when the files still open on the
     * detached mounts are closed, and a remount needs none of them. */
    struct loopq left = { .image = image, .viewfile = vfile, .tag = tag };
    for (int round = 0; round < (dead ? 1 : 100); round++) {
        left.n = 0;
        loop_each(loop_match, &left);
        if (!left.n) break;
        struct timespec nap = { 0, 50000000 };
        nanosleep(&nap, NULL);
        if (round % 20 == 19) for (int i = 0; i < left.n; i++) loop_detach(left.nr[i]);
    }
    if (left.n) {
        problems++;
        for (int i = 0; i < left.n; i++) mh_appendf(msgs, sizeof msgs, "loop%d still attached", left.nr[i]);
    }
    if (mnt_unmount_under(vdir, dead, msgs, sizeof msgs) != 0) problems++;
    /* remove the (now empty) mount points p<N>, whatever N; a non-empty one is left and reported */
    char p[MH_PATH + 300];
    DIR *d = opendir(dir);
    for (struct dirent *de; d && (de = readdir(d)); ) {
        if (de->d_name[0] != 'p' || !de->d_name[1] || strspn(de->d_name + 1, "0123456789") != strlen(de->d_name + 1))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (rmdir(p) < 0 && errno != ENOENT) { mh_appendf(msgs, sizeof msgs, "rmdir %s: %s", p, strerror(errno)); problems++; }
    }
    if (d) closedir(d);
    if (rmdir(dir) < 0 && errno != ENOENT) { mh_appendf(msgs, sizeof msgs, "rmdir %s: %s", dir, strerror(errno)); problems++; }
    if (rmdir(vdir) < 0 && errno != ENOENT) { mh_appendf(msgs, sizeof msgs, "rmdir %s: %s", vdir, strerror(errno)); problems++; }
    if (out) {
        fprintf(out, ",\"detached\":[");
        for (int i = 0; i < q.n; i++) fprintf(out, "%s\"/dev/loop%d\"", i ? "," : "", q.nr[i]);
        fprintf(out, "],\"remaining_loops\":%d", left.n);
        json_kv(out, "problems", msgs, 1);
    }
    loopq_free(&q);
    loopq_free(&left);
    return problems;
}

/* ---- commands ---- */

static int medium_live(struct medium *md)
{
    int live = 1;
    struct stat st;
    if (md->view.active && (!mnt_is_mounted(md->view.mount) || !view_answers(md->view.file))) {
        live = 0;
        md->view.active = 0;            /* the view died: every mount on it is unusable */
        for (int i = 0; i < md->nfs; i++)
            if (!strcmp(md->fs[i].status, "mounted")) {
                snprintf(md->fs[i].status, sizeof md->fs[i].status, "missing");
                mh_appendf(md->fs[i].reason, sizeof md->fs[i].reason, "honest view is gone");
            }
    }
    for (int i = 0; i < md->nfs; i++) {
        struct fsent *e = &md->fs[i];
        if (strcmp(e->status, "mounted")) continue;
        int there = mnt_is_mounted(e->mount);
        if (!there || !mnt_is_ours(e->mount, md->hash)) {
            snprintf(e->status, sizeof e->status, "missing");
            mh_appendf(e->reason, sizeof e->reason, there ? "another filesystem is mounted there" : "no longer mounted");
            live = 0;
        } else if (stat(e->mount, &st) < 0 || (errno = mnt_answers(e->mount)) != 0) {
            /* e.g. ENOTCONN: its FUSE driver died (a stat may come from the cache) */
            snprintf(e->status, sizeof e->status, "missing");
            mh_appendf(e->reason, sizeof e->reason, "mount unusable: %s", strerror(errno));
            live = 0;
        }
    }
    return live;
}

static int exit_code(const struct medium *md)
{
    int mounted = 0, bad = 0;
    for (int i = 0; i < md->nfs; i++) {
        const char *s = md->fs[i].status;
        if (!strcmp(s, "mounted")) mounted++;
        else if (strcmp(s, "skipped")) bad++;
    }
    return mounted && !bad ? MH_OK : MH_PARTIAL;
}

static void find_sibling_map(const char *real, char *out, size_t len)
{
    char cand[MH_PATH + 8];
    struct stat st;
    snprintf(cand, sizeof cand, "%s.map", real);
    if (stat(cand, &st) == 0) { snprintf(out, len, "%s", cand); return; }
    const char *slash = strrchr(real, '/'), *dot = strrchr(real, '.');
    if (dot && dot > slash + 1) {
        snprintf(cand, sizeof cand, "%.*s.map", (int)(dot - real), real);
        if (stat(cand, &st) == 0) snprintf(out, len, "%s", cand);
    }
}

/* The image opened is the file ntt hashed: same device, inode, size, mtime
 * and ctime (a write moves ctime even when mtime is set back). */
static void check_expected(const char *real, const struct stat *st, const char *expect)
{
    long long v[5];
    if (!expect || mh_parse_expect(expect, v) != 0) return;   /* (checked by args.c) */
    long long mt = (long long)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
    long long ct = (long long)st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec;
    if (v[0] == (long long)st->st_dev && v[1] == (long long)st->st_ino && v[2] == (long long)st->st_size &&
        v[3] == mt && v[4] == ct)
        return;
    die(MH_CHANGED, "image %s changed since it was identified (%s now %lld:%lld:%lld:%lld:%lld, identified %s): "
        "not the medium named %s, not mounted", real,
        v[0] != (long long)st->st_dev || v[1] != (long long)st->st_ino ? "another file:" :
        v[2] != (long long)st->st_size ? "size changed:" : "written since:",
        (long long)st->st_dev, (long long)st->st_ino, (long long)st->st_size, mt, ct, expect, mh_hash);
}

static int cmd_mount(const char *hash, const char *image_arg, const char *map_arg, const char *expect)
{
    static struct medium md;
    char real[PATH_MAX], mapreal[PATH_MAX] = "", err[512] = "", sp[MH_PATH];
    int fd = open_input("image", image_arg, real);
    struct stat st;
    if (fstat(fd, &st) != 0) die(MH_INTERNAL, "image %s: fstat: %s", real, strerror(errno));
    check_expected(real, &st, expect);
    uint64_t file_size = (uint64_t)st.st_size;
    if (!file_size) die(MH_USAGE, "image %s is empty", real);
    struct map map = { 0 };
    int have_map = 0;
    char mapname[MH_PATH] = "";
    if (map_arg) snprintf(mapname, sizeof mapname, "%s", map_arg);
    else find_sibling_map(real, mapname, sizeof mapname);
    if (*mapname) {
        int mfd = open_input("mapfile", mapname, mapreal);
        int lr = map_load_fd(mfd, mapreal, &map, err, sizeof err);
        close(mfd);
        if (lr < 0) die(MH_USAGE, "%s", err);
        have_map = 1;
    }
    need_root();
    lock_medium(hash);
    state_path(sp, sizeof sp, hash);
    int r = state_load(sp, &md);
    if (r == 1 && strcmp(md.image, real) && medium_live(&md))
        die(MH_USAGE, "medium %s is mounted from %s, not %s", hash, md.image, real);
    if (r == 1 && medium_live(&md)) {                 /* double-check under the lock */
        json_medium(stdout, &md, 0);
        putchar('\n');
        map_free(&map);
        close(fd);
        int rc = exit_code(&md);
        medium_free(&md);
        return rc;
    }
    if (r != 0) { teardown(hash, r == 1 ? md.image : real, NULL); unlink(sp); }
    {   /* stale "(deleted)" loops of this medium go before a new attach */
        char tag[64];
        make_tag(tag, sizeof tag, hash);
        struct loopq q = { .tag = tag, .deleted_only = 1 };
        loop_each(loop_match, &q);
        for (int i = 0; i < q.n; i++) loop_detach(q.nr[i]);
        loopq_free(&q);
    }
    medium_free(&md);
    memset(&md, 0, sizeof md);
    md.magic = MH_STATE_MAGIC;
    snprintf(md.hash, sizeof md.hash, "%s", hash);
    snprintf(md.image, sizeof md.image, "%s", real);
    uint64_t need = 0;
    if (probe_medium(fd, file_size, &need, &md, err, sizeof err) < 0) die(MH_INTERNAL, "%s", err);
    if (have_map && map.total > need) need = map.total;
    if (need < file_size) need = file_size;

    /* The honest view: needed when the map has holes or the image is short. */
    int want_view = file_size < need || (have_map && map_holes(&map, need) > 0);
    int backing = fd;
    char dir[MH_PATH], note[256] = "";
    snprintf(dir, sizeof dir, "%s/%s", C.base, hash);
    if (want_view) {
        struct viewinfo *v = &md.view;
        if (!have_map) {                               /* no map: everything present is rescued */
            map.ok = malloc(sizeof *map.ok);
            if (!map.ok) die(MH_INTERNAL, "out of memory");
            map.ok[0][0] = 0; map.ok[0][1] = file_size; map.n = 1; map.total = file_size;
        }
        /* bytes past the end of the file are unreadable whatever the map says */
        map_clip(&map, file_size);
        snprintf(v->mount, sizeof v->mount, "%s/.views/%s", C.base, hash);
        snprintf(v->file, sizeof v->file, "%s/image", v->mount);
        snprintf(v->mapfile, sizeof v->mapfile, "%s", mapreal);
        char vroot[MH_PATH];
        snprintf(vroot, sizeof vroot, "%s/.views", C.base);
        mkdir_p(vroot, 0700);
        mkdir_p(v->mount, 0700);
        if (access("/dev/fuse", R_OK | W_OK) < 0) {
            snprintf(note, sizeof note, "honest view unavailable: /dev/fuse: %s", strerror(errno));
        } else if (view_start(fd, &map, file_size, need, v->mount, &v->pid, err, sizeof err) < 0) {
            snprintf(note, sizeof note, "%s", err);
        } else {
            backing = mh_open_view(v->mount, need, err, sizeof err);
            if (backing < 0) {
                snprintf(note, sizeof note, "%s", err);
                umount2(v->mount, 0);
                backing = fd;
            } else {
                v->active = 1;
                v->size = need;
                v->image_size = file_size;
                v->rescued = map_rescued(&map, need);
                v->holes = map_holes(&map, need);
            }
        }
        if (!v->active) {
            /* Mounting the image itself would hand out ddrescue's zero fill
             * (or a cut-off filesystem) as data: refuse instead. */
            rmdir(v->mount);
            map_free(&map);
            close(fd);
            die(MH_REFUSED, "partial image (%s): %s: refusing to mount the image without the honest view",
                file_size < need ? "image file shorter than the medium" : "mapfile has unrescued areas", note);
        }
    }

    char tag[64];
    make_tag(tag, sizeof tag, hash);
    int mounted = 0;
    for (int i = 0; i < md.nfs; i++) {
        struct fsent *e = &md.fs[i];
        if (*note) mh_appendf(e->reason, sizeof e->reason, "%s", note);
        if (e->status[0]) continue;
        if (e->offset + e->size > file_size) {
            if (!md.view.active && e->index > 0) {
                snprintf(e->status, sizeof e->status, "truncated");
                mh_appendf(e->reason, sizeof e->reason,
                           "partition ends at byte %llu, image file has %llu bytes",
                           (unsigned long long)(e->offset + e->size), (unsigned long long)file_size);
                continue;
            }
            mh_appendf(e->reason, sizeof e->reason, "%llu bytes missing at the end of the image%s",
                       (unsigned long long)(e->offset + e->size - (file_size > e->offset ? file_size : e->offset)),
                       md.view.active ? " (read as EIO through the honest view)" : "");
        }
        mkdir_p(dir, 0755);
        snprintf(e->mount, sizeof e->mount, "%s/p%d", dir, e->index);
        mkdir_p(e->mount, 0755);
        int devfd = -1;
        uint64_t lim = md.view.active || e->offset + e->size <= file_size ? e->size : file_size - e->offset;
        if (loop_attach(backing, e->offset, lim, tag, e->device, sizeof e->device, &devfd, err, sizeof err) < 0) {
            snprintf(e->status, sizeof e->status, "failed");
            mh_appendf(e->reason, sizeof e->reason, "%s", err);
            e->device[0] = 0;
        } else {
            fs_mount(e, devfd, md.view.active);
            close(devfd);                              /* autoclear: the mount holds it now */
            if (strcmp(e->status, "mounted")) e->device[0] = 0;
        }
        if (!strcmp(e->status, "mounted")) mounted++;
        else { rmdir(e->mount); e->mount[0] = 0; }
    }
    if (backing != fd) close(backing);
    close(fd);
    snprintf(md.layout, sizeof md.layout, "%s", mounted == 0 ? "none" : mounted == 1 ? "single" : "multi");
    if (mounted) {
        if (state_save(sp, &md) < 0) fprintf(stderr, "ntt-mount-helper: cannot save state %s: %s\n", sp, strerror(errno));
    } else {
        if (md.view.active) umount2(md.view.mount, 0);
        teardown(hash, real, NULL);
    }
    json_medium(stdout, &md, 0);
    putchar('\n');
    map_free(&map);
    int rc = exit_code(&md);
    medium_free(&md);
    return rc;
}

/* An image named for unmount/status: it may already be deleted (then only a
 * canonical absolute path is accepted, to match "(deleted)" loops). */
static void named_image(const char *arg, char *image)
{
    if (!realpath(arg, image)) {
        if (arg[0] != '/' || strlen(arg) >= PATH_MAX) die(MH_USAGE, "image %s: %s", arg, strerror(errno));
        if (strstr(arg, "/../") || strstr(arg, "/./") || strstr(arg, "//"))
            die(MH_USAGE, "image %s: not a canonical path", arg);
        snprintf(image, PATH_MAX, "%s", arg);
    }
    if (!under_roots(image)) die(MH_DENIED, "image %s is not under a configured root", image);
}

static int cmd_unmount(const char *hash, const char *image_arg)
{
    static struct medium md;
    char image[PATH_MAX] = "", sp[MH_PATH];
    if (image_arg) named_image(image_arg, image);
    need_root();
    lock_medium(hash);
    state_path(sp, sizeof sp, hash);
    int r = state_load(sp, &md);
    if (!*image && r == 1) snprintf(image, sizeof image, "%s", md.image);
    printf("{\"hash\":\"%s\"", hash);
    json_kv(stdout, "image", image, 1);
    int problems = teardown(hash, image, stdout);
    unlink(sp);
    if (r == 1) medium_free(&md);
    json_kv(stdout, "status", problems ? "busy" : "unmounted", 1);
    puts("}");
    return problems ? MH_PARTIAL : MH_OK;
}

static void print_loops(const char *hash, const char *image)
{
    char tag[64];
    make_tag(tag, sizeof tag, hash);
    struct loopq q = { .tag = tag, .image = image };
    loop_each(loop_match, &q);
    fputs(",\"loops\":[", stdout);
    for (int i = 0; i < q.n; i++) printf("%s\"/dev/loop%d\"", i ? "," : "", q.nr[i]);
    fputc(']', stdout);
    loopq_free(&q);
}

static int cmd_status(const char *hash, const char *image_arg)
{
    static struct medium md;
    char sp[MH_PATH], image[PATH_MAX] = "";
    if (image_arg) named_image(image_arg, image);
    need_root();
    lock_medium(hash);
    state_path(sp, sizeof sp, hash);
    int r = state_load(sp, &md);
    if (r != 1) {
        printf("{\"hash\":\"%s\",\"state\":\"unmounted\",\"layout\":\"none\",\"filesystems\":[],\"view\":null", hash);
        print_loops(hash, image);
        puts("}");
        return MH_PARTIAL;
    }
    if (!*image) snprintf(image, sizeof image, "%s", md.image);
    int live = medium_live(&md);
    json_medium(stdout, &md, 1);
    printf(",\"state\":\"%s\"", live ? "mounted" : "partial");
    print_loops(hash, image);
    puts("}");
    int rc = live ? exit_code(&md) : MH_PARTIAL;
    medium_free(&md);
    return rc;
}

struct cleanq {
    struct { int nr; char tag[65]; char backing[256]; } *e;    /* n of them, grown as found */
    int n, cap;
};

static void clean_match(int nr, const char *backing, const char *tag, void *ctx)
{
    struct cleanq *q = ctx;
    size_t n = strlen(backing);
    if (strncmp(tag, "ntt:", 4) || n < 10 || strcmp(backing + n - 10, " (deleted)")) return;
    if (q->n == q->cap) {
        int cap = q->cap ? q->cap * 2 : 16;
        void *e = realloc(q->e, (size_t)cap * sizeof *q->e);
        if (!e) die(MH_INTERNAL, "out of memory");
        q->e = e;
        q->cap = cap;
    }
    q->e[q->n].nr = nr;
    snprintf(q->e[q->n].tag, sizeof q->e[0].tag, "%s", tag + 4);
    snprintf(q->e[q->n].backing, sizeof q->e[0].backing, "%s", backing);
    q->n++;
}

static int cmd_cleanup(void)
{
    static struct cleanq q;
    need_root();
    loop_each(clean_match, &q);
    fputs("{\"cleaned\":[", stdout);
    int bad = 0;
    for (int i = 0; i < q.n; i++) {
        const char *h = q.e[i].tag;
        char msgs[1024] = "";
        const char *st = "detached";
        if (mh_valid_hash(h)) {                /* lo_file_name holds a (possibly cut) hash */
            lock_medium(h);
            struct medium md;
            char sp[MH_PATH];
            state_path(sp, sizeof sp, h);
            if (state_load(sp, &md) == 1) {
                if (!strcmp(md.hash, h)) {
                    teardown(h, md.image, NULL);
                    unlink(sp);
                }
                medium_free(&md);
            }
            close(mh_lock_fd);
            mh_lock_fd = -1;
        }
        if (loop_exists(q.e[i].nr) && loop_detach(q.e[i].nr) < 0) {
            st = "busy";
            mh_appendf(msgs, sizeof msgs, "%s", strerror(errno));
            bad++;
        }
        printf("%s{\"device\":\"/dev/loop%d\"", i ? "," : "", q.e[i].nr);
        json_kv(stdout, "backing_file", q.e[i].backing, 1);
        json_kv(stdout, "status", st, 1);
        json_kv(stdout, "reason", msgs, 1);
        putchar('}');
    }
    puts("]}");
    free(q.e);
    return bad ? MH_PARTIAL : MH_OK;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    umask(022);
    struct mh_args a;
    char err[512];
    int rc = mh_parse_args(argc, argv, &a, err, sizeof err);
    mh_hash = a.hash;
    if (rc) die(rc, "%s", err);
    if (a.timeout) mh_timeout = a.timeout;
    const char *sudo_uid = getenv("SUDO_UID");
    C.restricted = getuid() != 0 || (sudo_uid && strcmp(sudo_uid, "0"));
    if ((rc = mh_load_config(&C, err, sizeof err))) die(rc, "%s", err);
    setup_base();
    if (!strcmp(a.cmd, "mount")) return cmd_mount(a.hash, a.image, a.map, a.expect);
    if (!strcmp(a.cmd, "unmount")) return cmd_unmount(a.hash, a.image);
    if (!strcmp(a.cmd, "status")) return cmd_status(a.hash, a.image);
    return cmd_cleanup();
}
