-- The candles of one series over a range of days for the Market chart: the last $max_bars of
-- them (a chart of more would not be readable), oldest first, each with how many the range holds.
-- params: $symbol, $interval: the series; $first_day, $last_day: UTC days, inclusive;
--   $max_bars: most candles returned
-- grain: open_time
with in_range as (
    select
        open_time,
        close_time,
        open_time + (close_time - open_time) / 2 as mid_time,
        open,
        high,
        low,
        close,
        volume,
        is_complete,
        case when close >= open then 'up' else 'down' end as direction,
        count(*) over () as bars_in_range
    from klines
    where symbol = $symbol and interval = $interval and date between $first_day and $last_day
    qualify row_number() over (order by open_time desc) <= $max_bars
)

select * from in_range
order by open_time
