"""SageMaker's serving contract: gunicorn + flask around a batched, warmed-up model.

Module map, in the order a request meets them:

* ``parameters``: the name of every environment variable the server reads.
* ``config``: every knob, read from the environment once per server (in gunicorn's arbiter;
  workers inherit the object when they are forked).
* ``server``: ``serve``'s entry point: checks the config and the model directory, then runs
  gunicorn with the settings ``gunicorn_conf`` derives from the config.
* ``intake``: gunicorn's gthread worker, but a request reaches an HTTP thread only once its
  headers and body have arrived; stalled clients get a 408 after the read timeout.
* ``draining``: that worker with a SIGTERM that answers every connection it accepted before
  stopping (the ``worker_class`` gunicorn runs).
* ``budget``: what one request may cost: its deadline, a decode slot, bounded socket reads.
* ``app``: the flask app factory and its routes (``/ping``, ``/invocations``,
  ``/execution-parameters``).
* ``bodies``: WSGI middleware that drains refused request bodies (a gunicorn gthread flaw) and
  lingers after answering an over-limit one, so the client reads its 413.
* ``codec``: what a request may carry and how answers and refusals are written, down to numpy
  pixels; it runs on HTTP threads and never touches torch.
* ``expectations``: a request's ``min_accuracy`` / ``expected_quantity`` / ``mismatch_rate`` /
  ``bin_id`` (custom attributes or per instance) and what they add to an answer.
* ``batcher``: the one thread per worker that runs torch, batching concurrent requests.
* ``predictor``: model directory -> warmed-up engine -> probabilities.
* ``engines``: the runners of the network (OpenVINO on a CPU, torch on a GPU, frozen
  TorchScript, eager), the precision each serves, and the check that it answers as eager
  PyTorch does.
"""
