"""The study runner behind ``study.py``: the study YAML (``spec``), the runs and the cost plan (``plan``),
running them where researchers run them (``executors``: one process, one run per GPU, SLURM through submitit),
and the report over IGLUE's three protocols (``report``)."""
