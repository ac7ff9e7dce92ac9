-- How often each item is recommended in the current run, most recommended first.
-- lists: users whose list holds the item; share_of_users: that over all users with a list;
-- in_top_10: lists holding it at rank 1..10; best_rank / mean_rank: where it appears.
SELECT item_id,
       title,
       COUNT(*) AS lists,
       COUNT(*) * 1.0 / (SELECT n_users FROM runs WHERE status = 'current') AS share_of_users,
       SUM(CASE WHEN rank <= 10 THEN 1 ELSE 0 END) AS in_top_10,
       MIN(rank) AS best_rank,
       AVG(rank * 1.0) AS mean_rank
FROM current_recommendations
GROUP BY item_id, title
ORDER BY lists DESC, item_id;
