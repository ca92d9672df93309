"""One column specification for the table of variants: results.csv, summary.md, index.html and
the terminal all render from it, so a column is named, computed and formatted in one place.

A column has a title (which may depend on the rows: the task metric's name), the text of a cell
(Markdown and HTML; HTML escapes it), an optional shorter text and title for the terminal, its
alignment, the views it appears in, and the raw fields it exports to the CSV."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..units import fmt_bytes, fmt_seconds

Row = dict[str, Any]
Rows = Sequence[Row]
VIEWS = frozenset({"md", "html", "term"})


def pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2%}"


def _ci_pct(ci: Sequence[float] | None) -> str:
    return "" if not ci else f" [{ci[0]:.2%}, {ci[1]:.2%}]"


def ci_s(ci: Sequence[float] | None) -> str:
    return "" if not ci else f" [{fmt_seconds(ci[0])}, {fmt_seconds(ci[1])}]"


def metric_name(rows: Rows) -> str:
    """The task metric of the rows ('accuracy' for top-1)."""
    return next((r["metric"] for r in rows if r.get("metric") not in (None, "top1")), "accuracy")


def corr_name(rows: Rows) -> str:
    """The corruption column's title: accuracy, or the task metric the robustness ran with."""
    m = next((r["robustness_metric"] for r in rows if r.get("robustness_metric")), None)
    return f"corruption {m}" if m else "corruption acc."


def score(r: Row) -> str:
    """The accuracy cell: top-1 as a percentage, another metric as its value, both with the CI."""
    if r.get("metric") in (None, "top1"):
        return pct(r.get("accuracy")) + _ci_pct(r.get("accuracy_ci"))
    if r.get("score") is None:
        return "-"
    ci = r.get("score_ci")
    return f"{r['score']:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "")


def score_short(r: Row) -> str:
    return pct(r.get("accuracy")) if r.get("metric") in (None, "top1") else score(r)


def drop(r: Row) -> str:
    if r.get("metric") in (None, "top1"):
        return pct(r.get("accuracy_drop"))
    return "-" if r.get("score_drop") is None else f"{r['score_drop']:+.4g}"


def corr(r: Row) -> str:
    """Mean corruption accuracy, or the task metric's mean corruption score."""
    if r.get("mean_corruption_accuracy") is not None or r.get("mean_corruption_score") is None:
        return pct(r.get("mean_corruption_accuracy"))
    return f"{r['mean_corruption_score']:.4g}"


def corr_drop(r: Row) -> str:
    if r.get("corruption_drop") is None or r.get("mean_corruption_accuracy") is not None:
        return pct(r.get("corruption_drop"))
    return f"{r['corruption_drop']:+.4g}"


def fidelity(r: Row) -> str:
    """Agreement with the fp32 root: top-1 agreement and SQNR, '-' when not measured."""
    if r.get("n_fidelity") is None:
        return "-"
    parts = []
    if r.get("top1_agreement") is not None:
        parts.append(f"{r['top1_agreement']:.1%}")
    parts.append("exact" if r.get("fidelity_exact") else
                 "-" if r.get("sqnr_db") is None else f"{r['sqnr_db']:.1f} dB")
    return " / ".join(parts)


def _attack(r: Row) -> str:
    if r.get("attack_accuracy") is None:
        return "-"
    return f"{r['attack_accuracy']:.1%} ({r['attack']}, n={r.get('n_attack')})"


def _label(r: Row) -> str:
    return r["label"] + (" (baseline)" if r.get("is_baseline") else "")


def _ci_part(key: str, i: int) -> Callable[[Row], Any]:
    return lambda r: (r.get(key) or [None, None])[i]


def _field(key: str) -> tuple[str, Callable[[Row], Any]]:
    return key, lambda r: r.get(key)


@dataclass(frozen=True)
class Column:
    title: str | Callable[[Rows], str]
    text: Callable[[Row], Any]
    short: Callable[[Row], Any] | None = None        # the terminal's cell (default: text)
    short_title: str | Callable[[Rows], str] | None = None
    align: str = "right"
    views: frozenset = VIEWS
    csv: tuple[tuple[str, Callable[[Row], Any]], ...] = field(default_factory=tuple)

    def header(self, rows: Rows, view: str) -> str:
        t = self.short_title if view == "term" and self.short_title is not None else self.title
        return t(rows) if callable(t) else t

    def cell(self, r: Row, view: str) -> str:
        f = self.short if view == "term" and self.short is not None else self.text
        v = f(r)
        return "-" if v is None else str(v)


VARIANTS: tuple[Column, ...] = (
    Column("variant", _label, align="left",
           csv=(_field("variant_id"), _field("label"))),
    Column("target", lambda r: r["target"], align="left",
           csv=(_field("target"), _field("format"), _field("runtime"), _field("threads"),
                _field("batch"))),
    Column("p50 [95 % CI]", lambda r: fmt_seconds(r.get("p50_s")) + ci_s(r.get("p50_ci_s")),
           short=lambda r: fmt_seconds(r.get("p50_s"), compact=True), short_title="p50",
           csv=(_field("p50_s"), ("p50_ci_low_s", _ci_part("p50_ci_s", 0)),
                ("p50_ci_high_s", _ci_part("p50_ci_s", 1)), _field("p99_s"))),
    Column("n", lambda r: r.get("n_latency", "-"), views=frozenset({"md", "html"}),
           csv=(_field("n_latency"),)),
    Column(lambda rows: f"{metric_name(rows)} [95 % CI]", score, short=score_short,
           short_title=metric_name,
           csv=(_field("metric"), _field("score"), _field("accuracy"),
                ("accuracy_ci_low", _ci_part("accuracy_ci", 0)),
                ("accuracy_ci_high", _ci_part("accuracy_ci", 1)))),
    Column("n", lambda r: r.get("n_accuracy", "-"), views=frozenset({"md", "html"}),
           csv=(_field("n_accuracy"),)),
    Column("drop", drop, csv=(_field("accuracy_drop"), _field("score_drop"))),
    Column(corr_name, corr,
           short_title=lambda rows: corr_name(rows).replace("corruption acc.", "corr. acc."),
           csv=(_field("mean_corruption_accuracy"), _field("mean_corruption_score"))),
    Column(lambda rows: "corr. drop", corr_drop, views=frozenset({"md", "html"}),
           csv=(_field("corruption_drop"),)),
    Column("mCE", lambda r: "-" if r.get("mce") is None else f"{r['mce']:.3f}",
           views=frozenset({"html"}), csv=(_field("mce"), _field("relative_mce"))),
    Column("attacked acc.", _attack, views=frozenset({"md", "html"}),
           csv=(_field("attack_accuracy"), _field("attack"), _field("n_attack"))),
    Column("agreement / SQNR", fidelity, views=frozenset({"md", "html"}),
           csv=(_field("top1_agreement"), _field("sqnr_db"), _field("n_fidelity"))),
    Column("peak RSS", lambda r: fmt_bytes(r.get("peak_rss_bytes")),
           short=lambda r: fmt_bytes(r.get("peak_rss_bytes"), compact=True), short_title="RSS",
           csv=(_field("peak_rss_bytes"),)),
    Column("size", lambda r: fmt_bytes(r.get("model_bytes")),
           short=lambda r: fmt_bytes(r.get("model_bytes"), compact=True),
           csv=(_field("model_bytes"), _field("zlib_bytes"))),
    Column("frontier", lambda r: "yes" if r.get("on_frontier") else "",
           short=lambda r: "*" if r.get("on_frontier") else "", short_title="front",
           align="center", csv=(_field("on_frontier"), _field("is_baseline"))),
    # in the CSV only: facts of other sections (drift, sustained load, energy) and the errors
    Column("", lambda r: "", views=frozenset(),
           csv=(_field("field_clip"), _field("steady_p50_s"), _field("steady_over_burst"),
                _field("energy_per_inference_j"), _field("power_w"),
                ("errors", lambda r: " | ".join(r.get("errors") or []) or None))),
)


def in_view(view: str) -> list[Column]:
    return [c for c in VARIANTS if view in c.views]


def sorted_rows(rows: Rows) -> list[Row]:
    """Rows as every table lists them: by target, then fastest first."""
    return sorted(rows, key=lambda r: (r["target"], r.get("p50_s") or 1e9))


def csv_header() -> list[str]:
    return [name for c in VARIANTS for name, _ in c.csv]


def csv_row(r: Row) -> list[Any]:
    return ["" if (v := get(r)) is None else v for c in VARIANTS for _, get in c.csv]
