"""SageMaker's serving contract: gunicorn + flask around a batched, warmed-up model.

Module map, in the order a request meets them:

* ``config``: every knob, read from the environment once per server (in gunicorn's arbiter;
  workers inherit the object when they are forked).
* ``server``: ``serve``'s entry point: checks the config and the model directory, then runs
  gunicorn with the settings ``gunicorn_conf`` derives from the config.
* ``app``: the flask app factory and its routes (``/ping``, ``/invocations``,
  ``/execution-parameters``).
* ``bodies``: WSGI middleware that drains refused request bodies (a gunicorn gthread flaw).
* ``codec``: what a request may carry and how answers and refusals are written, down to numpy
  pixels; it runs on HTTP threads and never touches torch.
* ``batcher``: the one thread per worker that runs torch, batching concurrent requests.
* ``predictor``: model directory -> warmed-up engine -> probabilities.
* ``engines``: the runners of the network (frozen TorchScript, eager) and the check that a
  faster one answers as eager PyTorch does.
"""
