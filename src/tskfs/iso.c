/*
 * iso.c - ntt-tskfs: whether The Sleuth Kit would read an ISO 9660 image's
 * names as its author wrote them.  TSK reads Joliet names but not Rock
 * Ridge ones: a disc with Rock Ridge and no Joliet would show its 8.3
 * upper-case names, so the reader declines it and the helper goes on to
 * the next driver (docs/reader.md).
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include "tskfs.h"

#define SECTOR 2048

static int read_at(int fd, uint64_t off, unsigned char *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, buf + done, len - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        done += (size_t)r;
    }
    return 0;
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* 1 when the image has Rock Ridge names and no Joliet directory tree, 0 otherwise. */
int iso_rock_ridge_only(int fd)
{
    unsigned char vd[SECTOR], dir[SECTOR];
    uint32_t root = 0;
    int joliet = 0;
    for (int s = 16; s < 16 + 64; s++) {
        if (read_at(fd, (uint64_t)s * SECTOR, vd, SECTOR) < 0 || memcmp(vd + 1, "CD001", 5)) return 0;
        if (vd[0] == 255) break;                            /* terminator */
        if (vd[0] == 1 && !root) root = le32(vd + 156 + 2);
        if (vd[0] == 2 && vd[88] == '%' && vd[89] == '/' && (vd[90] == '@' || vd[90] == 'C' || vd[90] == 'E'))
            joliet = 1;
    }
    if (joliet || !root) return 0;
    if (read_at(fd, (uint64_t)root * SECTOR, dir, SECTOR) < 0) return 0;
    /* the root's "." record: its system use area opens with SUSP's "SP" entry on a Rock Ridge disc */
    unsigned len = dir[0], name_len = dir[32];
    unsigned su = 33 + name_len + (name_len % 2 == 0);
    return len >= su + 7 && su + 7 <= SECTOR && dir[su] == 'S' && dir[su + 1] == 'P'
           && dir[su + 4] == 0xBE && dir[su + 5] == 0xEF;
}
