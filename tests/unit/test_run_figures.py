"""A run's accuracy and variance figures are laid out by fixed margins (`reports.plots.RUN_MARGINS`)
instead of tight_layout: whatever the records hold (1,000 rounds, variances from 1e-12 to 1e3, ten
tensors), every label stays inside the figure and the two panels' labels do not overlap."""

from __future__ import annotations

import pytest

from fedgossip.reports import plots

pytestmark = pytest.mark.timeout(60)

TENSORS = [f"layer{i}.weight" for i in range(10)]


def records(rounds: int, low: float, high: float) -> list[dict]:
    """Two nodes' records of `rounds` rounds, tensor variances spread from `low` to `high`."""
    out = []
    for node in range(2):
        for round_ in range(1, rounds + 1):
            spread = {name: low * (high / low) ** (i / (len(TENSORS) - 1)) for i, name in enumerate(TENSORS)}
            out.append(
                {"node": node, "round": round_, "test_accuracy": round_ / rounds, "layer_variance": spread}
            )
    return out


@pytest.mark.parametrize(("rounds", "low", "high"), [(3, 0.01, 0.1), (1000, 1e-12, 1e3)])
def test_run_figures_keep_every_label_inside_and_apart(tmp_path, monkeypatch, rounds, low, high):
    drawn = []

    def keep(fig, path, margins=None):  # lay out as _save does, keep the figure to measure it
        margins.apply(fig)
        fig.canvas.draw()
        drawn.append(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    data = records(rounds, low, high)
    plots.plot_run(data, tmp_path / "a.png", "an experiment with a rather long name, as users give")
    plots.plot_variance(data, tmp_path / "v.png", "an experiment with a rather long name, as users give")
    assert len(drawn) == 2
    for fig in drawn:
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:  # an axes' tight box holds what it draws: title, labels, tick labels, legend
            drawn_box = ax.get_tightbbox(renderer)
            assert fig.bbox.x0 <= drawn_box.x0 and drawn_box.x1 <= fig.bbox.x1, (ax.get_title(), drawn_box)
            assert fig.bbox.y0 <= drawn_box.y0 and drawn_box.y1 <= fig.bbox.y1, (ax.get_title(), drawn_box)
    left, right = drawn[1].axes
    renderer = drawn[1].canvas.get_renderer()
    assert left.get_tightbbox(renderer).x1 < right.get_tightbbox(renderer).x0  # the panels' labels apart


def test_margins_are_inches_whatever_the_figure_size():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    for width in (7, 12):
        fig = Figure(figsize=(width, 4))
        fig.subplots(1, 2)
        plots.Margins(left=0.7, right=0.2, bottom=0.5, top=0.4, gap=1.0).apply(fig)
        first, second = (ax.get_position() for ax in fig.axes)
        assert first.x0 * width == pytest.approx(0.7)
        assert (1 - second.x1) * width == pytest.approx(0.2)
        assert (second.x0 - first.x1) * width == pytest.approx(1.0)
        assert first.y0 * 4 == pytest.approx(0.5) and (1 - first.y1) * 4 == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (1e-12, 1e3, {"10⁻¹²", "10⁻⁶", "10⁰"}),  # many decades: decade labels only
        (2e-3, 6e-3, {"2×10⁻³", "3×10⁻³", "4×10⁻³", "6×10⁻³"}),  # no decade in view: labelled minors
    ],
)
def test_variance_axis_labels_are_plain_text_as_matplotlib_would_write_them(
    tmp_path, monkeypatch, low, high, expected
):
    drawn = []

    def keep(fig, path, margins=None):
        fig.canvas.draw()
        drawn.append(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    plots.plot_variance(records(3, low, high), tmp_path / "v.png", "a run")
    axis = drawn[0].axes[1].yaxis
    labels = {t.get_text() for t in axis.get_majorticklabels() + axis.get_minorticklabels() if t.get_visible()}
    labels.discard("")
    assert not any("$" in label for label in labels), labels  # no mathtext left to parse
    assert expected <= labels, labels
    # the same ticks as matplotlib's own formatter, written in plain text
    from matplotlib.ticker import LogFormatterSciNotation

    own = LogFormatterSciNotation(10, labelOnlyBase=False)
    own.set_axis(axis)
    own.set_locs(axis.get_minorticklocs())
    written = {plots.plain_label(own(x)) for x in axis.get_minorticklocs()} - {""}
    minor = {t.get_text() for t in axis.get_minorticklabels() if t.get_visible()} - {""}
    assert minor == written


def test_plain_label_turns_mathtext_into_superscripts():
    assert plots.plain_label(r"$\mathdefault{10^{-3}}$") == "10⁻³"
    assert plots.plain_label(r"$\mathdefault{2\times10^{-3}}$") == "2×10⁻³"
    assert plots.plain_label(r"$\mathdefault{10^{12}}$") == "10¹²"
    assert plots.plain_label(r"$\mathdefault{0.5}$") == "0.5"
    assert plots.plain_label("1.5") == "1.5"
