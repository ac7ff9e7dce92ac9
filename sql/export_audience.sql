-- An item's audience in the current run, for an email tool: the users with the highest predicted
-- score who have not interacted with it, best first.
-- Parameter item_id: the external item id, as text (ids are stored as TEXT).
SELECT rank, user_id, score, title, run_id
FROM current_audiences
WHERE item_id = :item_id
ORDER BY rank;
