-- The window series the Images page can show: each symbol, interval, dataset and window size
-- of windows/windows with its first and last day (partition keys only).
-- params: none
-- grain: symbol, interval, dataset, window_size
select symbol, interval, dataset, window_size, min(date) as first_day, max(date) as last_day
from windows
group by all
order by all
