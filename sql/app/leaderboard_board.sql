-- The honest leaderboard for the explorer: every column of the `leaderboard` view (one row per
-- cell: the model's pooled test score, its CI, the baselines and shuffled control beside it), and
-- a verdict that reads the CI against the best baseline's AUROC rather than the point estimate.
-- params: $limit: the most rows returned
-- grain: cell
select
    *,
    case
        when isnan(auroc) or auroc_low is null then 'no CI'
        when auroc_low > best_baseline_auroc then 'above the best baseline (look closer)'
        when auroc_high < best_baseline_auroc then 'below the best baseline'
        else 'within noise of the best baseline'
    end as verdict
from leaderboard
limit $limit
