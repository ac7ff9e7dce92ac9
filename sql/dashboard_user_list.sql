-- A user's current list, best first, with item titles.
-- Parameter user_id: the external user id, as text (ids are stored as TEXT).
-- source: 0 = ranked by the model, 1 = popularity fallback (the user had no history),
-- 2 = the model's candidates re-ranked by NeuMF ([rerank] model = "ncf"; score = its probability).
SELECT rank, item_id, title, score, probability, source, run_id
FROM current_recommendations
WHERE user_id = :user_id
ORDER BY rank;
