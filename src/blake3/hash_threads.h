/*
 * hash_threads.h - a large file's leading segments hashed on several
 * threads (hash_threads.c), for ntt.core.hash's file().
 */
#ifndef NTT_HASH_THREADS_H
#define NTT_HASH_THREADS_H

#include <setjmp.h>
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

/*
 * The same, hashing the page cache in place through a mapping of each
 * segment (no copy into a buffer); a read error inside a mapping is EIO.
 */
int ntt_hash_threads_mapped(int fd, ntt_blake3 *b3, uint64_t seg, uint64_t nseg, int threads);

/*
 * SIGBUS inside a mapping (hash.c): while ntt_bus_jump is set on a thread,
 * a SIGBUS of that thread jumps there; other SIGBUS go to the handler that
 * was before.  ntt_bus_install is called once, before threads start.
 */
extern __thread sigjmp_buf *ntt_bus_jump;
void ntt_bus_install(void);

#endif
