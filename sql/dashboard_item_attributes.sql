-- An item's attributes in the current run: the item file's columns (genres, price, available_from,
-- available_until, in_stock, ...) as text, as the run read them.
-- Parameter item_id: the external item id, as text (ids are stored as TEXT).
SELECT name, value, run_id
FROM current_item_attributes
WHERE item_id = :item_id
ORDER BY name;
