-- The samples of the datasets: one row per window with the value and known_at of its label.
-- A window without its label (the label's future is not landed yet) is no sample.
-- params:
--   $window_files  glob of windows/windows partitions (Hive keys symbol, interval, date)
--   $label_files   glob of labels/labels partitions (same keys)
-- grain: symbol, interval, dataset, window_size, decision_time
with windows as (
    select symbol, interval, dataset, window_size, decision_time, label
    from read_parquet($window_files, hive_partitioning = true)
),

labels as (
    select symbol, interval, decision_time, label, value, known_at
    from read_parquet($label_files, hive_partitioning = true)
)

select
    w.symbol,
    w.interval,
    w.dataset,
    w.window_size,
    w.decision_time,
    w.label,
    l.value,
    l.known_at
from windows as w
inner join labels as l using (symbol, interval, decision_time, label)
order by w.symbol, w.interval, w.dataset, w.window_size, w.decision_time
