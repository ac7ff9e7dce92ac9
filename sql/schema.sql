-- topx database schema (postgresql). GENERATED from batch/publish/models.py: do not edit.
-- Regenerate with: topx schema --out sql/schema.sql

CREATE TABLE runs (
	id TEXT COLLATE "C" NOT NULL,
	status TEXT NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	started_at TIMESTAMP WITH TIME ZONE,
	finished_at TIMESTAMP WITH TIME ZONE,
	published_at TIMESTAMP WITH TIME ZONE,
	model_location TEXT,
	config JSONB,
	metrics JSONB,
	counts JSONB,
	n_users BIGINT,
	n_items BIGINT,
	n_items_recommended BIGINT,
	n_fallback_users BIGINT,
	n_rows BIGINT,
	error TEXT,
	gate JSONB,
	PRIMARY KEY (id),
	CONSTRAINT ck_runs_status CHECK (status IN ('loading', 'current', 'superseded', 'failed', 'pruned', 'collecting', 'rejected'))
);

CREATE UNIQUE INDEX uq_runs_one_current ON runs (status) WHERE status = 'current';

CREATE TABLE items (
	item_id TEXT COLLATE "C" NOT NULL,
	title TEXT,
	PRIMARY KEY (item_id)
);

CREATE TABLE recommendations (
	run_id TEXT COLLATE "C" NOT NULL,
	user_id TEXT COLLATE "C" NOT NULL,
	rank INTEGER NOT NULL,
	item_id TEXT COLLATE "C" NOT NULL,
	score REAL NOT NULL,
	probability REAL,
	source SMALLINT NOT NULL
)
 PARTITION BY LIST (run_id);

CREATE INDEX brin_recommendations_user ON recommendations USING brin (user_id) WITH (pages_per_range = 16);

CREATE TABLE publish_lock (
	id SMALLINT NOT NULL,
	PRIMARY KEY (id)
);

CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL,
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

CREATE TABLE similar_items (
	run_id TEXT COLLATE "C" NOT NULL,
	item_id TEXT COLLATE "C" NOT NULL,
	rank INTEGER NOT NULL,
	similar_item_id TEXT COLLATE "C" NOT NULL,
	score REAL NOT NULL,
	CONSTRAINT pk_similar_items PRIMARY KEY (run_id, item_id, rank)
);

CREATE TABLE audiences (
	run_id TEXT COLLATE "C" NOT NULL,
	item_id TEXT COLLATE "C" NOT NULL,
	rank INTEGER NOT NULL,
	user_id TEXT COLLATE "C" NOT NULL,
	score REAL NOT NULL,
	CONSTRAINT pk_audiences PRIMARY KEY (run_id, item_id, rank)
);

CREATE TABLE item_attributes (
	run_id TEXT COLLATE "C" NOT NULL,
	item_id TEXT COLLATE "C" NOT NULL,
	name TEXT NOT NULL,
	value TEXT NOT NULL,
	CONSTRAINT pk_item_attributes PRIMARY KEY (run_id, item_id, name)
);

CREATE VIEW current_recommendations AS SELECT recommendations.user_id, recommendations.rank, recommendations.item_id, recommendations.score, recommendations.probability, recommendations.source, items.title, recommendations.run_id
FROM recommendations LEFT OUTER JOIN items ON items.item_id = recommendations.item_id
WHERE recommendations.run_id = (SELECT runs.id
FROM runs
WHERE runs.status = 'current');

CREATE VIEW current_similar_items AS SELECT similar_items.item_id, items.title, similar_items.rank, similar_items.similar_item_id, "similar".title AS similar_title, similar_items.score, similar_items.run_id
FROM similar_items LEFT OUTER JOIN items ON items.item_id = similar_items.item_id LEFT OUTER JOIN items AS "similar" ON "similar".item_id = similar_items.similar_item_id
WHERE similar_items.run_id = (SELECT runs.id
FROM runs
WHERE runs.status = 'current');

CREATE VIEW current_audiences AS SELECT audiences.item_id, items.title, audiences.rank, audiences.user_id, audiences.score, audiences.run_id
FROM audiences LEFT OUTER JOIN items ON items.item_id = audiences.item_id
WHERE audiences.run_id = (SELECT runs.id
FROM runs
WHERE runs.status = 'current');

CREATE VIEW current_item_attributes AS SELECT item_attributes.item_id, item_attributes.name, item_attributes.value, item_attributes.run_id
FROM item_attributes
WHERE item_attributes.run_id = (SELECT runs.id
FROM runs
WHERE runs.status = 'current');

INSERT INTO alembic_version (version_num) VALUES ('0002');
