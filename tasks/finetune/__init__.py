"""The finetune stage's data step: task examples from local files, folders, Hugging Face datasets and the default
corpus, checked (bad records quarantined with a reason), split and written in the ``tasks.examples`` format."""
