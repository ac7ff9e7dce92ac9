-- Database roles for topx on PostgreSQL. Run once per database, after schema.sql, as a superuser
-- or the schema's owner:   psql -d topx -f sql/roles.sql
-- Both roles are NOLOGIN groups; grant them to login users, e.g.  GRANT topx_writer TO batch_job;
--
-- topx_writer publishes runs. PostgreSQL lets only a table's owner attach and drop partitions,
-- so the writer owns `recommendations` (and the one partition per run it creates) and the view
-- over it; on `runs` and `items` it may only read, insert and update rows, never delete them or
-- change their definition. It may create tables in the schema (a run's partition is created as
-- a table first).
--
-- Publishers take turns by locking the table publish_lock (LOCK TABLE needs UPDATE rights): the
-- writer owns it and no one else has any right on it, so no other role can block publishing.
--
-- topx_dashboard reads what dashboards and exports need: the current_recommendations view, the
-- runs table (coverage and metrics per run) and item titles; not the history in recommendations.

DO $$
BEGIN
    CREATE ROLE topx_writer NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- roles belong to the cluster: another database may have created it
END $$;

DO $$
BEGIN
    CREATE ROLE topx_dashboard NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;

-- As in schema.sql, for databases made before the table existed.
CREATE TABLE IF NOT EXISTS publish_lock (
	id SMALLINT NOT NULL,
	PRIMARY KEY (id)
);
-- The schema's revision (topx db upgrade, run as the schema's owner, writes it; publishers read it).
CREATE TABLE IF NOT EXISTS alembic_version (
	version_num VARCHAR(32) NOT NULL,
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

REVOKE ALL ON runs, items, recommendations, current_recommendations, publish_lock, similar_items, audiences,
    current_similar_items, current_audiences, item_attributes, current_item_attributes, alembic_version FROM PUBLIC;

GRANT USAGE, CREATE ON SCHEMA public TO topx_writer;
ALTER TABLE recommendations OWNER TO topx_writer;
ALTER VIEW current_recommendations OWNER TO topx_writer;
ALTER TABLE publish_lock OWNER TO topx_writer;
DO $$
DECLARE
    part regclass;
BEGIN
    -- Partitions published before these roles existed.
    FOR part IN SELECT inhrelid::regclass FROM pg_inherits
                WHERE inhparent = 'recommendations'::regclass LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO topx_writer', part);
    END LOOP;
END $$;
GRANT SELECT, INSERT, UPDATE ON runs, items TO topx_writer;
-- Item-keyed rows (similar items, audiences, item attributes): inserted with a run and deleted with it.
GRANT SELECT, INSERT, DELETE ON similar_items, audiences, item_attributes TO topx_writer;
GRANT SELECT ON alembic_version TO topx_writer;

GRANT USAGE ON SCHEMA public TO topx_dashboard;
GRANT SELECT ON current_recommendations, current_similar_items, current_audiences, current_item_attributes, runs,
    items TO topx_dashboard;
