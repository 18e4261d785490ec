"""`python -m preprocess.diagnose`: the original diagnosis's scenarios, measured and right.

One preprocessed copy of the synth corpus (the corpus deleted afterwards) is diagnosed
once; the tests compare the report with the corpus's ground truth and with independent
recomputations from files.jsonl.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from preprocess.config import load_config
from preprocess.diagnose import cli
from preprocess.diagnose.findings import Links, diagnose_output
from preprocess.diagnose.report import (
    plain,
    report_for_output,
    split_warning,
    verdict_a,
    write_report,
)
from preprocess.diagnose.whatif import (
    MIN_REAL_SECONDS,
    TRAIN_SEGMENT_SECONDS,
    grid_windows,
    min_real_samples,
    padding_curve,
    parse_what_if,
    recommend_segment_seconds,
    region_utterances,
    segment_grid,
)
from preprocess.measure import kernels
from shards import read_manifest
from tests.conftest import preprocess, read_jsonl, run_cmd
from tests.unit.test_report_scale import decide_all, synthetic_records, write_out

WHAT_IFS = ("original", "min_seconds=0.5,min_rms=0.0005")
LINK = re.compile(r"\[(\d+)\]\(files/([^)]+)\.tsv\)")


@pytest.fixture(scope="module")
def diagnosed(synth_corpus, tmp_path_factory) -> dict:
    """Preprocess a copy of the corpus, delete the copy, then diagnose OUT (CLI)."""
    root = tmp_path_factory.mktemp("diagnose")
    corpus = root / "corpus"
    shutil.copytree(synth_corpus[0], corpus)
    out = root / "out"
    preprocess(corpus, out, "--workers", "1")
    shutil.rmtree(corpus)  # from here on there is no audio to decode
    args = ["-m", "preprocess.diagnose", str(out), "--top", "5"]
    for spec in WHAT_IFS:
        args += ["--what-if", spec]
    proc = run_cmd(args, timeout=120)
    report = out / "report"
    return {
        "out": out,
        "corpus": corpus,
        "stdout": proc.stdout,
        "report": report,
        "md": (report / "report.md").read_text(encoding="utf-8"),
        "records": read_jsonl(out / "files.jsonl"),
        "truth": synth_corpus[1],
    }


def listed(report: Path, name: str) -> list[str]:
    """Paths in the TSV a report count links to."""
    lines = (report / "files" / f"{name}.tsv").read_text(encoding="utf-8").splitlines()
    return [line.split("\t")[0] for line in lines[1:]]


def truth_paths(truth: list[dict], *classes: str) -> list[str]:
    return sorted(t["path"] for t in truth if t["class"] in classes)


def md_row(md: str, first_cell: str) -> list[str]:
    """The cells of the markdown table row whose first cell is `first_cell`."""
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row {first_cell!r} in report.md")


# ---------------------------------------------------------------------------------------
# The report against ground truth
# ---------------------------------------------------------------------------------------


def test_every_planted_fault_is_counted_under_its_reason(diagnosed):
    expected = Counter(t["expected_reason"] for t in diagnosed["truth"])
    for reason, n in expected.items():
        cell = md_row(diagnosed["md"], f"`{reason}`")[2]
        assert cell == f"[{n}](files/reason-{reason}.tsv)", (reason, cell)
        want = sorted(t["path"] for t in diagnosed["truth"] if t["expected_reason"] == reason)
        assert sorted(listed(diagnosed["report"], f"reason-{reason}")) == want
    for reason, n in expected.items():  # the terminal summary says the same
        assert re.search(rf"^{reason}\s+{n}\s", diagnosed["stdout"], re.M), reason


def test_scenario_counts_point_at_the_planted_files(diagnosed):
    report, truth = diagnosed["report"], diagnosed["truth"]
    assert listed(report, "peak-low-normalized") == truth_paths(truth, "quiet_speech")
    assert listed(report, "peak-low-quiet") == truth_paths(truth, "dead")
    assert listed(report, "peak-low-silent") == truth_paths(truth, "digital_silence")
    assert sorted(listed(report, "silence-or-noise")) == truth_paths(
        truth, "mostly_silent", "noise_only", "digital_silence"
    )
    assert sorted(listed(report, "reason-duplicate")) == truth_paths(truth, "duplicate")
    assert set(listed(report, "dc-offset")) >= set(truth_paths(truth, "dc_offset"))
    assert set(listed(report, "clipping-any")) >= set(truth_paths(truth, "clipped"))
    # Every quiet intact speech file is one the original's RMS test would have discarded.
    assert set(truth_paths(truth, "quiet_speech")) <= set(listed(report, "rms-low-kept"))


def test_report_has_the_three_scenarios_each_with_a_verdict(diagnosed):
    md = diagnosed["md"]
    for title in ("A — too short / padding", "B — too quiet", "C — mostly silent"):
        assert f"\n## {title}\n" in md
        verdict = next(line for line in md.splitlines() if line.startswith(f"- **{title}:**"))
        assert re.search(r"— (FIXED by masks|FIXED by normalization|FILTERED|OK)", verdict)
        assert plain_line(verdict) in diagnosed["stdout"]
    assert "0 % counted" in md  # masks: padding never counted, whatever the length
    for section in (
        "Clipping",
        "DC offset",
        "Non-finite samples",
        "Duplicates",
        "Corrupt and non-audio files",
        "Sample rates, channels, formats",
    ):
        assert f"\n## {section}\n" in md
    for t in diagnosed["truth"]:  # each corrupt/not_audio file is listed with its error
        if t["expected_reason"] in ("corrupt", "not_audio"):
            assert f"`{t['path']}`" in md


def plain_line(md_line: str) -> str:
    return plain(md_line[2:])


def test_corrupt_files_are_listed_with_their_decoder_message(diagnosed):
    rows = {r["path"]: r for r in diagnosed["records"]}
    for t in diagnosed["truth"]:
        if t["expected_reason"] in ("corrupt", "not_audio"):
            detail = rows[t["path"]]["detail"]
            assert detail and detail.split("\n")[0][:40].replace("|", "\\|") in diagnosed["md"]


# ---------------------------------------------------------------------------------------
# What-if against an independent recomputation
# ---------------------------------------------------------------------------------------


def original_filter_kept(
    records: list[dict], min_seconds: float, min_rms: float, min_peak: float
) -> set[str]:
    """The original three rules, written again from the diagnosis text, plus the
    pipeline's one utterance rule (a kept file needs an utterance of ≥ 0.5 s): the run's
    utterances where it cut the file, else its trimmed audio must reach 0.5 s."""
    kept = set()
    for r in records:
        if r["reason"] in ("corrupt", "not_audio", "duplicate", "nonfinite"):
            continue
        passes = r["seconds"] >= min_seconds and r["rms"] > min_rms and r["peak"] > min_peak
        cut = r["status"] == "kept" or (r["detail"] or "").startswith("no utterance")
        has_utterance = r["segments"] > 0 if cut else round(r["trimmed_seconds"] * 16000) >= 8000
        if passes and has_utterance:
            kept.add(r["path"])
    return kept


@pytest.mark.parametrize(
    ("column", "rules"),
    [(1, (1.0, 0.001, 0.01)), (2, (0.5, 0.0005, 0.01))],
    ids=WHAT_IFS,
)
def test_what_if_table_equals_recomputation_from_files_jsonl(diagnosed, column, rules):
    records = diagnosed["records"]
    kept = original_filter_kept(records, *rules)
    row = md_row(diagnosed["md"], f"`{WHAT_IFS[column - 1]}`")
    assert row[1] == "original"
    assert row[2] == f"[{len(kept)}](files/whatif-{column}-kept.tsv)"
    hours = sum(r["seconds"] for r in records if r["path"] in kept) / 3600.0
    assert row[3] == f"{hours:.3f} h"
    assert set(listed(diagnosed["report"], f"whatif-{column}-kept")) == kept


def test_what_if_current_reproduces_files_jsonl(diagnosed):
    records = diagnosed["records"]
    kept = [r for r in records if r["status"] == "kept"]
    row = md_row(diagnosed["md"], "`current`")
    assert row[2] == f"[{len(kept)}](files/whatif-0-kept.tsv)"
    assert row[5] == str(sum(r["segments"] for r in kept))
    assert f"reproduces {len(records)} of {len(records)} decisions" in diagnosed["md"]


def test_what_if_spec_names():
    base = load_config(None)
    label, cfg = parse_what_if("min_seconds=0.5, min_rms=0.0005", base)
    assert (cfg.preset, cfg.original_min_seconds, cfg.original_min_rms) == ("original", 0.5, 5e-4)
    assert cfg.original_min_peak == base.original_min_peak
    assert parse_what_if("original", base)[1] == base.replace(preset="original")
    _, cfg = parse_what_if("min_active_fraction=0.1,normalize=false", base)
    assert (cfg.preset, cfg.min_active_fraction, cfg.normalize) == ("default", 0.1, False)
    with pytest.raises(ValueError, match="min_sec"):
        parse_what_if("min_sec=1", base)
    with pytest.raises(ValueError, match="vad_margin_db"):
        parse_what_if("vad_margin_db=6", base)


def test_what_if_refuses_what_files_jsonl_cannot_answer_and_says_what_to_do():
    base = load_config(None)
    # The segment length is a training setting now: scored with --segment-seconds.
    with pytest.raises(ValueError, match=r"train_ds.py --segment-seconds S.*--segment-seconds"):
        parse_what_if("segment_seconds=2", base)
    # Cutting utterances needs the speech masks, which OUT does not store: a rescan.
    for key in ("split_pause_seconds", "max_utterance_seconds", "min_utterance_seconds"):
        with pytest.raises(ValueError, match=rf"{key}.*speech mask.*diagnose CORPUS"):
            parse_what_if(f"{key}=2", base)


def test_what_if_estimates_only_files_the_run_did_not_cut(diagnosed):
    """Files the run kept keep their utterances as cut; a file it rejected on a threshold
    and a what-if keeps is estimated from its trimmed length, and counted as such."""
    f = diagnose_output(diagnosed["out"], what_ifs=["min_active_fraction=0,min_active_seconds=0"])
    current, loose = f.outcomes
    assert current.estimated == 0
    gained = loose.kept & ~current.kept
    assert gained.any() and loose.estimated == int(gained.sum())
    records = diagnosed["records"]
    for i in np.flatnonzero(gained):
        n = round(records[i]["trimmed_seconds"] * 16000)
        plan = kernels.utterance_plan(np.array([[0, n]]), 320000, 8000)
        assert f.table.utterances[i] == len(plan) > 0
    kept = [r for r in records if r["status"] == "kept"]
    assert loose.utterances == sum(r["segments"] for r in kept) + int(
        f.table.utterances[gained].sum()
    )


# ---------------------------------------------------------------------------------------
# The padding curve over training lengths, by hand and against the loader
# ---------------------------------------------------------------------------------------


def test_padding_curve_matches_hand_computation():
    # Files / utterances of 0.5 s and 1.5 s. At S = 2 s the original pads both files to
    # 2 s → 2 of 4 s. Ours: a window needs min(1 s, 1 s) real: 0.5 s is dropped, 1.5 s
    # gives one window with 0.5 s masked padding.
    c = padding_curve([0.5, 1.5], np.array([8000, 24000]), [1.0, 2.0])
    assert c.naive[1] == pytest.approx(0.5)
    assert c.padding[1] == pytest.approx(0.25)
    assert c.dropped[1] == pytest.approx(0.25)
    assert c.windows[1] == 1
    # At 1 s (a window needs 0.5 s real): 0.5 s gives one half-padded window, 1.5 s one
    # whole and one half → 1 s padding in 3 s of windows, nothing dropped.
    assert c.naive[0] == pytest.approx(1 / 3)
    assert c.padding[0] == pytest.approx(1 / 3)
    assert c.dropped[0] == 0.0 and c.windows[0] == 3


def test_padding_curve_equals_the_loaders_validation_windows():
    """Windows and padding per length as `shards.loader` cuts them (phase 0), utterance by
    utterance: the curve is the loader's rule, not a copy that could drift."""
    from shards import loader

    assert MIN_REAL_SECONDS == loader.MIN_REAL_SECONDS
    rng = np.random.default_rng(0)
    utterances = rng.integers(8000, 20 * 16000, 200)
    lengths = [0.5, 0.8, 1.0, 2.0, 3.5, 8.0]
    c = padding_curve([1.0], utterances, lengths)
    for i, length in enumerate(lengths):
        seg = round(length * 16000)
        assert min_real_samples(seg) == loader.min_real_samples(seg)
        windows = real = 0
        for n in utterances.tolist():
            starts = loader.window_starts(n, [[0, n]], seg, 0)
            assert len(starts) == loader.grid_windows(n, seg)
            windows += len(starts)
            real += sum(min(seg, n - s) for s in starts)
        assert c.windows[i] == windows
        assert c.padding[i] == pytest.approx((windows * seg - real) / (windows * seg))
        assert c.dropped[i] == pytest.approx(1 - real / int(utterances.sum()))
    count, used = grid_windows(utterances, 16000)
    assert count.tolist() == [loader.grid_windows(n, 16000) for n in utterances.tolist()]
    assert (used <= utterances).all()


def test_region_utterances_agree_with_the_pipeline_kernel():
    cfg = load_config(None)
    rng = np.random.default_rng(0)
    n = np.concatenate([[0, 7999, 8000, 320000, 320001, 900000], rng.integers(0, 1_000_000, 300)])
    count, audio = region_utterances(n, cfg)
    for i, length in enumerate(n.tolist()):
        plan = kernels.utterance_plan(np.array([[0, length]]), 320000, 8000)
        assert (count[i], audio[i]) == (len(plan), int(plan[:, 1].sum()))


def test_recommended_length_is_the_longest_within_the_padding_budget():
    c = padding_curve([1.0, 3.0], np.array([16000, 48000]), [0.5, 1.0, 1.5, 2.0])
    # Utterances of 1 s and 3 s: whole windows up to 1 s; at 1.5 s the 1 s one pads 0.5 s
    # of 4.5 s of windows; at 2 s each pads 1 s of 6 s.
    assert c.padding.tolist() == pytest.approx([0.0, 0.0, 0.5 / 4.5, 2 / 6])
    assert recommend_segment_seconds(c, 0.10) == 1.0
    assert recommend_segment_seconds(c, 0.12) == 1.5


def test_the_padding_table_of_an_output_is_its_manifests_utterances(diagnosed):
    """An OUT's table comes from manifest.jsonl: at every length, the windows the loader's
    validation grid counts over all its utterances (`shards.loader.count_windows`)."""
    from shards.loader import count_windows

    rows = read_manifest(diagnosed["out"])
    f = diagnose_output(diagnosed["out"])
    assert f.utterances.exact and sorted(f.utterances.samples) == sorted(r["samples"] for r in rows)
    for length in (0.5, 1.0, 2.0, 4.0, 8.0):
        i = f.curve.at(length)
        assert f.curve.seconds[i] == length
        assert f.curve.windows[i] == count_windows(rows, round(length * 16000), grid=True)
        (cells,) = [
            [c.strip() for c in line.strip("|").split("|")]
            for line in diagnosed["md"].splitlines()
            if re.match(rf"\| {length:g} s( \(|\s*\|)", line)
        ]
        assert cells[-1] == str(count_windows(rows, round(length * 16000), grid=True))


def test_segment_seconds_scores_a_training_length_and_the_advice_is_the_training_flag(
    diagnosed, tmp_path, capsys
):
    assert TRAIN_SEGMENT_SECONDS == 1.0  # train_ds.py's default (training/args.py)
    report = tmp_path / "r"
    assert cli.main([str(diagnosed["out"]), "--segment-seconds", "4", "--out", str(report)]) == 0
    md = (report / "report.md").read_text(encoding="utf-8")
    assert "windows of 4 s cut from" in md and md_row(md, "4 s (scored)")
    assert "`train_ds.py --segment-seconds" in md
    assert "preprocess.run" not in md and "re-run" not in md.replace("No preprocess re-run", "")
    # Longer than the utterance cap: nothing the loader could cut, said in one line.
    assert cli.main([str(diagnosed["out"]), "--segment-seconds", "30", "--out", str(report)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "max_utterance_seconds = 20" in err


def test_an_output_of_the_old_format_is_refused_in_one_line(tmp_path, capsys):
    """A format-1 OUT (fixed 1-s segments) has no utterances to score: one line saying to
    re-run preprocess (an OUT) or rescan (a diagnosis scan), no traceback."""
    cfg = load_config(None)
    records = synthetic_records(50, cfg, seed=1)
    for scan_only, says in ((False, "re-run `python -m preprocess.run"), (True, "rescan")):
        out = tmp_path / f"old-{scan_only}"
        write_out(out, records, cfg, scan_only=scan_only)
        index = json.loads((out / "index.json").read_text())
        index["format_version"] = 1
        index["config"].update(segment_seconds=1.0, min_valid_fraction=0.5)
        (out / "index.json").write_text(json.dumps(index))
        assert cli.main([str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "format 1" in err, err
        assert says in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------
# No audio, plots, raw corpora
# ---------------------------------------------------------------------------------------


def test_diagnosing_an_output_decodes_no_audio(diagnosed, monkeypatch, tmp_path):
    import soundfile

    assert not diagnosed["corpus"].exists()

    def refuse(*args, **kwargs):
        raise AssertionError("diagnosing OUT tried to decode audio")

    for name in ("read", "info", "SoundFile", "blocks"):
        monkeypatch.setattr(soundfile, name, refuse)
    path = report_for_output(diagnosed["out"], report_dir=tmp_path / "r")
    assert path == tmp_path / "r" / "report.md" and path.stat().st_size > 1000


def test_plots_are_non_empty_pngs(diagnosed):
    import matplotlib.image

    names = ("durations", "padding_curve", "levels", "gain", "active_fraction")
    for name in names:
        png = diagnosed["report"] / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        image = matplotlib.image.imread(png)
        assert image.shape[0] > 200 and image.std() > 0.01  # something is drawn
        assert f"({name}.png)" in diagnosed["md"]


def test_raw_corpus_is_scanned_into_the_working_directory(diagnosed, monkeypatch, tmp_path):
    """A raw corpus goes through run_pipeline(scan_only=True) into ./NAME.diagnose/ under
    the working directory, never beside or inside the corpus (it may be read-only)."""
    import preprocess.pipeline

    corpus = tmp_path / "mnt" / "raw"
    corpus.mkdir(parents=True)
    cwd = tmp_path / "work"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    calls = []

    def fake_run_pipeline(input_root, output, cfg, **kw):
        """A scan: the run's files.jsonl and stats.zarr, an index marked scan_only and an
        empty manifest (a scan writes no samples)."""
        calls.append((Path(input_root), Path(output), cfg, kw))
        Path(output).mkdir(parents=True, exist_ok=True)
        shutil.copy(diagnosed["out"] / "files.jsonl", Path(output) / "files.jsonl")
        shutil.copytree(diagnosed["out"] / "stats.zarr", Path(output) / "stats.zarr")
        index = json.loads((diagnosed["out"] / "index.json").read_text())
        index.update(scan_only=True, shards=[])
        (Path(output) / "index.json").write_text(json.dumps(index))
        (Path(output) / "manifest.jsonl").write_text("")
        return {}

    monkeypatch.setattr(preprocess.pipeline, "run_pipeline", fake_run_pipeline)
    assert cli.main([str(corpus), "--segment-seconds", "2", "--workers", "1"]) == 0
    (root, work, cfg, kw) = calls[0]
    assert work == cwd / "raw.diagnose" and root == corpus
    assert not (tmp_path / "mnt" / "raw.diagnose").exists()
    assert kw["scan_only"] is True and kw["workers"] == 1
    assert cfg == load_config(None)  # the training length never reaches the scan's config
    md = (work / "report" / "report.md").read_text(encoding="utf-8")
    assert md_row(md, "2 s (scored) (original)")
    # A scan writes no manifest, but each record lists its file's utterance lengths: the
    # padding table is computed from exactly the utterances a run with shards writes.
    assert "Lengths from files.jsonl: each kept file's utterance lengths" in md
    assert "(an estimate)" not in md
    f = diagnose_output(work)
    written = [r["samples"] for r in read_jsonl(diagnosed["out"] / "manifest.jsonl")]
    assert f.utterances.exact and sorted(f.utterances.samples.tolist()) == sorted(written)
    # A real OUT with shards is never overwritten by a scan.
    assert cli.main([str(corpus), "--out", str(diagnosed["out"])]) == 2
    assert json.loads((diagnosed["out"] / "index.json").read_text())["scan_only"] is False


def test_report_states_the_split_and_warns_when_val_is_smaller_than_asked(diagnosed):
    index = json.loads((diagnosed["out"] / "index.json").read_text(encoding="utf-8"))
    val = index["totals"]["splits"]["val"]
    assert "## Train/val split" in diagnosed["md"]
    row = md_row(diagnosed["md"], "val")
    assert row[1:4] == [str(val["files"]), str(val["groups"]), str(val["segments"])]
    assert row[-1] == "5.0 %"
    # 1.5 minutes of audio cannot give min_val_seconds (300 s): said in report and terminal.
    assert "**Warning:** val is smaller than asked" in diagnosed["md"]
    assert "warning: val is smaller than asked" in diagnosed["stdout"]
    f = diagnose_output(diagnosed["out"])
    f.cfg = f.cfg.replace(min_val_seconds=0.0)
    assert split_warning(f) is None
    f.splits = {**f.splits, "val": {**val, "fraction": 0.01}}
    assert "1.0 % of the kept audio for an asked 5.0 %" in split_warning(f)


# ---------------------------------------------------------------------------------------
# The report's figures and words on a small synthetic OUT (no audio; issue 24's defects)
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    """400 synthetic files (tests/unit/test_report_scale.py), two of them shorter than 50 ms,
    diagnosed; every figure is kept for inspection."""
    from preprocess.diagnose import plots

    cfg = load_config(None)
    records = synthetic_records(400, cfg, seed=3)
    for rec, seconds in zip(records[:2], (0.012, 0.04), strict=True):
        rec.update(seconds=seconds, active_seconds=seconds, trimmed_seconds=seconds)
    decide_all(records, cfg)
    root = tmp_path_factory.mktemp("small")
    write_out(root / "out", records, cfg)
    f = diagnose_output(root / "out")
    figures = {}
    real_save = plots._save

    def keep(fig, path):
        figures[Path(path).stem] = fig
        return real_save(fig, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "_save", keep)
        path = write_report(f, root / "report")
    return {"f": f, "records": records, "figures": figures, "md": path.read_text()}


def bars(ax) -> list:
    """The histogram bars drawn on `ax` (stacked parts each count their own files)."""
    from matplotlib.patches import Rectangle

    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_height() > 0]


def legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_durations_histogram_counts_every_decodable_file_even_the_shortest(small):
    ax = small["figures"]["durations"].axes[0]
    decodable = small["f"].decodable
    assert sum(b.get_height() for b in bars(ax)) == len(decodable)
    assert min(b.get_x() for b in bars(ax)) <= 0.012  # the 12 ms file is drawn


def test_every_histogram_splits_kept_from_rejected(small):
    figs, f = small["figures"], small["f"]
    kept = sum(r["status"] == "kept" for r in f.decodable)
    assert f"kept ({kept})" in legend(figs["durations"].axes[0])
    assert f"rejected ({len(f.decodable) - kept})" in legend(figs["durations"].axes[0])
    for ax in (*figs["levels"].axes, figs["active_fraction"].axes[0], figs["quality"].axes[0]):
        labels = legend(ax)
        assert any(t.startswith("kept (") for t in labels), labels
        assert any(t.startswith("rejected (") for t in labels), labels


def test_files_without_an_snr_estimate_are_counted_apart_not_drawn_at_the_floor(small):
    f, md = small["f"], small["md"]
    floor = [r for r in f.measured if r["snr_db"] is not None and r["snr_db"] <= -20.0]
    none = [r for r in f.measured if r["snr_db"] is None]
    assert floor and none
    ax = small["figures"]["quality"].axes[0]
    assert sum(b.get_height() for b in bars(ax)) == len(f.measured) - len(floor) - len(none)
    assert re.search(rf"\[{len(floor)}\]\(files/snr-floor.tsv\) files? whose speech frames", md)
    assert re.search(rf"\[{len(none)}\]\(files/snr-none.tsv\) files? with no value", md)
    assert f"{len(floor)} files with speech no louder than pauses" in ax.get_title()


def test_padding_warning_agrees_with_the_recommendation(small):
    # Utterances of 1.5 s: at 1 s the half-real tail window is used (25 % padding); at
    # 1.6 s one window pads 0.1 s (6 %); at 1.7 s 12 %. The remedy is longer, not shorter,
    # and it is the training flag, never a preprocess re-run.
    f = small["f"]
    curve = padding_curve([1.5] * 10, np.full(10, 24000), segment_grid(1.0))
    g = dataclasses.replace(
        f,
        segment_seconds=1.0,
        curve=curve,
        recommended=recommend_segment_seconds(curve, 0.10),
        links=Links(),
    )
    assert g.recommended == pytest.approx(1.6)
    line = verdict_a(g)
    assert "Warning: 25.0 % padding at 1 s exceeds 10.0 %" in line
    assert "the recommended 1.6 s (longer) pads 6.2 %: `train_ds.py --segment-seconds 1.6`" in line
    assert "shorter segments" not in line and "preprocess" not in line


def test_records_without_utterance_lengths_split_each_files_audio_among_its_utterances(small):
    """files.jsonl from before `utterance_samples` (these synthetic records lack it)."""
    f = small["f"]
    kept = [r for r in small["records"] if r["status"] == "kept"]
    assert not f.utterances.exact
    assert f.utterances.samples.size == sum(r["segments"] for r in kept)
    assert int(f.utterances.samples.sum()) == sum(round(r["valid_seconds"] * 16000) for r in kept)
    # The durations figure's right panel draws every utterance.
    ax = small["figures"]["durations"].axes[1]
    assert sum(b.get_height() for b in bars(ax)) == f.utterances.samples.size


def test_report_says_which_peak_it_shows(small):
    assert "Peak and RMS are of the 16 kHz mono signal" in small["md"]
    assert "16 kHz mono" in small["figures"]["levels"].axes[0].get_xlabel()
