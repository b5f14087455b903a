-- 011_mount_lease.sql: who uses a medium's mount on which host.
--
-- Each `ntt run` (and `ntt worker`) that mounts a medium holds a lease on it
-- until its unmount stage: the mount is taken down only when no live lease
-- of this host remains, so one run never unmounts what another still reads
-- (lua/ntt/lease.lua).  A lease names its process by host, pid, boot id and
-- start time: one of a process that is gone does not count.  No foreign
-- key: a lease is about a mount, which the helper makes for any hash.
CREATE TABLE mount_lease (
    medium_hash  text NOT NULL,
    host         text NOT NULL,
    pid          integer NOT NULL,
    boot_id      text NOT NULL,
    pid_start    bigint,
    run_id       bigint,
    taken_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (medium_hash, host, pid)
);
