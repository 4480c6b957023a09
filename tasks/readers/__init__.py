"""The one reader of input data, shared by every stage that reads files or datasets (collect, finetune).

``files`` resolves globs and formats and reads a file record by record (``formats`` parses each format, over
``compression``'s streams); ``hub`` opens Hugging Face datasets; ``items`` holds what they yield (a ``Record`` or a
``Quarantined`` one, with its position in the input); ``errors`` the errors that stop a source or a file. A stage maps
records to its own schema and decides what a stopped file means for it (collect: one quarantined record and on to
the next file; finetune: an error naming the task), so the quarantine reasons and their rules are the same for both.
"""
