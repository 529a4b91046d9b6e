-- The recorded gaps (missing candles, never filled) of one series that overlap the charted span.
-- params: $symbol, $interval: the series; $first_day, $last_day: UTC days to read, inclusive;
--   $start, $end: the charted span [start, end)
-- grain: gap_start
select gap_start, gap_end, missing_bars
from kline_gaps
where
    symbol = $symbol
    and interval = $interval
    and date between $first_day and $last_day
    and gap_end > $start
    and gap_start < $end
order by gap_start
