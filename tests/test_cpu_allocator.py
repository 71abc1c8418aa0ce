"""CPU training leaves glibc's malloc alone unless DOMAINSMITH_CPU_MMAP_THRESHOLD asks for a bounded RSS."""

import platform

import pytest

from domainsmith.train import cpu_allocator

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's"
)


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("DOMAINSMITH_CPU_MMAP_THRESHOLD", raising=False)
    return monkeypatch


def test_off_by_default(clean_env):
    assert cpu_allocator.configure_for_training(on_cuda=False) is None


class _RecordingLibc:
    """Stands in for libc: a real mallopt would pin the threshold for the rest of the test process."""

    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append((param, value.value))
        return 1


@glibc_only
def test_the_environment_turns_it_on_for_cpu_training_only(clean_env):
    libc = _RecordingLibc()
    clean_env.setattr(cpu_allocator.ctypes, "CDLL", lambda name: libc)
    clean_env.setenv("DOMAINSMITH_CPU_MMAP_THRESHOLD", str(cpu_allocator.BOUNDED_RSS_THRESHOLD_BYTES))
    assert cpu_allocator.configure_for_training(on_cuda=False) == cpu_allocator.BOUNDED_RSS_THRESHOLD_BYTES
    assert libc.calls == [(cpu_allocator.M_MMAP_THRESHOLD, cpu_allocator.BOUNDED_RSS_THRESHOLD_BYTES)]
    assert cpu_allocator.configure_for_training(on_cuda=True) is None
    clean_env.setenv("DOMAINSMITH_CPU_MMAP_THRESHOLD", "0")
    assert cpu_allocator.configure_for_training(on_cuda=False) is None
    assert len(libc.calls) == 1  # neither call reached malloc


def test_a_users_own_malloc_setting_wins(clean_env):
    clean_env.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    clean_env.setenv("DOMAINSMITH_CPU_MMAP_THRESHOLD", str(cpu_allocator.BOUNDED_RSS_THRESHOLD_BYTES))
    assert cpu_allocator.pin_mmap_threshold() is None
