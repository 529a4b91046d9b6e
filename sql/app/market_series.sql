-- The series the Market page can chart: each symbol and interval of the curated klines with its
-- first and last day (partition keys only, so no kline is read).
-- params: none
-- grain: symbol, interval
select symbol, interval, min(date) as first_day, max(date) as last_day
from klines
group by all
order by symbol, interval
