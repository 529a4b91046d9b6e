-- Gaps in curated klines of one symbol, interval and UTC day: runs of expected bars that are absent.
-- A gap is recorded, never filled. A gap spanning midnight is one row in each day it touches.
-- params:
--   $curated_file  the curated/klines Parquet file of that symbol, interval and day
--   $bar_us        bar length in microseconds
--   $grid_start    first expected open_time (the day's 00:00 UTC)
--   $grid_end      end of the expected grid, exclusive (the next day's 00:00 UTC, or now for today)
-- grain: gap_start
with expected as (
    select unnest(range($grid_start::timestamptz, $grid_end::timestamptz, to_microseconds($bar_us)))
        as open_time
),

present as (
    select open_time from read_parquet($curated_file)
),

missing as (
    select open_time
    from expected
    anti join present using (open_time)
),

runs as (
    -- consecutive missing bars share one run_id (gaps and islands)
    select
        open_time,
        epoch_us(open_time) // $bar_us - row_number() over (order by open_time) as run_id
    from missing
)

select
    min(open_time) as gap_start,
    max(open_time) + to_microseconds($bar_us) as gap_end,
    count(*) as missing_bars
from runs
group by run_id
order by gap_start
