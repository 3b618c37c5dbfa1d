"""SageMaker's serving contract: gunicorn + flask around a batched, warmed-up model.

``config`` reads the knobs, ``predictor`` runs the model, ``app`` is the flask app factory,
``gunicorn_conf`` maps the knobs onto gunicorn and ``server.run_server`` starts it all.
"""
