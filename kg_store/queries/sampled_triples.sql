-- Random triples with labels on both ends (a new sample each run).
-- params: n (rows, default 20)
SELECT head_label, relation_label, tail_label, head_qid, pid, tail_qid
FROM sampled_triples
LIMIT coalesce(getvariable('n')::INTEGER, 20);
