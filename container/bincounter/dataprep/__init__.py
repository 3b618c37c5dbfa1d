"""Data preparation: ABID photos -> verified, split, folder-per-count channels and a manifest.

Used by ``bincounter-aws prepare`` and the quickstart on a laptop, and written so each step can
also run on its own (for instance sharded across the instances of a SageMaker Processing job
with the same image): no module keeps state between calls, and none imports boto3 until an S3
source is built, so the image and local runs need no ``aws`` extra. Modules, in pipeline order:

* ``sources``    where bytes come from: ``S3Source`` (the public bucket ``aft-vbi-pds``, unsigned,
  or any S3 API), ``LocalSource`` (a folder in ABID's layout), the ``PhotoSource`` base both
  follow (``MissingObject``, in ``bincounter.errors``, for a 404); ``open_source`` builds one
  from command-line options for the launch CLI and the Processing job alike.
* ``selection``  which ids: a capstone ``file_list.json`` (``read_file_list``,
  ``candidates_from_file_list``) or a scan of ``metadata/`` up to N per count
  (``scan_candidates``).
* ``fetch``      the cache folder, ``Fetcher`` (fetch with retries on transient errors, verify
  each photo by decoding it with the training container's decoder, exclude with a reason).
* ``layout``     ``stratified_split`` (seeded, per count), the one writer (``write_part``:
  ``<split>/<count>/<id>.jpg`` or tar shards, optional resize) and the one manifest builder
  (``write_manifest``); ``SPLITS``, ``MANIFEST``.
* ``report``     the data report (``report.json`` + ``report.png``); ``REPORT_JSON``,
  ``REPORT_PNG``.
* ``pipeline``   ``prepare(...)``: select, verify, split, then one plan part through
  ``worker.process_part`` and ``parts.assemble``, resumable after a crash; ``PrepareResult``
  and ``summary_text`` for a person. ``plan(...)`` and ``prepare_parts(...)``: the scaled path
  (full scan, many parts), in-process, on the same part processing and assembly.
* ``listing``    the full metadata scan: key ranges listed and read in parallel, resumable;
  ``select_by_count``.
* ``parts``      the plan as ``plan/part-NNNNN.jsonl`` (seeded split, round-robin parts) and the
  manifest assembled from each part's fragment.
* ``worker``     one plan part -> photos or tar shards; the SageMaker Processing job's entry
  (``bincounter process``; its launch side is ``bincounter.aws.processing``).
* ``records``    what the steps pass each other (``Candidate``, ``VerifiedPhoto``, ``PlannedId``,
  ``Excluded``, ``Stats``); their error, ``PrepareError``, is in ``bincounter.errors``.
* ``pool``       the thread pool with a progress bar that fetching and writing run on.

Upload of a prepared folder is ``bincounter.aws.s3data``; nothing here writes to S3.
"""
