import tomllib

import pytest

from feedrank.settings import REPO_ROOT, Settings
from rankers.registry import ConfigError, load_config, parse_config
from services.supervisor import pipeline_services


def test_shipped_config_builds_four_fprs_and_rules():
    config = load_config(REPO_ROOT / "config" / "pipeline.toml")
    assert config.fpr_names == ["courses", "jobs", "network", "people"]
    rankers = {n: spec.build() for n, spec in config.fprs.items()}
    assert {r.name for r in rankers.values()} == set(config.fpr_names)
    names = [r.name for r in config.build_rules()]
    # the order and settings of the shipped rules are tested in test_rules.py
    assert len(names) == len(config.rules) and names[0] == "dedupe" and names[-1] == "truncate"


def test_fifth_fpr_is_configuration_only(tmp_path):
    cfg = (REPO_ROOT / "config" / "pipeline.toml").read_text()
    cfg += '\n[fprs.trending_jobs]\nfactory = "rankers.jobs.ranker:build"\nserves = "job"\nk = 5\n'
    path = tmp_path / "pipeline.toml"
    path.write_text(cfg)
    config = load_config(path)
    assert "trending_jobs" in config.fpr_names
    assert config.fprs["trending_jobs"].build().name == "trending_jobs"
    services = pipeline_services(Settings(pipeline_config=path))
    assert "fpr-trending_jobs" in services and services[-1] == "mixer"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({}, "no [fprs.*]"),
        ({"fprs": {"x": {"serves": "job"}}}, "fprs.x is missing 'factory'"),
        ({"fprs": {"x": {"factory": "rankers.jobs.ranker:build", "serves": "car"}}}, "fprs.x.serves"),
        ({"fprs": {"x": {"factory": "rankers.jobs.ranker:build", "serves": "job", "k": 0}}}, "fprs.x.k"),
        ({"fprs": {"x": {"factory": "no.such:thing", "serves": "job"}}}, "cannot be imported"),
    ],
)
def test_config_errors_name_the_entry(data, needle):
    with pytest.raises(ConfigError, match=None) as err:
        config = parse_config(data)
        for spec in config.fprs.values():
            spec.build()
    assert needle in str(err.value)


def test_rule_with_bad_param_names_the_rule():
    config = parse_config(
        {
            "fprs": {"j": {"factory": "rankers.jobs.ranker:build", "serves": "job"}},
            "rerank": [{"rule": "rankers.rules.type_run:MaxTypeRun", "max_run": -1}],
        }
    )
    with pytest.raises(ConfigError, match="MaxTypeRun"):
        config.build_rules()


def test_mixer_refuses_a_model_trained_on_other_features(tmp_path):
    from services.model_store import ModelNotFound, ModelStore, load_spr

    store = ModelStore(tmp_path)
    store.save("spr", {"any": "model"}, {"columns": ["old_feature"]})
    with pytest.raises(ModelNotFound, match="retrain"):
        load_spr(store, ["new_feature"])
    store.save("spr", {"any": "model"}, {"columns": ["new_feature"]})
    assert load_spr(store, ["new_feature"]).model == {"any": "model"}


def test_rule_overrides_change_drop_or_reject_rules():
    config = load_config(REPO_ROOT / "config" / "pipeline.toml")
    quota = next(s for s in config.rules if s.rule.endswith(":InventoryQuota"))
    assert quota.params["max_share"] != 0.9
    changed = config.with_rules({"InventoryQuota": {"max_share": 0.9}, "rankers.rules.type_run:MaxTypeRun": False})
    rules = {r.name: r for r in changed.build_rules()}
    assert rules["inventory_quota"].max_share == 0.9
    assert rules["inventory_quota"].min_score_ratio == quota.params["min_score_ratio"]  # the others kept
    assert "max_type_run" not in rules and len(rules) == len(config.rules) - 1
    assert [r.name for r in config.with_rules({}).build_rules()] == [r.name for r in config.build_rules()]
    assert quota.params["max_share"] != 0.9  # the original is untouched
    with pytest.raises(ConfigError, match=r"names no configured rule.*InventoryQuota"):
        config.with_rules({"NoSuchRule": False})
    with pytest.raises(ConfigError, match=r"rankers\.rules\.quota:InventoryQuota.*max_shar"):
        config.with_rules({"InventoryQuota": {"max_shar": 0.9}})
    with pytest.raises(ConfigError, match="max_share must be in"):
        config.with_rules({"InventoryQuota": {"max_share": 2.0}})
    with pytest.raises(ConfigError, match="table of parameters or false"):
        config.with_rules({"InventoryQuota": 0.9})


def test_the_benchmarks_rule_variants_apply_to_the_shipped_config():
    config = load_config(REPO_ROOT / "config" / "pipeline.toml")
    variants = tomllib.loads((REPO_ROOT / "benchmarks" / "rule_variants.toml").read_text())
    assert variants
    for name, overrides in variants.items():
        built = config.with_rules(overrides).build_rules()
        assert [r.name for r in built] != [r.name for r in config.build_rules()] or any(
            vars(a) != vars(b) for a, b in zip(built, config.build_rules(), strict=True)
        ), name  # each variant differs from the shipped rules
