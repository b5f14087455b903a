/*
 * mnt.c - mounting one filesystem read-only, with a timeout, by the kernel
 * or, where the kernel lacks the filesystem, by the reader the policy chose
 * for it (reader.c): ntt-tskfs over The Sleuth Kit by default, or the FUSE
 * driver of old (fusefat, fuseiso, fuse2fs).
 *
 * Kernel mounts are mount(2) with MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC|
 * MS_NOATIME (+ "noload" for ext4, "norecovery" for ext3: a dirty journal is
 * never replayed).  FUSE drivers (fusefat, fuseiso, fuse2fs, from fixed
 * system directories, with a fixed environment) get the same options.
 * Every attempt runs in a child that is killed after mh_timeout seconds:
 * a corrupt filesystem must not hang the helper.
 */
#include <errno.h>
#include <fcntl.h>
#include <libmount/libmount.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "helper.h"

int mh_timeout = 10;

#define BASE_OPTS "ro,nosuid,nodev,noexec,noatime"
#define BASE_FLAGS (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME)

int fs_kernel_has(const char *fstype)
{
    FILE *f = fopen("/proc/filesystems", "re");
    if (!f) return 0;
    char line[128];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        char *t = strchr(line, '\t');
        t = t ? t + 1 : line;
        t[strcspn(t, "\n")] = 0;
        found = !strcmp(t, fstype);
    }
    fclose(f);
    return found;
}

/* Waits for child c at most mh_timeout seconds; kills it after. Returns wait status or -1. */
int mh_wait_timed(pid_t c)
{
    struct timespec t0, now, nap = { 0, 10000000 };
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int st;
        pid_t r = waitpid(c, &st, WNOHANG);
        if (r == c) return st;
        if (r < 0 && errno != EINTR) return -1;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9 > mh_timeout) {
            kill(c, SIGKILL);
            for (int i = 0; i < 100 && waitpid(c, &st, WNOHANG) == 0; i++) nanosleep(&nap, NULL);
            errno = ETIMEDOUT;
            return -1;
        }
        nanosleep(&nap, NULL);
    }
}

static void child_fds(int errfd)
{
    int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (nul >= 0) { dup2(nul, 0); dup2(nul, 1); }
    if (errfd >= 0) dup2(errfd, 2); else if (nul >= 0) dup2(nul, 2);
    for (int fd = 3; fd < 1024; fd++) close(fd);
}

/* Runs argv (absolute path) with a fixed environment and the timeout. 0 or -1 + err. */
int run_timed(char *const argv[], char *err, size_t errlen)
{
    static char *const envp[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/", "LC_ALL=C", NULL };
    int mfd = memfd_create("ntt-mount-err", MFD_CLOEXEC);
    pid_t c = fork();
    if (c < 0) { snprintf(err, errlen, "fork: %s", strerror(errno)); if (mfd >= 0) close(mfd); return -1; }
    if (c == 0) {
        setsid();
        child_fds(mfd);
        execve(argv[0], argv, envp);
        dprintf(2, "%s: %s", argv[0], strerror(errno));
        _exit(127);
    }
    int st = mh_wait_timed(c);
    char msg[512] = "";
    mh_child_msg(mfd, msg, sizeof msg);
    if (st < 0 && errno == ETIMEDOUT) { snprintf(err, errlen, "timed out after %d s", mh_timeout); return -1; }
    if (st < 0) { snprintf(err, errlen, "wait: %s", strerror(errno)); return -1; }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0;
    if (WIFSIGNALED(st)) snprintf(err, errlen, "killed by signal %d%s%s", WTERMSIG(st), *msg ? ": " : "", msg);
    else snprintf(err, errlen, "exit %d%s%s", WEXITSTATUS(st), *msg ? ": " : "", msg);
    return -1;
}

static int kernel_mount(const char *dev, const char *target, const char *type, const char *data,
                        char *err, size_t errlen)
{
    pid_t c = fork();
    if (c < 0) { snprintf(err, errlen, "fork: %s", strerror(errno)); return -1; }
    if (c == 0) {
        child_fds(-1);
        _exit(mount(dev, target, type, BASE_FLAGS, data) == 0 ? 0 : (errno & 0xff));
    }
    int st = mh_wait_timed(c);
    if (st < 0 && errno == ETIMEDOUT) { snprintf(err, errlen, "timed out after %d s", mh_timeout); return -1; }
    if (st < 0) { snprintf(err, errlen, "wait: %s", strerror(errno)); return -1; }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0;
    if (WIFEXITED(st)) snprintf(err, errlen, "%s", strerror(WEXITSTATUS(st)));
    else snprintf(err, errlen, "mount child killed by signal %d", WTERMSIG(st));
    return -1;
}

static const char *find_driver(const char *name, char *buf, size_t len)
{
    static const char *dirs[] = { "/usr/bin", "/usr/sbin", "/bin", "/sbin", NULL };
    for (int i = 0; dirs[i]; i++) {
        snprintf(buf, len, "%s/%s", dirs[i], name);
        if (access(buf, X_OK) == 0) return buf;
    }
    return NULL;
}

/* What a driver child wrote to its message file mfd (closed here; -1: none)
 * into msg, on one line without trailing blanks. */
void mh_child_msg(int mfd, char *msg, size_t len)
{
    msg[0] = 0;
    if (mfd < 0) return;
    ssize_t r = pread(mfd, msg, len - 1, 0);
    if (r > 0) msg[r] = 0;
    close(mfd);
    for (char *p = msg; *p; p++) if (*p == '\n' || *p == '\t') *p = ' ';
    for (size_t n = strlen(msg); n && msg[n - 1] == ' '; n--) msg[n - 1] = 0;
}

int mnt_is_mounted(const char *path)
{
    struct libmnt_table *tb = mnt_new_table_from_file("/proc/self/mountinfo");
    if (!tb) return 0;
    int r = mnt_table_find_target(tb, path, MNT_ITER_BACKWARD) != NULL;
    mnt_unref_table(tb);
    return r;
}

/*
 * Whether what shows at path (its top mount) is medium hash's: a loop
 * device the helper tagged "ntt:<hash>", under the kernel's driver or a
 * FUSE one (whose fsname is the device), or the Sleuth Kit reader's.
 * Another filesystem mounted in its place -- by mistake or on purpose --
 * must not pass for the medium: its files would be copied as the medium's.
 */
int mnt_is_ours(const char *path, const char *hash)
{
    struct libmnt_table *tb = mnt_new_table_from_file("/proc/self/mountinfo");
    if (!tb) return 0;
    struct libmnt_fs *fs = mnt_table_find_target(tb, path, MNT_ITER_BACKWARD);
    const char *src = fs ? mnt_fs_get_source(fs) : NULL, *type = fs ? mnt_fs_get_fstype(fs) : NULL;
    char want[64], tag[LO_NAME_SIZE + 1], extra;
    int nr, ours;
    snprintf(want, sizeof want, "ntt:%s", hash);       /* as attached: cut to the field */
    if (src && sscanf(src, "/dev/loop%d%c", &nr, &extra) == 1)
        ours = loop_tag(nr, tag, sizeof tag) == 0 && !strcmp(tag, want);
    else
        ours = type && !strcmp(type, "fuse.ntt-tsk");
    mnt_unref_table(tb);
    return ours;
}

/* Does the filesystem mounted at path still answer?  0, or the errno of a
 * listing of its root: a FUSE driver that died gives ENOTCONN here, where a
 * stat may still be answered from the kernel's attribute cache. */
int mnt_answers(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return errno;
    char buf[4096];
    int e = syscall(SYS_getdents64, fd, buf, sizeof buf) < 0 ? errno : 0;
    close(fd);
    return e;
}

static int fuse_mount_with(const char *driver, struct fsent *e, char *err, size_t errlen)
{
    char path[64], opts[256];
    if (!find_driver(driver, path, sizeof path)) {
        snprintf(err, errlen, "%s is not installed", driver);
        return -1;
    }
    snprintf(opts, sizeof opts, BASE_OPTS ",allow_other,fsname=%s%s", e->device,
             !strcmp(driver, "fuse2fs") ? ",norecovery" : "");
    char *argv[8];
    int n = 0;
    argv[n++] = path;
    if (!strcmp(driver, "fuseiso")) argv[n++] = "-n";    /* no $HOME/.mtab.fuseiso */
    argv[n++] = e->device;
    argv[n++] = e->mount;
    argv[n++] = "-o";
    argv[n++] = opts;
    argv[n] = NULL;
    if (run_timed(argv, err, errlen) < 0) return -1;
    if (!mnt_is_mounted(e->mount)) {
        snprintf(err, errlen, "%s exited without mounting", driver);
        return -1;
    }
    snprintf(e->driver, sizeof e->driver, "%s", driver);
    snprintf(e->options, sizeof e->options, "%s", opts);
    char *fs = strstr(e->options, ",fsname=");        /* options shown without the source */
    if (fs) { char *rest = strchr(fs + 1, ','); memmove(fs, rest ? rest : "", rest ? strlen(rest) + 1 : 1); }
    return 0;
}

/* Kernel log records written since kfd was opened that name this loop device. */
static void kernel_lines(int kfd, const char *dev, char *err, size_t errlen)
{
    if (kfd < 0) return;
    const char *name = strrchr(dev, '/');
    name = name ? name + 1 : dev;
    char want1[48], want2[48], rec[1024];
    snprintf(want1, sizeof want1, "(%s)", name);
    snprintf(want2, sizeof want2, "%s:", name);
    for (int n = 0; n < 256; n++) {
        ssize_t r = read(kfd, rec, sizeof rec - 1);
        if (r < 0 && errno == EPIPE) continue;       /* overwritten records */
        if (r <= 0) break;
        rec[r] = 0;
        char *msg = strchr(rec, ';');
        if (!msg) continue;
        msg++;
        msg[strcspn(msg, "\n")] = 0;
        if (strstr(msg, want1) || strstr(msg, want2)) mh_appendf(err, errlen, "kernel: %s", msg);
    }
}

static int try_kernel(struct fsent *e, const char *type, char *err, size_t errlen)
{
    if (!fs_kernel_has(type)) { snprintf(err, errlen, "kernel has no %s", type); return -1; }
    const char *data = !strcmp(type, "ext4") ? "noload" : !strcmp(type, "ext3") ? "norecovery" : NULL;
    int kfd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (kfd >= 0) lseek(kfd, 0, SEEK_END);
    int rc = kernel_mount(e->device, e->mount, type, data, err, errlen);
    if (rc < 0) kernel_lines(kfd, e->device, err, errlen);
    if (kfd >= 0) close(kfd);
    if (rc < 0) return -1;
    snprintf(e->driver, sizeof e->driver, "kernel");
    snprintf(e->options, sizeof e->options, BASE_OPTS "%s%s", data ? "," : "", data ? data : "");
    return 0;
}

/*
 * Readahead of a device backed by the honest view.  A FUSE driver reads the
 * device through the block device's page cache, which reads (and fails)
 * large folios across a hole and so hides the good bytes next to it: for it
 * readahead is off and a failure costs one 4 KiB page.  A kernel filesystem
 * inherits the device's readahead for its files (off would make every read
 * a 4 KiB round trip through the view), and reads its metadata block by
 * block anyway: it keeps the default.
 */
static void set_readahead(int devfd, int viewed, int fuse, struct fsent *e)
{
    if (!viewed || devfd < 0) return;
    if (ioctl(devfd, BLKRASET, fuse ? 0UL : 256UL) < 0)
        mh_appendf(e->reason, sizeof e->reason, "BLKRASET: %s", strerror(errno));
}

/*
 * Mounts e->device (open as devfd) at e->mount as e->fstype; fills driver,
 * options, status and reason (every failed attempt is listed there).
 * viewed: the device is backed by the honest view.
 */
void fs_mount(struct fsent *e, int devfd, int viewed)
{
    struct { const char *how, *type; } plan[5];
    int n = 0;
    const char *t = e->fstype, *rd = reader_for(t);
    int tsk = !strcmp(rd, "tsk"), fuse = !strcmp(rd, "fuse");
    if (!strncmp(t, "ext", 3)) {
        plan[n].how = "kernel"; plan[n++].type = t;
        if (!fs_kernel_has(t) && fuse) { plan[n].how = "fuse2fs"; plan[n++].type = t; }
        if (!fs_kernel_has(t) && tsk) { plan[n].how = "tsk"; plan[n++].type = t; }
    } else if (!strcmp(t, "vfat") || !strcmp(t, "msdos")) {
        plan[n].how = "kernel"; plan[n++].type = t;
        if (fuse) { plan[n].how = "fusefat"; plan[n++].type = t; }
        if (tsk) { plan[n].how = "tsk"; plan[n++].type = t; }
    } else if (!strcmp(t, "iso9660")) {
        plan[n].how = "kernel"; plan[n++].type = "iso9660";
        if (tsk) { plan[n].how = "tsk"; plan[n++].type = "iso9660"; }
        /* TSK declines a Rock Ridge disc without Joliet: fuseiso reads its names */
        if (fuse || tsk) { plan[n].how = "fuseiso"; plan[n++].type = "iso9660"; }
        plan[n].how = "kernel"; plan[n++].type = "udf";
    } else if (!strcmp(t, "udf")) {
        plan[n].how = "kernel"; plan[n++].type = "udf";
        plan[n].how = "kernel"; plan[n++].type = "iso9660";
        if (tsk) { plan[n].how = "tsk"; plan[n++].type = "iso9660"; }
        if (fuse || tsk) { plan[n].how = "fuseiso"; plan[n++].type = "iso9660"; }
    } else {
        plan[n].how = "kernel"; plan[n++].type = t;
        if (tsk && reader_tsk_reads(t)) { plan[n].how = "tsk"; plan[n++].type = t; }
    }
    char probed[32];
    snprintf(probed, sizeof probed, "%s", t);
    char notes[MH_REASON] = "";
    for (int i = 0; i < n; i++) {
        char err[512] = "";
        int kernel = !strcmp(plan[i].how, "kernel");
        set_readahead(devfd, viewed, !kernel, e);
        int ok = kernel ? try_kernel(e, plan[i].type, err, sizeof err)
               : !strcmp(plan[i].how, "tsk") ? reader_mount(e, devfd, plan[i].type, err, sizeof err)
               : fuse_mount_with(plan[i].how, e, err, sizeof err);
        if (ok == 0) {
            snprintf(e->status, sizeof e->status, "mounted");
            if (strcmp(plan[i].type, probed)) {
                snprintf(e->fstype, sizeof e->fstype, "%s", plan[i].type);
                mh_appendf(notes, sizeof notes, "probed as %s, mounted as %s", probed, plan[i].type);
            }
            if (*notes) mh_appendf(e->reason, sizeof e->reason, "%s", notes);
            return;
        }
        mh_appendf(notes, sizeof notes, "%s %s: %s", plan[i].how, plan[i].type, err);
    }
    snprintf(e->status, sizeof e->status, "failed");
    mh_appendf(e->reason, sizeof e->reason, "%s", notes);
}

/* Unmounts every mount at or below dir, deepest first.  Returns the number
 * left mounted.  dead: what is mounted there reads from something gone (the
 * honest view died), so a busy mount is detached at once, not waited for. */
int mnt_unmount_under(const char *dir, int dead, char *out, size_t outlen)
{
    size_t dl = strlen(dir);
    int left = 0;
    for (int round = 0; round < 50; round++) {
        struct libmnt_table *tb = mnt_new_table_from_file("/proc/self/mountinfo");
        if (!tb) return -1;
        struct libmnt_iter *it = mnt_new_iter(MNT_ITER_BACKWARD);
        struct libmnt_fs *fs;
        int busy = 0;
        left = 0;
        while (it && mnt_table_next_fs(tb, it, &fs) == 0) {
            const char *t = mnt_fs_get_target(fs);
            if (!t || strncmp(t, dir, dl) || (t[dl] && t[dl] != '/')) continue;
            left++;
            if (umount2(t, UMOUNT_NOFOLLOW) == 0) { left--; continue; }
            if (errno == EINVAL || errno == ENOENT) { left--; continue; }
            /* A FUSE mount whose driver died serves nothing: files still
             * open on it can only fail, so it is detached now rather than
             * waited for (a remount would wait 5 s, then find it in the way). */
            int e = errno;
            if (e == EBUSY && (dead || mnt_answers(t) == ENOTCONN)
                && umount2(t, MNT_DETACH | UMOUNT_NOFOLLOW) == 0) {
                left--;
                continue;
            }
            errno = e;
            if (errno == EBUSY) busy++;
            else mh_appendf(out, outlen, "umount %s: %s", t, strerror(errno));
        }
        mnt_free_iter(it);
        mnt_unref_table(tb);
        if (!left) break;
        if (!busy && round > 2) break;
        struct timespec nap = { 0, 100000000 };
        nanosleep(&nap, NULL);
    }
    if (left) mh_appendf(out, outlen, "%d mount(s) under %s still busy", left, dir);
    return left;
}
