"""Profiles, the runner and the experiment grids on the smoke profile (tiny model, tiny generated data)."""
import pytest

from fewdims.errors import FewdimsError
from fewdims.chapters import EXPERIMENTS, open_chapter
from fewdims.chapters.base import Chapter, random_dim_sets
from fewdims.profiles import available_profiles, load_profile
from fewdims.runner import Runner


class Experiments(Chapter):
    """Every chapter on one runner: ex.token() is the token chapter's results, ex.baseline(task) the reference."""

    def __getattr__(self, name):
        if name in EXPERIMENTS:
            return open_chapter(name, self.profile, self.runner).results
        raise AttributeError(name)


@pytest.fixture()
def smoke_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWDIMS_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("FEWDIMS_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_profiles_exist_and_validate():
    assert {"smoke", "cpu", "paper"} <= set(available_profiles())
    for name in ("smoke", "cpu", "paper"):
        profile = load_profile(name)
        assert profile.tasks and profile.seeds
    assert load_profile("paper").tasks == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"]


def test_layer_sets_may_each_train_with_their_own_seed(smoke_env):
    profile = load_profile("smoke", chapter="layer", task="sst2", seeds=3, dim_sets=3)
    sets = random_dim_sets(profile.section("layer")["k"], 3, Chapter(profile).hidden)

    def planned_seeds():
        runner = Runner(profile, dry_run=True)
        open_chapter("layer", profile, runner).results()
        return {(c.layer, c.dims): c.seed for c in runner.planned if c.dims is not None}

    assert set(planned_seeds().values()) == {0}  # default: every set on the first seed
    profile.values["layer"]["seed_per_set"] = True
    seeds = planned_seeds()
    assert {seeds[(layer, d)] for layer in (0, 1) for d in sets[:1]} == {0}
    assert [seeds[(1, d)] for d in sets] == [0, 1, 2]  # set i with seed i, at every layer


def test_layer_all_dims_rows_below_the_top_layer_are_optional(smoke_env):
    profile = load_profile("smoke", chapter="layer", task="sst2")

    def all_dims_layers():
        runner = Runner(profile, dry_run=True)
        open_chapter("layer", profile, runner).results()
        return sorted(c.layer for c in runner.planned if c.dims is None and c.layer is not None)

    n_layers = Chapter(profile).n_layers
    assert all_dims_layers() == list(range(n_layers))  # default: every truncated layer (the top is the reference)
    profile.values["layer"]["all_dims_per_layer"] = False
    assert all_dims_layers() == []


def test_cross_finetuning_pairs_run_seed_by_seed(smoke_env):
    profile = load_profile("smoke", chapter="cross_finetune", seeds=3)
    profile.values["cross_finetune"]["n_seeds"] = 2
    runner = Runner(profile, dry_run=True)
    open_chapter("cross_finetune", profile, runner).results()
    stage_b = [c for c in runner.planned if c.init_from is not None]
    pairs = open_chapter("cross_finetune", profile).pairs()
    assert sorted((c.task, c.seed) for c in stage_b) == sorted((b, s) for _, b in pairs for s in (0, 1))
    assert all(c.init_from["seed"] == c.seed for c in stage_b)  # stage A at the same seed
    # the references stage B starts from keep their weights; at seed 2 (not a cross seed) the reference does not
    Chapter(profile, runner).baseline(pairs[0][0], 2)
    refs = {(c.task, c.seed): c.save_weights for c in runner.planned if c.init_from is None and c.dims is None}
    assert refs[(pairs[0][0], 1)] and refs[(pairs[0][0], 2)] is False


def test_profile_overrides():
    p = load_profile("cpu", chapter="dimension", task="RTE", k=3, seeds=5, random_subsets=4)
    assert p.tasks == ["rte"] and p.seeds == [0, 1, 2, 3, 4]
    assert p.section("dimension")["k"] == 3 and p.section("layer")["k"] == 2  # k of the dimension chapter only
    assert p.section("dimension")["random_subsets"] == 4
    assert load_profile("cpu", tasks="sst2, mrpc").tasks == ["sst2", "mrpc"]
    assert load_profile("cpu", model=None)["model"] == "minilm"  # None keeps the profile's value


@pytest.mark.parametrize("overrides, fragment", [
    ({"profile": "gpu-huge"}, "unknown profile"),
    ({"task": "squad"}, "squad"),
    ({"k": "two"}, "parameter 'k' of the dimension chapter must be int"),
    ({"random_subsets": 2.5}, "random_subsets"),
    ({"learning_rate": 1e-3}, "unknown parameter 'learning_rate'"),
    ({"seeds": 0}, "seeds must be at least 1"),
    ({"seeds": ["a"]}, "seeds must be a non-empty list of integers"),
    ({"lr": -1.0}, "lr must be positive"),
    ({"batch_size": 1.5}, "batch_size must be int"),
])
def test_bad_profile_parameters(overrides, fragment):
    profile = overrides.pop("profile", "cpu")
    with pytest.raises(FewdimsError, match=fragment):
        load_profile(profile, chapter="dimension", **overrides)


def test_random_dim_sets_are_fixed_and_distinct():
    a = random_dim_sets(3, 4, 384)
    assert a == random_dim_sets(3, 4, 384)
    assert len(set(a)) == 4 and all(len(set(s)) == 3 and max(s) < 384 for s in a)


def test_paper_profile_dry_run_plans_its_grid_without_training(smoke_env):
    profile = load_profile("paper")
    runner = Runner(profile, dry_run=True)
    ex = Experiments(profile, runner)
    ex.token()
    ex.dimension()
    ex.layer()
    ex.freezing()
    ex.cross_finetune()
    tasks = {c.task for c in runner.planned}
    assert tasks == set(profile.tasks)
    assert len({c.key() for c in runner.planned}) == len(runner.planned)  # each run planned once
    # 8 tasks x (5 seeds cls + 5 max_norm + 3 extra poolings) token runs at least
    assert len(runner.planned) > 8 * 13
    assert "runs to compute" in runner.summary()
    assert not (smoke_env / "results").exists()  # nothing was written


def test_smoke_grid_end_to_end_then_reuse_and_compute_false(smoke_env):
    profile = load_profile("smoke", task="sst2", seeds=1)
    runner = Runner(profile, verbose=False)
    ex = Experiments(profile, runner)
    token = ex.token()
    assert set(token["variant"]) == {"cls", "max_norm", "mean", "max", "pooler"}
    assert token["score"].between(0, 100).all()
    base = ex.baseline("sst2")
    layers = base["extra"]["layers"]
    assert len(layers["layer_drop"]) == 3  # embeddings + 2 layers of the tiny model
    assert layers["cls"]["finetuned"][0][0] is None  # the embedding layer's [CLS] vector is constant
    assert abs(layers["cls"]["finetuned"][2][2] - 1.0) < 1e-6
    assert base["extra"]["pair_scan"]["pairs"] == 32 * 31 // 2
    assert runner.computed == len(token)

    # a second pass reuses every stored run
    again = Runner(profile, verbose=False)
    Experiments(profile, again).token()
    assert again.computed == 0 and again.reused == len(token)

    # compute=False: a missing run is left out and reported, never trained
    lazy = Runner(load_profile("smoke", task="sst2", seeds=2), allow_compute=False)
    frame = Experiments(lazy.profile, lazy).token()
    assert lazy.computed == 0 and len(lazy.missing) == 2  # cls and max_norm with seed 1
    assert len(frame) == len(token)
    assert "left out" in lazy.summary()


def test_dimension_layer_freezing_cross_on_smoke(smoke_env):
    profile = load_profile("smoke", seeds=1)
    ex = Experiments(profile, Runner(profile, verbose=False))
    dim = ex.dimension()
    runs = dim.runs
    assert {"random k=1", "random k=2", "random k=3", "leave one out", "best k=2"} <= set(runs["variant"])
    assert (runs.loc[runs["variant"] == "leave one out", "k"] == 2).all()
    assert len(dim.masking) == 2 * 3 * profile.section("dimension")["random_subsets"]
    layer = ex.layer()
    assert sorted(set(layer["layer_index"])) == [0, 1, 2]
    frozen = ex.freezing()
    assert {"fine-tuned, linear head", "frozen, 2-layer head", "frozen, linear probe"} == set(frozen["variant"])
    cross = ex.cross_finetune()
    assert len(cross) == 2 and cross["a_after"].notna().all()
    # A's head after B keeps its per-example predictions: forgetting pairs them with A before's
    assert all(len(p) == len(a) for p, a in zip(cross["a_after_preds"], cross["a_before_preds"]))
    assert (cross["relative_b"] > 0).all()


def test_runner_rejects_bad_arguments(smoke_env):
    with pytest.raises(FewdimsError, match="Profile"):
        Runner("smoke")
    with pytest.raises(FewdimsError, match="compute"):
        Runner(load_profile("smoke"), allow_compute="no")


def test_corrupt_record_is_reported_not_reused(smoke_env):
    profile = load_profile("smoke", task="sst2", seeds=1)
    runner = Runner(profile, verbose=False)
    config = profile.base_config("sst2", pooling="mean")
    runner.run(config)
    path = runner.store.path(config)
    path.write_text(path.read_text()[:50])
    before = path.read_bytes()
    with pytest.raises(FewdimsError, match=str(path.name)):
        Runner(profile, verbose=False).run(config)
    assert path.read_bytes() == before


def test_cost_model_is_calibrated_from_stored_timings():
    from fewdims.runner import estimate_seconds, measured_throughput, overhead_seconds, work_tokens

    profile = load_profile("cpu", task="sst2")
    config = profile.base_config("sst2")
    busy, quiet = {"cpu_count": 2, "load_average": [7.0, 6.5, 6.0]}, {"cpu_count": 2, "load_average": [2.1, 2.2, 2.0]}

    def rec(rate, env=None, cfg=config, device="cpu"):
        return {"config": cfg.to_dict(), "environment": env or {},
                "timings": {"device": device, "total_s": overhead_seconds(cfg) + work_tokens(cfg) / rate}}

    # four runs at 2,000 tokens/s and one on a busy machine 5x slower; other models and devices ignored
    records = [rec(r) for r in (2000, 2000, 2000, 2000, 400)]
    records += [rec(1.0, cfg=config.replace(model="tiny")), rec(1e6, device="cuda"),
                {"config": config.to_dict(), "timings": {}}]
    calibration = measured_throughput(records, "minilm")
    assert calibration.runs == 5 and calibration.rate(config) == pytest.approx(2000)
    assert "upper quartile of 5 runs" in calibration.note("minilm")
    # once three runs are known quiet, only they count (their median), and the busy ones are left out
    records += [rec(r, quiet) for r in (1000, 1200, 1400)] + [rec(100, busy)]
    calibration = measured_throughput(records, "minilm")
    pooled = 3 / (1 / 1000 + 1 / 1200 + 1 / 1400)  # their work over their time: the rates' harmonic mean
    assert calibration.rate(config) == pytest.approx(pooled) and "pooled over 3 quiet runs" in calibration.note("minilm")
    # a frozen backbone's runs are their own kind: their rate does not move the fine-tuned estimate
    frozen = config.replace(freeze_backbone=True)
    records += [rec(50_000, quiet, cfg=frozen) for _ in range(3)]
    calibration = measured_throughput(records, "minilm")
    assert calibration.rate(frozen) == pytest.approx(50_000) and calibration.rate(config) == pytest.approx(pooled)
    # runs at one thread (side by side in a grid of one-thread runs) calibrate the estimate at one thread only
    one_thread = [{**rec(r, quiet), "timings": {**rec(r, quiet)["timings"], "threads": 1}} for r in (700, 800, 900)]
    calibration = measured_throughput(records + one_thread, "minilm")
    assert calibration.rate(config, threads=1) == pytest.approx(3 / (1 / 700 + 1 / 800 + 1 / 900))
    assert calibration.rate(config) == pytest.approx(pooled) and "1 thread per run" in calibration.note("minilm", 1)
    assert measured_throughput([], "minilm").rate(config) is None
    # a run truncated after the embeddings: its steps' fixed overhead, not ~0 s
    embeddings_only = config.replace(layer=0, dims=(1, 2))
    assert estimate_seconds(embeddings_only, 2000) > overhead_seconds(embeddings_only) > 10
    assert estimate_seconds(config, 2000) == pytest.approx(overhead_seconds(config) + work_tokens(config) / 2000)


def test_runner_reports_measured_compute_of_every_run_it_used(smoke_env):
    profile = load_profile("smoke", task="sst2", seeds=1)
    first = Runner(profile, verbose=False)
    Experiments(profile, first).token()
    again = Runner(profile, verbose=False)
    Experiments(profile, again).token()
    assert again.calibration.rate(profile.base_config("sst2")) is not None and again.calibration.runs == first.computed
    assert set(again.recorded_s) == set(first.recorded_s) and all(s > 0 for s in again.recorded_s.values())
    assert f"{sum(again.recorded_s.values()) / 3600:.2f} h" in again.summary()
    planned = Runner(profile, dry_run=True)
    assert "from stored tiny runs" in planned.throughput_note()
    # a corrupt record leaves the estimate uncalibrated instead of failing the dry run
    path = next(iter(planned.store.dir.rglob("*.json")))
    path.write_text("{not json")
    assert "nominal" in Runner(profile, dry_run=True).throughput_note()


def test_representations_are_cached_so_another_cka_variant_needs_no_weights(smoke_env):
    import shutil

    from fewdims.analysis import analyse_cached, layer_analysis
    from fewdims.cache import representations_path, weights_dir

    profile = load_profile("smoke", task="sst2", seeds=1)
    runner = Runner(profile, verbose=False)
    ex = Experiments(profile, runner)
    record = ex.baseline("sst2")
    config = ex.base("sst2", seed=0, save_weights=True)
    params = record["extra"]["layers"]["params"]
    n, reps = params["n_examples"], tuple(params["representations"])
    assert representations_path(config, params["split"], n).exists()
    assert representations_path(config, params["split"], n, pretrained=True).exists()
    shutil.rmtree(weights_dir(config))

    # the same analysis from the cache alone equals what was computed with the model in memory
    tokens = params.get("tokens_requested", 10_000)
    same = analyse_cached(config, [layer_analysis(params["requested"], reps, params["debiased"], profile.source,
                                                  tokens)], profile.source)
    assert same == {"layers": record["extra"]["layers"]}
    # a new variant (debiased CKA, one representation) is re-analysed without weights and stored, and an error
    # recorded when the run trained is dropped once its analysis succeeds
    runner.store.update_extra(config, {"analysis_errors": ["layer_analysis: an earlier failure"]})
    variant = layer_analysis(params["requested"], ("cls",), not params["debiased"])
    updated = runner.run(config, [variant])
    assert runner.reanalysed == 1 and variant.satisfied_by(updated["extra"])
    assert "analysis_errors" not in updated["extra"]
    assert updated["metrics"] == record["metrics"]
    # an unreadable cache is not an error: without weights the analysis is simply not available
    representations_path(config, params["split"], n).write_bytes(b"not an npz")
    assert analyse_cached(config, [layer_analysis(params["requested"], reps, not params["debiased"],
                                                  profile.source, tokens)], profile.source) is None


def test_baseline_analyses_run_without_errors_on_a_regression_task(smoke_env):
    profile = load_profile("smoke", task="stsb", seeds=1)
    record = Experiments(profile, Runner(profile, verbose=False)).baseline("stsb")
    assert "analysis_errors" not in record["extra"], record["extra"].get("analysis_errors")
    assert {"layers", "inference_masking", "pair_scan"} <= set(record["extra"])
    assert record["extra"]["pair_scan"]["score"] == "pearson"
