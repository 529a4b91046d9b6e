-- One cell's rows of `metrics` (every scorer, train and test blocks) for its detail view:
-- configuration, fold calendar, fingerprint, scores.
-- params: $cell: the cell key
-- grain: scorer, split, block
select *
from metrics
where cell = $cell
order by role, scorer, split, block nulls first
