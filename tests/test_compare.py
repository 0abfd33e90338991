"""`python -m bridge.demo` and `python -m evaluation.compare` end to end on tiny models.

One module fixture runs the demo pipeline on a small synthetic set with the tiny
variants (both trainers, export, comparison); the tests read its report and run the
comparison again on altered inputs.
"""

import csv
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, run_cli, run_module

from bridge.core.data.synth import SynthConfig, generate


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    data = root / "synthetic"
    generate(data, SynthConfig(seed=0, per_class=24, size=40, cases=24, raters=4))
    config = root / "tiny.toml"
    config.write_text(
        "\n".join([
            'name = "tiny"', f'output = "{root / "runs"}"', "seed = 0", "[data]",
            'source = "synthetic"', f'path = "{data}"', "image_size = 32",
            "val_fraction = 0.2", "test_fraction = 0.25", "[train]",
            'archs = ["vgg16_tiny"]', "epochs = 1", "batch_size = 16",
            "warmup_epochs = 0",
        ]) + "\n"
    )  # fmt: skip
    args = [
        "--config", str(config), "--models", str(root / "models"), "--out",
        str(root / "report"), "--bootstrap", "300",
    ]  # fmt: skip
    # ~6 min of CPU (a tiny backbone in both frameworks, 12 exports, two metric fits, the
    # comparison), beside the other xdist worker's full-size exports in CI. One backbone
    # only: a second one (resnet50_tiny) added about a third to this fixture and to the
    # comparisons below, and the tables group by backbone and framework the same way
    result = run_module("bridge.demo", *args, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().endswith("report.html")
    return root, args, result


def results_of(report_dir):
    return json.loads((report_dir / "results.json").read_text())


def compare_args(root, out, *extra):
    return [
        "--models", str(root / "models"), "--rated", str(root / "synthetic" / "rated"),
        "--out", str(out), "--bootstrap", "200", "--cpu", *extra,
    ]  # fmt: skip


def test_the_demo_writes_a_complete_report(demo):
    root, _, _ = demo
    report = root / "report"
    for name in ("report.html", "report.md", "results.json", "agreement.csv", "frameworks.csv",
                 "classification.csv", "inter_rater.csv", "layers.csv", "item_scores.csv",
                 "per_rater_srcc.csv", "classification_torch_vs_keras.csv",
                 "report.xlsx"):  # fmt: skip
        assert (report / name).is_file(), name
    # the workbook holds every CSV as a sheet, numbers as numbers (tests/test_workbook.py)
    from openpyxl import load_workbook

    book = load_workbook(report / "report.xlsx", read_only=True)
    assert set(book.sheetnames) >= {"About", "agreement", "item_scores"}
    sheet = list(book["agreement"].iter_rows(values_only=True))
    with open(report / "agreement.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert list(sheet[0]) == rows[0] and len(sheet) == len(rows)
    page = (report / "report.html").read_text()
    assert "SYNTHETIC DATA" in page and "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page  # self-contained
    # every table wraps or scrolls inside its box; an estimate and its interval stay whole
    assert page.count("<div class='table'><table>") >= 10 and "overflow-x:auto" in page
    assert re.search(r"<td>\d\.\d\d\u00a0\[-?\d\.\d\d,\u00a0-?\d\.\d\d\]</td>", page)
    assert (report / "report.md").read_text().count("SYNTHETIC DATA") >= 2
    figures = {p.stem for p in (report / "figures").glob("*.png")}
    assert {"srcc_overall", "scatter", "severity", "layers", "confusion", "examples"} <= figures
    results = results_of(report)
    assert results["synthetic"] is True
    # every backbone x framework, scored through the file exported from its own framework
    models = results["provenance"]["models"]
    masked = ("lpips_masked", "dists_masked")  # VGG16's, for the lesions' outlines
    assert {(m["backbone"], m["framework"], m["kind"]) for m in models} == {
        ("vgg16_tiny", f, k) for f in ("torch", "keras")
        for k in ("classifier", "features", "lpips", "dists", *masked)
    }  # fmt: skip
    assert all(m["origin"] == m["framework"] for m in models)


def test_true_signal_ranks_above_noise_with_the_human_ceiling_beside_them(demo):
    results = results_of(demo[0] / "report")
    assert results["agreement"]["n_groups"] == 8  # 24 cases of 8 simulated patients
    for aspect in ("color", "texture", "overall"):
        a = results["agreement"]["aspects"][aspect]
        rows = {r["metric"]: r for r in a["rows"]}
        truth = rows["true deviation (synthetic oracle)"]
        low, _, high = a["noise"]["bands"]["srcc"]
        assert a["noise"]["draws"] == 200 and low < 0 < high, aspect
        assert truth["srcc"]["estimate"] > 0.6 and truth["srcc"]["estimate"] > high, aspect
        assert truth["srcc"]["low"] > 0.3, aspect
        assert truth["plcc"]["estimate"] > 0.5 and truth["rmse"]["estimate"] > 0, aspect
        assert truth["plcc_in_sample"]["method"] == "none"  # labelled, no interval
        raters = a["raters"]
        ceiling, upper = raters["ceiling"], raters["upper_bound"]
        assert 0.3 < ceiling["estimate"] <= 1 and ceiling["low"] <= ceiling["estimate"]
        assert upper["estimate"] > ceiling["estimate"]  # a rater vs a mean that includes it
        assert raters["icc_2_1"] > 0.3 and raters["n_groups"] == 8
        like = truth["vs_raters"]
        assert like["minus_ceiling"]["estimate"] == pytest.approx(
            like["vs_others"]["estimate"] - ceiling["estimate"]
        )
        choice = a["best_choice"]
        assert choice["name"] == a["best"] and "chosen on these items" in choice["chosen"]
        others = len(choice["comparisons"])  # the best against each: K - 1; max-T over all pairs
        assert choice["family"] == others * (others + 1) // 2
        for comparison in choice["comparisons"].values():
            assert 0 <= comparison["p"] <= 1 and 0 <= comparison["p_adjusted"] <= 1
        assert all(r["vs_best"] is None for r in a["rows"] if r["family"] == "oracle")
    header, *lines = [
        line for line in (demo[0] / "report" / "report.md").read_text().splitlines()
        if line.startswith("| ")
    ][:60]  # fmt: skip
    assert "SRCC overall" in header and "like a rater (overall)" in header
    names = [line.split(" | ")[0][2:] for line in lines]
    assert names.index("true deviation (synthetic oracle)") < names.index(
        "noise band (95% of 200 draws)"
    )
    assert "human ceiling (a rater vs the other raters)" in names
    assert "upper bound (a rater vs all raters)" in names
    assert any(n.endswith("(best, chosen on these items)") for n in names)


BLOCKED = """
import sys
class Block:  # any import of a framework now fails
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'tensorflow', 'keras'):
            raise ImportError(f'{{name}} is blocked')
sys.meta_path.insert(0, Block())
from evaluation.compare import main
code = main({args!r})
assert not {{'torch', 'tensorflow', 'keras'}} & set(sys.modules)
sys.exit(code)
"""


def test_compare_on_imperfect_noise_ratings_with_no_framework_importable(demo, tmp_path):
    """One comparison on imperfect input, run with torch, tensorflow and keras unimportable.

    The input: ratings of pure noise with no oracle (truth.csv removed), five cases R1 did
    not rate, a subset of the raters, a model whose manifest does not match its file, and
    rated images outside the folder marked synthetic. The wiring: the family is adjusted
    and the noise band brackets 0; the missing cells are counted and the chosen raters
    used; the tampered model is left out and listed (`--strict` stops instead); no crops
    of the cases are shown, and the report says why.

    (With 8 patients the bootstrap is coarse; the rates are checked by simulation in
    test_stats_simulation.py. One comparison covers all of this input: each comparison of
    the demo's models takes minutes on CI's cores.)
    """
    root = demo[0]
    models = tmp_path / "models"
    shutil.copytree(root / "models", models)
    victim = next(models.glob("*-lpips-torch.onnx"))
    with open(victim, "ab") as f:
        f.write(b"\0")
    rated = tmp_path / "rated"
    shutil.copytree(root / "synthetic" / "rated", rated)  # outside the marked folder: "real"
    with open(rated / "ratings.csv", newline="") as f:
        rows = list(csv.reader(f))
    rng = np.random.default_rng(0)
    scored = [j for j, name in enumerate(rows[0]) if "_" in name]  # <rater>_<aspect>
    for row in rows[1:]:
        for j in scored:
            row[j] = str(int(rng.integers(1, 8)))
    r1 = [rows[0].index("R1_color"), rows[0].index("R1_texture")]  # after CASES, GROUP
    for row in rows[1:6]:
        row[r1[0]] = row[r1[1]] = ""  # R1 did not rate five cases
    with open(rated / "ratings.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    (rated / "truth.csv").unlink(missing_ok=True)  # no oracle: the truth is noise now
    args = compare_args(root, tmp_path / "r", "--raters", "R1,R2,R3")
    args[args.index("--rated") + 1] = str(rated)
    args[args.index("--models") + 1] = str(models)
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED.format(args=args)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = results_of(tmp_path / "r")
    for aspect, a in results["agreement"]["aspects"].items():
        comparisons = list(a["best_choice"]["comparisons"].values())
        assert comparisons, aspect
        flagged_raw = sum(c["p"] < 0.05 for c in comparisons)
        assert sum(c["p_adjusted"] < 0.05 for c in comparisons) <= flagged_raw, aspect
        low, _, high = a["noise"]["bands"]["srcc"]
        assert low < 0 < high
        assert not any(r["family"] == "oracle" for r in a["rows"])  # truth.csv removed
    assert "chosen on these items" in (tmp_path / "r" / "report.md").read_text()
    problems = results["problems"]
    assert len(problems) == 1 and victim.name in problems[0]
    assert victim.name in (tmp_path / "r" / "report.html").read_text()
    assert_one_line_error(
        run_module("evaluation.compare", *args, "--strict"), victim.name, "--strict"
    )
    assert results["rated"]["raters"] == ["R1", "R2", "R3"]
    overall = results["agreement"]["aspects"]["overall"]["raters"]
    assert overall["n_missing_cells"] >= 5 and overall["n_items"] == 24
    # images not marked synthetic: no crops of the cases in the report, and it says why
    assert results["images"] is False
    assert not (tmp_path / "r" / "figures" / "examples.png").exists()
    assert any("--with-images" in n for n in results["notes"])


def test_classification_and_framework_tables(demo):
    results = results_of(demo[0] / "report")
    rows = results["classification"]["rows"]
    assert len(rows) == 2 and all(0 <= r["balanced_accuracy"]["estimate"] <= 1 for r in rows)
    assert all(np.sum(r["confusion"]) == r["n"] for r in rows)
    pairs = results["classification"]["pairs"]
    assert {p["backbone"] for p in pairs} == {"vgg16_tiny"}
    assert all(0 <= p["mcnemar_p"] <= 1 for p in pairs)
    for row in results["frameworks"]:
        assert row["torch"]["train_seconds"] > 0 and row["keras"]["train_seconds"] > 0
        assert row["lpips_between"]["max_abs_difference"] >= 0
    # scikit-learn baselines on the exported features, on the same test split
    learned = results["learned"]["classification"]
    assert {(r["backbone"], r["framework"], r["method"]) for r in learned} == {
        ("vgg16_tiny", f, m) for f in ("torch", "keras")
        for m in ("logistic_regression", "linear_svm", "random_forest", "knn")
    }  # fmt: skip
    assert all(r["balanced_accuracy"]["estimate"] is not None for r in learned)
    rating = results["learned"]["rating"]["overall"]
    methods = [r["method"] for r in rating["regression"]]
    assert methods == ["ridge", "svr", "median_predictor", "median_category"]  # naive rows last
    assert rating["groups"] == 8  # 24 synthetic cases of 8 patients: the folds' groups
    assert len(rating["ordinal"]["chosen"]) == 5 and -1 <= rating["ordinal"]["qwk"] <= 1
    assert set(rating["raters"]) == {"R1", "R2", "R3", "R4", "mean"}
    page = (demo[0] / "report" / "report.md").read_text()
    assert "Classification baselines on pooled deep features" in page
    assert "Predicting the overall rating (nested cross-validation)" in page
    assert "median_predictor" in page and "median_category" in page  # rows of that table
    # metrics fitted to these ratings: held-out results only, never in the agreement tables
    fitted = results["fitted"]
    assert {(f["metric"], f["framework"]) for f in fitted} == {
        (m, f) for m in ("lpips", "dists") for f in ("torch", "keras")
    }
    assert all(f["pooled"]["fitted"]["low"] <= f["pooled"]["fitted"]["srcc"] for f in fitted)
    assert len(results["notes"]) == 4 and all("fitted" in n for n in results["notes"])
    # every scorer of the tables is named by what distinguishes it
    legend = {s["name"]: s["label"] for s in results["scorers"]}
    assert legend["lpips vgg16_tiny keras"].startswith("LPIPS · vgg16_tiny · keras-trained (run")
    assert "Scorers: what each name stands for" in page
    metrics = {r["metric"] for r in results["agreement"]["aspects"]["overall"]["rows"]}
    assert not any("fitted" in m for m in metrics)
    assert "Metrics fitted to ratings (held-out folds)" in page
    # layer choices are made inside cross-validation
    layers = results["agreement"]["aspects"]["overall"]["layers"]
    assert len(layers) == 4 and all(len(layer["cv"]["chosen"]) == 5 for layer in layers)
    # the cases have lesion outlines: every extractor also pooled under them, and the
    # masked scorers beside the box ones
    assert sum(layer["model"].endswith(" masked") for layer in layers) == 2
    assert {"lpips_masked vgg16_tiny torch", "dists_masked vgg16_tiny keras"} <= metrics


def test_retrieval_rows_and_a_choice_made_without_the_test_queries(demo):
    """Every extractor retrieves; shuffling the test labels moves no choice, only the scores."""
    import dataclasses

    from evaluation.catalog import discover
    from evaluation.classification_data import ImageBatches, PooledTaps, split_data
    from evaluation.options import Options
    from evaluation.retrieval import retrieval

    root = demo[0]
    found = results_of(root / "report")["retrieval"]
    assert {(r["backbone"], r["framework"]) for r in found["rows"]} == {
        ("vgg16_tiny", f) for f in ("torch", "keras")
    }
    for r in found["rows"]:
        for key in ("precision", "map", "knn"):
            assert 0 <= r[key]["low"] <= r[key]["estimate"] <= r[key]["high"] <= 1, key
        assert r["selection"]["on"].startswith("training split")
        assert r["classifier"]["accuracy"]["estimate"] is not None
    assert "Retrieval: the 16 nearest" in (root / "report" / "report.md").read_text()
    assert (root / "report" / "figures" / "retrieval.png").is_file()
    assert (root / "report" / "retrieval.csv").read_text().startswith("backbone,framework,file,k,")
    entries, _ = discover(root / "models")
    entries = [e for e in entries if e.kind == "features"][:2]
    data = split_data(entries)
    options = Options(bootstrap=100, prefer_gpu=False)
    first = retrieval(entries, data, PooledTaps(ImageBatches(), False), options)
    labels = [s.label for s in data.test][::-1]
    shuffled = dataclasses.replace(
        data,
        test=tuple(dataclasses.replace(s, label=y) for s, y in zip(data.test, labels, strict=True)),
    )
    second = retrieval(entries, shuffled, PooledTaps(ImageBatches(), False), options)
    assert [r["selection"] for r in first["rows"]] == [r["selection"] for r in second["rows"]]
    assert [r["map"] for r in first["rows"]] != [r["map"] for r in second["rows"]]


def test_the_agreement_table_matches_scipy_on_the_item_scores(demo):
    from scipy import stats

    report = demo[0] / "report"
    with open(report / "item_scores.csv", newline="") as f:
        table = list(csv.DictReader(f))
    results = results_of(report)
    for row in results["agreement"]["aspects"]["overall"]["rows"]:
        if row["family"] in ("oracle", "baseline"):
            continue
        x = np.array([float(r[row["metric"]]) for r in table])
        y = np.array([float(r["mean_overall"]) for r in table])
        assert abs(stats.spearmanr(x, y).statistic - row["srcc"]["estimate"]) <= 1e-9


def test_a_second_run_keeps_finished_work(demo, monkeypatch):
    """A second run finds every run trained, exported and fitted: only the comparison is
    left. Run in this process, with the comparison itself not run again (the fixture ran
    it, minutes on CI's cores): what is checked is what the run decides to do."""
    from bridge import demo as demo_command

    _, args, _ = demo
    scheduled, steps = [], []
    monkeypatch.setattr(demo_command, "_schedule", lambda tasks, *_: scheduled.extend(tasks))
    monkeypatch.setattr(demo_command, "_step", lambda title, *_: steps.append(title))
    assert demo_command.main(args) == 0
    assert scheduled == [] and steps == ["compare"], (scheduled, steps)


def test_bad_inputs_get_one_line_errors(demo, tmp_path):
    """In this process: each mistake is found before any model runs (`run_cli`)."""
    root = demo[0]
    assert_one_line_error(
        run_cli("evaluation.compare", *compare_args(root, tmp_path / "r", "--raters", "R9")),
        "unknown rater 'R9'",
    )
    assert_one_line_error(
        run_cli("evaluation.compare", "--models", str(tmp_path / "none")), "tox -e demo"
    )
    rated = tmp_path / "rated"
    shutil.copytree(root / "synthetic" / "rated", rated)
    text = (rated / "ratings.csv").read_text().splitlines()
    cells = text[3].split(",")
    cells[text[0].split(",").index("R1_color")] = "severe"  # after CASES, GROUP
    text[3] = ",".join(cells)
    (rated / "ratings.csv").write_text("\n".join(text) + "\n")
    args = compare_args(root, tmp_path / "r")
    args[args.index("--rated") + 1] = str(rated)
    assert_one_line_error(run_cli("evaluation.compare", *args), "ratings.csv", "line 4")
    (rated / "ratings.csv").write_text("\n".join(text[:3]) + "\n")  # fine again, fewer cases
    case = sorted(p for p in rated.iterdir() if p.is_dir())[0]
    for image in case.glob("[1-9].jpg"):
        image.unlink()  # a case with its reference but no comparison image
    assert_one_line_error(run_cli("evaluation.compare", *args), case.name, "no comparison")
    assert not (tmp_path / "r").exists()  # nothing half-written


SPIN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"


def test_scheduled_tasks_wait_for_what_they_need_and_name_the_failed_log(
    tmp_path, monkeypatch, caplog
):
    from bridge import demo
    from bridge.demo import Task, _schedule

    monkeypatch.setattr(demo, "HEARTBEAT_S", 0.3)
    caplog.set_level("INFO", logger="bridge.demo")
    marker = tmp_path / "slow-finished"
    slow = (
        "import time, pathlib; print('halfway', flush=True); time.sleep(1.5); "
        f"pathlib.Path({str(marker)!r}).touch()"
    )
    tasks = [
        Task("quick failure", ["-c", "import sys; print('boom at line 1'); sys.exit(3)"]),
        Task("slow success", ["-c", slow]),
        Task("after the failure", ["-c", "pass"], after=("quick failure",)),
    ]
    timings = demo.Timings()
    failure = r"quick failure failed \(exit 3; log .*quick_failure\.log"
    with pytest.raises(RuntimeError, match=failure):
        _schedule(tasks, 2, tmp_path / "logs", timings)
    assert marker.is_file()  # the other task was not cut short
    assert not (tmp_path / "logs" / "after_the_failure.log").exists()  # nor started
    assert "boom at line 1" in (tmp_path / "logs" / "quick_failure.log").read_text()
    assert "slow success" in caplog.text and "halfway" in caplog.text  # the heartbeat
    assert [r["step"] for r in timings.rows] == ["slow success"]  # a failed task is not timed
    check = f"import pathlib, sys; sys.exit(not pathlib.Path({str(marker)!r}).exists())"
    marker.unlink()
    ok = [
        Task("check", ["-c", check], after=("slow",)),  # only after "slow" made the marker
        Task("slow", ["-c", slow]),
        Task("spinner", ["-c", SPIN]),
    ]
    timings = demo.Timings()
    _schedule(ok, 2, tmp_path / "logs", timings)
    rows = {r["step"]: r for r in timings.public()}
    assert list(rows) == ["slow", "spinner", "check"]  # in start order
    assert rows["check"]["start_s"] >= rows["slow"]["wall_s"] - 0.1
    assert rows["spinner"]["cpu_s"] >= 0.2  # each process's own CPU time
    total = timings.total()
    assert total["wall_s"] < sum(float(r["wall_s"]) for r in rows.values())  # they overlapped
    assert "spinner" in timings.table() and "total" in timings.table()
    with pytest.raises(RuntimeError, match="never ready: orphan"):
        _schedule([Task("orphan", ["-c", "pass"], after=("nobody",))], 2, tmp_path, timings)
