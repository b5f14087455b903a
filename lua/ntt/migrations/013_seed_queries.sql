-- 013_seed_queries.sql: what the seed design's SQL reads, so that it runs
-- unchanged (docs/database.md, "The seed's queries").
--
-- The seed's copier kept one boolean per inode: `copied`, true once the
-- copier was done with the file -- copied, or given up on for good (a
-- permanent skip was "copied = true, claimed_by = 'DIAGNOSTIC_SKIP:...'").
-- ntt's truth stays the state enum; `copied` is derived from it: false
-- exactly while the file is still work to do (the rows the claim index
-- holds), true for every settled state.  It is never a claim that a blob
-- exists: that is state = 'copied'.
ALTER TABLE inode ADD COLUMN copied boolean
    GENERATED ALWAYS AS (state NOT IN ('pending', 'failed_retryable')) STORED;

-- A skipped file names its skip in claimed_by, as in the seed; its lease
-- is long expired, so nothing ever waits on it as on a live claim.
UPDATE inode SET claimed_by = reason, lease_until = '-infinity'
 WHERE state = 'skipped' AND claimed_by IS NULL AND reason IS NOT NULL;

-- The seed checks a path partition's foreign-key index by name
-- ("path_p_<hash>_fk_idx", the index on (fs_index, ino) that serves
-- path_inode_fk).  PostgreSQL's own name for it kept the staging table's
-- name after a load; this names it after the table it is on, when the name
-- fits in an identifier.  A load calls it again once its staging table is
-- the partition.
CREATE FUNCTION ntt_path_fk_index(ppart regclass)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    want text := (SELECT relname FROM pg_class WHERE oid = ppart) || '_fk_idx';
    have regclass;
BEGIN
    IF octet_length(want) > 63 THEN
        RETURN;
    END IF;
    SELECT i.indexrelid::regclass INTO have
      FROM pg_index i
     WHERE i.indrelid = ppart AND NOT i.indisprimary
       AND pg_get_indexdef(i.indexrelid) LIKE '%(fs_index, ino)'
     LIMIT 1;
    IF have IS NOT NULL AND (SELECT relname FROM pg_class WHERE oid = have) <> want THEN
        EXECUTE format('ALTER INDEX %s RENAME TO %I', have, want);
    END IF;
END $$;

CREATE OR REPLACE FUNCTION ntt_path_keys(ppart regclass)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (fs_index, path)', ppart);
    EXECUTE format('CREATE INDEX ON %s (fs_index, ino)', ppart);
    PERFORM ntt_path_fk_index(ppart);
END $$;

SELECT ntt_path_fk_index(inhrelid::regclass) FROM pg_inherits WHERE inhparent = 'path'::regclass;
