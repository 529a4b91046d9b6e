-- The candles of each window of one dataset and window size, ready to be drawn: one row per
-- window, its candles as lists ordered oldest first, and the moving average of the close over the
-- window length at each candle (the line of the ohlc_bar chart). Everything shown is known at
-- decision_time: the candles are t-w+1 .. t and each average reads only candles up to its own.
-- An average is NULL where its w candles are not all present and consecutive (a gap, or the
-- files start too late); the window itself is complete (windows.sql excludes gap-crossing ones).
-- Dropped candles (irregular datasets) are still listed; dropped_mask says which to leave blank.
-- params:
--   $window_files  windows/windows Parquet file(s) of one symbol, interval and day
--   $kline_files   curated/klines Parquet files of that symbol and interval: the day and the
--                  datasets.window_history_days(interval) days before it (windows reach back
--                  w - 1 candles, their averages up to 2w - 2)
--   $bar_us        bar length in microseconds (60000000 for 1m)
--   $dataset       dataset name, e.g. 'regular'
--   $window_size   candles per window, e.g. 30
-- grain: decision_time
with bars as (
    select
        open_time,
        open,
        high,
        low,
        close,
        volume,
        avg(close) over recent as close_mean,
        min(open_time) over recent as first_open_time,
        count(*) over recent as bars_seen
    from read_parquet($kline_files)
    where is_complete
    window recent as (order by open_time rows between $window_size - 1 preceding and current row)
),

averaged as (
    select
        *,
        case
            when bars_seen = $window_size
                and first_open_time
                = open_time - to_microseconds(($window_size - 1) * $bar_us::bigint)
                then close_mean
        end as moving_average
    from bars
),

windows as (
    select decision_time, start_time, label, dropped_mask
    from read_parquet($window_files)
    where dataset = $dataset and window_size = $window_size
)

select
    w.decision_time,
    w.label,
    w.dropped_mask,
    list(b.open order by b.open_time) as open,
    list(b.high order by b.open_time) as high,
    list(b.low order by b.open_time) as low,
    list(b.close order by b.open_time) as close,
    list(b.volume order by b.open_time) as volume,
    list(b.moving_average order by b.open_time) as moving_average
from windows as w
inner join averaged as b
    on b.open_time >= w.start_time and b.open_time < w.decision_time
group by w.decision_time, w.label, w.dropped_mask
having count(*) = $window_size
order by w.decision_time
