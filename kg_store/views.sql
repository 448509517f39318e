-- Debug views (DESIGN.md part 2). Created inside every store; query them through a read-only connection.
CREATE OR REPLACE VIEW triples_labelled AS
SELECT h.qid AS head_qid, h.label AS head_label, r.pid, r.label AS relation_label,
       t.qid AS tail_qid, t.label AS tail_label, tr.head_id, tr.relation_id, tr.tail_id
FROM triples tr
JOIN entities h ON h.entity_id = tr.head_id
JOIN relations r ON r.relation_id = tr.relation_id
JOIN entities t ON t.entity_id = tr.tail_id;

-- A fresh random sample of 1,000 triples with labels on both ends (the id where there is no label), every
-- time it is queried.
CREATE OR REPLACE VIEW sampled_triples AS
SELECT h.qid AS head_qid, coalesce(h.label, h.qid) AS head_label, r.pid, coalesce(r.label, r.pid) AS relation_label,
       t.qid AS tail_qid, coalesce(t.label, t.qid) AS tail_label
FROM (SELECT * FROM triples USING SAMPLE reservoir(1000 ROWS)) tr
JOIN entities h ON h.entity_id = tr.head_id
JOIN relations r ON r.relation_id = tr.relation_id
JOIN entities t ON t.entity_id = tr.tail_id;

CREATE OR REPLACE VIEW entity_card AS
WITH outd AS (SELECT head_id AS entity_id, count(*) AS n FROM triples GROUP BY ALL),
     ind  AS (SELECT tail_id AS entity_id, count(*) AS n FROM triples GROUP BY ALL),
     men  AS (SELECT entity_id, count(*) AS n FROM mentions GROUP BY ALL),
     ali  AS (SELECT entity_id, string_agg(alias, ' | ') AS aliases FROM aliases GROUP BY ALL)
SELECT e.entity_id, e.qid, e.label, e.description, e.desc_source,
       CASE WHEN e.desc_mention_start IS NULL THEN NULL
            ELSE substr(e.description, e.desc_mention_start + 1, e.desc_mention_end - e.desc_mention_start)
       END AS desc_mention,
       c.label AS category, ali.aliases,
       coalesce(outd.n, 0) AS out_degree, coalesce(ind.n, 0) AS in_degree,
       coalesce(outd.n, 0) + coalesce(ind.n, 0) AS degree, coalesce(men.n, 0) AS mention_count
FROM entities e
LEFT JOIN categories c ON c.category_id = e.category_id
LEFT JOIN outd ON outd.entity_id = e.entity_id
LEFT JOIN ind ON ind.entity_id = e.entity_id
LEFT JOIN men ON men.entity_id = e.entity_id
LEFT JOIN ali ON ali.entity_id = e.entity_id;

CREATE OR REPLACE VIEW mentions_in_context AS
SELECT m.passage_id, p.doc_id, d.title, m.entity_id, e.qid, e.label, m.source, m.char_start, m.char_end,
       substr(p.text, m.char_start + 1, m.char_end - m.char_start) AS surface, p.text AS passage
FROM mentions m
JOIN passages p ON p.passage_id = m.passage_id
JOIN documents d ON d.doc_id = p.doc_id
JOIN entities e ON e.entity_id = m.entity_id;
