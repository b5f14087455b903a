/*
 * reader.c - the userspace readers the helper falls back on where the
 * kernel has no driver: which one per filesystem (--reader, from the
 * policy's mount.reader) and starting ntt-tskfs, the Sleuth Kit reader
 * (docs/reader.md).
 *
 * ntt-tskfs is taken only from the helper's own directory and only when it
 * is owned by root (or the helper's user) and not group/world-writable: the
 * helper runs it as root, and it drops to "nobody" itself before it reads
 * the medium.  It gets the loop device on fd 3 and nothing else: no path of
 * the image, no options from the caller.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "helper.h"

#define MAX_CHOICES 32

static struct { char fstype[16]; char kind[8]; } choice[MAX_CHOICES];
static int nchoice;

/* "FSTYPE=KIND[,FSTYPE=KIND]...", FSTYPE [a-z0-9] or "*", KIND tsk|fuse|none. */
int reader_parse(const char *spec, char *err, size_t errlen)
{
    const char *p = spec;
    nchoice = 0;
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *eq = memchr(p, '=', n);
        size_t tn = eq ? (size_t)(eq - p) : 0, kn = eq ? n - tn - 1 : 0;
        int ok = eq && tn >= 1 && tn < sizeof choice[0].fstype && kn >= 1 && kn < sizeof choice[0].kind
                 && nchoice < MAX_CHOICES;
        for (size_t i = 0; ok && i < tn; i++)
            ok = (islower((unsigned char)p[i]) || isdigit((unsigned char)p[i])) || (tn == 1 && p[i] == '*');
        if (ok) {
            memcpy(choice[nchoice].fstype, p, tn);
            choice[nchoice].fstype[tn] = 0;
            memcpy(choice[nchoice].kind, eq + 1, kn);
            choice[nchoice].kind[kn] = 0;
            const char *k = choice[nchoice].kind;
            ok = !strcmp(k, "tsk") || !strcmp(k, "fuse") || !strcmp(k, "none");
        }
        if (!ok) {
            snprintf(err, errlen, "--reader wants FSTYPE=tsk|fuse|none[,...] (FSTYPE lowercase or *), not '%.60s'", spec);
            return MH_USAGE;
        }
        nchoice++;
        p += n;
        if (*p == ',') p++;
    }
    return 0;
}

/* The reader chosen for fstype: its own entry, else "*", else tsk. */
const char *reader_for(const char *fstype)
{
    const char *any = NULL;
    for (int i = 0; i < nchoice; i++) {
        if (!strcmp(choice[i].fstype, fstype)) return choice[i].kind;
        if (!strcmp(choice[i].fstype, "*")) any = choice[i].kind;
    }
    return any ? any : "tsk";
}

/* The filesystems The Sleuth Kit reads (the helper's probe names). */
int reader_tsk_reads(const char *fstype)
{
    static const char *names[] = { "vfat", "msdos", "exfat", "ntfs", "hfsplus", "hfs", "iso9660",
                                   "ufs", "ext2", "ext3", "ext4", NULL };
    for (int i = 0; names[i]; i++) if (!strcmp(names[i], fstype)) return 1;
    return 0;
}

static int find_tskfs(char *path, size_t len, char *err, size_t errlen)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) { snprintf(err, errlen, "readlink /proc/self/exe: %s", strerror(errno)); return -1; }
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (!slash) { snprintf(err, errlen, "helper path %s has no directory", self); return -1; }
    *slash = 0;
    snprintf(path, len, "%s/ntt-tskfs", self);
    struct stat st;
    if (stat(path, &st) < 0) { snprintf(err, errlen, "%s: %s", path, strerror(errno)); return -1; }
    if (!S_ISREG(st.st_mode) || (st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & 022)) {
        snprintf(err, errlen, "%s must be a regular file owned by root and not group/world-writable", path);
        return -1;
    }
    return 0;
}

/*
 * Mounts e->device (open as devfd) at e->mount with ntt-tskfs reading it
 * as fstype.  0 with driver and options set, or -1 + err (nothing left
 * mounted).
 */
int reader_mount(struct fsent *e, int devfd, const char *fstype, char *err, size_t errlen)
{
    static char *const envp[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/", "LC_ALL=C", "TZ=UTC0", NULL };
    char path[PATH_MAX + 16];
    if (find_tskfs(path, sizeof path, err, errlen) < 0) return -1;
    int mfd = memfd_create("ntt-tskfs-err", MFD_CLOEXEC);
    pid_t c = fork();
    if (c < 0) { snprintf(err, errlen, "fork: %s", strerror(errno)); if (mfd >= 0) close(mfd); return -1; }
    if (c == 0) {
        setsid();
        int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (nul >= 0) { dup2(nul, 0); dup2(nul, 1); }
        dup2(mfd >= 0 ? mfd : nul, 2);
        if (dup2(devfd, 3) < 0) _exit(126);
        for (int fd = 4; fd < 1024; fd++) close(fd);
        char *argv[] = { path, (char *)fstype, e->mount, NULL };
        execve(path, argv, envp);
        dprintf(2, "%s: %s", path, strerror(errno));
        _exit(127);
    }
    int st = mh_wait_timed(c);
    char msg[400] = "";
    mh_child_msg(mfd, msg, sizeof msg);
    int ok = st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0 && mnt_is_mounted(e->mount);
    if (!ok) {
        if (st < 0 && errno == ETIMEDOUT) snprintf(err, errlen, "timed out after %d s", mh_timeout);
        else if (st >= 0 && WIFSIGNALED(st)) snprintf(err, errlen, "killed by signal %d%s%s", WTERMSIG(st), *msg ? ": " : "", msg);
        else if (st >= 0 && WIFEXITED(st) && WEXITSTATUS(st)) snprintf(err, errlen, "exit %d%s%s", WEXITSTATUS(st), *msg ? ": " : "", msg);
        else snprintf(err, errlen, "ntt-tskfs exited without mounting%s%s", *msg ? ": " : "", msg);
        umount2(e->mount, MNT_DETACH);           /* a reader that mounted and then failed */
        return -1;
    }
    snprintf(e->driver, sizeof e->driver, "ntt-tskfs");
    snprintf(e->options, sizeof e->options, "ro,nosuid,nodev,noexec,noatime,allow_other");
    return 0;
}
