-- One cell's test predictions of its own scorer (the model or its shuffled control), for the
-- confusion matrix, calibration, ROC and PR curves; at most $limit rows, the latest first.
-- params: $cell: the cell key; $limit: the most rows returned
-- grain: decision_time
select
    decision_time,
    label,
    probability
from predictions
where cell = $cell and split = 'test' and role in ('model', 'shuffled_control')
    and label is not null and probability is not null
order by decision_time desc
limit $limit
