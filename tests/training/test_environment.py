"""``TrainingEnvironment``: every variable the job reads, read once from the mapping given."""

import json
from pathlib import Path

import pytest

from bincounter.errors import ConfigError
from bincounter.params import DEFAULT_MASTER_PORT, SOCKET_IFNAME_ENVS
from bincounter.paths import Paths
from bincounter.training.environment import export_library_variables, load_training_environment

from support import build_tree


def test_the_job_reads_base_checkpoints_job_name_and_port_from_the_mapping_given(tmp_path):
    base = build_tree(tmp_path / "ml", {"epochs": "1"}, {})
    environ = {
        "SAGEMAKER_BASE_DIR": str(base),
        "BINCOUNTER_CHECKPOINT_DIR": str(tmp_path / "ckpt"),
        "TRAINING_JOB_NAME": "job-7",
        "BINCOUNTER_MASTER_PORT": "29611",
    }
    env = load_training_environment(environ)
    assert env.paths == Paths(base, tmp_path / "ckpt")
    assert env.paths.checkpoint_dir == tmp_path / "ckpt"
    assert (env.job_name, env.master_port) == ("job-7", 29611)
    assert env.hyperparameters == {"epochs": 1}


def test_without_variables_the_defaults_apply(tmp_path):
    base = build_tree(tmp_path, {}, {})
    env = load_training_environment({"SAGEMAKER_BASE_DIR": str(base)})
    assert env.paths.checkpoint_dir == base / "checkpoints"
    assert (env.job_name, env.master_port) == ("", DEFAULT_MASTER_PORT)
    assert Paths.from_environment({}).base == Path("/opt/ml")


def test_a_master_port_that_is_no_number_is_named(tmp_path):
    base = build_tree(tmp_path, {}, {})
    with pytest.raises(ConfigError, match="BINCOUNTER_MASTER_PORT='x'"):
        load_training_environment({"SAGEMAKER_BASE_DIR": str(base), "BINCOUNTER_MASTER_PORT": "x"})


def _two_hosts(tmp_path, interface):
    config = {"current_host": "algo-1", "hosts": ["algo-1", "algo-2"]}
    base = build_tree(
        tmp_path, {}, {}, resource_config={**config, "network_interface_name": interface}
    )
    return load_training_environment({"SAGEMAKER_BASE_DIR": str(base)})


def test_collectives_are_bound_to_the_hosts_interface_keeping_a_value_already_set(tmp_path):
    env = _two_hosts(tmp_path, "lo")
    environ = {SOCKET_IFNAME_ENVS[0]: "eth9"}
    export_library_variables(env, environ)
    assert environ == {SOCKET_IFNAME_ENVS[0]: "eth9", SOCKET_IFNAME_ENVS[1]: "lo"}


def test_an_interface_this_container_lacks_sets_nothing(tmp_path):
    environ: dict[str, str] = {}
    export_library_variables(_two_hosts(tmp_path, "no-such-if0"), environ)
    assert environ == {}


def test_reading_the_environment_changes_no_variable(tmp_path, monkeypatch):
    import os

    base = build_tree(tmp_path, {}, {})
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(base))
    before = dict(os.environ)
    load_training_environment(os.environ)
    changed = {k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)}
    # sagemaker-training itself exports its own names; ours are never written.
    assert not changed & {"SAGEMAKER_BASE_DIR", "GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"}
    assert json.loads((base / "input" / "config" / "resourceconfig.json").read_text())
