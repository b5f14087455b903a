/*
 * ntt-tskfs - a read-only FUSE filesystem over The Sleuth Kit: the reader
 * ntt-mount-helper starts where the kernel has no driver for a filesystem
 * (docs/reader.md).
 *
 *   ntt-tskfs FSTYPE MOUNTPOINT        (fd 3: the device or view, read-only)
 *   ntt-tskfs --report FSTYPE OFFSET   (stdin: an image; the report on stdout)
 *
 * Started as root by the helper, it mounts (root is needed for that), then
 * drops to the unprivileged "nobody" account with no new privileges before
 * it reads a byte of the medium, then goes to the background; the helper
 * unmounts a mount whose reader failed.  Every read of the medium is a
 * pread of fd 3: an unrescued byte of the honest view is EIO for the file
 * that needs it, never zeros.
 *
 * Besides the filesystem's live tree, one directory not listed in the root,
 * "/.ntt-tsk", holds the side channel: "report" (the volume label, deleted
 * and orphan entries, metadata that could not be read) and "deleted/N", the
 * content of deleted entry N where TSK can read it.
 */
#define FUSE_USE_VERSION 31
#include <errno.h>
#include <fcntl.h>
#include <fuse3/fuse.h>
#include <grp.h>
#include <linux/fs.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>
#include "tskfs.h"

#define IMG_FD 3
#define SIDE "/.ntt-tsk"
#define READ_PIECE 32768       /* + the offset within a sector stays within TSK's 64 KiB cache block */

/*
 * Requests are served by several threads; libtsk is used by one at a time
 * (its caches are not safe to share), while reads of mapped files are
 * preads of the device outside the lock, so cold reads overlap.
 */
static pthread_mutex_t tsk_lock = PTHREAD_MUTEX_INITIALIZER;
#define LOCKED(stmt) do { pthread_mutex_lock(&tsk_lock); stmt; pthread_mutex_unlock(&tsk_lock); } while (0)

static struct {
    TSK_FS_INFO *fs;
    struct tindex x;
    int built;
    int no_open;                /* the kernel sends no open/release (FUSE no_open) */
    struct stat side_st;
} T;

/* ---- the image: fd 3 ---- */

struct ext_img { TSK_IMG_INFO img; int fd; const char *map; size_t map_len; };

/*
 * The report reads a whole image file through a mapping: TSK fills its
 * cache 64 KiB at a time, and a walk that opens every inode misses that
 * cache at nearly every inode, so a pread per inode would copy the image's
 * inode table many times over through the kernel.  A read error inside the
 * mapping (SIGBUS) sends that read to pread, which says EIO.  The report is
 * one thread; SA_NODEFER leaves SIGBUS unblocked after the jump.
 */
static sigjmp_buf bus_jump;
static volatile sig_atomic_t bus_armed;

static void on_bus(int sig)
{
    if (!bus_armed) { signal(sig, SIG_DFL); raise(sig); return; }
    bus_armed = 0;
    siglongjmp(bus_jump, 1);
}

static void map_image(struct ext_img *e, uint64_t size)
{
    if (!size || size > SIZE_MAX) return;
    void *m = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, e->fd, 0);
    if (m == MAP_FAILED) return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_bus;
    sa.sa_flags = SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, NULL) < 0) { munmap(m, (size_t)size); return; }
    e->map = m;
    e->map_len = (size_t)size;
}

/* As many bytes as can be read from off; -1 only when the first one cannot. */
static ssize_t img_read(TSK_IMG_INFO *img, TSK_OFF_T off, char *buf, size_t len)
{
    struct ext_img *e = (struct ext_img *)img;
    int fd = e->fd;
    if (e->map && off >= 0 && (uint64_t)off < e->map_len) {
        size_t n = e->map_len - (size_t)off < len ? e->map_len - (size_t)off : len;
        if (!sigsetjmp(bus_jump, 0)) {
            bus_armed = 1;
            memcpy(buf, e->map + off, n);
            bus_armed = 0;
            return (ssize_t)n;
        }
    }
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, buf + done, len - done, off + (off_t)done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        done += (size_t)r;
    }
    if (done == 0 && len) {
        tsk_error_reset();
        tsk_error_set_errno(TSK_ERR_IMG_READ);
        tsk_error_set_errstr("read at %lld: %s", (long long)off, strerror(errno ? errno : EIO));
        return -1;
    }
    return (ssize_t)done;
}

static void img_close(TSK_IMG_INFO *img)
{
    struct ext_img *e = (struct ext_img *)img;
    if (e->map) munmap((void *)e->map, e->map_len);
    e->map = NULL;
}
static void img_stat(TSK_IMG_INFO *img, FILE *f) { fputs("ntt-tskfs fd\n", f); }

static TSK_FS_TYPE_ENUM tsk_type(const char *t)
{
    if (!strcmp(t, "vfat") || !strcmp(t, "msdos") || !strcmp(t, "fat")) return TSK_FS_TYPE_FAT_DETECT;
    if (!strcmp(t, "exfat")) return TSK_FS_TYPE_EXFAT;
    if (!strcmp(t, "ntfs") || !strcmp(t, "ntfs3")) return TSK_FS_TYPE_NTFS_DETECT;
    if (!strcmp(t, "hfs") || !strcmp(t, "hfsplus")) return TSK_FS_TYPE_HFS_DETECT;
    if (!strcmp(t, "iso9660")) return TSK_FS_TYPE_ISO9660;
    if (!strcmp(t, "ufs")) return TSK_FS_TYPE_FFS_DETECT;
    if (!strncmp(t, "ext", 3)) return TSK_FS_TYPE_EXT_DETECT;
    return TSK_FS_TYPE_DETECT;
}

/* The filesystem of type fstype at byte offset of the image or device open as fd (map: read
 * through a mapping, for the report). */
static TSK_FS_INFO *open_fs(int fd, uint64_t offset, const char *fstype, int map)
{
    struct stat st;
    uint64_t size = 0;
    if (fstat(fd, &st) < 0) { fprintf(stderr, "fd %d: %s\n", fd, strerror(errno)); return NULL; }
    if (S_ISBLK(st.st_mode)) {
        if (ioctl(fd, BLKGETSIZE64, &size) < 0) { fprintf(stderr, "BLKGETSIZE64: %s\n", strerror(errno)); return NULL; }
    } else {
        size = (uint64_t)st.st_size;
    }
    struct ext_img *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->fd = fd;
    if (map && S_ISREG(st.st_mode)) map_image(e, size);
    TSK_IMG_INFO *img = tsk_img_open_external(e, (TSK_OFF_T)size, 512, img_read, img_close, img_stat);
    if (!img) { fprintf(stderr, "image: %s\n", tsk_error_get()); img_close(&e->img); free(e); return NULL; }
    TSK_FS_INFO *fs = tsk_fs_open_img(img, (TSK_OFF_T)offset, tsk_type(fstype));
    if (!fs) fprintf(stderr, "%s: %s\n", fstype, tsk_error_get());
    return fs;
}

/* ---- the filesystem ---- */

static void build(void)
{
    pthread_mutex_lock(&tsk_lock);
    if (!T.built) {
        tindex_build(&T.x, T.fs, 0);
        T.built = 1;
    }
    pthread_mutex_unlock(&tsk_lock);
}

/* "/.ntt-tsk/deleted/N" -> N (1-based) or 0 */
static uint64_t deleted_id(const char *path)
{
    const char *p = path + strlen(SIDE "/deleted/");
    if (!*p || strspn(p, "0123456789") != strlen(p) || strlen(p) > 18) return 0;
    uint64_t id = strtoull(p, NULL, 10);
    return id >= 1 && id <= T.x.ndeleted && T.x.deleted_addr[id - 1] ? id : 0;
}

static int side_stat(const char *path, struct stat *st)
{
    *st = T.side_st;
    if (!strcmp(path, SIDE) || !strcmp(path, SIDE "/deleted")) return 0;
    st->st_mode = S_IFREG | 0444;
    st->st_nlink = 1;
    if (!strcmp(path, SIDE "/report")) { st->st_size = (off_t)T.x.report_len; return 0; }
    if (!strncmp(path, SIDE "/deleted/", strlen(SIDE "/deleted/"))) {
        uint64_t id = deleted_id(path);
        if (!id) return -ENOENT;
        int rc = 0;
        pthread_mutex_lock(&tsk_lock);
        TSK_FS_FILE *f = tsk_fs_file_open_meta(T.fs, NULL, T.x.deleted_addr[id - 1]);
        if (!f) { tsk_error_reset(); rc = -EIO; }
        else { tindex_stat(T.fs, f->meta, st); tsk_fs_file_close(f); }
        pthread_mutex_unlock(&tsk_lock);
        st->st_mode = S_IFREG | 0444;
        st->st_ino = 0;
        return rc;
    }
    return -ENOENT;
}

static int is_side(const char *path)
{
    size_t n = strlen(SIDE);
    return !strncmp(path, SIDE, n) && (path[n] == 0 || path[n] == '/') && !tindex_lookup(&T.x, SIDE);
}

static int t_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    build();
    if (is_side(path)) return side_stat(path, st);
    struct node *n = tindex_lookup(&T.x, path);
    if (!n) return -ENOENT;
    if (n->err) return -n->err;
    *st = n->st;
    return 0;
}

static int t_readlink(const char *path, char *buf, size_t len)
{
    build();
    struct node *n = is_side(path) ? NULL : tindex_lookup(&T.x, path);
    if (!n) return -ENOENT;
    if (!n->link) return -EINVAL;
    snprintf(buf, len, "%s", n->link);
    return 0;
}

static int t_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                     struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    build();
    fill(buf, ".", NULL, 0, 0);
    fill(buf, "..", NULL, 0, 0);
    if (is_side(path)) {
        if (!strcmp(path, SIDE)) {
            fill(buf, "report", NULL, 0, 0);
            fill(buf, "deleted", NULL, 0, 0);
        } else if (!strcmp(path, SIDE "/deleted")) {
            char name[24];
            for (uint64_t i = 0; i < T.x.ndeleted; i++)
                if (T.x.deleted_addr[i]) {
                    snprintf(name, sizeof name, "%llu", (unsigned long long)i + 1);
                    fill(buf, name, NULL, 0, 0);
                }
        } else {
            return -ENOTDIR;
        }
        return 0;
    }
    struct node *n = tindex_lookup(&T.x, path);
    if (!n) return -ENOENT;
    if (n->err) return -n->err;
    if (!S_ISDIR(n->st.st_mode)) return -ENOTDIR;
    if (n->dir_err) return -n->dir_err;
    for (uint32_t i = 0; i < n->nkids; i++) {
        struct node *k = n->kids[i];
        if (fill(buf, k->name, k->err ? NULL : &k->st, 0, k->err ? 0 : FUSE_FILL_DIR_PLUS)) break;
    }
    return 0;
}

/*
 * Where the bytes of the file with meta address addr are, kept in *slot
 * once read; NULL when TSK cannot open or walk it.  Files are not opened
 * per open(2): the kernel is told the reader needs no open/release (FUSE
 * no_open), so a file costs one lookup and its reads.
 */
static struct fmap *map_of(struct fmap **slot, TSK_INUM_T addr)
{
    pthread_mutex_lock(&tsk_lock);
    if (!*slot) {
        struct fmap *m = calloc(1, sizeof *m);
        TSK_FS_FILE *f = m ? tsk_fs_file_open_meta(T.fs, NULL, addr) : NULL;
        if (f && f->meta && fmap_build(f, m) == 0) { m->addr = addr; *slot = m; }
        else free(m);
        if (f) tsk_fs_file_close(f);
        tsk_error_reset();
    }
    struct fmap *m = *slot;
    pthread_mutex_unlock(&tsk_lock);
    return m;
}

/* The file at path: its map, the report (*report set), or NULL with *err. */
static struct fmap *file_of(const char *path, int *report, int *err)
{
    *report = 0;
    if (is_side(path)) {
        if (!strcmp(path, SIDE "/report")) { *report = 1; return NULL; }
        uint64_t id = !strncmp(path, SIDE "/deleted/", strlen(SIDE "/deleted/")) ? deleted_id(path) : 0;
        if (!id) { *err = -ENOENT; return NULL; }
        struct fmap *m = map_of(&T.x.deleted_map[id - 1], T.x.deleted_addr[id - 1]);
        if (!m) *err = -EIO;
        return m;
    }
    struct node *n = tindex_lookup(&T.x, path);
    *err = !n ? -ENOENT : n->err ? -n->err : !S_ISREG(n->st.st_mode) ? -EISDIR : 0;
    if (*err) return NULL;
    struct fmap *m = map_of(&n->map, n->addr);
    if (!m) *err = -EIO;
    return m;
}

static int t_open(const char *path, struct fuse_file_info *fi)
{
    build();
    if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
    if (T.no_open) return -ENOSYS;             /* never again: reads come by path */
    int report, err = 0;
    struct fmap *m = file_of(path, &report, &err);
    if (!m && !report) return err;
    fi->keep_cache = 1;
    return 0;
}

static int t_read(const char *path, char *buf, size_t len, off_t off, struct fuse_file_info *fi)
{
    build();
    int report, err = 0;
    struct fmap *m = file_of(path, &report, &err);
    if (report) {
        if ((size_t)off >= T.x.report_len) return 0;
        if (len > T.x.report_len - (size_t)off) len = T.x.report_len - (size_t)off;
        memcpy(buf, T.x.report + off, len);
        return (int)len;
    }
    if (!m) return err;
    if ((uint64_t)off >= m->size) return 0;
    if ((uint64_t)len > m->size - (uint64_t)off) len = (size_t)(m->size - (uint64_t)off);
    if (!m->use_tsk) return fmap_read(m, IMG_FD, buf, len, (uint64_t)off);
    /*
     * In pieces TSK serves through its image cache: a longer read that is
     * not a whole number of sectors takes another path in libtsk, which
     * hands out zeros for bytes it failed to read.  A piece TSK cannot
     * complete makes the whole read an I/O error, never a short guess.
     */
    size_t done = 0;
    int rc = 0;
    pthread_mutex_lock(&tsk_lock);
    TSK_FS_FILE *f = tsk_fs_file_open_meta(T.fs, NULL, m->addr);
    while (f && done < len) {
        size_t n = len - done < READ_PIECE ? len - done : READ_PIECE;
        ssize_t r = tsk_fs_file_read(f, off + (off_t)done, buf + done, n, TSK_FS_FILE_READ_FLAG_NONE);
        if (r < 0 || (size_t)r < n) { rc = -EIO; break; }
        done += n;
    }
    if (!f) rc = -EIO;
    else tsk_fs_file_close(f);
    tsk_error_reset();
    pthread_mutex_unlock(&tsk_lock);
    return rc ? rc : (int)len;
}

static void *t_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    if (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) {
        conn->want |= FUSE_CAP_NO_OPEN_SUPPORT;
        T.no_open = 1;
    }
    cfg->use_ino = 1;
    cfg->kernel_cache = 1;          /* the medium does not change under us */
    cfg->attr_timeout = 3600;
    cfg->entry_timeout = 3600;
    cfg->negative_timeout = 3600;
    return NULL;
}

static const struct fuse_operations ops = {
    .getattr = t_getattr,
    .readlink = t_readlink,
    .readdir = t_readdir,
    .open = t_open,
    .read = t_read,
    .init = t_init,
};

/* ---- start ---- */

static int drop_privileges(void)
{
    uid_t uid = 65534;
    gid_t gid = 65534;
    struct passwd *pw = getpwnam("nobody");
    if (pw) { uid = pw->pw_uid; gid = pw->pw_gid; }
    if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0) return -1;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return -1;
    return setuid(0) == 0 ? -1 : 0;          /* must not be able to get root back */
}

/*
 * ntt-tskfs --report FSTYPE OFFSET < IMAGE: the report alone, on stdout,
 * for a filesystem the kernel mounted (its deleted entries); no mount.
 */
static int report_only(const char *fstype, const char *offset)
{
    if (!*offset || strspn(offset, "0123456789") != strlen(offset) || strlen(offset) > 18) {
        fputs("ntt-tskfs: OFFSET must be a byte count\n", stderr);
        return 2;
    }
    if (geteuid() == 0 && drop_privileges() < 0) {
        fprintf(stderr, "ntt-tskfs: cannot drop privileges: %s\n", strerror(errno));
        return 4;
    }
    TSK_FS_INFO *fs = open_fs(0, strtoull(offset, NULL, 10), fstype, 1);
    if (!fs) return 3;
    tindex_build(&T.x, fs, 1);
    if (fwrite(T.x.report, 1, T.x.report_len, stdout) != T.x.report_len || fflush(stdout) != 0) return 4;
    return 0;
}

int main(int argc, char **argv)
{
    /* FAT keeps local wall-clock times: TSK turns them into seconds as if UTC, exactly the fields stored */
    setenv("TZ", "UTC0", 1);
    tzset();
    if (argc == 4 && !strcmp(argv[1], "--report")) return report_only(argv[2], argv[3]);
    if (argc != 3) {
        fputs("usage: ntt-tskfs FSTYPE MOUNTPOINT (image on fd 3) | --report FSTYPE OFFSET < IMAGE\n", stderr);
        return 2;
    }
    if (fcntl(IMG_FD, F_GETFD) < 0) { fputs("ntt-tskfs: fd 3 is not open\n", stderr); return 2; }
    char *fargv[] = { "ntt-tskfs", "-o", "ro,nosuid,nodev,noexec,noatime,allow_other,fsname=ntt-tsk,subtype=ntt-tsk", NULL };
    struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
    struct fuse *f = fuse_new(&args, &ops, sizeof ops, NULL);
    if (!f) { fputs("ntt-tskfs: fuse_new failed\n", stderr); return 4; }
    if (fuse_mount(f, argv[2]) != 0) { fprintf(stderr, "ntt-tskfs: cannot mount at %s\n", argv[2]); return 4; }
    if (geteuid() == 0 && drop_privileges() < 0) {
        fprintf(stderr, "ntt-tskfs: cannot drop privileges: %s\n", strerror(errno));
        return 4;                               /* the helper unmounts */
    }
    if (tsk_type(argv[1]) == TSK_FS_TYPE_ISO9660 && iso_rock_ridge_only(IMG_FD)) {
        fputs("Rock Ridge names without Joliet: The Sleuth Kit would read only the 8.3 names\n", stderr);
        return 3;
    }
    T.fs = open_fs(IMG_FD, 0, argv[1], 0);
    if (!T.fs) return 3;
    T.side_st.st_mode = S_IFDIR | 0555;
    T.side_st.st_nlink = 2;
    if (fuse_daemonize(0) != 0) return 4;
    int rc = fuse_loop_mt(f, 0);
    fuse_unmount(f);
    fuse_destroy(f);
    return rc ? 1 : 0;
}
