-- Coverage and metrics of every run, newest first (failed runs included, with their error).
-- catalogue_coverage: share of the catalogue recommended to at least one user;
-- fallback_share: share of users served the popularity list; metrics: offline evaluation (JSON).
SELECT id,
       status,
       started_at,
       published_at,
       finished_at,
       n_users,
       n_items,
       n_items_recommended,
       n_items_recommended * 1.0 / NULLIF(n_items, 0) AS catalogue_coverage,
       n_fallback_users,
       n_fallback_users * 1.0 / NULLIF(n_users, 0) AS fallback_share,
       n_rows,
       metrics,
       model_location,
       error
FROM runs
ORDER BY created_at DESC, id DESC;
