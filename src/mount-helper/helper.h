/*
 * helper.h - shared declarations of ntt-mount-helper (the only part of ntt
 * that runs as root).  See docs/mount-helper.md.
 */
#ifndef NTT_MOUNT_HELPER_H
#define NTT_MOUNT_HELPER_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

/* Exit codes (documented in docs/mount-helper.md). */
enum { MH_OK = 0, MH_PARTIAL = 1, MH_USAGE = 2, MH_DENIED = 3, MH_INTERNAL = 4, MH_REFUSED = 5, MH_CHANGED = 6 };

/* Paths are built with snprintf into MH_PATH buffers.  Inputs are bounded
 * before use (base <= 200 bytes, hash <= 64, image < MH_PATH - 16), so the
 * compiler's "may be truncated" guesses cannot happen; they are silenced here. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#define MH_STATE_MAXFS 65536   /* sanity bound on a state file's entry count, not a cap */
#define MH_PATH     512     /* every path the helper builds fits (base is length-checked) */
#define MH_REASON   768

/* One filesystem (or skipped partition) of a medium. */
struct fsent {
    int index;                  /* fs_index: partition number, 0 = whole disk */
    uint64_t offset, size;      /* byte range inside the (viewed) image */
    char fstype[32], label[128], uuid[64];
    char device[32];            /* /dev/loopN or "" */
    char mount[MH_PATH];
    char driver[16];            /* kernel|ntt-tskfs|fusefat|fuseiso|fuse2fs or "" */
    char options[160];
    char status[16];            /* mounted|failed|skipped|truncated|missing */
    char reason[MH_REASON];
};

/* The honest view of a partial image (see view.c). */
struct viewinfo {
    int active;
    char mount[MH_PATH];        /* FUSE mount point */
    char file[MH_PATH];         /* the single file inside it */
    char mapfile[MH_PATH];
    uint64_t size;              /* presented size */
    uint64_t image_size;        /* bytes really in the image file */
    uint64_t rescued;           /* bytes readable through the view */
    int holes;                  /* unreadable ranges inside size */
    int pid;
};

/* Everything mount/status print; persisted as the medium's state file:
 * this struct (fs meaningless there) followed by its nfs entries. */
struct medium {
    uint32_t magic;
    char hash[65];
    char image[MH_PATH];
    char layout[8];             /* single|multi|none */
    char pttype[32];
    char hybrid[8];             /* "apm" or "" */
    int gpt_primary;            /* GPT read from its primary header (backup missing) */
    int ebr_loop;               /* an MBR extended chain links back on itself */
    int nfs, cap;
    struct fsent *fs;           /* nfs entries, one per partition, no fixed cap: medium_free */
    struct viewinfo view;
};
#define MH_STATE_MAGIC 0x6e747432u   /* "ntt2": entries after the record (a state file of the fixed-array format is not read) */

/* Rescued ranges of a ddrescue mapfile, sorted and merged. */
struct map {
    uint64_t (*ok)[2];          /* [start, end) of every '+' area */
    size_t n;
    uint64_t total;             /* end of the last line of the map */
};

/* mapfile.c */
int map_load_fd(int fd, const char *path, struct map *m, char *err, size_t errlen);
void map_free(struct map *m);
void map_clip(struct map *m, uint64_t limit);
int map_readable(const struct map *m, uint64_t off, uint64_t len);
uint64_t map_rescued(const struct map *m, uint64_t limit);
int map_holes(const struct map *m, uint64_t limit);

/* view.c */
int view_start(int image_fd, const struct map *m, uint64_t file_size, uint64_t size,
               const char *mountpoint, int *pid, char *err, size_t errlen);

/* loop.c */
int loop_attach(int backing_fd, uint64_t offset, uint64_t size, const char *tag,
                char *dev, size_t devlen, int *devfd, char *err, size_t errlen);
typedef void (*loop_visit)(int nr, const char *backing, const char *tag, void *ctx);
void loop_each(loop_visit fn, void *ctx);
int loop_detach(int nr);
int loop_tag(int nr, char *tag, size_t len);
int loop_exists(int nr);
/* Loops of one medium: its tag, or (when not another medium's) backed by
 * image or viewfile; with deleted_only, only its own whose backing file is
 * gone.  loop_match is a loop_visit; nr grows as found (loopq_free). */
struct loopq {
    const char *image, *viewfile, *tag;
    int deleted_only;
    int *nr;
    int n, cap;
};
void loop_match(int nr, const char *backing, const char *tag, void *ctx);
void loopq_push(struct loopq *q, int nr);
void loopq_free(struct loopq *q);

/* mnt.c */
extern int mh_timeout;
int fs_kernel_has(const char *fstype);
void fs_mount(struct fsent *e, int devfd, int viewed);
int mnt_is_mounted(const char *path);
int mnt_answers(const char *path);
int mnt_is_ours(const char *path, const char *hash);
void mh_child_msg(int mfd, char *msg, size_t len);
int mnt_unmount_under(const char *dir, int dead, char *out, size_t outlen);
int run_timed(char *const argv[], char *err, size_t errlen);
int mh_wait_timed(pid_t c);           /* wait status, or -1 (ETIMEDOUT: killed after mh_timeout) */

/* reader.c: the userspace reader chosen per filesystem (--reader) */
int reader_parse(const char *spec, char *err, size_t errlen);
const char *reader_for(const char *fstype);      /* "tsk" | "fuse" | "none" */
int reader_tsk_reads(const char *fstype);
int reader_mount(struct fsent *e, int devfd, const char *fstype, char *err, size_t errlen);

/* probe.c (over the shared layout probe, src/media/layout.c) */
struct fsent *medium_add(struct medium *md);    /* zeroed; NULL when out of memory */
void medium_free(struct medium *md);
int probe_medium(int fd, uint64_t file_size, uint64_t *need, struct medium *md,
                 char *err, size_t errlen);

/* args.c: the command line and the config file (0, or an exit code and err) */
#define MH_TIMEOUT_MIN 1
#define MH_TIMEOUT_MAX 3600
#define MH_MAXROOTS 32
struct mh_args {
    const char *cmd, *hash, *image, *map;   /* NULL when not given */
    const char *expect;                     /* --expect DEV:INO:SIZE:MTIME_NS:CTIME_NS */
    int timeout;                            /* --timeout seconds, 0 when not given */
};
struct mh_conf {
    int restricted;                         /* came through sudo / not root: roots apply */
    char base[MH_PATH];
    char roots[MH_MAXROOTS][PATH_MAX];
    int nroots;
    int have_conf;
};
int mh_valid_hash(const char *h);
int mh_parse_args(int argc, char **argv, struct mh_args *a, char *err, size_t errlen);
/* The five numbers of --expect; 0, or -1 when s is not of that form. */
int mh_parse_expect(const char *s, long long v[5]);
int mh_load_config(struct mh_conf *c, char *err, size_t errlen);

/* resolve.c: opening what a caller names, making the mount directories
 * (0, or an exit code and err) */
int mh_under_roots(const struct mh_conf *c, const char *real);
int mh_open_input(const struct mh_conf *c, const char *what, const char *arg, char *real,
                  int *fdp, char *err, size_t errlen);
int mh_mkdirs(const struct mh_conf *c, const char *path, mode_t mode, char *err, size_t errlen);
int mh_open_view(const char *mount, uint64_t size, char *err, size_t errlen);

/* main.c */
extern int mh_lock_fd;
/* Prints {"error":..,"code":..} and a message on stderr, exits with code. */
void mh_die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
void mh_appendf(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
