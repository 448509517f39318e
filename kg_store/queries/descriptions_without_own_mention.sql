-- Entities whose description does not mention them (the model then pools the [CLS] state), by source,
-- with a few examples each.
SELECT desc_source, count(*) AS entities,
       round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS pct_of_unmentioned,
       list(qid || ' ' || coalesce(label, '?') || ': ' || left(coalesce(description, ''), 60)
            ORDER BY entity_id)[1:3] AS examples
FROM entities
WHERE desc_mention_start IS NULL
GROUP BY desc_source
ORDER BY entities DESC;
