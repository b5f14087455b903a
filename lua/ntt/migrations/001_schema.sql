-- 001_schema.sql: ntt's schema (docs/database.md describes every column).
--
-- Applied by `ntt db migrate` (lua/ntt/db.lua) inside one transaction and
-- recorded in schema_migrations.  Per-medium partitions of inode and path
-- are created by db.ensure_partitions, named from the full medium hash.

-- One medium: an image file, a device, a directory or carved data.
CREATE TABLE medium (
    medium_hash   text PRIMARY KEY CHECK (medium_hash ~ '^[0-9a-f]{16,64}$'),
    medium_human  text,
    kind          text NOT NULL DEFAULT 'image'
                  CHECK (kind IN ('image', 'device', 'directory', 'carved')),
    image_path    text,
    map_path      text,
    size          bigint CHECK (size >= 0),
    health        text CHECK (health IN ('ok', 'incomplete', 'corrupt', 'failed')),
    rescued_pct   double precision CHECK (rescued_pct >= 0 AND rescued_pct <= 100),
    added_at      timestamptz NOT NULL DEFAULT now(),
    -- one per stage, set only when that stage truly completed
    identified_at timestamptz,
    inspected_at  timestamptz,
    mounted_at    timestamptz,
    enum_done     timestamptz,
    copy_done     timestamptz,
    verified_at   timestamptz,
    archived_at   timestamptz,
    problems      jsonb NOT NULL DEFAULT '{}'::jsonb
                  CHECK (jsonb_typeof(problems) = 'object')
);
CREATE INDEX medium_health_idx ON medium (health) WHERE health IS DISTINCT FROM 'ok';

-- One filesystem inside a medium: fs_index is the partition number, 0 for
-- a whole-disk filesystem.
CREATE TABLE filesystem (
    medium_hash   text NOT NULL REFERENCES medium (medium_hash) ON DELETE CASCADE,
    fs_index      integer NOT NULL CHECK (fs_index >= 0),
    byte_offset   bigint NOT NULL DEFAULT 0 CHECK (byte_offset >= 0),
    size          bigint CHECK (size >= 0),
    fstype        text,
    label         text,
    uuid          text,
    mount_status  text,
    mount_options text,
    problems      jsonb NOT NULL DEFAULT '{}'::jsonb
                  CHECK (jsonb_typeof(problems) = 'object'),
    PRIMARY KEY (medium_hash, fs_index)
);

-- Content-addressed blobs in the store: BLAKE3-256, 64 lowercase hex.
CREATE TABLE blob (
    blobid        text PRIMARY KEY CHECK (blobid ~ '^[0-9a-f]{64}$'),
    size          bigint NOT NULL CHECK (size >= 0),
    first_seen    timestamptz NOT NULL DEFAULT now(),
    last_verified timestamptz
);

-- The one state of an inode.
CREATE TYPE inode_state AS ENUM (
    'pending',            -- not yet copied; claimable
    'copied',             -- content is in the store (blobid set)
    'skipped',            -- decided not to copy (reason says why)
    'failed_retryable',   -- failed; claimable again until attempts run out
    'failed_permanent',   -- failed for good
    'excluded',           -- every path excluded by policy
    'non_file',           -- directory, symlink, device...: nothing to copy
    'damaged'             -- content partly unreadable (damage says where)
);

CREATE TABLE inode (
    medium_hash   text NOT NULL,
    fs_index      integer NOT NULL,
    ino           bigint NOT NULL,
    state         inode_state NOT NULL DEFAULT 'pending',
    reason        text,
    attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    errors        jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(errors) = 'array'),
    blobid        text REFERENCES blob (blobid) DEFERRABLE INITIALLY DEFERRED,
    size          bigint,
    mode          integer,
    nlink         integer,
    mtime_ns      bigint,
    fs_type       char(1),
    dir_key       bigint,
    claimed_by    text,
    lease_until   timestamptz,
    damage        jsonb,
    processed_at  timestamptz,
    PRIMARY KEY (medium_hash, fs_index, ino),
    CHECK (state <> 'copied' OR blobid IS NOT NULL)
) PARTITION BY LIST (medium_hash);

-- The claim index: work left, in directory order (inherited by partitions).
CREATE INDEX inode_claim_idx ON inode (medium_hash, fs_index, dir_key, ino)
    WHERE state IN ('pending', 'failed_retryable');
CREATE INDEX inode_blobid_idx ON inode (blobid) WHERE blobid IS NOT NULL;

-- Names, as raw bytes relative to the filesystem's root.
CREATE TABLE path (
    medium_hash    text NOT NULL,
    fs_index       integer NOT NULL,
    path           bytea NOT NULL CHECK (position('\x00'::bytea IN path) = 0),
    ino            bigint NOT NULL,
    parent_ino     bigint,
    exclude_reason text,
    PRIMARY KEY (medium_hash, fs_index, path)
) PARTITION BY LIST (medium_hash);
CREATE INDEX path_ino_idx ON path (medium_hash, fs_index, ino);

-- errors/events lists stay bounded: append e, keep the last `keep`.
CREATE FUNCTION ntt_push_bounded(list jsonb, e jsonb, keep integer DEFAULT 10)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(jsonb_agg(x ORDER BY n), '[]'::jsonb)
    FROM (SELECT x, n FROM jsonb_array_elements(COALESCE(list, '[]'::jsonb) || jsonb_build_array(e))
                         WITH ORDINALITY AS t(x, n)) s
    WHERE n > jsonb_array_length(COALESCE(list, '[]'::jsonb)) + 1 - keep
$$;
