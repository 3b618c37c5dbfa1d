"""The training side of SageMaker's ``/opt/ml`` contract: config files and channels.

A bring-your-own container gets no ``SM_*`` variables; it gets files. This module reads them
(through ``sagemaker-training``'s own parsing, so we decode hyperparameters and split off
``sagemaker_*`` keys exactly as AWS's toolkits do) and says which problem a person must fix when
one is missing or unreadable. ``SAGEMAKER_BASE_DIR`` relocates the whole tree, as in the toolkit,
so the same ``./train`` and ``./serve`` run on a laptop.

Every variable the job reads is read here, once, into the read-only ``TrainingEnvironment``
(as the toolkit's ``Environment``); the variables libraries need set (gloo's and NCCL's socket
interface) are set from it in one place, ``export_library_variables``, at process start.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..params import (
    DEFAULT_MASTER_PORT,
    DEFAULT_NETWORK_INTERFACE,
    HYPERPARAMETERS_FILE,
    INPUT_DATA_CONFIG_FILE,
    JOB_NAME_ENV,
    MASTER_PORT_ENV,
    RESOURCE_CONFIG_FILE,
    SOCKET_IFNAME_ENVS,
)
from ..paths import Paths

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingEnvironment:
    """A read-only snapshot of what SageMaker gave this training container."""

    paths: Paths
    hyperparameters: dict[str, Any]
    channels: dict[str, Path]
    hosts: list[str]
    current_host: str
    network_interface_name: str = DEFAULT_NETWORK_INTERFACE
    num_gpus: int = 0
    job_name: str = ""
    #: TCP port of the process group's rendezvous on the first host.
    master_port: int = DEFAULT_MASTER_PORT
    resource_config: dict[str, Any] = field(default_factory=dict)
    #: ``inputdataconfig.json`` per channel: ``TrainingInputMode`` (File, FastFile, Pipe) and
    #: ``S3DistributionType`` (FullyReplicated, ShardedByS3Key) decide how shards are read.
    input_data_config: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def is_master(self) -> bool:
        return self.current_host == self.hosts[0]


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{what} {path} is not valid JSON: {exc}") from None


def _master_port(environ: Mapping[str, str]) -> int:
    value = environ.get(MASTER_PORT_ENV)
    if value is None:
        return DEFAULT_MASTER_PORT
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{MASTER_PORT_ENV}={value!r} is not a TCP port number") from None


def load_training_environment(environ: Mapping[str, str]) -> TrainingEnvironment:
    """Read ``environ`` (the process's variables), ``input/config/*.json`` and the channels,
    failing with a reason a person can act on.

    Missing ``resourceconfig.json`` (a laptop run) means one host; missing
    ``inputdataconfig.json`` means the channel folders present on disk.
    """
    paths = Paths.from_environment(environ)
    if not paths.base.is_dir():
        raise ConfigError(
            f"SageMaker tree {paths.base} does not exist: run inside SageMaker, or set "
            "SAGEMAKER_BASE_DIR to a folder with input/config and input/data"
        )
    hp_file = paths.config_dir / HYPERPARAMETERS_FILE
    raw_hps = _read_json(hp_file, "hyperparameters file") if hp_file.exists() else {}
    if not isinstance(raw_hps, dict):
        raise ConfigError(f"hyperparameters file {hp_file} must hold a JSON object")

    rc_file = paths.config_dir / RESOURCE_CONFIG_FILE
    if rc_file.exists():
        resource_config = _read_json(rc_file, "resource config")
        if not isinstance(resource_config, dict) or not resource_config.get("hosts"):
            raise ConfigError(f"resource config {rc_file} has no 'hosts' list")
        if resource_config.get("current_host") not in resource_config["hosts"]:
            raise ConfigError(
                f"resource config {rc_file}: current_host "
                f"{resource_config.get('current_host')!r} is not among hosts"
            )
    else:
        resource_config = {"current_host": "algo-1", "hosts": ["algo-1"]}

    idc_file = paths.config_dir / INPUT_DATA_CONFIG_FILE
    if idc_file.exists():
        input_data_config = _read_json(idc_file, "input data config")
        if not isinstance(input_data_config, dict):
            raise ConfigError(f"input data config {idc_file} must hold a JSON object")
    else:
        found = sorted(p.name for p in paths.data_dir.iterdir()) if paths.data_dir.is_dir() else []
        input_data_config = {name: {"TrainingInputMode": "File"} for name in found}

    # sagemaker-training parses exactly as AWS does. It derives its own paths from
    # SAGEMAKER_BASE_DIR at import, but only channel names, hosts and the interface are taken
    # from it here, all from the config passed in: our ``paths`` place everything.
    from sagemaker_training import environment as toolkit

    env = toolkit.Environment(
        resource_config=resource_config,
        input_data_config=input_data_config or {"_none": {}},
        hyperparameters={k: _toolkit_decode(v) for k, v in raw_hps.items()} or {"_none": ""},
    )
    hyperparameters = {k: v for k, v in env.hyperparameters.items() if k != "_none"}
    channels = {name: paths.data_dir / name for name in env.channel_input_dirs if name != "_none"}
    return TrainingEnvironment(
        paths=paths,
        hyperparameters=hyperparameters,
        channels=channels,
        hosts=sorted(env.hosts),
        current_host=env.current_host,
        network_interface_name=env.network_interface_name,
        num_gpus=env.num_gpus,
        job_name=environ.get(JOB_NAME_ENV, ""),
        master_port=_master_port(environ),
        resource_config=resource_config,
        input_data_config={
            k: v for k, v in input_data_config.items() if isinstance(v, dict) and k != "_none"
        },
    )


def _toolkit_decode(value: Any) -> Any:
    """The toolkit's ``read_hyperparameters`` JSON-decodes each value once; so do we."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def export_library_variables(
    env: TrainingEnvironment, environ: MutableMapping[str, str] = os.environ
) -> None:
    """Set the variables gloo and NCCL read: call once at process start, before any spawn.

    On several hosts, collectives are bound to SageMaker's network interface when this
    container has it; a value already set (by a person) is kept.
    """
    if len(env.hosts) < 2 or not env.network_interface_name:
        return
    if not os.path.exists(f"/sys/class/net/{env.network_interface_name}"):
        return
    for name in SOCKET_IFNAME_ENVS:
        environ.setdefault(name, env.network_interface_name)
        log.info("%s=%s", name, environ[name])
