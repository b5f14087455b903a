-- 003_partition_keys.sql: keys and claim indexes per partition, without the
-- medium's hash.
--
-- Every partition of inode and path holds exactly one medium (its bound says
-- which), so within it (fs_index, ino) and (fs_index, path) are the keys.
-- Carrying the 32-64 character hash at the head of every index key made each
-- index twice as slow to build and to search; enumerate builds them once per
-- load, after the rows are in.
ALTER TABLE inode DROP CONSTRAINT inode_pkey CASCADE;   -- and each path_inode_fk
ALTER TABLE path DROP CONSTRAINT path_pkey;
DROP INDEX inode_claim_idx;
DROP INDEX path_ino_idx;

-- The keys, the claim index and path -> inode of one medium's pair of
-- partitions.  validate_fk = false adds the foreign key NOT VALID: enforced
-- for every later change, for a caller that built both tables from the same
-- rows in the same transaction and so knows they agree.
CREATE FUNCTION ntt_partition_keys(ipart regclass, ppart regclass, validate_fk boolean DEFAULT true)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (fs_index, ino)', ipart);
    EXECUTE format('CREATE INDEX ON %s (fs_index, dir_key, ino) '
                   'WHERE state IN (''pending'', ''failed_retryable'')', ipart);
    EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (fs_index, path)', ppart);
    EXECUTE format('CREATE INDEX ON %s (fs_index, ino)', ppart);
    EXECUTE format('ALTER TABLE %s ADD CONSTRAINT path_inode_fk FOREIGN KEY (fs_index, ino) '
                   'REFERENCES %s (fs_index, ino) ON DELETE CASCADE '
                   'DEFERRABLE INITIALLY DEFERRED%s', ppart, ipart,
                   CASE WHEN validate_fk THEN '' ELSE ' NOT VALID' END);
END $$;

DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT c.oid::regclass AS ipart,
                    to_regclass(quote_ident(regexp_replace(c.relname, '^inode_', 'path_'))) AS ppart
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'inode'::regclass
    LOOP
        IF r.ppart IS NULL THEN
            RAISE EXCEPTION 'partition % has no path partition', r.ipart;
        END IF;
        PERFORM ntt_partition_keys(r.ipart, r.ppart);
    END LOOP;
END $$;
