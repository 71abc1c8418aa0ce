"""CPU training pins glibc's mmap threshold unless the user chose their own allocator settings."""

import platform

import pytest

from domainsmith.train import cpu_allocator

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's"
)


@glibc_only
def test_pins_the_threshold_on_cpu(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("DOMAINSMITH_CPU_MMAP_THRESHOLD", raising=False)
    assert cpu_allocator.configure_for_training(on_cuda=False) == cpu_allocator.DEFAULT_THRESHOLD_BYTES
    assert cpu_allocator.configure_for_training(on_cuda=True) is None


def test_a_users_own_malloc_setting_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert cpu_allocator.pin_mmap_threshold() is None


@glibc_only
def test_the_environment_can_turn_it_off_or_change_it(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.setenv("DOMAINSMITH_CPU_MMAP_THRESHOLD", "0")
    assert cpu_allocator.pin_mmap_threshold() is None
    monkeypatch.setenv("DOMAINSMITH_CPU_MMAP_THRESHOLD", str(4 << 20))
    assert cpu_allocator.pin_mmap_threshold() == 4 << 20
