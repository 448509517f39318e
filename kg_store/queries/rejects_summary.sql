-- What was rejected, where, why and what was done about it, with one example each.
SELECT stage, reason, action, count(*) AS n, any_value(left(coalesce(raw, position, ''), 80)) AS example
FROM rejects
GROUP BY ALL
ORDER BY n DESC;
