-- Coverage and metrics of every run, newest first (failed runs included, with their error).
-- catalogue_coverage_at_x: share of the catalogue in at least one published top-x list;
-- fallback_share: share of users served the popularity list; metrics: everything measured (JSON).
-- The columns after it are runs.metrics' "figures" (batch/metrics/figures.py): accuracy and
-- catalogue coverage on the held-out evaluation at k; Gini index, novelty (bits), intra-list
-- diversity and the share of slots taken by the 1% most popular items on the published lists at x;
-- jaccard_at_k, rbo and changed_share against the run that was current before.
-- refreshed_from / refreshed_users: a `topx refresh` run's source run and how many users it
-- recomputed (NULL for other runs; its metrics and figures are the source run's, carried over).
SELECT id,
       status,
       started_at,
       published_at,
       finished_at,
       n_users,
       n_items,
       n_items_recommended,
       n_items_recommended * 1.0 / NULLIF(n_items, 0) AS catalogue_coverage_at_x,
       n_fallback_users,
       n_fallback_users * 1.0 / NULLIF(n_users, 0) AS fallback_share,
       n_rows,
       metrics,
       model_location,
       error,
       CAST(metrics -> 'figures' ->> 'k' AS INTEGER) AS k,
       CAST(metrics -> 'figures' ->> 'x' AS INTEGER) AS x,
       CAST(metrics -> 'figures' ->> 'ndcg_at_k' AS DOUBLE PRECISION) AS ndcg_at_k,
       CAST(metrics -> 'figures' ->> 'precision_at_k' AS DOUBLE PRECISION) AS precision_at_k,
       CAST(metrics -> 'figures' ->> 'popularity_ndcg_at_k' AS DOUBLE PRECISION) AS popularity_ndcg_at_k,
       CAST(metrics -> 'figures' ->> 'catalogue_coverage_at_k' AS DOUBLE PRECISION) AS catalogue_coverage_at_k,
       CAST(metrics -> 'figures' ->> 'gini_at_x' AS DOUBLE PRECISION) AS gini_at_x,
       CAST(metrics -> 'figures' ->> 'novelty_at_x' AS DOUBLE PRECISION) AS novelty_at_x,
       CAST(metrics -> 'figures' ->> 'ild_at_x' AS DOUBLE PRECISION) AS ild_at_x,
       CAST(metrics -> 'figures' ->> 'top1pct_share_at_x' AS DOUBLE PRECISION) AS top1pct_share_at_x,
       CAST(metrics -> 'figures' ->> 'jaccard_at_k' AS DOUBLE PRECISION) AS jaccard_at_k,
       CAST(metrics -> 'figures' ->> 'rbo' AS DOUBLE PRECISION) AS rbo,
       CAST(metrics -> 'figures' ->> 'changed_share' AS DOUBLE PRECISION) AS changed_share,
       counts -> 'refresh' ->> 'source_run' AS refreshed_from,
       CAST(counts -> 'refresh' ->> 'users' AS BIGINT) AS refreshed_users
FROM runs
ORDER BY created_at DESC, id DESC;
