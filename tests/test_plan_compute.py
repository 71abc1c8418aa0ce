"""Compute, cost and the GPU catalog of `domainsmith plan`: pure arithmetic, no models."""

import json

import pytest

from domainsmith.errors import DomainsmithError
from domainsmith.plan import PlanError, PlanRequest, plan_command
from domainsmith.plan.compute import estimate_compute
from domainsmith.plan.gpus import CATALOG, find_gpu, load_gpu_file
from domainsmith.plan.units import parse_count


def test_gpt3_flops_match_the_published_3_15e23():
    result = estimate_compute(175_000_000_000, 300_000_000_000, find_gpu("A100-80G"), gpus=1024, mfu=0.4)
    assert result["flops"] == pytest.approx(3.15e23, rel=0.01)
    assert result["formulas"]["flops"] == "6 * P * T"


def test_gpu_hours_follow_exactly_from_peak_and_mfu():
    gpu = find_gpu("A100-80G")
    result = estimate_compute(175_000_000_000, 300_000_000_000, gpu, gpus=1024, mfu=0.4, price_per_gpu_hour=2.0)
    expected_hours = 6 * 175e9 * 300e9 / (312e12 * 0.4) / 3600
    assert result["gpu_hours"] == pytest.approx(expected_hours, rel=1e-12)
    assert result["gpu_hours"] == pytest.approx(701_121.79, rel=1e-6)
    assert result["wall_days"] == pytest.approx(expected_hours / 1024 / 24, rel=1e-12)
    assert result["cost"] == pytest.approx(expected_hours * 2.0, rel=1e-12)
    assert result["inputs"]["peak_tflops"] == 312.0 and result["inputs"]["mfu"] == 0.4


def test_doubling_mfu_halves_gpu_hours_and_no_price_means_no_cost():
    gpu = find_gpu("H100")
    low = estimate_compute(7_000_000_000, 1_000_000_000, gpu, mfu=0.25)
    high = estimate_compute(7_000_000_000, 1_000_000_000, gpu, mfu=0.5)
    assert low["gpu_hours"] == pytest.approx(2 * high["gpu_hours"])
    assert low["cost"] is None


@pytest.mark.parametrize("bad", [{"gpus": 0}, {"mfu": 0.0}, {"mfu": 1.5}, {"price_per_gpu_hour": -1.0}])
def test_bad_compute_inputs_are_user_errors(bad):
    with pytest.raises(PlanError):
        estimate_compute(1_000_000, 1_000_000, find_gpu("H100"), **bad)


@pytest.mark.parametrize(
    "text,value",
    [
        ("7e9", 7_000_000_000),
        ("7B", 7_000_000_000),
        ("7b", 7_000_000_000),
        ("175B", 175_000_000_000),
        ("1.3B", 1_300_000_000),
        ("135M", 135_000_000),
        ("2T", 2_000_000_000_000),
        (7e9, 7_000_000_000),
    ],
)
def test_counts_parse_as_people_write_them(text, value):
    assert parse_count(text, "--params") == value


@pytest.mark.parametrize("text", ["7x", "", "-1B", "0", "B7", "seven"])
def test_bad_counts_name_the_option(text):
    with pytest.raises(PlanError, match="--params"):
        parse_count(text, "--params")


def test_unknown_gpu_lists_known_names_and_the_closest():
    with pytest.raises(DomainsmithError) as exc:
        find_gpu("H10")
    message = str(exc.value)
    assert "Closest: 'H100'" in message
    assert "A100-80G" in message and "Ascend-910B" in message and "--gpu-file" in message


def test_gpu_names_are_forgiving_but_a100_alone_is_ambiguous():
    assert find_gpu("a100 80gb").name == "A100-80G"
    assert find_gpu("h100-sxm").name == "H100"
    assert find_gpu("910B").name == "Ascend-910B"
    with pytest.raises(PlanError, match="ambiguous"):
        find_gpu("A100")


def test_catalog_has_the_required_gpus_each_with_a_source():
    for name in ("V100", "A100-40G", "A100-80G", "A800", "H100", "H800", "H200", "L40S", "RTX4090", "Ascend-910B"):
        spec = CATALOG[name]
        assert spec.peak_tflops > 0 and spec.memory_gib > 0 and len(spec.source) > 10
    # Volta has no bf16: its peak is the fp16 one, and the plan says so.
    assert CATALOG["V100"].bf16 is False
    result = estimate_compute(1_000_000_000, 1_000_000_000, CATALOG["V100"])
    assert "fp16" in result["inputs"]["peak_precision"]
    # Dense, not the sparsity number printed with an asterisk.
    assert CATALOG["H100"].peak_tflops == pytest.approx(1979 / 2, rel=0.001)


def test_user_gpu_file_adds_and_overrides(tmp_path):
    path = tmp_path / "gpus.yaml"
    path.write_text("MyChip: {peak_tflops: 100, memory_gib: 32, bf16: true, source: vendor sheet}\n", encoding="utf-8")
    extra = load_gpu_file(path)
    spec = find_gpu("mychip", extra)
    assert (spec.peak_tflops, spec.memory_gib, spec.source) == (100, 32, "vendor sheet")
    bad = tmp_path / "bad.json"
    bad.write_text('{"X": {"peak_tflops": -1, "memory_gib": 8}}', encoding="utf-8")
    with pytest.raises(PlanError, match="GPU 'X'"):
        load_gpu_file(bad)


def test_plan_json_has_the_contract_keys_and_states_6pt():
    plan = plan_command(PlanRequest(params="175B", tokens="300B", gpu="A100-80G", gpus=1024, price_per_gpu_hour=1.5))
    text = json.dumps(plan)  # JSON-serializable as a whole
    assert json.loads(text)["compute"]["flops"] == pytest.approx(3.15e23, rel=0.01)
    for key in ("flops", "gpu_hours", "wall_days", "cost"):
        assert plan["compute"][key] is not None
    assert plan["memory"]["per_gpu"] and "assumptions" in plan
    assert "6 * P * T" in plan["assumptions"]["training_flops"]


def test_plan_without_tokens_still_answers_memory_and_says_what_is_missing():
    plan = plan_command(PlanRequest(params="7B", gpu="H100", gpus=8, method="lora"))
    assert plan["compute"]["gpu_hours"] is None and "--tokens" in plan["compute"]["missing"]
    assert plan["memory"]["method"] == "lora"


@pytest.mark.parametrize(
    "bad,flag",
    [
        ({"gpus": 0}, "--gpus"),
        ({"batch_size": 0}, "--batch-size"),
        ({"mfu": 2.0}, "--mfu"),
        ({"seq_len": -1}, "--seq-len"),
    ],
)
def test_impossible_plan_inputs_are_refused_even_when_unused(bad, flag):
    with pytest.raises(PlanError, match=flag):
        plan_command(PlanRequest(params="7B", **bad))
