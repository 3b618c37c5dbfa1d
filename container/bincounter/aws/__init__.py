"""Launch side of bincounter: SageMaker jobs and endpoints (SDK v3) from a laptop or CI.

Kept apart from the image's code because it needs the ``aws`` extra (``pip install -e
'.[aws]'``: boto3 and the pinned ``sagemaker-core``, ``sagemaker-train``, ``sagemaker-serve``)
and the image does not. Data preparation is ``bincounter.dataprep`` (it runs here, in the
quickstart, and in a Processing job alike); ``bincounter-aws prepare`` only calls it. Modules,
imported lazily so that ``--help`` starts fast; the first three are pure (no SDK, no AWS call):

* ``config``   region / role ARN / bucket / image URI / prefix from flags, environment or one
  config file; a missing value fails with how to set it.
* ``inputs``   ``NAME=VALUE`` items, hyperparameter files and values, checked with the
  container's own parser (mistakes raise ``bincounter.errors.LaunchError``).
* ``ranges``   tuning ranges (``low:high[:log]``, ``a,b,c``) parsed and checked against the
  container; the default search space.
* ``s3data``   upload of prepared channels (multipart, concurrent, skips unchanged objects).
* ``processing`` preparation as a SageMaker Processing job: the CreateProcessingJob request
  (plan parts ``ShardedByS3Key``, N instances), plan upload, and the manifest assembled after.
* ``jobs``     training (``ModelTrainer``) and tuning (``HyperparameterTuner``) jobs; the best
  hyperparameters of a tuning job.
* ``endpoints`` deploy (Model + EndpointConfig + Endpoint, data capture, autoscaling, start-up
  health-check timeout) and delete.
* ``serverless`` serverless endpoints: ``ServerlessConfig``, SageMaker's limits (memory, max
  concurrency, CPU only, 4 MB bodies, 10 GB image in ECR) checked before any request.
* ``asynchronous`` asynchronous endpoints: ``AsyncInferenceConfig``, scale to zero on the
  queue, and the container's async limits.
* ``invoke``   photos to an endpoint or a local server, parsed answers back.
* ``invoke_async`` one request to an asynchronous endpoint: upload, invoke, poll S3.
* ``transform`` batch transform over an S3 prefix of photos.
* ``audit``    the inventory audit's batch-transform side: S3 photos counted by a transform,
  verdicts decided with the card (``bincounter.audit`` has the rest).
* ``local``    SageMaker local mode with a locally built image, for the container tests:
  ``local_train(image, channels, hyperparameters=None, *, instance_count=1,
  container_root=None, environment=None, base_job_name="bincounter-local",
  instance_type="local") -> LocalTraining`` and ``local_deploy(image, model_data, *,
  name="bincounter-local", port=8080, environment=None, instance_type="local",
  region="us-east-1") -> LocalEndpoint`` (``.url``, ``.invoke(body, content_type)``,
  ``.delete()``); ``docker_problem() -> str | None``.
* ``pipeline`` the SageMaker Pipeline (prepare, train or tune, evaluate, gate, register), SDK v3
  ``sagemaker-mlops``.
* ``local_pipeline`` that pipeline run on this machine (the SDK's local pipelines, docker),
  with the SDK's missing pieces worked around.
* ``registry`` the Model Registry: register from the evaluate step's files, list, approve.
* ``cli``      ``bincounter-aws`` (``scripts/`` wraps its subcommands); the subcommands by group:
  ``cli_data`` (prepare, assemble, upload), ``cli_jobs`` (tune, best, train), ``cli_hosting``
  (deploy, delete, invoke, transform), ``cli_pipeline`` (pipeline, registry), and
  ``cli_shared``'s flags they share.

See ``docs/aws.md`` for the workflow.
"""
