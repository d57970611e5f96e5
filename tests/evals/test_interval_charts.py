"""The curve with interval whiskers on a log x axis, and grouped bars: labels escaped, ticks
at the data's own sizes, one whisker per point."""

from evals.charts import grouped_bars_svg, line_chart_svg


def test_a_log_x_curve_has_its_sizes_as_ticks_and_a_whisker_per_point():
    svg = line_chart_svg(
        {"<b>ranked</b>": [(64, 0.55), (256, 0.6), (1849, 0.66)]},
        intervals={"<b>ranked</b>": [(0.5, 0.6), (0.55, 0.65), (0.62, 0.7)]},
        title="held-out",
        x_label="comparisons",
        y_label="accuracy",
        y_range=(0.4, 0.8),
        log_x=True,
    )
    assert "<b>" not in svg and "&lt;b&gt;ranked&lt;/b&gt;" in svg
    assert all(f">{size}</text>" in svg for size in (64, 256, 1849))
    assert svg.count('<g stroke="#2457c5" stroke-width="1.5">') == 3
    assert "<circle" in line_chart_svg(
        {"a": [(1, 0.5)]}, title="t", x_label="x", y_label="y", log_x=True
    )


def test_grouped_bars_escape_and_draw_each_interval():
    svg = grouped_bars_svg(
        {
            "helpful": {"a & b": {"accuracy": 0.6, "low": 0.5, "high": 0.7, "n": 59}},
            "honest": {
                "a & b": {"accuracy": 0.4, "low": 0.3, "high": 0.5, "n": 61},
                "c": {"accuracy": None},
            },
        },
        title="HHH",
        y_label="accuracy",
    )
    assert "a &amp; b" in svg and "a & b" not in svg
    assert svg.count("<rect") == 2 + 2  # two bars, two legend swatches
    assert "n = 59" in svg
    assert grouped_bars_svg({}, title="t", y_label="y") == ""
