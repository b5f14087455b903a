-- 014_deleted_entries.sql: deleted and orphan entries a reader found
-- (ntt-tskfs, docs/reader.md), kept apart from the live files: kind is
-- always 'deleted', and nothing here is an inode or a path of the medium.
--
-- entry is the reader's number for the entry (its content file); path the
-- raw name bytes relative to the filesystem's root as the filesystem still
-- holds them (a FAT deleted name has lost its first byte); times in
-- nanoseconds since the epoch as the filesystem gives them (a FAT time is
-- its local wall clock read as UTC).  recoverability is what The Sleuth Kit
-- says: recoverable, data_reused, meta_reused, no_meta, no_data, empty,
-- not_a_file, unreadable.  state: recorded (a row only), recovered (its
-- content is blobid, copied under the caveat), unreadable (recovery
-- failed: error says why).
CREATE TABLE deleted_entry (
    medium_hash    text NOT NULL REFERENCES medium (medium_hash) ON DELETE CASCADE,
    fs_index       integer NOT NULL,
    entry          bigint NOT NULL CHECK (entry > 0),
    kind           text NOT NULL DEFAULT 'deleted' CHECK (kind = 'deleted'),
    type           text NOT NULL CHECK (type IN ('file', 'dir', 'link', 'other')),
    path           bytea NOT NULL CHECK (position('\x00'::bytea IN path) = 0),
    meta_addr      bigint,
    size           bigint,
    mode           integer,
    mtime_ns       bigint,
    atime_ns       bigint,
    ctime_ns       bigint,
    crtime_ns      bigint,
    recoverability text NOT NULL,
    state          text NOT NULL DEFAULT 'recorded' CHECK (state IN ('recorded', 'recovered', 'unreadable')),
    blobid         text REFERENCES blob (blobid),
    caveat         text,
    error          text,
    PRIMARY KEY (medium_hash, fs_index, entry),
    CHECK (state <> 'recovered' OR blobid IS NOT NULL)
);
