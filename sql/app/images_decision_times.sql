-- The windows of one series and day: their decision times (the picker's choices) and paired label.
-- params: $symbol, $interval, $dataset, $window_size: the window series; $day: UTC day
-- grain: decision_time
select decision_time, label, n_dropped
from windows
where
    symbol = $symbol
    and interval = $interval
    and dataset = $dataset
    and window_size = $window_size
    and date = $day
order by decision_time
