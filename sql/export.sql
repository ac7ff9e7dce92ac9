-- Email-marketing export: each user's current top N items (parameter top) with titles,
-- by user id then rank.
-- `topx export --top N --out FILE.csv` runs this query and streams it to CSV.
SELECT user_id, rank, item_id, title, score
FROM current_recommendations
WHERE rank <= :top
ORDER BY user_id, rank;
