"""Leaderboard: the honest scores with their CIs beside every baseline, the suspicious flags, the
controls apart with why, and one cell's detail (config, learning curve, calibration, curves)."""

from __future__ import annotations

from functools import partial

import altair as alt
import numpy as np
import polars as pl
import streamlit as st

from app.charts import tooltips
from app.data import lake, query, require_catalog
from ml.cards import CARD, CheckpointError, checkpoint_dir, read_card
from ml.splits import label_horizon_bars

ROW_LIMIT = 5000  # leaderboard and controls rows shown; one per cell
PREDICTION_LIMIT = 200_000  # test rows of one cell for its curves
CALIBRATION_BINS = 10
THRESHOLD = 0.5  # the confusion matrix's decision threshold
DIAGONAL = {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]}  # a ROC curve's chance line
DETAIL_KEY = "leaderboard_detail_cell"  # the cell detail's selectbox; a click in a table sets it
# filter label → leaderboard column
FILTERS = {
    "Symbol": "symbol",
    "Interval": "interval",
    "Dataset": "dataset",
    "Window": "window_size",
    "Model": "model",
    "Protocol": "protocol",
    "Label": "label",
    "Horizon (bars)": "label_horizon_bars",
}
# scorer shown beside the model → the leaderboard's column prefix of its AUROC and CI
COMPARED = {
    "majority": "majority",
    "persistence": "persistence",
    "logistic_returns": "logistic_returns",
    "shuffled control": "shuffled",
}
TABLE_COLUMNS = (
    "cell", "rank", "verdict", "auroc", "auroc_low", "auroc_high", "best_baseline",
    "best_baseline_auroc", "shuffled_auroc", "train_auroc", "accuracy", "n_rows", "suspicious",
    "suspicious_reason",
)  # fmt: skip

DETAIL_COLUMNS = (
    "scorer", "role", "split", "block", "n_rows", "auroc", "auroc_low", "auroc_high", "accuracy",
    "mcc",
)  # fmt: skip


def main() -> None:
    st.title("Leaderboard")
    require_catalog()
    board = with_label_horizon(query("leaderboard_board", limit=ROW_LIMIT))
    controls = with_label_horizon(query("leaderboard_controls", limit=ROW_LIMIT))
    chosen = filter_choices(
        pl.concat([board.select(FILTERS.values()), controls.select(FILTERS.values())])
    )
    board, controls = board.filter(chosen), controls.filter(chosen)
    show_board(board)
    show_controls(controls)
    show_detail(board["cell"].to_list() + controls["cell"].to_list())


def with_label_horizon(cells: pl.DataFrame) -> pl.DataFrame:
    """``cells`` with the bars each one's label looks ahead (0 for a leaky control's label), as
    training defines it (the folds' ``horizon_bars`` is the calendar's longest, not the label's)."""
    horizon = pl.col("label").map_elements(label_horizon_bars, return_dtype=pl.Int64)
    return cells.with_columns(horizon.alias("label_horizon_bars"))


def filter_choices(cells: pl.DataFrame) -> pl.Expr:
    """The sidebar's filters over the values in ``cells``, as one predicate (none chosen: all)."""
    st.sidebar.header("Filters")
    predicate = pl.lit(True)
    for title, column in FILTERS.items():
        chosen = st.sidebar.multiselect(title, cells[column].unique().sort().to_list())
        if chosen:
            predicate &= pl.col(column).is_in(chosen)
    return predicate


def show_board(board: pl.DataFrame) -> None:
    st.caption(
        "Honest cells only: each model's pooled test AUROC with its 95 % block-bootstrap CI, "
        "every baseline and the shuffled-label control on the same test rows beside it."
    )
    if board.is_empty():
        st.info("No leaderboard rows match the filters.")
        return
    st.altair_chart(auroc_chart(board), width="stretch")
    show_flags(board)
    clickable_table(board.select(TABLE_COLUMNS), "leaderboard_table")


def auroc_chart(board: pl.DataFrame) -> alt.LayerChart:
    """AUROC per cell: a point with its CI as a rule, for the model and each scorer beside it."""
    scores = scores_long(board)
    base = alt.Chart(scores).encode(
        y=alt.Y("cell:N", title=None, axis=alt.Axis(labelLimit=0)),  # keys are long; show whole
        yOffset=alt.YOffset("scorer:N"),
        color=alt.Color(
            "scorer:N",
            scale=alt.Scale(scheme="tableau10"),
            legend=alt.Legend(orient="top", title=None),
        ),
        tooltip=tooltips("cell:N", "scorer:N", "auroc:Q", "auroc_low:Q", "auroc_high:Q"),
    )
    rules = base.mark_rule().encode(
        x=alt.X("auroc_low:Q", title="test AUROC"), x2=alt.X2("auroc_high")
    )
    points = base.mark_point(filled=True, size=60).encode(
        x=alt.X("auroc:Q", scale=alt.Scale(zero=False))
    )
    chance = (
        alt.Chart(pl.DataFrame({"auroc": [0.5]}))
        .mark_rule(strokeDash=[4, 4])
        .encode(x=alt.X("auroc:Q"))
    )
    return alt.layer(rules, points, chance)


def scores_long(board: pl.DataFrame) -> pl.DataFrame:
    """One row per (cell, scorer) with AUROC and CI: the model, each baseline, the control."""
    model = board.select(
        "cell", pl.col("model").alias("scorer"), "auroc", "auroc_low", "auroc_high"
    )
    beside = [
        board.select(
            "cell",
            pl.lit(name).alias("scorer"),
            pl.col(f"{prefix}_auroc").alias("auroc"),
            pl.col(f"{prefix}_auroc_low").alias("auroc_low"),
            pl.col(f"{prefix}_auroc_high").alias("auroc_high"),
        )
        for name, prefix in COMPARED.items()
    ]
    return pl.concat([model, *beside]).drop_nulls("auroc").filter(pl.col("auroc").is_not_nan())


def show_flags(board: pl.DataFrame) -> None:
    flagged = board.filter(pl.col("suspicious"))
    if flagged.is_empty():
        st.success("No suspicious scores among these cells.")
        return
    for row in flagged.select("cell", "suspicious_reason").iter_rows(named=True):
        st.warning(f"Suspicious: {row['cell']}: {row['suspicious_reason']}")


def show_controls(controls: pl.DataFrame) -> None:
    st.header("What the original research reported, and why")
    st.caption(
        "Leaky-label controls, shuffled-label controls and seed_replica rows: the setups behind "
        "the original research's high scores, rerun here. They are kept off the leaderboard; "
        "`why` says what each one leaks or tests."
    )
    if controls.is_empty():
        st.info("No control cells in the lake.")
        return
    clickable_table(controls, "controls_table")


def clickable_table(rows: pl.DataFrame, key: str) -> None:
    """``rows`` (one per cell) as a table whose row, when clicked, opens that cell's detail."""
    st.dataframe(
        rows,
        hide_index=True,
        key=key,
        on_select=partial(open_detail, key, rows["cell"].to_list()),
        selection_mode="single-row",
    )


def open_detail(table_key: str, cells: list[str]) -> None:
    chosen = st.session_state[table_key].selection.rows
    if chosen:
        st.session_state[DETAIL_KEY] = cells[chosen[0]]


def show_detail(cells: list[str]) -> None:
    st.header("Cell detail")
    st.caption("Click a row of either table above, or choose a cell here.")
    if st.session_state.get(DETAIL_KEY) not in cells:
        st.session_state[DETAIL_KEY] = None  # filtered away
    cell = st.selectbox("Cell", cells, index=None, placeholder="Choose a cell", key=DETAIL_KEY)
    if cell is None:
        return
    metrics = query("leaderboard_cell_metrics", cell=cell)
    own = metrics.filter(pl.col("role") != "baseline")
    pooled = own.filter((pl.col("split") == "test") & pl.col("block").is_null())
    st.subheader(f"Configuration of {cell}")
    st.json(configuration(pooled.row(0, named=True)), expanded=False)
    card = model_card(pooled["model"][0], cell)
    show_learning_curve(card)
    st.dataframe(metrics.select(DETAIL_COLUMNS), hide_index=True)
    show_prediction_plots(cell)


def configuration(pooled: dict[str, object]) -> dict[str, object]:
    keys = (
        "cell", "fingerprint", "protocol", "training", "label", "label_is_leaky", "shuffled",
        "fold", "train_start", "validation_start", "train_end", "test_start", "test_end",
        "embargo_bars", "purge_embargo_bars", "horizon_bars", "last_training_known_at",
        "embargo_end", "known_at_ok", "seed", "epochs_run", "best_epoch", "stop_reason",
        "created_at",
    )  # fmt: skip
    return {key: str(pooled[key]) if pooled[key] is not None else None for key in keys}


def model_card(model: str, cell: str) -> dict[str, object] | None:
    try:
        return read_card(checkpoint_dir(lake(), model, cell) / CARD)
    except CheckpointError as exc:
        st.info(f"No model card for this cell: {exc}")
        return None


def show_learning_curve(card: dict[str, object] | None) -> None:
    if card is None:
        return
    with st.expander("Model card (training configuration and data)"):
        st.json({key: card[key] for key in ("config", "data", "image", "fingerprint", "weights")})
    history = pl.DataFrame(card["training"]["history"]).unpivot(
        ["train_loss", "validation_loss"], index="epoch", variable_name="loss"
    )
    st.subheader("Learning curve")
    chart = (
        alt.Chart(history)
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("value:Q"),
            color=alt.Color("loss:N"),
        )
    )
    st.altair_chart(chart, width="stretch")


def show_prediction_plots(cell: str) -> None:
    predictions = query("leaderboard_cell_predictions", cell=cell, limit=PREDICTION_LIMIT)
    if predictions.is_empty():
        st.info("This cell has no test predictions with a label.")
        return
    labels = predictions["label"].to_numpy()
    scores = predictions["probability"].to_numpy()
    left, right = st.columns(2)
    with left:
        st.subheader("Confusion matrix")
        st.altair_chart(confusion_chart(labels, scores), width="stretch")
        st.subheader("ROC curve")
        st.altair_chart(curve_chart(roc_points(labels, scores), "fpr", "tpr", chance=DIAGONAL))
    with right:
        st.subheader("Calibration")
        calibration = query("leaderboard_cell_calibration", cell=cell, bins=CALIBRATION_BINS)
        st.altair_chart(calibration_chart(calibration), width="stretch")
        st.subheader("Precision-recall curve")
        positive_rate = float(np.mean(labels == 1))
        no_skill = {"recall": [0.0, 1.0], "precision": [positive_rate] * 2}
        st.altair_chart(curve_chart(pr_points(labels, scores), "recall", "precision", no_skill))


def confusion_chart(labels: np.ndarray, scores: np.ndarray) -> alt.LayerChart:
    predicted = scores >= THRESHOLD
    actual = labels == 1
    counts = pl.DataFrame(
        {
            "actual": ["up", "up", "down", "down"],
            "predicted": ["up", "down", "up", "down"],
            "rows": [
                int(np.sum(a & p)) for a in (actual, ~actual) for p in (predicted, ~predicted)
            ],
        }
    )
    base = alt.Chart(counts).encode(
        x=alt.X("predicted:N", sort=["up", "down"], axis=alt.Axis(labelAngle=0)),
        y=alt.Y("actual:N", sort=["up", "down"]),
    )
    light_on_dark = alt.condition(
        alt.datum.rows > max(counts["rows"].max(), 1) / 2, alt.value("white"), alt.value("black")
    )
    return alt.layer(
        base.mark_rect().encode(color=alt.Color("rows:Q", legend=None)),
        base.mark_text(fontSize=16).encode(text=alt.Text("rows:Q"), color=light_on_dark),
    ).properties(height=200)


def calibration_chart(calibration: pl.DataFrame) -> alt.LayerChart:
    """Observed up-rate against mean P(up) per bin; a point's area is its bin's row count."""
    diagonal = (
        alt.Chart(pl.DataFrame({"p": [0.0, 1.0]}))
        .mark_line(strokeDash=[4, 4], color="grey")
        .encode(x=alt.X("p:Q"), y=alt.Y("p:Q"))
    )
    base = alt.Chart(calibration).encode(
        x=alt.X("predicted:Q", title="mean predicted probability", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("observed:Q", title="observed up rate", scale=alt.Scale(domain=[0, 1])),
        tooltip=tooltips("bin:Q", "predicted:Q", "observed:Q", "n_rows:Q"),
    )
    rows = alt.Size("n_rows:Q", title="rows in bin", legend=alt.Legend(orient="bottom"))
    return alt.layer(diagonal, base.mark_line(), base.mark_circle().encode(size=rows))


def roc_points(labels: np.ndarray, scores: np.ndarray) -> pl.DataFrame:
    tp, fp = cumulative_hits(labels, scores)
    return pl.DataFrame(
        {"fpr": np.r_[0.0, fp / max(fp[-1], 1)], "tpr": np.r_[0.0, tp / max(tp[-1], 1)]}
    )


def pr_points(labels: np.ndarray, scores: np.ndarray) -> pl.DataFrame:
    tp, fp = cumulative_hits(labels, scores)
    return pl.DataFrame({"recall": tp / max(tp[-1], 1), "precision": tp / (tp + fp)})


def cumulative_hits(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives at each distinct threshold, from the highest score down."""
    order = np.argsort(-scores, kind="stable")
    hits = labels[order] == 1
    last_of_tie = np.r_[np.diff(scores[order]) != 0, True]
    return np.cumsum(hits)[last_of_tie], np.cumsum(~hits)[last_of_tie]


def curve_chart(
    points: pl.DataFrame, x: str, y: str, chance: dict[str, list[float]]
) -> alt.LayerChart:
    """A curve over [0, 1]², with what no skill scores (``chance``, the same columns) dashed."""
    unit = alt.Scale(domain=[0, 1])
    encoding = {"x": alt.X(f"{x}:Q", scale=unit), "y": alt.Y(f"{y}:Q", scale=unit)}
    line = alt.Chart(pl.DataFrame(chance)).mark_line(strokeDash=[4, 4], color="grey")
    return alt.layer(line.encode(**encoding), alt.Chart(points).mark_line().encode(**encoding))


main()
