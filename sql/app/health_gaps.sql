-- Lake health: the recorded gaps of each series, from the kline_gaps view.
-- params: none
-- grain: symbol, interval
select
    symbol,
    interval,
    count(*) as gaps,
    sum(missing_bars) as missing_bars,
    min(gap_start) as first_gap,
    max(gap_start) as last_gap
from kline_gaps
group by all
order by all
