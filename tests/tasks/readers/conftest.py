"""The readers' tests run the finetune stage end to end too: they share its tiny tokenizer."""

from tests.tasks.finetune.conftest import tokenizer_dir  # noqa: F401 - a fixture, registered by being here
