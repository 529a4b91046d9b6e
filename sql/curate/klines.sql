-- Curated klines for one symbol-day: raw klines deduplicated, then resampled to one bar length.
-- A bar is built only from base bars that exist: one whose base bars are partly missing is kept
-- with is_complete = false, one with none is absent (kline_gaps records it). Nothing is invented.
-- Sums of doubles add the base bars in open_time order: unordered, threads add them in varying
-- order and reruns differ in the last bits.
-- params:
--   $raw_files  list of raw/klines Parquet files of one symbol, base interval and UTC day
--   $base_us    length of the raw (base) interval in microseconds, e.g. 60000000 for 1m
--   $bar_us     length of the curated bar in microseconds, a multiple of $base_us
-- grain: open_time
with raw as (
    select * from read_parquet($raw_files, file_row_number = true)
),

deduplicated as (
    -- a later landing supersedes an earlier copy of a bar; within one landing the later row wins
    select *
    from raw
    qualify row_number() over (
        partition by open_time order by ingested_at desc, file_row_number desc
    ) = 1
),

bucketed as (
    select
        time_bucket(to_microseconds($bar_us), open_time) as bar_open_time,
        *
    from deduplicated
)

select
    bar_open_time as open_time,
    arg_min(open, open_time) as open,
    max(high) as high,
    min(low) as low,
    arg_max(close, open_time) as close,
    sum(volume order by open_time) as volume,
    bar_open_time + to_microseconds($bar_us - 1000) as close_time,
    sum(quote_volume order by open_time) as quote_volume,
    sum(trades)::bigint as trades,
    sum(taker_buy_base_volume order by open_time) as taker_buy_base_volume,
    sum(taker_buy_quote_volume order by open_time) as taker_buy_quote_volume,
    count(*) as base_bars,
    count(*) = $bar_us // $base_us as is_complete,
    string_agg(distinct source, ',' order by source) as source
from bucketed
group by bar_open_time
order by open_time
