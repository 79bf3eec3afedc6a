"""Small helpers over grafana-foundation-sdk: every panel gets the datasource variable, an id, a
description and its queries with explicit ref ids, so the dashboards read as a list of panels."""

from __future__ import annotations

import string
from dataclasses import dataclass

from grafana_foundation_sdk.builders import bargauge, common as cb, dashboard as db, heatmap, histogram
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import gauge
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from . import config as C

DS = dm.DataSourceRef(type_val=C.DATASOURCE["type"], uid=C.DATASOURCE["uid"])


@dataclass(frozen=True)
class Q:
    """One query: PromQL, legend, instant or range, table format."""
    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False


def _targets(queries: list[Q]) -> list[prometheus.Dataquery]:
    out = []
    for ref, q in zip(string.ascii_uppercase, queries, strict=False):
        t = prometheus.Dataquery().expr(q.expr).ref_id(ref).datasource(DS)
        t = t.legend_format(q.legend or "__auto")
        t = t.instant() if q.instant else t.range()
        if q.table:
            t = t.format(PromQueryFormat.TABLE)
        out.append(t)
    assert len(out) == len(queries), "more than 26 queries in one panel"
    return out


def thresholds(steps) -> db.ThresholdsConfig:
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=v, color=c) for c, v in steps])


def _common(p, title: str, description: str, queries: list[Q], w: int, h: int, unit: str | None,
            lo: float | None, hi: float | None, steps, decimals: int | None = None):
    p = p.title(title).description(description).datasource(DS).span(w).height(h)
    p = p.targets(_targets(queries))
    if unit:
        p = p.unit(unit)
    if lo is not None:
        p = p.min(lo)
    if hi is not None:
        p = p.max(hi)
    if steps:
        p = p.thresholds(thresholds(steps))
    if decimals is not None:
        p = p.decimals(decimals)
    return p


def _legend(placement="bottom", calcs=("lastNotNull", "max")):
    return (cb.VizLegendOptions().show_legend(True).display_mode(cm.LegendDisplayMode.TABLE if calcs
                                                                 else cm.LegendDisplayMode.LIST)
            .placement(cm.LegendPlacement(placement)).calcs(list(calcs)))


def _colours(p, colours: dict[str, str] | None):
    """Fixed colours per series name (e.g. one per unit state)."""
    for name, colour in (colours or {}).items():
        p = p.override_by_name(name, [dm.DynamicConfigValue(id_val="color", value={
            "mode": "fixed", "fixedColor": colour})])
    return p


def ts(title, description, queries, *, unit=None, lo=None, hi=None, steps=None, w=12, h=8,
       stack=False, bars=False, threshold_zones=False, decimals=None, legend_calcs=("lastNotNull", "max"),
       colours=None):
    p = _common(timeseries.Panel(), title, description, queries, w, h, unit, lo, hi, steps, decimals)
    p = _colours(p, colours)
    p = p.legend(_legend(calcs=legend_calcs)).tooltip(
        cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
    p = p.line_width(1).fill_opacity(10 if not stack else 60)
    if stack:
        p = p.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    if bars:
        p = p.draw_style(cm.GraphDrawStyle.BARS)
    if threshold_zones and steps:
        p = p.thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.AREA))
    if steps and not threshold_zones:
        p = p.color_scheme(db.FieldColor().mode(dm.FieldColorModeId.PALETTE_CLASSIC))
    return p


def stat_(title, description, queries, *, unit=None, lo=None, hi=None, steps=None, w=4, h=4,
          decimals=None, no_value=None, graph=True, mappings=None):
    p = _common(stat.Panel(), title, description, queries, w, h, unit, lo, hi, steps, decimals)
    p = p.graph_mode(cm.BigValueGraphMode.AREA if graph else cm.BigValueGraphMode.NONE)
    p = p.color_mode(cm.BigValueColorMode.VALUE if steps else cm.BigValueColorMode.NONE)
    p = p.reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    if no_value is not None:
        p = p.no_value(no_value)
    if mappings:
        p = p.mappings(mappings)
    return p


def gauge_(title, description, queries, *, unit=None, lo=None, hi=None, steps=None, w=4, h=4,
           decimals=None):
    p = _common(gauge.Panel(), title, description, queries, w, h, unit, lo, hi, steps, decimals)
    return (p.show_threshold_markers(True)
            .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def bars(title, description, queries, *, unit=None, lo=None, hi=None, steps=(("blue", None),), w=8, h=8,
         decimals=None, horizontal=True, colours=None):
    p = _common(bargauge.Panel(), title, description, queries, w, h, unit, lo, hi, steps, decimals)
    p = _colours(p, colours)
    p = p.display_mode(cm.BarGaugeDisplayMode.GRADIENT).orientation(
        cm.VizOrientation.HORIZONTAL if horizontal else cm.VizOrientation.VERTICAL)
    return p.reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))


def band_heatmap(title, description, queries, *, w=12, h=8, unit="short"):
    """A heatmap of pre-bucketed series (one query per band, in band order: the y axis follows
    the query order), counts coloured by a continuous scheme."""
    p = _common(heatmap.Panel(), title, description, queries, w, h, unit, None, None, None)
    p = (p.calculate(False)
         .color(heatmap.HeatmapColorOptions().mode(hm.HeatmapColorMode.SCHEME).scheme("Oranges")
                .fill("dark-orange").scale(hm.HeatmapColorScale.EXPONENTIAL).exponent(0.5)
                .steps(64).reverse(False).min(0))
         .y_axis(heatmap.YAxisConfig().axis_placement(cm.AxisPlacement.LEFT).reverse(False))
         .rows_frame(heatmap.RowsHeatmapOptions().layout(cm.HeatmapCellLayout.UNKNOWN))
         .cell_gap(1).show_value(cm.VisibilityMode.AUTO)
         .mode(cm.TooltipDisplayMode.SINGLE).show_y_histogram()
         .show_legend())
    return p


def hist(title, description, queries, *, unit=None, w=8, h=8, bucket_count=20):
    p = _common(histogram.Panel(), title, description, queries, w, h, unit, None, None, None)
    return p.bucket_count(bucket_count).fill_opacity(60).legend(_legend(calcs=()))


def timeline(title, description, queries, *, mappings, w=24, h=8, steps=None, row_height=0.9):
    p = _common(statetimeline.Panel(), title, description, queries, w, h, None, None, None, steps)
    p = p.mappings(mappings).show_value(cm.VisibilityMode.AUTO).row_height(row_height)
    p = p.merge_values(True).legend(_legend(calcs=()))
    if steps is None:
        p = p.color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
    return p


def table_(title, description, queries, *, unit=None, w=12, h=8, steps=None, decimals=None,
           transformations=None, overrides=None):
    p = _common(table.Panel(), title, description, queries, w, h, unit, None, None, steps, decimals)
    for t in transformations or ():
        p = p.with_transformation(dm.DataTransformerConfig(id_val=t[0], options=t[1]))
    for name, props in (overrides or {}).items():
        p = p.override_by_name(name, [dm.DynamicConfigValue(id_val=k, value=v) for k, v in props.items()])
    return p


def value_map(mapping: dict[int | str, tuple[str, str]]) -> list:
    """Value -> (text, colour) mappings."""
    return [dm.ValueMap(options={str(k): dm.ValueMappingResult(text=t, color=c, index=i)
                                 for i, (k, (t, c)) in enumerate(mapping.items())})]


def row(title: str) -> db.Row:
    return db.Row(title).datasource(DS)
