-- An item's most similar items in the current run, best first, with titles ("because you liked X").
-- Parameter item_id: the external item id, as text (ids are stored as TEXT).
-- score: cosine of the item factors (or their inner product with [similar] metric = "inner_product").
SELECT rank, similar_item_id, similar_title, score, run_id
FROM current_similar_items
WHERE item_id = :item_id
ORDER BY rank;
