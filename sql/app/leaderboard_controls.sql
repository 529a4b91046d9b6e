-- What the original research reported, and why it is kept apart: the `controls` view (leaky
-- labels, shuffled labels, seed_replica) with its `why`.
-- params: $limit: the most rows returned
-- grain: cell
select
    cell,
    why,
    symbol,
    interval,
    dataset,
    window_size,
    model,
    protocol,
    training,
    label,
    auroc,
    auroc_low,
    auroc_high,
    accuracy,
    best_baseline,
    best_baseline_auroc,
    known_at_ok
from controls
limit $limit
