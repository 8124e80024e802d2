"""The portal's SVG charts (`cloud.portal.charts`): the time axis fits the data, the legend
is in correct English, and no text is drawn inside the stretched SVG (so it stays readable
on a phone)."""

from __future__ import annotations

from cloud.portal.charts import Line, chart_svg

HOUR = 3_600_000


def when(ms: int) -> str:
    return f"t{ms // 60_000}"


def test_one_reading_is_one_reading_and_many_are_counted() -> None:
    one = chart_svg("Pressure", [Line("p", "Pressure", "bar", ((HOUR, 1.5),))], 0, 2 * HOUR, when)
    assert "(1 reading)" in one
    many = tuple((HOUR + i * 1000, 1.0 + i) for i in range(1200))
    markup = chart_svg("Pressure", [Line("p", "Pressure", "bar", many)], 0, 2 * HOUR, when)
    assert "(1,200 readings)" in markup


def test_the_time_axis_starts_where_the_data_does() -> None:
    late = ((2 * HOUR - 600_000, 40.0), (2 * HOUR - 60_000, 42.0))
    markup = chart_svg("Flow", [Line("f", "Flow", "C", late)], 0, 2 * HOUR, when)
    assert "<time>t110</time>" in markup and "<time>t120</time>" in markup  # not from t0
    first_x = float(markup.split('points="', 1)[1].split(",", 1)[0])
    assert first_x < 60, "the first reading is drawn at the left edge, not squeezed right"
    assert "<text" not in markup and 'class="chart-axis"' in markup
    assert "40.0\N{EN DASH}42.0 C" in markup


def test_no_readings_say_so() -> None:
    assert "No readings in this range" in chart_svg("Flow", [], 0, HOUR, when)
