-- An entity's 1-hop neighbourhood: outgoing and incoming triples with labels.
-- params: qid (default Q2973, Darmstadt in the demo store)
WITH e AS (SELECT entity_id FROM entities WHERE qid = coalesce(getvariable('qid'), 'Q2973'))
SELECT 'out' AS direction, relation_label, tail_qid AS other_qid, tail_label AS other_label
FROM triples_labelled WHERE head_id IN (SELECT entity_id FROM e)
UNION ALL
SELECT 'in', relation_label, head_qid, head_label
FROM triples_labelled WHERE tail_id IN (SELECT entity_id FROM e)
ORDER BY direction DESC, relation_label, other_label;
