/*
 * hash_threads.c - the threaded part of ntt.core.hash's file(): a large
 * file's leading segments hashed as BLAKE3 subtrees on several threads
 * (no Lua here; hash_threads.h).
 *
 * The file is cut into segments of `seg` bytes (a power of two, a
 * multiple of 1 MiB), each a whole subtree of the BLAKE3 tree.  Threads
 * take segments in order from a shared counter, so they read neighbouring
 * parts of the file; each has its own open file (its own readahead) and
 * asks the kernel for the whole segment ahead of reading it.  Each MiB is
 * one subtree of 1024 chunks, the MiBs of a segment are folded into the
 * segment's chaining value, and the segments are pushed in order onto the
 * caller's hasher: the digest is what one streaming pass gives.
 *
 * A MiB that lies wholly in a hole of the file (SEEK_DATA/SEEK_HOLE; a
 * sparse disk image is mostly holes) is hashed as the zeros it reads as,
 * without reading it: reading a hole costs the kernel a zeroed page cache
 * page per 4 KiB, most of the time of a large sparse image.  Only on the
 * local file systems whose holes are exact (ext2/3/4, XFS, Btrfs, tmpfs):
 * elsewhere (network, FUSE, others) a hole reported where data is, as
 * file systems have done for data not yet written back, would make the
 * digest that of zeros, so every byte is read.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>
#include "ntt.h"
#include "hash_threads.h"

#define MIB ((uint64_t)1 << 20)

typedef struct {
    const ntt_blake3 *proto;     /* mode and key */
    int fd;                      /* the caller's, reopened per thread */
    uint64_t seg, nseg;
    int mapped;                  /* hash the page cache through a mapping */
    int holes;                   /* the file system's SEEK_HOLE is trusted */
    uint64_t next;               /* next segment to take (atomic) */
    uint8_t *cvs;                /* 32 bytes per segment */
    int err;                     /* first error (atomic) */
} Job;

static void fail(Job *j, int err)
{
    int zero = 0;
    __atomic_compare_exchange_n(&j->err, &zero, err, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* Read exactly n bytes at off: 0, or an errno (EIO when the file shrank). */
static int read_full(int fd, uint8_t *buf, size_t n, uint64_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, buf + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return errno;
        if (r == 0)
            return EIO;
        done += (size_t)r;
    }
    return 0;
}

static const uint8_t zeros[MIB];

/* Where the data at or after off begins and ends: [*data, *hole).  A file
 * system without SEEK_DATA, or an error: all data.  No data left: both
 * UINT64_MAX. */
static void data_extent(int fd, uint64_t off, uint64_t *data, uint64_t *hole)
{
    off_t d = lseek(fd, (off_t)off, SEEK_DATA);
    if (d < 0) {
        *data = errno == ENXIO ? UINT64_MAX : off;
        *hole = UINT64_MAX;
        return;
    }
    off_t h = lseek(fd, d, SEEK_HOLE);
    *data = (uint64_t)d;
    *hole = h < 0 ? UINT64_MAX : (uint64_t)h;
}

/* Asks the kernel for the data of [base, end), not for its holes. */
static void readahead_data(int fd, uint64_t base, uint64_t end)
{
    uint64_t data, hole;
    for (uint64_t at = base; at < end; at = hole) {
        data_extent(fd, at, &data, &hole);
        if (data >= end || hole <= data)      /* (the second: a file system's odd answer) */
            break;
        uint64_t to = hole < end ? hole : end;
        posix_fadvise(fd, (off_t)data, (off_t)(to - data), POSIX_FADV_WILLNEED);
    }
}

static int hash_segment(Job *j, int fd, uint8_t *buf, uint8_t *mcv, uint64_t s)
{
    uint64_t base = s * j->seg, nmib = j->seg / MIB;
    /* [data, hole): the data at or after the MiB being hashed, looked up
     * again past hole; without trusted holes, the whole file */
    uint64_t data = 0, hole = UINT64_MAX;
    if (j->holes) {
        readahead_data(fd, base, base + j->seg);
        hole = 0;
    } else {
        posix_fadvise(fd, (off_t)base, (off_t)j->seg, POSIX_FADV_WILLNEED);
    }
    for (uint64_t m = 0; m < nmib; m++) {
        if (ntt_interrupted)
            return EINTR;
        if (__atomic_load_n(&j->err, __ATOMIC_RELAXED))
            return 0;
        uint64_t off = base + m * MIB;
        if (off >= hole)
            data_extent(fd, off, &data, &hole);
        const uint8_t *in = zeros;
        if (data < off + MIB) {
            int err = read_full(fd, buf, MIB, off);
            if (err)
                return err;
            in = buf;
        }
        ntt_blake3_subtree_cv(j->proto, in, MIB / NTT_BLAKE3_CHUNK_LEN, off / NTT_BLAKE3_CHUNK_LEN, mcv + 32 * m);
    }
    for (uint64_t n = nmib; n > 1; n /= 2)
        for (uint64_t i = 0; i < n / 2; i++)
            ntt_blake3_parent_cv(j->proto, mcv + 64 * i, mcv + 64 * i + 32, mcv + 32 * i);
    memcpy(j->cvs + 32 * s, mcv, 32);
    return 0;
}

/* The MiBs of a mapped segment, out of reach of the siglongjmp: 0 or EINTR. */
static __attribute__((noinline)) int hash_mibs(Job *j, const uint8_t *m, uint64_t base,
                                               uint8_t *mcv, volatile uint64_t *at)
{
    uint64_t nmib = j->seg / MIB;
    for (uint64_t k = *at; k < nmib; k++) {
        if (ntt_interrupted)
            return EINTR;
        if (__atomic_load_n(&j->err, __ATOMIC_RELAXED))
            return 0;
        ntt_blake3_subtree_cv(j->proto, m + k * MIB, MIB / NTT_BLAKE3_CHUNK_LEN,
                              (base + k * MIB) / NTT_BLAKE3_CHUNK_LEN, mcv + 32 * k);
        *at = k + 1;
    }
    return 0;
}

/*
 * A segment hashed in place: mapped, its pages faulted in one batch
 * (MADV_POPULATE_READ, where the kernel has it), hashed, unmapped.  A
 * read error inside the mapping arrives as SIGBUS: EIO.
 */
static int hash_segment_mapped(Job *j, int fd, uint8_t *buf, uint8_t *mcv, uint64_t s)
{
    uint64_t base = s * j->seg;
    uint8_t *m = mmap(NULL, j->seg, PROT_READ, MAP_SHARED, fd, (off_t)base);
    if (m == MAP_FAILED)                      /* a file that cannot be mapped is read */
        return hash_segment(j, fd, buf, mcv, s);
    madvise(m, j->seg, MADV_SEQUENTIAL);
    /* the next segment is asked for too: a cold file then has reads queued
     * while this one's pages are faulted in */
    posix_fadvise(fd, (off_t)(base + j->seg), (off_t)j->seg, POSIX_FADV_WILLNEED);
    madvise(m, j->seg, MADV_POPULATE_READ);   /* EINVAL before Linux 5.14: faults one by one */
    volatile uint64_t at = 0;
    int err;
    sigjmp_buf jb;
    if (sigsetjmp(jb, 1)) {
        err = EIO;
    } else {
        ntt_bus_jump = &jb;
        err = hash_mibs(j, m, base, mcv, &at);
    }
    ntt_bus_jump = NULL;
    munmap(m, j->seg);
    if (err || __atomic_load_n(&j->err, __ATOMIC_RELAXED))
        return err;
    for (uint64_t n = j->seg / MIB; n > 1; n /= 2)
        for (uint64_t i = 0; i < n / 2; i++)
            ntt_blake3_parent_cv(j->proto, mcv + 64 * i, mcv + 64 * i + 32, mcv + 32 * i);
    memcpy(j->cvs + 32 * s, mcv, 32);
    return 0;
}

static void *worker(void *arg)
{
    Job *j = arg;
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", j->fd);
    int fd = open(self, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        fd = dup(j->fd);            /* no /proc: share the caller's readahead */
    uint8_t *buf = NULL, *mcv = malloc(32 * (j->seg / MIB));
    if (fd < 0 || !mcv || posix_memalign((void **)&buf, 4096, MIB) != 0) {
        fail(j, fd < 0 ? errno : ENOMEM);
        buf = NULL;
    } else {
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        for (;;) {
            uint64_t s = __atomic_fetch_add(&j->next, 1, __ATOMIC_SEQ_CST);
            if (s >= j->nseg || __atomic_load_n(&j->err, __ATOMIC_RELAXED))
                break;
            int err = j->mapped ? hash_segment_mapped(j, fd, buf, mcv, s) : hash_segment(j, fd, buf, mcv, s);
            if (err) {
                fail(j, err);
                break;
            }
        }
    }
    free(buf);
    free(mcv);
    if (fd >= 0)
        close(fd);
    return NULL;
}

/* Whether the file system of fd reports holes exactly. */
static int exact_holes(int fd)
{
    struct statfs sf;
    if (fstatfs(fd, &sf) != 0)
        return 0;
    switch ((unsigned long)sf.f_type) {
    case EXT4_SUPER_MAGIC: case XFS_SUPER_MAGIC: case BTRFS_SUPER_MAGIC: case TMPFS_MAGIC:
        return 1;
    default:
        return 0;
    }
}

static int run(int fd, ntt_blake3 *b3, uint64_t seg, uint64_t nseg, int threads, int mapped)
{
    Job j = { .proto = b3, .fd = fd, .seg = seg, .nseg = nseg, .mapped = mapped, .holes = exact_holes(fd) };
    if (mapped)
        ntt_bus_install();
    if (!(j.cvs = malloc(32 * nseg)))
        return ENOMEM;
    pthread_t tid[NTT_HASH_THREADS_MAX];
    int started = 0;
    if (threads > NTT_HASH_THREADS_MAX)
        threads = NTT_HASH_THREADS_MAX;
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&tid[started], NULL, worker, &j) != 0)
            break;                  /* fewer threads: still correct */
        started++;
    }
    worker(&j);
    for (int t = 0; t < started; t++)
        pthread_join(tid[t], NULL);
    int err = j.err;
    if (!err && ntt_interrupted)
        err = EINTR;
    if (!err)
        for (uint64_t s = 0; s < nseg; s++)
            ntt_blake3_push_subtree(b3, j.cvs + 32 * s, seg / NTT_BLAKE3_CHUNK_LEN);
    free(j.cvs);
    return err;
}

int ntt_hash_threads(int fd, ntt_blake3 *b3, uint64_t seg, uint64_t nseg, int threads)
{
    return run(fd, b3, seg, nseg, threads, 0);
}

int ntt_hash_threads_mapped(int fd, ntt_blake3 *b3, uint64_t seg, uint64_t nseg, int threads)
{
    return run(fd, b3, seg, nseg, threads, 1);
}
