-- One cell's predicted probability of up on its test rows within the charted span, every scorer
-- (the model, the baselines on the same rows, a shuffled control), with the realised label.
-- params: $cell: the cell key; $start, $end: the charted span, decision_time in (start, end];
--   $max_rows: most rows returned
-- grain: scorer, decision_time
select scorer, role, decision_time, label, probability
from predictions
where cell = $cell and split = 'test' and decision_time > $start and decision_time <= $end
order by scorer, decision_time
limit $max_rows
