-- The experiment cells of one series that have test predictions, with the span of their test
-- rows, for the Market page's prediction panel.
-- params: $symbol, $interval: the series
-- grain: cell
select
    cell,
    any_value(model) as model,
    any_value(label) as label,
    bool_or(is_control) as is_control,
    min(test_start) as test_start,
    max(test_end) as test_end
from metrics
where symbol = $symbol and interval = $interval and split = 'test' and block is null
group by cell
order by is_control, cell
