from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from vaebench.analysis import plots

NAN = math.nan


def _xs(line: Line2D) -> list[float]:
    return np.asarray(line.get_xdata(), dtype=float).tolist()


def _ys(line: Line2D) -> list[float]:
    return np.asarray(line.get_ydata(), dtype=float).tolist()


def _summary(**columns: list) -> pd.DataFrame:
    count = len(next(iter(columns.values())))
    frame = pd.DataFrame(columns)
    if "config" not in frame:
        frame["config"] = [f"config{i}" for i in range(count)]
    frame["n"] = 3
    return frame


def test_time_bars_draw_real_user_sys_per_configuration_with_a_dot_per_run() -> None:
    summary = _summary(
        config=["threads=1", "threads=2"],
        real_s_median=[10.0, 6.0],
        user_s_median=[9.5, 11.0],
        sys_s_median=[0.5, 0.6],
    )
    runs = pd.DataFrame(
        {
            "config": ["threads=1", "threads=1", "threads=2", "threads=2"],
            "status": ["ok", "ok", "ok", "failed"],
            "real_s": [9.8, 10.2, 6.0, NAN],
            "user_s": [9.4, 9.6, 11.0, NAN],
            "sys_s": [0.5, 0.5, 0.6, NAN],
        }
    )
    figure = plots.time_bars(summary, runs)
    assert figure is not None
    (ax,) = figure.axes
    assert len(ax.containers) == 3
    assert [len(bars) for bars in ax.containers] == [2, 2, 2]
    assert [bar.get_height() for bar in ax.containers[0]] == [10.0, 6.0]
    legend = ax.get_legend()
    assert legend is not None
    assert legend.get_texts()[0].get_text().startswith("real")
    assert "seconds" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["threads=1", "threads=2"]
    dots = sum(len(_xs(line)) for line in ax.get_lines())
    assert dots == 3 * 3  # three ok runs, three times each; the failed run draws nothing


def test_time_bars_need_real_time() -> None:
    assert plots.time_bars(_summary(real_s_median=[NAN, NAN])) is None


def test_thread_scaling_has_speedup_efficiency_and_the_ideal_lines() -> None:
    summary = _summary(threads=[1, 2, 4, NAN], real_s_median=[12.0, 6.5, 4.0, 3.0])
    figure = plots.thread_scaling(summary)
    assert figure is not None
    speed_ax, eff_ax = figure.axes
    assert speed_ax.get_xlabel() == eff_ax.get_xlabel() == "intra-op threads"
    assert "speed-up" in speed_ax.get_ylabel()
    assert "efficiency" in eff_ax.get_ylabel()
    measured, ideal = speed_ax.get_lines()
    assert ideal.get_label() == "ideal"
    assert _ys(ideal) == [1.0, 2.0, 4.0]
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()].count("ideal") == 1  # one entry for both panels' lines
    assert _ys(measured) == pytest.approx([1.0, 12 / 6.5, 3.0])
    eff_measured, eff_ideal = eff_ax.get_lines()
    assert _ys(eff_measured) == pytest.approx([1.0, 6 / 6.5, 0.75])
    assert _ys(eff_ideal) == [1.0, 1.0]


def test_thread_scaling_reads_the_training_rate_where_runs_have_it() -> None:
    # 3 s of start-up in each real time: 2 threads train 1.8x as fast, the process ends 1.1x sooner.
    summary = _summary(threads=[1, 2], real_s_median=[6.6, 6.0], samples_per_s_median=[1000.0, 1800.0])
    figure = plots.thread_scaling(summary)
    assert figure is not None
    speed_ax = figure.axes[0]
    assert _ys(speed_ax.get_lines()[0]) == pytest.approx([1.0, 1.8])
    assert "steady-state samples/s" in speed_ax.get_ylabel()


def test_thread_scaling_draws_a_line_per_group_of_the_other_varying_fields() -> None:
    summary = _summary(threads=[1, 2, 1, 2], batch_size=[128, 128, 512, 512], real_s_median=[10.0, 6.0, 8.0, 5.0])
    figure = plots.thread_scaling(summary)
    assert figure is not None
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert labels == ["batch_size=128", "batch_size=512", "ideal"]


def test_torch_default_threads_are_drawn_at_the_count_they_ran_with() -> None:
    # The seed leaves threads to torch (2 on this VM): its rows belong at x=2, not out of the figure.
    summary = _summary(threads=[1, NAN, 4, 1, NAN], omp_wait_policy=["default"] * 3 + ["active"] * 2,
                       fp_torch_threads_median=[1, 2, 4, 1, 2], samples_per_s_median=[100.0, 150.0, 120.0, 90.0, 99.0],
                       sys_user_median=[0.01, 0.02, 0.08, 0.01, 0.03], fp_usable_cores_median=[2] * 5,
                       **{f"{column}_median": [1.0] * 5 for column, _ in plots.PER_STEP if column != "sys_user"})
    scaling = plots.thread_scaling(summary)
    assert scaling is not None
    default, active = scaling.axes[0].get_lines()[:2]
    assert _xs(default) == [1, 2, 4] and _ys(default) == pytest.approx([1.0, 1.5, 1.2])
    assert _xs(active) == [1, 2]
    assert [t.get_text() for t in scaling.axes[0].get_xticklabels()] == ["1", "2\n(default)", "4"]
    counters = plots.kernel_counters(summary)
    assert counters is not None
    assert _xs(counters.axes[0].get_lines()[0]) == [1, 2, 4]


def test_a_thread_count_set_by_hand_and_by_default_is_one_point_and_a_lone_point_no_curve() -> None:
    summary = _summary(threads=[1, 2, NAN, NAN], loader=["reference"] * 3 + ["tensor"],
                       fp_torch_threads_median=[1, 2, 2, 2], samples_per_s_median=[100.0, 150.0, 140.0, 300.0])
    figure = plots.thread_scaling(summary)
    assert figure is not None
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert labels == ["loader=reference", "ideal"]  # tensor ran at one count only: no speed-up to draw
    assert _ys(figure.axes[0].get_lines()[0]) == pytest.approx([1.0, 1.5])  # the one set by hand


def test_thread_scaling_needs_two_thread_counts() -> None:
    assert plots.thread_scaling(_summary(threads=[4, 4], real_s_median=[1.0, 1.1])) is None
    assert plots.thread_scaling(_summary(real_s_median=[1.0, 1.1])) is None


def test_batch_size_figure_adds_gpu_utilization_only_where_measured() -> None:
    cpu = _summary(
        batch_size=[64, 128, 256],
        samples_per_s_median=[1e4, 2e4, 3e4],
        final_loss_median=[105.0, 106, 108],
    )
    figure = plots.batch_size_scaling(cpu)
    assert figure is not None
    assert [ax.get_ylabel() for ax in figure.axes] == [
        "samples/s (steady state)",
        "final training loss",
    ]
    assert all(ax.get_xlabel().startswith("batch size") for ax in figure.axes)
    assert "(at equal epochs: a larger batch took fewer steps)" in figure.axes[-1].get_title()
    stepped = plots.batch_size_scaling(cpu.assign(steps=[60, 60, 60]))
    assert stepped is not None and "(at equal --steps: a larger batch saw more samples)" in stepped.axes[-1].get_title()
    assert _ys(figure.axes[0].get_lines()[0]) == [1e4, 2e4, 3e4]

    gpu = cpu.assign(gpu_util_mean_median=[20.0, 35.0, 60.0])
    figure = plots.batch_size_scaling(gpu)
    assert figure is not None
    assert len(figure.axes) == 3
    assert "utilization" in figure.axes[1].get_ylabel()


def test_batch_size_figure_needs_a_curve() -> None:
    one_size = _summary(batch_size=[128, 128], samples_per_s_median=[1.0, 2.0], threads=[1, 2])
    assert plots.batch_size_scaling(one_size) is None


def test_loss_curves_draw_loss_per_epoch_and_against_wall_clock() -> None:
    epochs = pd.DataFrame(
        {
            "run_id": ["a"] * 3 + ["b"] * 3,
            "config": ["threads=1"] * 3 + ["threads=2"] * 3,
            "epoch": [1, 2, 3] * 2,
            "loss": [160.0, 120.0, 110.0, 161.0, 121.0, 111.0],
            "elapsed_s": [10.0, 20.0, 30.0, 6.0, 12.0, 18.0],
        }
    )
    figure = plots.loss_curves(epochs)
    assert figure is not None
    epoch_ax, time_ax = figure.axes
    assert epoch_ax.get_xlabel() == "epoch"
    assert "wall clock" in time_ax.get_xlabel()
    assert len(epoch_ax.get_lines()) == len(time_ax.get_lines()) == 2
    assert _xs(time_ax.get_lines()[1]) == [6.0, 12.0, 18.0]
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["threads=1", "threads=2"]
    assert plots.loss_curves(epochs.iloc[:0]) is None


def test_config_colors_give_each_configuration_its_own_in_the_order_given() -> None:
    assert plots.config_colors(["threads=2", "threads=1", "threads=2"]) == {"threads=2": "C0", "threads=1": "C1"}
    many = plots.config_colors(f"threads={i}" for i in range(11))  # ten would repeat the default cycle
    assert len(set(many.values())) == 11 and many["threads=0"] == colormaps["tab20"](0)


def test_loss_curves_draw_each_configuration_in_the_colour_given() -> None:
    epochs = pd.DataFrame({"run_id": ["a", "b", "c"], "config": ["x", "y", "x"], "epoch": [1, 1, 1],
                           "loss": [160.0, 161.0, 162.0], "elapsed_s": [1.0, 2.0, 3.0]})
    figure = plots.loss_curves(epochs, colors={"y": "C0", "x": "C7"})
    assert figure is not None
    assert [line.get_color() for line in figure.axes[0].get_lines()] == ["C7", "C0", "C7"]  # a line per run
    assert [line.get_color() for line in figure.legends[0].get_lines()] == ["C7", "C0"]


def test_gpu_timeline_has_a_panel_per_measured_quantity_and_names_what_utilization_is() -> None:
    samples = pd.DataFrame(
        {
            "t": [0.0, 0.1, 0.2],
            "gpu_util": [10.0, 90.0, 80.0],
            "gpu_power_w": [100.0, 200, 210],
            "gpu_mem_mb": [500.0] * 3,
        }
    )
    figure = plots.gpu_timeline({"batch_size=64 (r1)": samples, "batch_size=512 (r2)": samples})
    assert figure is not None
    assert len(figure.axes) == 3
    assert "share of time any kernel ran" in figure.axes[0].get_ylabel()
    assert "not compute efficiency" in figure.get_suptitle()
    assert all(len(ax.get_lines()) == 2 for ax in figure.axes)
    assert figure.axes[-1].get_xlabel() == "time since the run started (s)"


def test_gpu_timeline_lines_runs_up_at_the_start_of_training_when_every_run_knows_it() -> None:
    first = pd.DataFrame({"t": [0.0, 1.0, 2.0], "t_train": [-1.5, -0.5, 0.5], "gpu_util": [0.0, 5.0, 90.0]})
    second = first.assign(t_train=first["t_train"] - 1.0)
    figure = plots.gpu_timeline({"a (r1)": first, "b (r2)": second})
    assert figure is not None
    ax = figure.axes[0]
    assert [list(line.get_xdata()) for line in ax.get_lines()][:2] == [[-1.5, -0.5, 0.5], [-2.5, -1.5, -0.5]]
    assert "time since training started" in figure.axes[-1].get_xlabel()
    older = plots.gpu_timeline({"a (r1)": first, "c (r3)": first.drop(columns="t_train")})
    assert older is not None and older.axes[-1].get_xlabel() == "time since the run started (s)"


def test_gpu_timeline_draws_each_run_in_its_configurations_colour_and_a_style_of_its_own() -> None:
    samples = pd.DataFrame({"t": [0.0, 1.0], "gpu_util": [10.0, 90.0]})
    labels = ["a (r1)", "b (r2)", "a (r3)"]
    colors = {"a (r1)": "C4", "b (r2)": "C1", "a (r3)": "C4"}
    figure = plots.gpu_timeline(dict.fromkeys(labels, samples), colors)
    assert figure is not None
    lines = figure.axes[0].get_lines()
    assert [(line.get_color(), line.get_linestyle()) for line in lines] == [("C4", "-"), ("C1", "-"), ("C4", "--")]


def test_gpu_timeline_is_not_drawn_for_cpu_runs() -> None:
    cpu_only = pd.DataFrame({"t": [0.0, 0.1], "cpu_util": [50.0, 60.0]})
    assert plots.gpu_timeline({"cpu (r1)": cpu_only}) is None
    assert plots.gpu_timeline({}) is None


def test_step_split_stacks_the_four_parts() -> None:
    summary = _summary(
        split_data_ms=[0.5, 1.0],
        split_copy_ms=[NAN, 0.2],
        split_compute_ms=[5.0, 2.0],
        split_sync_ms=[NAN, 0.3],
    ).rename(columns=lambda c: f"{c}_median" if c.startswith("split") else c)
    figure = plots.step_split(summary)
    assert figure is not None
    (ax,) = figure.axes
    assert len(ax.containers) == 4
    data, copy, compute, sync = ax.containers
    assert [bar.get_y() for bar in compute] == [0.5, 1.2]  # stacked on data wait and copy
    assert [bar.get_y() + bar.get_height() for bar in sync] == pytest.approx([5.5, 3.5])
    assert "ms per step" in ax.get_ylabel()
    cpu = summary.assign(split_copy_ms_median=[0.01, 0.0], split_sync_ms_median=[0.01, 0.02])
    figure = plots.step_split(cpu)
    assert figure is not None
    (legend,) = figure.legends  # a part too thin to see in any bar is not listed
    assert [t.get_text() for t in legend.get_texts()] == ["data wait", "compute"]
    assert plots.step_split(_summary(real_s_median=[1.0])) is None


def test_flops_bars_are_achieved_gflops_under_their_own_peak_labelled_with_the_share() -> None:
    # The faster configuration has the larger peak: a share-of-peak bar would stand lower.
    summary = _summary(flops_frac_median=[0.5, 0.25], model_flops_per_s_median=[5e10, 1e11],
                       peak_flops_per_s_median=[1e11, 4e11])
    figure = plots.flops_share(summary)
    assert figure is not None
    (ax,) = figure.axes
    assert [bar.get_height() for bar in ax.containers[0]] == pytest.approx([50.0, 100.0])
    (peaks,) = ax.collections
    assert [segment[0][1] for segment in peaks.get_segments()] == pytest.approx([100.0, 400.0])
    assert ax.get_ylabel() == "GFLOP/s" and ax.get_yscale() == "linear"
    assert [t.get_text() for t in ax.texts] == ["50%", "25%"]
    gpu_beside_cpu = _summary(flops_frac_median=[0.5, 0.02], model_flops_per_s_median=[5e10, 1.4e12],
                              peak_flops_per_s_median=[1e11, 7e13])
    figure = plots.flops_share(gpu_beside_cpu)
    assert figure is not None and figure.axes[0].get_yscale() == "log"
    assert plots.flops_share(_summary(flops_frac_median=[NAN])) is None
    at_peak = plots.flops_share(_summary(flops_frac_median=[1.02, 0.999, 0.0031], model_flops_per_s_median=[1.0] * 3,
                                         peak_flops_per_s_median=[1.0] * 3))
    assert at_peak is not None and [t.get_text() for t in at_peak.axes[0].texts] == ["102%", "100%", "0.31%"]


def test_kernel_figure_has_a_line_per_wait_policy_and_allocator_against_threads() -> None:
    summary = _summary(
        threads=[1, 4, 1, 4, 1, 4], omp_wait_policy=["active", "active", "passive", "passive", "passive", "passive"],
        allocator=["system", "system", "system", "system", "jemalloc", "jemalloc"],
        sys_user_median=[0.09, 0.15, 0.10, 0.20, 0.00, 0.08], faults_per_step_median=[883, 755, 898, 909, 20, 25],
        voluntary_per_step_median=[0, 300, 0, 324, 0, 324], involuntary_per_step_median=[5, 60, 5, 85, 3, 94],
        runqueue_ms_per_step_median=[13.1, 55.8, 7.5, 28.1, 10.5, 51.8],
        samples_per_s_median=[4096, 2476, 4222, 4656, 5076, 3183], fp_usable_cores_median=[2] * 6,
    )
    figure = plots.kernel_counters(summary)
    assert figure is not None
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["sys / user, training window", "minor page faults per step",
                      "voluntary context switches per step", "involuntary context switches per step",
                      "run-queue wait per step (ms, summed over threads)", "samples/s (steady state)"]
    lines = figure.axes[1].get_lines()
    labels = [line.get_label() for line in lines]
    assert labels == ["omp_wait_policy=active,allocator=system", "omp_wait_policy=passive,allocator=system",
                      "omp_wait_policy=passive,allocator=jemalloc", "usable cores"]
    assert _ys(lines[2]) == [20, 25] and _xs(lines[0]) == [1, 4]
    assert figure.axes[0].get_xscale() == "log"


def test_kernel_figure_needs_threads_and_counters() -> None:
    assert plots.kernel_counters(_summary(threads=[1, 2], real_s_median=[1.0, 1.1])) is None
    assert plots.kernel_counters(_summary(threads=[2, 2], sys_user_median=[0.1, 0.2])) is None


def test_a_one_epoch_loss_figure_is_the_clock_panel_alone_and_does_not_magnify_noise() -> None:
    epochs = pd.DataFrame({"run_id": ["a", "b"], "config": ["x", "y"], "epoch": [1, 1],
                           "loss": [547.05, 547.36], "elapsed_s": [0.1, 0.2]})
    figure = plots.loss_curves(epochs)
    assert figure is not None
    (time_ax,) = figure.axes  # a per-epoch panel would stack every run at epoch 1
    assert "one epoch a run" in time_ax.get_title()
    low, high = time_ax.get_ylim()
    assert high - low >= 0.02 * 547 * 0.999  # a 0.06 % difference is not stretched over the panel
    drawn = [line.get_marker() for line in time_ax.get_lines()]
    assert [line.get_marker() for line in figure.legends[0].get_lines()] == drawn == ["h", "s"]  # one each


def test_runs_of_several_epochs_get_the_per_epoch_panel_too() -> None:
    epochs = pd.DataFrame({"run_id": ["a", "a"], "config": ["x", "x"], "epoch": [1, 2],
                           "loss": [160.0, 120.0], "elapsed_s": [1.0, 2.0]})
    figure = plots.loss_curves(epochs)
    assert figure is not None
    epoch_ax, _ = figure.axes
    assert epoch_ax.get_xticks().tolist() == [1.0, 2.0]


def test_the_time_bars_legend_sits_above_the_bars() -> None:
    summary = _summary(real_s_median=[3.6, 3.5], user_s_median=[3.1, 3.0], sys_s_median=[0.5, 0.4])
    figure = plots.time_bars(summary)
    assert figure is not None
    ax = figure.axes[0]
    assert ax.get_ylim()[1] >= 1.25 * 3.6 * 0.99 and ax.get_legend() is not None


def test_long_configuration_names_stand_upright_and_widen_the_figure() -> None:
    names = [f"threads=default,batch_size={b},epochs=21,loader=tensor,allocator=system" for b in (128, 256, 512, 1024)]
    summary = _summary(config=names, real_s_median=[4.0] * 4, user_s_median=[3.0] * 4, sys_s_median=[0.4] * 4)
    figure = plots.time_bars(summary)
    assert figure is not None
    ticks = figure.axes[0].get_xticklabels()
    assert all(tick.get_rotation() == 0 and "\n" in tick.get_text() for tick in ticks)
    longest = len("threads=default,")
    assert figure.get_figwidth() >= 4 * longest * plots.CHAR_IN


def test_too_many_long_names_to_stand_side_by_side_are_read_sideways_in_a_bounded_figure() -> None:
    names = [f"device=cuda:0,epochs={e},loader=device,pin_memory=off,compile=off,sync=epoch,cuda_graphs=off"
             for e in range(1, 22)]
    summary = _summary(config=names, real_s_median=[4.0] * 21, user_s_median=[3.0] * 21, sys_s_median=[0.4] * 21)
    figure = plots.time_bars(summary)
    assert figure is not None
    ticks = figure.axes[0].get_xticklabels()
    assert all(tick.get_rotation() == 90 and "\n" not in tick.get_text() for tick in ticks)
    assert figure.get_figwidth() <= plots.MAX_WIDTH_IN


def _covered(figure: Figure) -> list[str]:
    """The data a legend of `figure` lies on: bars and line points (sampled along each segment)."""
    figure.draw_without_rendering()
    legends = [*figure.legends, *(ax.get_legend() for ax in figure.axes if ax.get_legend() is not None)]
    boxes = [legend.get_window_extent() for legend in legends]
    hidden = []
    for ax in figure.axes:
        for patch in ax.patches:
            box = patch.get_window_extent()
            if box.width > 0 and box.height > 0 and any(box.overlaps(b) for b in boxes):
                hidden.append(f"bar {patch.get_label()}")
        for line in ax.get_lines():
            points = line.get_transform().transform(np.asarray(line.get_xydata(), dtype=float))
            steps = np.linspace(0, 1, 50)[:, None]
            dense = np.concatenate([a + steps * (b - a) for a, b in zip(points, points[1:], strict=False)] or [points])
            if any(b.contains(x, y) for b in boxes for x, y in dense if np.isfinite(x + y)):
                hidden.append(f"line {line.get_label()}")
    return hidden


def test_legends_never_cover_the_data() -> None:
    # The audited run: 7.26 ms of data wait under 17.56 of compute, one configuration.
    split = _summary(split_data_ms_median=[7.26], split_copy_ms_median=[0.01], split_compute_ms_median=[17.56],
                     split_sync_ms_median=[0.02], config=["threads=8,steps=60,data=embedded"])
    policies = ["active"] * 3 + ["default"] * 3 + ["passive"] * 3
    threads = _summary(threads=[1, 2, 4] * 3, omp_wait_policy=policies,
                       samples_per_s_median=[8070.0, 10592, 5563, 8384, 4334, 7193, 8133, 7677, 7182])
    ranks = _summary(world_size=[1, 2, 4], nproc_per_node=[1, 2, 4], samples_per_s_median=[7000.0, 9000, 9500])
    times = _summary(real_s_median=[3.6, 3.5], user_s_median=[3.1, 3.0], sys_s_median=[0.5, 0.4])
    figures = {"step_split": plots.step_split(split), "thread_scaling": plots.thread_scaling(threads),
               "rank_scaling": plots.rank_scaling(ranks), "times": plots.time_bars(times)}
    for name, figure in figures.items():
        assert figure is not None
        assert _covered(figure) == [], name
        if name != "times":  # the time bars keep theirs in the headroom above the bars
            assert [ax.get_legend() for ax in figure.axes] == [None] * len(figure.axes), name


def _crowd(count: int = 100) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A sweep of `count` configurations (threads x batch size), 5 runs each, one epoch a run: a
    summary, its runs and its epochs; config c's samples/s is 1,000 + c."""
    threads = [1, 2, 4, 8, 16]
    configs = [f"threads={threads[i % 5]},batch_size={32 * (1 + i // 5)}" for i in range(count)]
    summary = _summary(config=configs, threads=[threads[i % 5] for i in range(count)],
                       batch_size=[32 * (1 + i // 5) for i in range(count)],
                       samples_per_s_median=[1000.0 + i for i in range(count)],
                       real_s_median=[10.0] * count, user_s_median=[9.0] * count, sys_s_median=[1.0] * count,
                       final_loss_median=[100.0] * count,
                       flops_frac_median=[0.2] * count, model_flops_per_s_median=[1e9] * count,
                       sys_user_median=[0.1] * count,
                       **{f"{column}_median": [1.0] * count for column, _ in plots.SPLIT_PARTS},
                       **{f"{column}_median": [1.0] * count for column, _ in plots.PER_STEP if column != "sys_user"})
    runs = pd.DataFrame({"config": np.repeat(configs, 5), "status": "ok", "real_s": 10.0, "user_s": 9.0,
                         "sys_s": 1.0, "run_id": [f"r{i}" for i in range(5 * count)]})
    epochs = runs[["run_id", "config"]].assign(epoch=1, loss=100.0, elapsed_s=10.0)
    return summary, runs, epochs


def test_a_crowded_bar_figure_shows_the_fastest_and_slowest_and_the_baseline_and_says_how_many_more() -> None:
    summary, runs, _ = _crowd()
    baseline = str(summary["config"][50])
    for figure in (plots.time_bars(summary, runs, [baseline]), plots.step_split(summary, [baseline]),
                   plots.flops_share(summary, [baseline])):
        assert figure is not None
        ax = figure.axes[0]
        assert all(len(bars) == plots.MAX_SHOWN for bars in ax.containers)
        names = [t.get_text().replace(",\n", ",") for t in ax.get_xticklabels()]
        assert names[0] == summary["config"][99] and names[-1] == summary["config"][0] and baseline in names
        assert "the 12 fastest and 11 slowest of 100 configurations by samples/s and the baseline; 76 more in " \
               "summary.csv" in figure.get_suptitle()
    figure = plots.time_bars(summary, runs)
    assert figure is not None
    assert sum(len(_xs(line)) for line in figure.axes[0].get_lines()) == 3 * 5 * plots.MAX_SHOWN  # the shown runs' dots


def test_a_crowded_curve_figure_draws_at_most_the_cap_of_curves() -> None:
    summary, _, _ = _crowd(200)  # 40 batch sizes x 5 thread counts: 40 curves against threads, 5 against batch
    for figure in (plots.thread_scaling(summary), plots.kernel_counters(summary)):
        assert figure is not None
        assert len(figure.axes[0].get_lines()) <= plots.MAX_SHOWN + 1  # and the ideal or the cores line
        assert "of 40 curves by samples/s; 16 more in summary.csv" in figure.get_suptitle()
    batch = plots.batch_size_scaling(summary)
    assert batch is not None and len(batch.axes[0].get_lines()) == 5 and batch.get_suptitle() == ""


def test_a_crowded_loss_figure_draws_a_median_line_per_shown_configuration() -> None:
    summary, _, epochs = _crowd()
    figure = plots.loss_curves(epochs, summary)
    assert figure is not None
    (ax,) = figure.axes
    assert len(ax.get_lines()) == plots.MAX_SHOWN  # not 5 runs each
    assert len(figure.legends[0].get_texts()) == plots.MAX_SHOWN
    assert "76 more in summary.csv" in figure.get_suptitle() and "median" in figure.get_suptitle()
    unranked = plots.loss_curves(epochs)  # no summary to rank by: every configuration, no legend
    assert unranked is not None and not unranked.legends
