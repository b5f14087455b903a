-- 022_load_keys.sql: a medium's inode key and path -> inode index lead
-- with the inode number.
--
-- Within a partition fs_index is nearly always one value, so an index that
-- leads with it makes every comparison of the build's sort tie on the first
-- column and go on to the second: building (fs_index, ino) took half as long
-- again as (ino, fs_index) for a million rows.  Both serve what the keys are
-- for -- the lookups of one (fs_index, ino), path_inode_fk and its ON DELETE
-- CASCADE, ON CONFLICT (fs_index, ino) -- which name the two columns, in any
-- order.  The path key stays (fs_index, path): tree, export and verify page
-- through it in that order.  The claim index keeps its order too: it is the
-- claim's order.  Partitions made before keep their keys (both work).
CREATE OR REPLACE FUNCTION ntt_inode_keys(ipart regclass)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (ino, fs_index)', ipart);
    EXECUTE format('CREATE INDEX ON %s (fs_index, dir_key, ino) '
                   'WHERE state IN (''pending'', ''failed_retryable'')', ipart);
END $$;

CREATE OR REPLACE FUNCTION ntt_path_keys(ppart regclass)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (fs_index, path)', ppart);
    EXECUTE format('CREATE INDEX ON %s (ino, fs_index)', ppart);
    PERFORM ntt_path_fk_index(ppart);
END $$;

-- the foreign-key index (migration 013) in either order
CREATE OR REPLACE FUNCTION ntt_path_fk_index(ppart regclass)
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
       AND (pg_get_indexdef(i.indexrelid) LIKE '%(fs_index, ino)'
            OR pg_get_indexdef(i.indexrelid) LIKE '%(ino, fs_index)')
     LIMIT 1;
    IF have IS NOT NULL AND (SELECT relname FROM pg_class WHERE oid = have) <> want THEN
        EXECUTE format('ALTER INDEX %s RENAME TO %I', have, want);
    END IF;
END $$;
