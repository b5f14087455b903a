/*
 * tskfs.h - shared declarations of ntt-tskfs, the read-only FUSE reader over
 * The Sleuth Kit (docs/reader.md): index.c reads the filesystem's tree
 * once, main.c serves it.
 */
#ifndef NTT_TSKFS_H
#define NTT_TSKFS_H

#include <stdint.h>
#include <sys/stat.h>
#include <tsk/libtsk.h>

/* Where a file's bytes are on the device (runs.c). */
struct extent { uint64_t foff, doff, len; int zero; };
struct fmap {
    struct extent *e;
    size_t n, cap;
    uint64_t size, covered;
    TSK_INUM_T addr;            /* the file's meta address (reads through TSK reopen it) */
    int use_tsk;                /* content TSK must decode: read through TSK */
};
/* One entry of the live tree. */
struct node {
    char *name;
    struct node *parent;
    struct node **kids;         /* sorted by name (strcmp) once the directory is read */
    uint32_t nkids, cap;
    TSK_INUM_T addr;
    struct stat st;
    char *link;                 /* symlink target or NULL */
    struct fmap *map;           /* where its bytes are, once read (main.c, under the TSK lock) */
    int err;                    /* errno for getattr (an unreadable entry) or 0 */
    int dir_err;                /* errno for readdir (an unreadable directory) or 0 */
};

/* What the reader found, besides the live tree. */
struct tindex {
    TSK_FS_INFO *fs;
    struct node *root;
    char *report;               /* the side channel: label, deleted entries, damage (TSV) */
    size_t report_len, report_cap;
    uint64_t dirs_read;         /* bounds the walk of a cross-linked tree */
    uint64_t ndeleted;          /* deleted entries; the first ones have a content file */
    TSK_INUM_T *deleted_addr;   /* [ndeleted]: meta address of deleted entry i, 0 = no content */
    struct fmap **deleted_map;  /* [ndeleted]: where its bytes are, once read */
    int deleted_only;           /* the report alone: live files passed by name, no tree kept for them */
};

/* index.c */
int tindex_build(struct tindex *x, TSK_FS_INFO *fs, int deleted_only);
struct node *tindex_lookup(struct tindex *x, const char *path);
void tindex_stat(TSK_FS_INFO *fs, const TSK_FS_META *m, struct stat *st);

int fmap_build(TSK_FS_FILE *f, struct fmap *m);
void fmap_free(struct fmap *m);
int fmap_read(const struct fmap *m, int fd, char *buf, size_t len, uint64_t off);

/* exfat.c */
int exfat_utc_offsets(TSK_FS_INFO *fs, TSK_INUM_T addr, long off[3]);

/* iso.c */
int iso_rock_ridge_only(int fd);

#endif
