-- Calibration of one cell's own scorer on its test rows: predicted probability in $bins equal
-- bins against the observed rate of the positive label.
-- params: $cell: the cell key; $bins: number of probability bins
-- grain: bin
select
    least(floor(probability * $bins), $bins - 1)::integer as bin,
    avg(probability) as predicted,
    avg(label) as observed,
    count(*) as n_rows
from predictions
where cell = $cell and split = 'test' and role in ('model', 'shuffled_control')
    and label is not null and probability is not null
group by all
order by bin
