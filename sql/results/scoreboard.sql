-- Every model's and shuffled control's pooled test score with the baselines and the shuffled
-- control on the same rows beside it, and why the row is kept off the leaderboard (null: it is
-- honest). The shared body of the `leaderboard` and `controls` views.
-- AUROC is NaN where a set holds one class only; DuckDB sorts NaN above every number, so
-- rankings and the best baseline skip it.
-- params: none (a catalog view over the `metrics` view)
-- grain: cell
with pooled as (
    select *
    from metrics
    where split = 'test' and block is null
),

train as (
    select
        cell,
        scorer,
        auroc as train_auroc
    from metrics
    where split = 'train'
),

baselines as (
    select
        cell,
        arg_max(scorer, auroc) filter (where not isnan(auroc)) as best_baseline,
        max(auroc) filter (where not isnan(auroc)) as best_baseline_auroc,
        any_value(auroc) filter (where scorer = 'majority') as majority_auroc,
        any_value(auroc_low) filter (where scorer = 'majority') as majority_auroc_low,
        any_value(auroc_high) filter (where scorer = 'majority') as majority_auroc_high,
        any_value(accuracy) filter (where scorer = 'majority') as majority_accuracy,
        any_value(accuracy_low) filter (where scorer = 'majority') as majority_accuracy_low,
        any_value(accuracy_high) filter (where scorer = 'majority') as majority_accuracy_high,
        any_value(auroc) filter (where scorer = 'persistence') as persistence_auroc,
        any_value(auroc_low) filter (where scorer = 'persistence') as persistence_auroc_low,
        any_value(auroc_high) filter (where scorer = 'persistence') as persistence_auroc_high,
        any_value(accuracy) filter (where scorer = 'persistence') as persistence_accuracy,
        any_value(accuracy_low) filter (where scorer = 'persistence') as persistence_accuracy_low,
        any_value(accuracy_high) filter (
            where scorer = 'persistence'
        ) as persistence_accuracy_high,
        any_value(auroc) filter (where scorer = 'logistic_returns') as logistic_returns_auroc,
        any_value(auroc_low) filter (
            where scorer = 'logistic_returns'
        ) as logistic_returns_auroc_low,
        any_value(auroc_high) filter (
            where scorer = 'logistic_returns'
        ) as logistic_returns_auroc_high,
        any_value(accuracy) filter (
            where scorer = 'logistic_returns'
        ) as logistic_returns_accuracy,
        any_value(accuracy_low) filter (
            where scorer = 'logistic_returns'
        ) as logistic_returns_accuracy_low,
        any_value(accuracy_high) filter (
            where scorer = 'logistic_returns'
        ) as logistic_returns_accuracy_high
    from pooled
    where role = 'baseline'
    group by cell
),

-- the shuffled control of a model is its own cell: same series, model, training and label
shuffled as (
    select
        symbol,
        interval,
        dataset,
        window_size,
        model,
        training,
        label,
        auroc as shuffled_auroc,
        auroc_low as shuffled_auroc_low,
        auroc_high as shuffled_auroc_high,
        accuracy as shuffled_accuracy,
        accuracy_low as shuffled_accuracy_low,
        accuracy_high as shuffled_accuracy_high
    from pooled
    where role = 'shuffled_control'
),

scored as (
    select
        p.*,
        t.train_auroc,
        nullif(concat_ws(
            '; ',
            case
                when p.protocol = 'seed_replica' then 'test before train (seed_replica)'
                when not p.is_honest then 'dishonest protocol ' || p.protocol
            end,
            case when p.label_is_leaky then 'leaky label: drawn in the image' end,
            case when p.shuffled then 'shuffled labels: trained on permuted labels' end,
            case
                when p.is_honest and not p.known_at_ok
                    then 'training known_at reaches the test block'
            end
        ), '') as why
    from pooled as p
    left join train as t using (cell, scorer)
    where p.role in ('model', 'shuffled_control')
)

select
    s.cell,
    s.symbol,
    s.interval,
    s.dataset,
    s.window_size,
    s.model,
    s.scorer,
    s.role,
    s.protocol,
    s.training,
    s.label,
    -- ranked among the rows of the same view: honest rows apart from the controls
    rank() over (
        partition by
            s.symbol, s.interval, s.dataset, s.window_size, s.label, s.protocol, s.training,
            s.why is null
        order by case when isnan(s.auroc) then null else s.auroc end desc nulls last
    ) as rank,
    s.n_rows,
    s.positive_rate,
    s.auroc,
    s.auroc_low,
    s.auroc_high,
    s.accuracy,
    s.accuracy_low,
    s.accuracy_high,
    s.mcc,
    s.train_auroc,
    b.best_baseline,
    b.best_baseline_auroc,
    not isnan(s.auroc) and s.auroc > b.best_baseline_auroc as beats_baselines,
    b.* exclude (cell, best_baseline, best_baseline_auroc),
    sh.* exclude (symbol, interval, dataset, window_size, model, training, label),
    s.suspicious,
    s.suspicious_reason,
    s.known_at_ok,
    s.test_start,
    s.test_end,
    s.fingerprint,
    s.why
from scored as s
left join baselines as b using (cell)
left join shuffled as sh
    on
        s.role = 'model'
        and s.symbol = sh.symbol
        and s.interval = sh.interval
        and s.dataset = sh.dataset
        and s.window_size = sh.window_size
        and s.model = sh.model
        and s.training = sh.training
        and s.label = sh.label
