-- The most frequent relations and how many distinct heads / tails they connect.
SELECT r.pid, r.label, count(*) AS triples, count(DISTINCT t.head_id) AS heads, count(DISTINCT t.tail_id) AS tails
FROM triples t JOIN relations r USING (relation_id)
GROUP BY ALL
ORDER BY triples DESC
LIMIT coalesce(getvariable('n')::INTEGER, 15);
