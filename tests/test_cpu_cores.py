"""CPU thread-pool sizing (hetpart.cpu_cores): one thread per physical core, user's TVM_NUM_THREADS wins."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hetpart import cpu_cores


def fake_topology(root, cores_of_cpu: dict[int, tuple[int, int]]):
    for cpu, (package, core) in cores_of_cpu.items():
        topo = root / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text(f"{package}\n")
        (topo / "core_id").write_text(f"{core}\n")
    return root


def test_smt_siblings_count_once(tmp_path):
    # 4 logical CPUs, 2 cores with 2 hyper-threads each, on one package
    sys_cpu = fake_topology(tmp_path, {0: (0, 0), 1: (0, 1), 2: (0, 0), 3: (0, 1)})
    assert cpu_cores.physical_cores([0, 1, 2, 3], sys_cpu) == 2
    assert cpu_cores.physical_cores([0, 2], sys_cpu) == 1  # a mask holding one core's two threads


def test_cores_on_two_packages_are_distinct(tmp_path):
    sys_cpu = fake_topology(tmp_path, {0: (0, 0), 1: (1, 0)})
    assert cpu_cores.physical_cores([0, 1], sys_cpu) == 2


def test_unreadable_topology_counts_every_logical_cpu(tmp_path):
    assert cpu_cores.physical_cores([0, 1, 2], tmp_path / "nothing") == 3


def _pool_in_fresh_process(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != cpu_cores.ENV}
    if env_value is not None:
        env[cpu_cores.ENV] = env_value
    code = "import hetpart, os, tvm; print(os.environ['TVM_NUM_THREADS'], tvm.runtime.num_threads())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.split()


@pytest.mark.slow
def test_import_sizes_tvm_pools_to_the_physical_cores():
    expected = str(cpu_cores.physical_cores())
    assert _pool_in_fresh_process(None) == [expected, expected]


@pytest.mark.slow
def test_the_user_s_setting_wins():
    assert _pool_in_fresh_process("1") == ["1", "1"]
