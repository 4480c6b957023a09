"""Stand-alone training entry points, launched by ``deepspeed``/``torchrun`` (never inside the Prefect process).

Each module is run as ``python -m tasks.training.<name> --config run.json``: one JSON file written by the flow holds
every setting. Importing this package imports nothing heavy.
"""
