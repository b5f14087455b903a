/*
 * browse.h - ntt-browse's index: the snapshot ntt writes of the media's
 * trees, loaded once into nodes found by their path (docs/tree.md,
 * "Browse").
 */
#ifndef NTT_BROWSE_H
#define NTT_BROWSE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SNAP_MAGIC "NTTBRW1\n"

/* kind: 'd' directory, 'f' a file served from its blob (data: the blob's
 * path), 'l' a symlink (data: its target), 't' a text file (data: its
 * content, e.g. a listing of damaged files). */
struct node {
    char *path;                 /* "/a/b", the key FUSE hands us; "/" the root */
    const char *name;           /* the last component, inside path */
    char kind;
    uint32_t mode;              /* permission bits as shown (read-only) */
    int64_t mtime_ns;
    uint64_t size;
    char *data;                 /* NUL-terminated, datalen bytes */
    uint32_t datalen;
    struct node **kids;         /* a directory's entries, sorted by name */
    uint32_t nkids, cap, nsubdirs;
    struct node *next;          /* the hash chain */
};

struct index {
    struct node **slots;
    size_t nslots, nnodes;
    size_t skipped;             /* records whose parent is not a directory, or a path seen before */
    int64_t now_ns;             /* mtime of directories the snapshot does not describe */
};

/* Loads the snapshot file; 0, or -1 with a message in err. */
int index_load(struct index *x, const char *file, char *err, size_t errlen);
struct node *index_lookup(const struct index *x, const char *path);
void index_free(struct index *x);

#endif
