-- 019_imaging.sql: imaging a block device with GNU ddrescue (the image stage).
--
-- A device is a medium of kind 'device' named by its sampled hash; its
-- image and map are written to images/<hash>.img and .map.  Each image
-- medium made from it (named by the image's content) is a rescue in the
-- device's lineage: the first one rescue_of the device ('imaged'), each
-- later "rescue more" pass rescue_of the image medium before it ('more').
ALTER TABLE medium DROP CONSTRAINT IF EXISTS medium_rescue_basis_check;
ALTER TABLE medium ADD CONSTRAINT medium_rescue_basis_check
    CHECK (rescue_basis IN ('map', 'operator', 'imaged', 'more'));

-- One row per imaged device: where its image is and how far the imaging got.
CREATE TABLE imaging (
    device_hash   text PRIMARY KEY REFERENCES medium (medium_hash) ON DELETE CASCADE,
    device_path   text NOT NULL,
    image_path    text NOT NULL,
    map_path      text NOT NULL,
    facts         jsonb NOT NULL DEFAULT '{}',
    smart         jsonb,
    state         text NOT NULL DEFAULT 'imaging' CHECK (state IN ('imaging', 'finished')),
    pass          integer NOT NULL DEFAULT 1 CHECK (pass >= 1),
    image_medium  text REFERENCES medium (medium_hash) ON DELETE SET NULL,
    rescued_bytes bigint,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);

-- Every phase run of every pass, in order: what ddrescue was given and how it ended.
CREATE TABLE imaging_phase (
    id             bigserial PRIMARY KEY,
    device_hash    text NOT NULL REFERENCES medium (medium_hash) ON DELETE CASCADE,
    pass           integer NOT NULL,
    phase          text NOT NULL,
    argv           text[] NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    ended_at       timestamptz,
    outcome        text CHECK (outcome IN ('done', 'skipped', 'budget', 'stall', 'interrupted', 'failed')),
    exit_code      integer,
    rescued_before bigint,
    rescued_after  bigint,
    seconds        double precision,
    note           text
);
CREATE INDEX imaging_phase_device_idx ON imaging_phase (device_hash, pass, id);
