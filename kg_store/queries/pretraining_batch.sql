-- What the first pretraining batch of a seed contains: write it with `jaket batch --seed S`, then
-- params: batch (the Parquet file `jaket batch` wrote). One row per item, with labels and surface forms.
WITH b AS (SELECT * FROM read_parquet(getvariable('batch')))
SELECT 'text' AS part, b.row AS row_or_hop, NULL AS relation, e.label AS entity,
       left(p.text, 70) AS detail
FROM b JOIN passages p USING (passage_id) LEFT JOIN entities e ON FALSE
WHERE b.kind = 'passage'
UNION ALL
SELECT 'mention', b.row, NULL, e.label, 'tokens ' || b.token_start || '..' || b.token_end
FROM b JOIN entities e USING (entity_id) WHERE b.kind = 'mention'
UNION ALL
SELECT CASE WHEN b.is_root THEN 'root' ELSE 'neighbour' END, NULL, NULL, e.label, left(e.description, 70)
FROM b JOIN entities e USING (entity_id) WHERE b.kind = 'node'
UNION ALL
SELECT CASE WHEN b.kind = 'edge' THEN 'message edge' ELSE 'L_r target' END, NULL, r.label,
       h.label || ' -> ' || t.label, CASE WHEN b.inverse THEN 'read tail -> head' END
FROM b JOIN relations r USING (relation_id) JOIN entities h ON h.entity_id = b.head_id
JOIN entities t ON t.entity_id = b.tail_id WHERE b.kind IN ('edge', 'relation_target')
ORDER BY part, row_or_hop NULLS LAST, entity;
