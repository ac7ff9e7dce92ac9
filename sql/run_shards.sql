-- topx sharded-run bookkeeping (postgresql), created by the first `topx run --shards N`.
-- GENERATED from batch/publish/models.py: do not edit. Regenerate with:
-- python -c "import batch.publish.models as m; print(m.shard_schema_sql(), end='')" > sql/run_shards.sql

CREATE TABLE run_shards (
	run_id TEXT COLLATE "C" NOT NULL,
	shard INTEGER NOT NULL,
	opened_at TIMESTAMP WITH TIME ZONE NOT NULL,
	loaded_at TIMESTAMP WITH TIME ZONE,
	n_rows BIGINT,
	n_users BIGINT,
	CONSTRAINT pk_run_shards PRIMARY KEY (run_id, shard)
);
