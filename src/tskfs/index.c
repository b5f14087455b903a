/*
 * index.c - ntt-tskfs: reads a filesystem's whole tree through The Sleuth
 * Kit once, into the live tree served by main.c and a report (the side
 * channel, docs/reader.md) of what is not a live file: the volume label,
 * deleted and orphan entries, and metadata that could not be read.
 *
 * Nothing of the filesystem's own bookkeeping becomes a live file: TSK's
 * virtual files ($MBR, $FAT1, $OrphanFiles...), a FAT or exFAT volume label
 * entry, NTFS's $-system files (MFT entries 0-23), exFAT's bitmap and
 * up-case table.  Deleted entries are never mixed into the live tree.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tskfs.h"

#define MAX_DEPTH 128
#define MAX_DIRS 4000000        /* directories read at most: cross-linked ones must not multiply */
#define LABEL_SUFFIX " (Volume Label Entry)"

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) { fputs("ntt-tskfs: out of memory\n", stderr); exit(4); }
    return q;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xrealloc(NULL, n), s, n);
}

static void put(struct tindex *x, const char *s, size_t n)
{
    if (x->report_len + n + 1 > x->report_cap) {
        x->report_cap = (x->report_len + n + 1) * 2;
        x->report = xrealloc(x->report, x->report_cap);
    }
    memcpy(x->report + x->report_len, s, n);
    x->report_len += n;
    x->report[x->report_len] = 0;
}

static void putf(struct tindex *x, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0) put(x, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* A field of the report: tab, newline and backslash escaped, every other byte as is. */
static void put_field(struct tindex *x, const char *s)
{
    for (; *s; s++) {
        if (*s == '\t') put(x, "\\t", 2);
        else if (*s == '\n') put(x, "\\n", 2);
        else if (*s == '\\') put(x, "\\\\", 2);
        else put(x, s, 1);
    }
}

static void put_path(struct tindex *x, const char *dir, const char *name)
{
    if (*dir) { put_field(x, dir); put(x, "/", 1); }
    put_field(x, name);
}

static void damaged(struct tindex *x, const char *reason, const char *dir, const char *name)
{
    putf(x, "damaged\t%s\t", reason);
    put_path(x, dir, name);
    put(x, "\t", 1);
    const char *e = tsk_error_get();
    put_field(x, e ? e : "");
    put(x, "\n", 1);
    tsk_error_reset();
}

void tindex_stat(TSK_FS_INFO *fs, const TSK_FS_META *m, struct stat *st)
{
    memset(st, 0, sizeof *st);
    mode_t type = S_IFREG;
    switch (m->type) {
    case TSK_FS_META_TYPE_DIR: case TSK_FS_META_TYPE_VIRT_DIR: type = S_IFDIR; break;
    case TSK_FS_META_TYPE_LNK: type = S_IFLNK; break;
    case TSK_FS_META_TYPE_FIFO: type = S_IFIFO; break;
    case TSK_FS_META_TYPE_CHR: type = S_IFCHR; break;
    case TSK_FS_META_TYPE_BLK: type = S_IFBLK; break;
    case TSK_FS_META_TYPE_SOCK: type = S_IFSOCK; break;
    default: break;
    }
    st->st_mode = type | ((mode_t)m->mode & 07777);
    st->st_ino = (ino_t)m->addr;
    st->st_nlink = m->nlink > 0 ? (nlink_t)m->nlink : 1;
    st->st_uid = (uid_t)m->uid;
    st->st_gid = (gid_t)m->gid;
    st->st_size = type == S_IFREG || type == S_IFLNK || type == S_IFDIR ? (off_t)m->size : 0;
    st->st_blocks = (blkcnt_t)((st->st_size + 511) / 512);
    st->st_blksize = fs ? (blksize_t)fs->block_size : 4096;
    st->st_mtim.tv_sec = m->mtime; st->st_mtim.tv_nsec = m->mtime_nano;
    st->st_atim.tv_sec = m->atime; st->st_atim.tv_nsec = m->atime_nano;
    long z[3];
    if (fs && fs->ftype == TSK_FS_TYPE_EXFAT && exfat_utc_offsets(fs, m->addr, z) == 0) {
        if (m->mtime) st->st_mtim.tv_sec -= z[1];
        if (m->atime) st->st_atim.tv_sec -= z[2];
    }
    /* FAT has no change time: its last write stands in, as the kernel's vfat does */
    if (m->ctime) { st->st_ctim.tv_sec = m->ctime; st->st_ctim.tv_nsec = m->ctime_nano; }
    else st->st_ctim = st->st_mtim;
}

static struct node *add_kid(struct node *dir, const char *name)
{
    if (dir->nkids == dir->cap) {
        dir->cap = dir->cap ? dir->cap * 2 : 8;
        dir->kids = xrealloc(dir->kids, dir->cap * sizeof *dir->kids);
    }
    struct node *n = xrealloc(NULL, sizeof *n);
    memset(n, 0, sizeof *n);
    n->name = xstrdup(name);
    n->parent = dir;
    dir->kids[dir->nkids++] = n;
    return n;
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(struct node *const *)a)->name, (*(struct node *const *)b)->name);
}

struct blocks { uint64_t alloc, total; };

static TSK_WALK_RET_ENUM count_block(TSK_FS_FILE *f, TSK_OFF_T off, TSK_DADDR_T addr, char *buf,
                                     size_t len, TSK_FS_BLOCK_FLAG_ENUM flags, void *ptr)
{
    struct blocks *b = ptr;
    b->total++;
    /* NTFS resident data lies in the file's own MFT entry, which TSK calls allocated */
    if ((flags & TSK_FS_BLOCK_FLAG_ALLOC) && !(flags & TSK_FS_BLOCK_FLAG_RES)) b->alloc++;
    return TSK_WALK_CONT;
}

/* What TSK says about getting a deleted entry's content back. */
static const char *recoverability(TSK_FS_FILE *f)
{
    if (!f->meta) return "no_meta";
    if (f->meta->flags & TSK_FS_META_FLAG_ALLOC) return "meta_reused";
    if (f->meta->type != TSK_FS_META_TYPE_REG) return "not_a_file";
    if (f->meta->size == 0) return "empty";
    struct blocks b = { 0, 0 };
    if (tsk_fs_file_walk(f, TSK_FS_FILE_WALK_FLAG_AONLY, count_block, &b)) { tsk_error_reset(); return "unreadable"; }
    if (b.total == 0) return "no_data";
    if (b.alloc) return "data_reused";
    return "recoverable";
}

static const char *kind_of(const TSK_FS_META *m, const TSK_FS_NAME *n)
{
    if (!m) return TSK_FS_IS_DIR_NAME(n->type) ? "dir" : "file";
    switch (m->type) {
    case TSK_FS_META_TYPE_REG: return "file";
    case TSK_FS_META_TYPE_DIR: return "dir";
    case TSK_FS_META_TYPE_LNK: return "link";
    default: return "other";
    }
}

/* Deleted name n in dir; f: the file holding its metadata (none when f->meta is NULL). */
static void record_deleted(struct tindex *x, const TSK_FS_NAME *n, TSK_FS_FILE *f, const char *dir)
{
    const char *rec = recoverability(f);
    int content = !strcmp(rec, "recoverable") || !strcmp(rec, "data_reused");
    x->deleted_addr = xrealloc(x->deleted_addr, (x->ndeleted + 1) * sizeof *x->deleted_addr);
    x->deleted_map = xrealloc(x->deleted_map, (x->ndeleted + 1) * sizeof *x->deleted_map);
    x->deleted_map[x->ndeleted] = NULL;
    x->deleted_addr[x->ndeleted++] = content ? f->meta->addr : 0;
    const TSK_FS_META *m = f->meta;
    putf(x, "deleted\t%llu\t%s\t%lld\t", (unsigned long long)x->ndeleted, kind_of(m, n), m ? (long long)m->size : -1LL);
    long z[3] = { 0, 0, 0 };
    if (m && x->fs->ftype == TSK_FS_TYPE_EXFAT) exfat_utc_offsets(x->fs, m->addr, z);
    if (m)
        putf(x, "%lld.%09u\t%lld.%09u\t%lld.%09u\t%lld.%09u\t%o\t%llu\t",
             (long long)m->mtime - (m->mtime ? z[1] : 0), m->mtime_nano,
             (long long)m->atime - (m->atime ? z[2] : 0), m->atime_nano,
             (long long)m->ctime, m->ctime_nano, (long long)m->crtime - (m->crtime ? z[0] : 0), m->crtime_nano,
             (unsigned)m->mode & 07777, (unsigned long long)m->addr);
    else
        putf(x, "\t\t\t\t\t%llu\t", (unsigned long long)n->meta_addr);
    putf(x, "%s\t", rec);
    put_path(x, dir, n->name);
    put(x, "\n", 1);
}

/*
 * exFAT's allocation bitmap, up-case table, volume GUID, TexFAT and access
 * control entries: TSK shows them in the root under these names, with no
 * times and mode 0111.  A user's file of the same name has times.
 */
static int exfat_entry(const TSK_FS_FILE *f)
{
    static const char *const names[] = { "$ALLOC_BITMAP", "$UPCASE_TABLE", "$VOLUME_GUID", "$TEX_FAT",
                                          "$ACCESS_CONTROL_TABLE", "$EMPTY_VOLUME_LABEL", NULL };
    const TSK_FS_META *m = f->meta;
    if (m && (m->mtime || m->atime || m->crtime || (m->mode & 0666))) return 0;
    for (int i = 0; names[i]; i++) if (!strcmp(f->name->name, names[i])) return 1;
    return 0;
}

/* TSK's own files, and the filesystem's bookkeeping shown as files: never live files. */
static int is_bookkeeping(struct tindex *x, const TSK_FS_FILE *f, int depth)
{
    const TSK_FS_NAME *n = f->name;
    if (n->type == TSK_FS_NAME_TYPE_VIRT || n->type == TSK_FS_NAME_TYPE_VIRT_DIR) return 1;
    if (f->meta && (f->meta->type == TSK_FS_META_TYPE_VIRT || f->meta->type == TSK_FS_META_TYPE_VIRT_DIR)) return 1;
    /* NTFS: MFT entries 0-23 belong to the filesystem ($MFT ... and 16-23 reserved), also as orphans */
    if (TSK_FS_TYPE_ISNTFS(x->fs->ftype) && n->meta_addr < 24
        && ((depth == 0 && n->name[0] == '$') || !(n->flags & TSK_FS_NAME_FLAG_ALLOC))) return 1;
    if (depth == 0 && x->fs->ftype == TSK_FS_TYPE_EXFAT && n->name[0] == '$' && exfat_entry(f)) return 1;
    /* HFS+: the B-tree files (catalog ids below 16) and the store of hard-linked files */
    if (depth == 0 && TSK_FS_TYPE_ISHFS(x->fs->ftype)
        && ((n->name[0] == '$' && n->meta_addr < 16) || strstr(n->name, "HFS+ Private Data"))) return 1;
    return 0;
}

/* A FAT volume label entry (TSK names it "LABEL (Volume Label Entry)"): the label, returned. */
static int fat_label(struct tindex *x, const TSK_FS_FILE *f, int depth)
{
    if (depth || !TSK_FS_TYPE_ISFAT(x->fs->ftype) || !f->meta || f->meta->size) return 0;
    size_t n = strlen(f->name->name), s = strlen(LABEL_SUFFIX);
    if (n < s || strcmp(f->name->name + n - s, LABEL_SUFFIX)) return 0;
    if (!(f->name->flags & TSK_FS_NAME_FLAG_ALLOC)) return 1;   /* an old label: nothing to keep */
    while (n > s && f->name->name[n - s - 1] == ' ') n--;
    put(x, "label\t", 6);
    char *l = xstrdup(f->name->name);
    l[n - s] = 0;
    put_field(x, l);
    free(l);
    put(x, "\n", 1);
    return 1;
}

/*
 * NTFS adds one to an MFT entry's sequence number when it frees the entry,
 * so a deleted name carries the number before.  TSK's directory walk (fls)
 * allows for that; tsk_fs_dir_get does not, and hands every deleted NTFS
 * name without its metadata.  Loads it by the walk's rule.
 */
static TSK_FS_FILE *ntfs_deleted_meta(struct tindex *x, const TSK_FS_FILE *f)
{
    if (f->meta || !TSK_FS_TYPE_ISNTFS(x->fs->ftype) || !f->name->meta_addr) return NULL;
    TSK_FS_FILE *g = tsk_fs_file_open_meta(x->fs, NULL, f->name->meta_addr);
    if (!g) { tsk_error_reset(); return NULL; }
    if (g->meta) {
        uint32_t seq = g->meta->seq;
        if ((g->meta->flags & TSK_FS_META_FLAG_UNALLOC) && seq > 0) seq--;
        if (seq == f->name->meta_seq) return g;     /* the attributes point back at g: keep it */
    }
    tsk_fs_file_close(g);
    return NULL;
}

static int loops(const struct node *dir, TSK_INUM_T addr)
{
    for (; dir; dir = dir->parent) if (dir->addr == addr) return 1;
    return 0;
}

/*
 * Reads directory addr.  live: its node in the live tree, or NULL when the
 * directory is itself deleted (all it holds is deleted).  path: its path
 * from the root ("" for the root).
 */
static void read_dir(struct tindex *x, TSK_INUM_T addr, struct node *live, const char *path, int depth)
{
    if (++x->dirs_read > MAX_DIRS) {
        if (x->dirs_read == MAX_DIRS + 1) damaged(x, "too_many_dirs", "", path);
        return;
    }
    TSK_FS_DIR *d = tsk_fs_dir_open_meta(x->fs, addr);
    if (!d) {
        if (live) live->dir_err = EIO;
        damaged(x, live ? "dir_unreadable" : "deleted_dir_unreadable", "", path);
        return;
    }
    size_t n = tsk_fs_dir_getsize(d);
    for (size_t i = 0; i < n; i++) {
        if (x->deleted_only && live && depth > 0) {
            /* A live entry that is not a directory holds no deleted entry: passed by
             * its name alone.  Opening it would read its inode, and the inodes of one
             * directory may lie far apart in the table, each a fresh 64 KiB fill of
             * the image cache. */
            const TSK_FS_NAME *nm = tsk_fs_dir_get_name(d, i);
            if (nm && (nm->flags & TSK_FS_NAME_FLAG_ALLOC) && nm->type != TSK_FS_NAME_TYPE_UNDEF
                && nm->type != TSK_FS_NAME_TYPE_VIRT && !TSK_FS_IS_DIR_NAME(nm->type))
                continue;
        }
        TSK_FS_FILE *f = tsk_fs_dir_get(d, i);
        if (!f) { tsk_error_reset(); continue; }
        const char *name = f->name ? f->name->name : NULL;
        if (!name || !*name || !strcmp(name, ".") || !strcmp(name, "..")) { tsk_fs_file_close(f); continue; }
        if (fat_label(x, f, depth)) { tsk_fs_file_close(f); continue; }
        if (is_bookkeeping(x, f, depth)) {
            /* orphans: deleted entries no directory names any more */
            if (depth == 0 && f->name->type == TSK_FS_NAME_TYPE_VIRT_DIR && !strcmp(name, "$OrphanFiles"))
                read_dir(x, f->name->meta_addr, NULL, name, depth + 1);
            tsk_fs_file_close(f);
            continue;
        }
        int deleted = !live || !(f->name->flags & TSK_FS_NAME_FLAG_ALLOC);
        char *sub = xrealloc(NULL, strlen(path) + strlen(name) + 2);
        sprintf(sub, "%s%s%s", path, *path ? "/" : "", name);
        int is_dir = f->meta ? f->meta->type == TSK_FS_META_TYPE_DIR : TSK_FS_IS_DIR_NAME(f->name->type);
        if (deleted) {
            TSK_FS_FILE *g = ntfs_deleted_meta(x, f), *mf = g ? g : f;
            record_deleted(x, f->name, mf, path);
            if (g) is_dir = g->meta->type == TSK_FS_META_TYPE_DIR;
            /* a deleted directory whose entry was not reused still lists what it held */
            if (is_dir && mf->meta && (mf->meta->flags & TSK_FS_META_FLAG_UNALLOC) && depth < MAX_DEPTH
                && mf->meta->addr != addr)
                read_dir(x, mf->meta->addr, NULL, sub, depth + 1);
            if (g) tsk_fs_file_close(g);
        } else {
            struct node *k = add_kid(live, name);
            k->addr = f->name->meta_addr;
            if (!f->meta) {
                k->err = EIO;
                damaged(x, "meta_unreadable", path, name);
            } else {
                tindex_stat(x->fs, f->meta, &k->st);
                if (f->meta->link) k->link = xstrdup(f->meta->link);
                if (f->meta->type == TSK_FS_META_TYPE_REG && f->meta->size > 0 && !x->deleted_only) {
                    struct blocks b = { 0, 0 };
                    if (tsk_fs_file_walk(f, TSK_FS_FILE_WALK_FLAG_AONLY, count_block, &b))
                        damaged(x, "runs_unreadable", path, name);
                }
            }
            if (is_dir && f->meta && depth < MAX_DEPTH) {
                if (loops(live, f->meta->addr)) { k->dir_err = ELOOP; damaged(x, "dir_loop", path, name); }
                else read_dir(x, f->meta->addr, k, sub, depth + 1);
            }
        }
        free(sub);
        tsk_fs_file_close(f);
    }
    tsk_fs_dir_close(d);
    if (live && live->nkids) qsort(live->kids, live->nkids, sizeof *live->kids, by_name);
}

int tindex_build(struct tindex *x, TSK_FS_INFO *fs, int deleted_only)
{
    memset(x, 0, sizeof *x);
    x->fs = fs;
    x->deleted_only = deleted_only;
    put(x, "", 0);
    x->root = xrealloc(NULL, sizeof *x->root);
    memset(x->root, 0, sizeof *x->root);
    x->root->name = xstrdup("");
    x->root->addr = fs->root_inum;
    TSK_FS_FILE *r = tsk_fs_file_open_meta(fs, NULL, fs->root_inum);
    if (!r) {
        x->root->st.st_mode = S_IFDIR | 0555;
        x->root->st.st_nlink = 2;
        x->root->dir_err = EIO;
        damaged(x, "root_unreadable", "", "");
        return 0;
    }
    tindex_stat(fs, r->meta, &x->root->st);
    /* a FAT root has no entry of its own, hence no mode: readable by all */
    x->root->st.st_mode = S_IFDIR | ((x->root->st.st_mode & 07777) ? (x->root->st.st_mode & 07777) : 0555);
    tsk_fs_file_close(r);
    read_dir(x, fs->root_inum, x->root, "", 0);
    return 0;
}

static struct node *find_kid(const struct node *dir, const char *name, size_t len)
{
    size_t lo = 0, hi = dir->nkids;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const char *k = dir->kids[mid]->name;
        int c = strncmp(k, name, len);
        if (c == 0 && k[len]) c = 1;
        if (c == 0) {
            while (mid > 0 && !strcmp(dir->kids[mid - 1]->name, k)) mid--;   /* a name listed twice: the first */
            return dir->kids[mid];
        }
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    return NULL;
}

struct node *tindex_lookup(struct tindex *x, const char *path)
{
    struct node *n = x->root;
    while (*path == '/') path++;
    while (*path && n) {
        size_t len = strcspn(path, "/");
        n = find_kid(n, path, len);
        path += len;
        while (*path == '/') path++;
    }
    return n;
}
