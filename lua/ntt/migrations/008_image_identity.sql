-- 008_image_identity.sql: an image medium is named by its whole content.
--
-- medium.sampled_hash: the fast hash of size + first and last MiB (the
-- identity of a block device; for an image only a lineage hint: two images
-- sharing it may be two rescues of one physical medium).  Media identified
-- before this migration were named by that hash, so it is theirs.
ALTER TABLE medium ADD COLUMN sampled_hash text
    CHECK (sampled_hash ~ '^[0-9a-f]{16,64}$');
UPDATE medium SET sampled_hash = medium_hash WHERE kind IN ('image', 'device');
CREATE INDEX medium_sampled_idx ON medium (sampled_hash);

-- Every place a medium's bytes were seen: the first location is also
-- medium.image_path; a byte-identical copy elsewhere adds a row here and
-- changes nothing else of the medium.
CREATE TABLE medium_location (
    medium_hash  text NOT NULL REFERENCES medium (medium_hash) ON DELETE CASCADE,
    path         text NOT NULL,
    size         bigint CHECK (size >= 0),
    mtime        timestamptz,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (medium_hash, path)
);

-- The whole-content hash of an image file, computed once: reused while the
-- file at path has the same device, inode, size, mtime and ctime.
CREATE TABLE image_hash_cache (
    path          text PRIMARY KEY,
    dev           bigint NOT NULL,
    ino           bigint NOT NULL,
    size          bigint NOT NULL CHECK (size >= 0),
    mtime_ns      bigint NOT NULL,
    ctime_ns      bigint NOT NULL,
    content_hash  text NOT NULL CHECK (content_hash ~ '^[0-9a-f]{16,64}$'),
    sampled_hash  text CHECK (sampled_hash ~ '^[0-9a-f]{16,64}$'),
    unreadable_bytes bigint CHECK (unreadable_bytes >= 0),
    hashed_at     timestamptz NOT NULL DEFAULT now()
);
