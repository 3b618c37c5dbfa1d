"""SageMaker's training contract: ``/opt/ml`` in, a selected model and its reports out.

``job.run_job`` is ``./train``: it reads the tree (``environment``), spawns one process per GPU
and turns any error into ``/opt/ml/output/failure``. Each process runs ``train.run``, the loop,
read top to bottom like torchvision's reference ``train.py``. What the loop composes:

* ``hyperparameters``: the typed, validated recipe from ``hyperparameters.json``;
* ``data``: channels found and verified, the dataset and its loader;
* ``sampler``: each rank's resumable share of an epoch's order of a folder channel;
* ``channels``: the ``Channel`` protocol over photo folders, tar shards and Pipe streams,
  each verified once and read per rank and worker;
* ``problems``: what a channel's verification found bad, logged and held against
  ``max_bad_fraction`` in the same words for every layout;
* ``recipe``: optimizer, learning-rate schedule and class weights from the hyperparameters;
* ``precision``: bf16/fp16 autocast, gradient scaling and channels-last on every device, decided
  once from the hyperparameters and what the device reports (``precision``, ``channels_last``);
* ``bincounter.counting`` (shared with serving): the count heads, their losses, and the decision
  rules that turn probabilities into a count;
* ``distributed``: the process group from ``resourceconfig.json`` and the collectives;
* ``state`` and ``checkpoint``: what a restarted job resumes from, and how it is stored;
* ``running_sums``: an epoch's running sums and their exact reduction over ranks;
* ``metrics`` and ``reports``: the per-epoch metric line SageMaker parses, evaluation, plots;
* ``calibrate``: after the best epoch, the temperature and biases, confidence and verdict
  thresholds fitted on validation, with before/after reports;
* ``scoring``: the pipeline's evaluate step (training's ``evaluate`` on test -> evaluation.json);
* ``openvino_export``: at the end, the model's OpenVINO IR, check photos and int8 form for the server.
"""
