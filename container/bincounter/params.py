"""Every name and default of the ``/opt/ml`` contract the training side reads, written once.

As ``sagemaker_training.params`` does for AWS's toolkit: the environment variables a job reads,
the config files SageMaker writes under ``/opt/ml/input/config/``, the channels a job takes, and
the defaults a model card or an export falls back to. Modules import these names rather than
spelling a string again, so a rename is one edit and a typo is an ``ImportError``.
"""

from __future__ import annotations

from pathlib import Path

# -- environment variables (read once, by ``TrainingEnvironment`` and ``Paths``) -------------
#: Relocates the whole ``/opt/ml`` tree, as in AWS's toolkits (a laptop run).
BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
#: Where checkpoints go instead of ``<base>/checkpoints`` (SageMaker syncs that one with S3).
CHECKPOINT_DIR_ENV = "BINCOUNTER_CHECKPOINT_DIR"
#: SageMaker's name for the job: checkpoints are kept per job name (a tuning job's siblings).
JOB_NAME_ENV = "TRAINING_JOB_NAME"
#: TCP port of the process group's rendezvous on the master host.
MASTER_PORT_ENV = "BINCOUNTER_MASTER_PORT"
#: Variables that bind gloo's and NCCL's collectives to one network interface.
SOCKET_IFNAME_ENVS = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")

DEFAULT_BASE_DIR = Path("/opt/ml")
DEFAULT_MASTER_PORT = 29500
#: SageMaker's network interface when ``resourceconfig.json`` names none.
DEFAULT_NETWORK_INTERFACE = "eth0"

# -- config files under ``<base>/input/config/`` ---------------------------------------------
HYPERPARAMETERS_FILE = "hyperparameters.json"
INPUT_DATA_CONFIG_FILE = "inputdataconfig.json"
RESOURCE_CONFIG_FILE = "resourceconfig.json"

# -- channels ----------------------------------------------------------------------------------
REQUIRED_CHANNELS = ("train", "validation")
OPTIONAL_CHANNELS = ("test",)

# -- defaults ------------------------------------------------------------------------------------
#: Default share of the control photos on which int8 must return float32's count (the
#: ``int8_min_agreement`` hyperparameter). Holding accuracy itself within half a point let
#: answers move both ways: model A's int8 kept validation within 0.27 points yet lost 0.68 on
#: test, with 2.2% of answers changed. Agreement bounds the accuracy change on any photos by the
#: share that changed, so it is the bound that carries over to photos it never saw.
INT8_MIN_AGREEMENT = 0.995
#: What a model card without these keys means: cards from before count-aware heads were a
#: softmax head read by argmax.
CARD_DEFAULTS = {"head": "softmax", "decision": "argmax"}
