"""The finetune stage's data step: task examples from local files, folders, Hugging Face datasets and the default
corpus, checked (bad records quarantined with a reason), split and written in the ``tasks.examples`` format.

Entry points (``prepare``): :func:`~tasks.finetune.prepare.check_tasks` (preflight, writes nothing) and
:func:`~tasks.finetune.prepare.prepare_tasks`. Readers (``files`` and ``hub`` over ``tasks.readers``, ``folders``,
``default_corpus``) yield raw records (``items``); ``checks`` turns them into examples or quarantine rows;
``splits`` makes the splits; ``augment`` adds EDA copies; ``errors`` holds the exceptions that stop the step;
``gate`` is the Great Expectations gate the flow runs on the staged output.
"""
