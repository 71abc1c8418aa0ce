import pytest

from domainsmith import precision


@pytest.fixture
def cpu(monkeypatch):
    """A CPU-only machine whose bf16 instructions and measured bf16 speed-up the test sets."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    return monkeypatch


@pytest.mark.parametrize(
    ("instructions", "speedup", "expected"),
    [
        (True, 6.0, True),  # AMX: bf16 matmuls far faster
        (True, 0.5, False),  # AVX512-BF16 whose bf16 matmuls run at half the fp32 speed
        (True, 1.1, False),  # a marginal gain is not worth the casts and the lost precision
        (False, 6.0, False),  # no bf16 instructions: never, whatever a timing says
    ],
)
def test_auto_picks_bf16_on_cpu_only_where_it_is_measurably_faster(cpu, instructions, speedup, expected):
    cpu.setattr(precision, "cpu_has_bf16_instructions", lambda: instructions)
    cpu.setattr(precision, "cpu_bf16_speedup", lambda: speedup)
    assert precision.use_bf16("auto") is expected
    assert precision.use_bf16("bf16") is True
    assert precision.use_bf16("fp32") is False


def test_matmul_timing_measures_both_dtypes():
    assert precision.matmul_gflops("float32", size=64, repeats=2) > 0
    assert precision.matmul_gflops("bfloat16", size=64, repeats=2) > 0


def test_the_stage_log_says_what_auto_measured(cpu):
    cpu.setattr(precision, "cpu_has_bf16_instructions", lambda: True)
    cpu.setattr(precision, "cpu_bf16_speedup", lambda: 0.5)
    assert precision.describe_precision("auto") == "fp32: bf16 matmuls run 0.50x as fast as fp32 on this CPU"
    assert precision.describe_precision("bf16") == "bf16"
    cpu.setattr(precision, "cpu_has_bf16_instructions", lambda: False)
    assert precision.describe_precision("auto") == "fp32"
