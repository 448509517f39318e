-- Mentions of an entity with their surface form, source and passage.
-- params: qid (default Q183, Germany in the demo store), n (default 20)
SELECT title, source, surface, char_start, char_end, passage
FROM mentions_in_context
WHERE qid = coalesce(getvariable('qid'), 'Q183')
ORDER BY passage_id, char_start
LIMIT coalesce(getvariable('n')::INTEGER, 20);
