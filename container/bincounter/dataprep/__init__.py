"""Data preparation: ABID photos -> verified, split, folder-per-count channels and a manifest.

Used by ``bincounter-aws prepare`` and the quickstart on a laptop, and written so each step can
also run on its own (for instance sharded across the instances of a SageMaker Processing job
with the same image): no module keeps state between calls, and none imports boto3 until an S3
source is built, so the image and local runs need no ``aws`` extra. Modules, in pipeline order:

* ``sources``    where bytes come from: ``S3Source`` (the public bucket ``aft-vbi-pds``, unsigned,
  or any S3 API), ``LocalSource`` (a folder in ABID's layout), the ``Source`` base both follow,
  ``MissingObject`` for a 404.
* ``selection``  which ids: a capstone ``file_list.json`` (``read_file_list``,
  ``candidates_from_file_list``) or a scan of ``metadata/`` up to N per count
  (``scan_candidates``).
* ``fetch``      the cache folder, ``Fetcher`` (fetch with retries on transient errors, verify
  each photo by decoding it with the training container's decoder, exclude with a reason).
* ``layout``     ``stratified_split`` (seeded, per count) and the ``<split>/<count>/<id>.jpg``
  writer (optional resize), ``manifest.json``; ``SPLITS``, ``MANIFEST``.
* ``report``     the data report (``report.json`` + ``report.png``); ``REPORT_JSON``,
  ``REPORT_PNG``.
* ``pipeline``   ``prepare(...)``: the steps in order, resumable after a crash; ``PrepareResult``
  and ``summary_text`` for a person. ``plan(...)`` and ``prepare_parts(...)``: the scaled path
  (plan parts, then ``process`` per part, then ``parts.assemble``), in-process.
* ``listing``    the full metadata scan: key ranges listed and read in parallel, resumable;
  ``select_by_count``.
* ``parts``      the plan as ``plan/part-NNNNN.jsonl`` (seeded split, round-robin parts) and the
  manifest assembled from each part's fragment.
* ``process``    one plan part -> photos or tar shards (``bincounter.shards``); the SageMaker
  Processing job's entry (``bincounter process``).
* ``records``    what the steps pass each other (``Candidate``, ``Photo``, ``Excluded``,
  ``Stats``) and ``PrepareError``.
* ``pool``       the thread pool with a progress bar that fetching and writing run on.

Upload of a prepared folder is ``bincounter.aws.s3data``; nothing here writes to S3.
"""
