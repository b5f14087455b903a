/*
 * hash_threads.h - a large file's leading segments hashed on several
 * threads (hash_threads.c), for ntt.core.hash's file().
 */
#ifndef NTT_HASH_THREADS_H
#define NTT_HASH_THREADS_H

#include <stdint.h>
#include "blake3.h"

#define NTT_HASH_THREADS_MAX 16

/*
 * Hash bytes [0, seg * nseg) of the file open as fd (seg a power of two,
 * at least 1 MiB; nseg >= 2) into b3, a fresh hasher, with up to
 * `threads` threads (the caller's among them).  0, EINTR (ntt_interrupted)
 * or an errno (EIO also when the file is shorter); b3 is then unusable.
 */
int ntt_hash_threads(int fd, ntt_blake3 *b3, uint64_t seg, uint64_t nseg, int threads);

#endif
