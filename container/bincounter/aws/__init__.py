"""Launch side of bincounter: data preparation and SageMaker jobs (SDK v3), one module each.

Needs the ``aws`` extra (``pip install -e '.[aws]'``: boto3 and the pinned ``sagemaker-core``,
``sagemaker-train``, ``sagemaker-serve``); the image does not. Modules, imported lazily so that
``--help`` and data preparation start fast:

* ``config``   region / role ARN / bucket / image URI / prefix from flags, environment or one
  config file; a missing value fails with how to set it.
* ``prepare``  ABID (public bucket ``aft-vbi-pds``, unsigned, or a local folder) -> verified,
  stratified ``train``/``validation``/``test`` channels ``<split>/<count>/<id>.jpg``, manifest
  with checksums, data report (JSON + PNG). Resumable.
* ``s3data``   upload of prepared channels (multipart, concurrent, skips unchanged objects).
* ``jobs``     training (``ModelTrainer``) and tuning (``HyperparameterTuner``) jobs; best
  hyperparameters to a JSON file ``train`` reads.
* ``hosting``  deploy (Model + EndpointConfig + Endpoint, data capture, autoscaling, start-up
  health-check timeout), delete, invoke, batch transform.
* ``local``    SageMaker local mode with a locally built image, for the container tests:
  ``local_train(image, channels, hyperparameters=None, *, instance_count=1,
  container_root=None, environment=None, base_job_name="bincounter-local",
  instance_type="local") -> LocalTraining`` and ``local_deploy(image, model_data, *,
  name="bincounter-local", port=8080, environment=None, instance_type="local",
  region="us-east-1") -> LocalEndpoint`` (``.url``, ``.invoke(body, content_type)``,
  ``.delete()``); ``docker_problem() -> str | None``.
* ``cli``      ``bincounter-aws`` subcommands: prepare, upload, tune, best, train, deploy,
  delete, invoke, transform (``scripts/`` wraps them).

See ``docs/aws.md`` for the workflow.
"""
